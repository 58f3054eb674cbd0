#!/usr/bin/env bash
# Retrains the grid detector's scorer (src/detect/grid_weights.rs, models/grid-metrics.json) on the training set,
# with features from the appliance's own decode and detector path, and draws docs/detector-curves.svg.
#   scripts/train-detector.sh            (from the repo root; needs ../shared/fixtures or EMBER_SHARED)
# Steps: build ember-tools; the training images as a 640 px camera delivers them (scripts/camera-scale.py); synthesise the stress negatives (scripts/augment-train.py, reported only: grouped CV
# preferred the real images alone, see docs/DETECTOR.md); dump features of train, stress and dev; fit and select
# by grouped CV on train (scripts/train-detector.py); score dev once; rebuild and plot the curves.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${EMBER_SHARED:-../shared}
out=target/grid
venv=target/pyenv-train
pins=(numpy==2.4.6 scikit-learn==1.9.1 pillow==13.0.0 matplotlib==3.11.2)
if [ ! -f "$venv/.ok" ] || [ "$(cat "$venv/.ok")" != "${pins[*]}" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
    printf '%s' "${pins[*]}" >"$venv/.ok"
fi
mkdir -p "$out"
cargo build --release --bin ember-tools --quiet
tools=${CARGO_TARGET_DIR:-target}/release/ember-tools
[ -f "$out/aug/labels.csv" ] || "$venv/bin/python" scripts/augment-train.py "$shared/fixtures/train" "$out/aug"
[ -f "$out/camera/labels.csv" ] || "$venv/bin/python" scripts/camera-scale.py "$shared/fixtures/train" "$out/camera"
"$tools" eval frames "$out/camera" --dump-features "$out/train.csv" --json
"$tools" eval frames "$out/aug" --dump-features "$out/aug.csv" --json
"$tools" eval frames "$shared/fixtures/frames" --dump-features "$out/dev.csv" --json
"$venv/bin/python" scripts/train-detector.py --train "$out/train.csv" \
    --train-labels "$shared/fixtures/train/labels.csv" --dev "$out/dev.csv" --stress "$out/aug.csv" \
    --out src/detect/grid_weights.rs --metrics models/grid-metrics.json --cv-scores "$out/cv-scores.csv"
rustfmt --edition 2024 src/detect/grid_weights.rs
cargo build --release --bin ember-tools --quiet
"$tools" eval frames "$shared/fixtures/frames" --scores "$out/dev-grid.csv" --json
"$tools" eval frames "$shared/fixtures/frames" --detector embereye --scores "$out/dev-embereye.csv" --json
thr=$("$venv/bin/python" -c 'import json; print(json.load(open("models/grid-metrics.json"))["threshold"])')
curves=(--curve "grid, CV on train=$out/cv-scores.csv@$thr" --curve "grid, dev=$out/dev-grid.csv@$thr"
    --curve "EmberEye heuristic, dev=$out/dev-embereye.csv@0.4")
for extra in "$out"/dev-model.csv; do
    [ -f "$extra" ] && curves+=(--curve "grid + CNN, dev=$extra@0.5")
done
"$venv/bin/python" scripts/plot-detector.py "${curves[@]}" --out docs/detector-curves.svg
