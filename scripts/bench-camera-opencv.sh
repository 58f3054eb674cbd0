#!/usr/bin/env bash
# One run: `ember-tools bench camera` (decode + detect of camera JPEGs at 640x480, 1280x720 and 1920x1080, every
# DCT scale and the appliance's own path) against OpenCV's imdecode + EmberEye's HSV rule from Python on the
# same JPEG files, all pinned to one core, one thread. Prints one table with the ratios.
# Usage: scripts/bench-camera-opencv.sh [FRAMES] [--detector grid|embereye]   (from the repo root; builds release)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
shift || true
VENV=target/pyenv
if ! "$VENV/bin/python" -c 'import cv2, numpy' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q opencv-python-headless numpy
fi
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --bins --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/ember-tools
PIN="taskset -c 0"
command -v taskset >/dev/null || PIN=""
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PIN "$BIN" bench camera --frames "$N" --write-jpegs "$work/jpegs" --json "$@" >"$work/ember.jsonl"
OMP_NUM_THREADS=1 $PIN "$VENV/bin/python" scripts/bench-camera-opencv.py "$work/jpegs" "$N" >"$work/opencv.jsonl"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%F)"
"$VENV/bin/python" - "$work/ember.jsonl" "$work/opencv.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cv = {(r["width"], r["height"]): r for r in map(json.loads, open(sys.argv[2]))}
print(f"{'size':<10} {'path':<32} {'decoded':>9} {'decode µs':>10} {'p50 µs':>8} {'p99 µs':>8} {'CPU p50':>8}"
      f" {'OpenCV ÷ this (p50, CPU)':>25}")
for (w, h), c in cv.items():
    for r in [r for r in rows if (r["width"], r["height"]) == (w, h)] + [c]:
        dec = f"{r['decoded_width']}x{r['decoded_height']}" if "decoded_width" in r else f"{w}x{h}"
        print(f"{w}x{h:<6} {r['path']:<32} {dec:>9} {r['decode_p50_ns']/1e3:>10.1f} {r['p50_ns']/1e3:>8.1f}"
              f" {r['p99_ns']/1e3:>8.1f} {r['cpu_p50_ns']/1e3:>8.1f}"
              f" {c['p50_ns']/r['p50_ns']:>11.1f}x {c['cpu_p50_ns']/r['cpu_p50_ns']:>10.1f}x")
PY
