#!/usr/bin/env bash
# The CNN natively on this machine (x86-64 or aarch64): installs the `ai-edge-litert` wheel from PyPI into a venv
# under target/litert-venv (once; its libLiteRtRuntimeCApi.so exports the LiteRT CompiledModel API on x86-64),
# then runs tests/litert_native.rs with the library required:
#   scripts/litert-native-test.sh [--frames DIR] [--bench]
#   --frames DIR  also score a labelled folder (default ../shared/fixtures/frames if present): `ember-edge model
#                 check --frames` (whole frames) and `ember-tools eval frames` for the grid detector and the
#                 `model` detector (the CNN on the grid's candidate regions) at several thresholds
#   --bench       `ember-tools bench detect` for the grid and the model detector (per frame, per inference)
#   --no-frames   skip the folder even if it exists
# Exits non-zero on any failure. Needs python3 with venv and network on the first run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# The same wheel version the aarch64 boards get (board/lib/cross-env.sh).
version=$(sed -n 's/^XB_LITERT_VERSION=//p' board/lib/cross-env.sh)
[ -n "$version" ] || { echo "no XB_LITERT_VERSION in board/lib/cross-env.sh" >&2; exit 1; }
frames=""
[ -f ../shared/fixtures/frames/labels.csv ] && frames=$root/../shared/fixtures/frames
bench=0
while [ $# -gt 0 ]; do
  case "$1" in
    --frames) frames=${2:?--frames needs a folder}; shift ;;
    --no-frames) frames="" ;;
    --bench) bench=1 ;;
    *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done
venv=$root/target/litert-venv
if [ ! -f "$venv/.ok" ] || [ "$(cat "$venv/.ok")" != "$version" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # --no-deps: only the runtime library is used, not the Python bindings' dependencies.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "ai-edge-litert==$version"
  printf '%s' "$version" >"$venv/.ok"
fi
lib=$(find "$venv" -name libLiteRtRuntimeCApi.so -print -quit)
[ -n "$lib" ] || { echo "libLiteRtRuntimeCApi.so not in ai-edge-litert $version" >&2; exit 1; }
export EMBER_TFLITE_LIB=$lib
echo "==> library: ${lib#"$root"/} (ai-edge-litert $version, $(uname -m))"
cargo test --locked --features tflite --test litert_native -- --test-threads=1
if [ -n "$frames" ] || [ "$bench" = 1 ]; then
  cargo build --locked --release --features tflite --bins
fi
bin=${CARGO_TARGET_DIR:-target}/release
if [ -n "$frames" ]; then
  echo "==> whole frames of $frames, int8 model"
  "$bin/ember-edge" model check --library "$lib" --model models/fire-int8.tflite --frames "$frames" | grep -v '^frame '
  echo "==> ember-tools eval frames: grid alone, then the CNN on the grid's candidates"
  "$bin/ember-tools" eval frames "$frames" --json | sed 's/^/grid               /'
  for t in 0.2 0.3 0.4 0.5 0.6 0.7 0.8; do
    "$bin/ember-tools" eval frames "$frames" --detector model --model-library "$lib" --threshold "$t" --json |
      sed "s/^/model (regions) $t  /"
  done
fi
if [ "$bench" = 1 ]; then
  echo "==> bench detect, 640x480, one thread (the grid, then the grid + CNN on its candidates)"
  for fmt in rgb yuyv; do
    "$bin/ember-tools" bench detect --detector grid --format "$fmt" --frames 2000
    "$bin/ember-tools" bench detect --detector model --format "$fmt" --frames 2000 --model-library "$lib"
  done
fi
echo "==> LiteRT native test passed"
