#!/usr/bin/env bash
# The live-view benchmark of docs/BENCHMARKS.md: the appliance with configs/bench-streams.toml (4 replay
# cameras, 640x480, 25 fps) and `loadtest streams` side by side on this machine. Runs 50 viewers per camera
# (200) for 60 s and checks the acceptance figures (every viewer >= 24 fps, zero errors, no JPEG encodes: the
# replay cameras' own JPEGs are passed through to viewers, appliance RSS <= 60 MB); then, with `find-max`, steps the viewers up
# to the measured limit. Reports land in target/bench-streams/. Usage: scripts/bench-streams.sh [quick] [find-max]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60; [ "${1:-}" = quick ] && secs=15
cargo build --release --bins --quiet
bin=target/release/ember-edge
tools=target/release/ember-tools
out=target/bench-streams; mkdir -p "$out"
"$bin" run --config configs/bench-streams.toml 2>"$out/appliance.log" &
app=$!
trap 'kill $app 2>/dev/null || true' EXIT
url=http://127.0.0.1:9091
for _ in $(seq 50); do curl -sf "$url/health" >/dev/null 2>&1 && break; sleep 0.2; done
sleep 3
"$tools" loadtest streams --url "$url" --cameras 4 --connections-per-camera 50 --duration "$secs" \
  --stats-file "$out/200-viewers.json" --csv-prefix "$out/200-viewers" >/dev/null || true
set +e
python3 - "$out/200-viewers.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); a = r["aggregate"]; ap = r["appliance"]
print(json.dumps({"viewers": a["viewers"], "fps_min": a["fps_min"], "fps_mean": a["fps_mean"], "errors": a["errors"],
  "reconnects": a["reconnects"], "mbit_per_s": a["mbit_per_s"], **ap}))
fails = []
if a["fps_min"] < 24: fails.append(f"a viewer got {a['fps_min']} fps (< 24)")
if a["errors"] != 0: fails.append(f"{a['errors']} errors")
# Replay cameras are JPEG cameras: plain viewers get the camera's own bytes, nothing is encoded for them.
if ap["jpeg_encodes_per_s"] > 0: fails.append(f"{ap['jpeg_encodes_per_s']} encodes/s, expected 0 (JPEGs passed through)")
if ap["rss_max_mb"] > 60: fails.append(f"RSS {ap['rss_max_mb']} MB > 60")
print("FAIL: " + "; ".join(fails) if fails else "PASS: 200 viewers")
sys.exit(1 if fails else 0)
PY
status=$?
set -e
if [ "${1:-}" = find-max ] || [ "${2:-}" = find-max ]; then
  "$tools" loadtest streams --url "$url" --cameras 4 --find-max --fps-floor 24 --step 40 --step-duration 20 \
    --stats-file "$out/find-max.json" >/dev/null || true
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"max_viewers_held": r["max_viewers_held"],
    "steps": [(s["viewers"], s["aggregate"]["fps_min"], s["aggregate"]["errors"], s["appliance"]["cpu_percent"], s["appliance"]["rss_max_mb"]) for s in r["steps"]]}))' "$out/find-max.json"
fi
exit $status
