#!/usr/bin/env bash
# Runs `ember-edge demo` for SECS seconds (default 60), samples its resident set size every 0.5 s from
# /proc, and prints the peak, the last sample and the alert count. Exits non-zero if the peak exceeds
# LIMIT_MB (default 20) or the demo printed no alert.
# Usage: scripts/measure-rss.sh [SECS] [LIMIT_MB]
set -euo pipefail
secs=${1:-60}
limit_mb=${2:-20}
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/ember-edge
out=$(mktemp)
"$bin" demo --duration "$secs" >"$out" 2>/dev/null &
pid=$!
peak=0
last=0
while kill -0 "$pid" 2>/dev/null; do
  kb=$(awk '/^VmRSS:/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
  [ -n "$kb" ] || kb=0
  last=$kb
  [ "$kb" -gt "$peak" ] && peak=$kb
  sleep 0.5
done
wait "$pid"
alerts=$(grep -c '"type":"alert"' "$out" || true)
rm -f "$out"
printf 'demo %ss: peak RSS %.1f MB, last %.1f MB, %s alerts\n' "$secs" "$(echo "$peak/1024" | bc -l)" "$(echo "$last/1024" | bc -l)" "$alerts"
if [ "$peak" -gt $((limit_mb * 1024)) ]; then echo "peak RSS above ${limit_mb} MB" >&2; exit 1; fi
if [ "$alerts" -lt 1 ]; then echo "no alert printed" >&2; exit 1; fi
