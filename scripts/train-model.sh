#!/usr/bin/env bash
# Trains the optional fire/smoke CNN and writes models/*.tflite, models/reference.json and the metrics:
#   scripts/train-model.sh [extra args for scripts/train-model.py]
# Makes a Python venv under target/train-venv (once) with a pinned TensorFlow, then runs the training.
# Deterministic: fixed seeds. Trains on ../shared/fixtures/train only; ../shared/fixtures/frames is scored (dev split).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/train-venv
# Pins: tensorflow-cpu 2.21.0 installs on CPython 3.11 (x86_64 manylinux wheels); keras comes with it.
pins=(tensorflow-cpu==2.21.0 numpy==2.4.6 pillow==12.0.0)
. "$root/scripts/pinned-venv.sh"
pinned_venv "$venv" "${pins[@]}"
exec "$venv/bin/python" "$root/scripts/train-model.py" "$@"
