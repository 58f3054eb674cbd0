#!/usr/bin/env bash
# The sensor-link benchmarks of docs/BENCHMARKS.md, against a release build on this machine, load generator
# and appliance side by side. Prints one JSON object per run (the load tool's report, trimmed) and fails if
# an acceptance figure is missed. Usage: scripts/bench-sensors.sh [quick]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
cargo build --release --bins --quiet
bin=target/release/ember-edge
tools=target/release/ember-tools
secs=20; [ "$quick" = quick ] && secs=5
log=$(mktemp)
"$bin" run --config configs/bench-sensors.toml 2>"$log" &
app=$!
trap 'kill $app $sim 2>/dev/null || true; rm -f "$log"' EXIT
sim=""
sleep 1
trim='import json,sys
r=json.load(sys.stdin); a=r["aggregate"]; s=r["server"] or {}
print(json.dumps({"run": sys.argv[1], "clients": r["test_config"]["clients"], "sent": a["total_packets"],
  "wall_pps": a["wall_pps"], "accepted": s.get("accepted"), "lost": s.get("lost"), "frames_decoded": s.get("frames_decoded"),
  "disconnects": a["disconnects"], "observations_dropped": s.get("observations_dropped"),
  "decode_p50_ms": (s.get("write_to_decode") or {}).get("p50_ms"), "decision_p99_ms": (s.get("write_to_decision") or {}).get("p99_ms"),
  "server_cpu_percent": s.get("cpu_percent"), "server_rss_mb": s.get("mem_rss_mb")}))'
lt() { "$tools" loadtest sensors --server-device loadtest "$@" 2>/dev/null; }

# 1. A simulated device plus 1,000 concurrent clients (frames and sensor packets): nothing lost, no disconnects.
"$bin" simulate sensor --connect 127.0.0.1:4888 --loc-id 1234 --serial SIM0001 --scenario idle 2>/dev/null &
sim=$!
sleep 2
r1=$(lt --clients 1000 --duration "$secs" --rate 2 --include-frames | python3 -c "$trim" "1000 clients + simulator")
echo "$r1"
kill $sim; sim=""

# 2. Sensor packet throughput, unpaced.
r2=$(lt --clients 50 --duration "$secs" --rate 0 | python3 -c "$trim" "#Sensor throughput")
echo "$r2"

# 3. Frame throughput (3336-hex frames, calibrated and analysed), unpaced.
r3=$(lt --clients 20 --duration "$secs" --rate 0 --include-frames | python3 -c "$trim" "frame throughput")
echo "$r3"

# 4. Latency at 10,000 packets/s.
r4=$(lt --clients 100 --duration "$secs" --rate 100 | python3 -c "$trim" "latency at 10k pkt/s")
echo "$r4"

python3 - "$r1" "$r2" "$r3" "$r4" "$secs" <<'PY'
import json, sys
r1, r2, r3, r4 = (json.loads(a) for a in sys.argv[1:5]); secs = float(sys.argv[5])
fails = []
if r1["lost"] != 0 or r1["disconnects"] != 0: fails.append("1000 clients: packets lost or disconnects")
if r1["server_rss_mb"] > 30: fails.append(f"RSS {r1['server_rss_mb']} MB > 30 MB with 1000 clients")
if r2["accepted"] / secs < 300_000: fails.append(f"sensor throughput {r2['accepted']/secs:.0f}/s < 300k")
if r3["frames_decoded"] / secs < 20_000: fails.append(f"frame throughput {r3['frames_decoded']/secs:.0f}/s < 20k")
if (r4["decision_p99_ms"] or 99) > 2.0: fails.append(f"p99 decision latency {r4['decision_p99_ms']} ms > 2 ms")
print(json.dumps({"sensor_pps": round(r2["accepted"] / secs), "frames_per_s": round(r3["frames_decoded"] / secs), "failures": fails}))
sys.exit(1 if fails else 0)
PY
