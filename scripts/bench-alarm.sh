#!/usr/bin/env bash
# Input → alarm output latency (docs/BENCHMARKS.md): runs the appliance with configs/bench-sensors.toml and
# `loadtest alarm` against it (300 alarm/reset cycles), prints the report, fails if p99 > 5 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins --quiet
bin=target/release/ember-edge
tools=target/release/ember-tools
"$bin" run --config configs/bench-sensors.toml 2>/dev/null &
app=$!
trap 'kill $app 2>/dev/null || true' EXIT
sleep 1
report=$("$tools" loadtest alarm --zone bench --iterations "${1:-300}")
echo "$report"
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); p=r["input_to_outputs_ms"]["p99"]; sys.exit(0 if p is not None and p <= 5.0 else 1)' "$report"
