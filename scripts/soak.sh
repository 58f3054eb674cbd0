#!/usr/bin/env bash
# A soak with faults (docs/guide.md "Soak with faults", docs/design.md for how, figures in docs/BENCHMARKS.md): the appliance (`ember-edge run`)
# with two MJPEG cameras, four sensor devices and its uplink, for --duration seconds while the cameras' server,
# the devices, the collector, the MQTT broker (when mosquitto is installed) and the spool's disk (a small tmpfs,
# as root) come and go at random times from a printed seed, live viewers connect and drop, and alerts flow all
# the time. At the end it lets the uplink drain and checks that every alert the appliance accepted reached the
# collector exactly once or is counted as lost (only while the disk was full, reported upstream, raised as
# TROUBLE), that RSS and open fds stayed flat, and that every trouble raised was cleared. Prints a summary table;
# exits non-zero on any failure. The work itself is scripts/soak.py.
# Usage: scripts/soak.sh [--duration SECS] [--seed N] [--transport auto|tcp|mqtt] [--out DIR] [--debug]
#   (from anywhere; builds the binaries unless SKIP_BUILD is set; CARGO_TARGET_DIR is honoured; everything the
#   run leaves, logs and summary.json, is under --out, default target/soak)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
args=()
out=target/soak
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug; shift ;;
    --duration|--seed|--transport) args+=("$1" "$2"); shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--duration SECS] [--seed N] [--transport auto|tcp|mqtt] [--out DIR] [--debug]" >&2; exit 2 ;;
  esac
done
flag=--release
[ "$profile" = release ] || flag=
[ -n "${SKIP_BUILD:-}" ] || cargo build $flag --bins --quiet
bin=${CARGO_TARGET_DIR:-target}/$profile
exec python3 scripts/soak.py --bin "$bin" --out "$out" "${args[@]}"
