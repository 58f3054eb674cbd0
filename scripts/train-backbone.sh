#!/usr/bin/env bash
# Builds the fire/smoke CNN from a pretrained backbone (ImageNet MobileNetV2 to block 10, from npm nsfwjs 4.3.0)
# with a linear head fitted on the training set's grid-detector crops; writes fire-*.tflite, reference.json and
# metrics.json into target/backbone-model (`--out models` to replace the shipped ones; models/README.md, "A pretrained
# backbone"):
#   ember-tools eval frames ../shared/fixtures/train  --dump-boxes target/boxes-train.csv
#   ember-tools eval frames ../shared/fixtures/frames --dump-boxes target/boxes-dev.csv
#   scripts/train-backbone.sh --boxes target/boxes-train.csv --dev-boxes target/boxes-dev.csv [--size 128] [--out DIR]
# Makes a Python venv under target/backbone-venv (once) with pinned TensorFlow and scikit-learn.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/backbone-venv
pins=(tensorflow-cpu==2.21.0 numpy==2.4.6 pillow==12.0.0 scikit-learn==1.9.1)
. "$root/scripts/pinned-venv.sh"
pinned_venv "$venv" "${pins[@]}"
exec "$venv/bin/python" "$root/scripts/train-backbone.py" "$@"
