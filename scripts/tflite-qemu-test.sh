#!/usr/bin/env bash
# The TFLite path for real: fetches the aarch64 TFLite C-API library from PyPI, cross-builds the `tflite`
# integration test and the binaries for aarch64 (board/lib/cross-env.sh: Debian rustc-web + cross gcc), and runs
# them under qemu-aarch64 with EMBER_TFLITE_LIB set:
#   scripts/tflite-qemu-test.sh [--frames DIR]
#   1. tests/tflite.rs: float and int8 outputs vs models/reference.json (TensorFlow's own interpreter), bad model
#      files, missing library -> grid detector, the CNN on the grid's candidate regions;
#   2. `ember-edge model check` on the reference inputs, and with --frames (default ../shared/fixtures/frames if
#      present) every labelled frame scored on the emulated board, printing recall / hard FPR per threshold
#      (whole frames), then `ember-tools eval frames` for the grid detector and the `model` detector (CNN on its
#      regions).
# Exits non-zero on any failure. Needs root the first time (apt packages); no network after the first run.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../board/lib/cross-env.sh
. "$(dirname "$0")/../board/lib/cross-env.sh"

frames=""
[ -f "$XB_ROOT/../shared/fixtures/frames/labels.csv" ] && frames=$XB_ROOT/../shared/fixtures/frames
while [ $# -gt 0 ]; do
  case "$1" in
    --frames) frames=${2:?--frames needs a folder}; shift ;;
    --no-frames) frames="" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
  shift
done

cd "$XB_ROOT"
xb_litert
lib=$XB_LITERT_LIB
xb_log "library: ${lib#"$XB_ROOT"/} ($(stat -c %s "$lib") bytes)"

xb_setup aarch64
export EMBER_TFLITE_LIB=$lib
# libLiteRtRuntimeCApi.so needs libstdc++ and libgcc_s for aarch64: the cross packages' root has them (-L).
xb_ensure_packages libstdc++6-arm64-cross
# The boards' features plus tflite (the aarch64 boards ship with it): the same build as board/qemu-test.sh.
features=$(xb_features_with tflite)
xb_log "cargo test --features $features --test tflite --target $XB_TRIPLE (rustc-web $XB_RUSTVER)"
"$XB_CARGO" test --locked --target "$XB_TRIPLE" --features "$features" --test tflite -- --test-threads=1 --nocapture

bin=$XB_TARGET_DIR/$XB_TRIPLE/debug/ember-edge
tools=$XB_TARGET_DIR/$XB_TRIPLE/debug/ember-tools
run() { "$XB_QEMU" -L "$XB_LDPREFIX" "$bin" "$@"; }
run_tools() { "$XB_QEMU" -L "$XB_LDPREFIX" "$tools" "$@"; }
for m in fire-f32 fire-int8; do
  xb_log "ember-edge model check --model models/$m.tflite"
  run model check --library "$lib" --model "models/$m.tflite"
done
if [ -n "$frames" ]; then
  xb_log "scoring $frames with the int8 model on the emulated board"
  run model check --library "$lib" --model models/fire-int8.tflite --frames "$frames" |
    grep -v '^frame ' | tee "$XB_TARGET_DIR/tflite-frames-aarch64.txt"
  # The appliance's `detector = "model"` (the CNN on the grid detector's candidate regions) against the grid
  # detector alone, on the same frames and the same emulated board: the numbers docs/DETECTOR.md reports.
  out=$XB_TARGET_DIR/tflite-eval-aarch64.txt
  : >"$out"
  run_tools eval frames "$frames" --json | sed 's/^/default              /' | tee -a "$out"
  for t in 0.3 0.5 0.7; do
    run_tools eval frames "$frames" --detector model --model-library "$lib" --threshold "$t" --json |
      sed "s/^/model (regions) $t  /" | tee -a "$out"
  done
fi
xb_log "TFLite qemu test passed"
