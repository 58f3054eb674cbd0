#!/usr/bin/env bash
# One run: `ember-tools bench detect` (default and embereye, RGB and YUYV) against OpenCV's
# cvtColor + inRange + countNonZero from Python on the same 640×480 frames, all pinned to one core, one thread.
# Usage: scripts/bench-detect-opencv.sh [FRAMES]   (run from the repo root; builds the release binary)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
W=640
H=480
VENV=target/pyenv
if ! "$VENV/bin/python" -c 'import cv2, numpy' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q opencv-python-headless numpy
fi
cargo build --release --bins --quiet
BIN=target/release/ember-tools
PIN="taskset -c 0"
command -v taskset >/dev/null || PIN=""
out=$(mktemp)
for det in default embereye; do
    for fmt in rgb yuyv; do
        [ "$det" = embereye ] && [ "$fmt" = yuyv ] && continue
        $PIN "$BIN" bench detect --width $W --height $H --format $fmt --detector $det --frames "$N" --json >>"$out"
    done
done
OMP_NUM_THREADS=1 $PIN "$VENV/bin/python" scripts/bench-detect-opencv.py $W $H "$N" >>"$out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "machine: $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(date -u +%F)"
"$VENV/bin/python" - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cv = {r["format"]: r for r in rows if r["detector"] == "opencv"}
print(f"{'detector':<10} {'format':<6} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9} {'CPU µs':>8} {'CPU p50':>8} {'vs OpenCV (p50, CPU p50)':>26}")
for r in rows:
    c = cv[r["format"]]
    print(f"{r['detector']:<10} {r['format']:<6} {r['mean_ns']/1e3:>9.1f} {r['p50_ns']/1e3:>9.1f} {r['p99_ns']/1e3:>9.1f}"
          f" {r['cpu_mean_ns']/1e3:>8.1f} {r['cpu_p50_ns']/1e3:>8.1f} {c['p50_ns']/r['p50_ns']:>12.1f}x {c['cpu_p50_ns']/r['cpu_p50_ns']:>10.1f}x")
PY
rm -f "$out"
