#!/usr/bin/env bash
# Input → alarm output latency (docs/BENCHMARKS.md): runs the appliance with configs/bench-sensors.toml and
# `loadtest alarm` against it (300 alarm/reset cycles), prints the report, fails if p99 > 5 ms.
# Usage: scripts/bench-alarm.sh [ITERATIONS] [CONFIG] [PAUSE_MS]   (configs/bench-alarm-snapshots.toml 600:
# measured while each alarm writes its snapshot, a pause after each reset letting the zone's camera see fire
# again; the snapshot counters are printed after the report)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
bin=target/release/ember-edge
tools=target/release/ember-tools
config=${2:-configs/bench-sensors.toml}
"$bin" run --config "$config" 2>/dev/null &
app=$!
trap 'kill $app 2>/dev/null || true' EXIT
sleep 1
report=$("$tools" loadtest alarm --zone bench --iterations "${1:-300}" --pause-ms "${3:-0}")
echo "$report"
curl -fsS http://127.0.0.1:9090/metrics | grep -E '^ember_snapshot' || true
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); p=r["input_to_outputs_ms"]["p99"]; sys.exit(0 if p is not None and p <= 5.0 else 1)' "$report"
