#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser with AFL++ through cargo-afl, on the stable toolchain (fuzz/, targets
# listed below; docs/FUZZING.md has the campaign). Builds the targets, runs each for SECONDS from its seed corpus
# (fuzz/corpus/<target>), prints executions, edges and findings per target, and fails when any target crashed
# (the crashing inputs are kept in target/fuzz/out/<target>/default/crashes/, EMBER_FUZZ_OUT: elsewhere; to
# reproduce one: `target/fuzz/release/<target> < FILE`).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    default 20 s each, every target
#
# Installs cargo-afl and builds its AFL++ under target/fuzz-tools when cargo-afl is not on PATH. Every afl-fuzz
# runs under `nice -n 19`, one at a time: it takes a whole core and must not slow anything else on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
all=(sensor multipart jpeg http_head uplink spool event_log config)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

tools=$PWD/target/fuzz-tools
if ! command -v cargo-afl >/dev/null; then
  export PATH=$tools/bin:$PATH XDG_DATA_HOME=$tools/share
  [ -x "$tools/bin/cargo-afl" ] || cargo install --locked --root "$tools" cargo-afl --version 0.18.2
  # AFL++ itself, from the sources cargo-afl bundles (make and a C compiler), into XDG_DATA_HOME; an install
  # served from cargo's cache does not build it (measured: 32 s).
  [ -d "$XDG_DATA_HOME/afl.rs" ] || cargo afl config --build
fi

# Its own target folder: the instrumented build must not replace the ordinary one (EMBER_FUZZ_TARGET_DIR: elsewhere).
export CARGO_TARGET_DIR=${EMBER_FUZZ_TARGET_DIR:-$PWD/target/fuzz}
(cd fuzz && cargo afl build --locked --release --quiet)

# No CPU frequency governor or core dump handler to adjust in a container or on CI; no CPU pinning (other jobs
# run on the same cores); no curses screen.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 AFL_FAST_CAL=1
# Seed inputs that a machine under load runs slowly are kept, not refused as timeouts.
export AFL_IGNORE_SEED_PROBLEMS=1
stat() { grep -E "^$2 *:" "$1/default/fuzzer_stats" | sed 's/.*: *//'; }
failed=()
printf '%-10s %10s %8s %12s %8s %6s\n' target execs execs/s edges corpus crashes
for t in "${targets[@]}"; do
  out=${EMBER_FUZZ_OUT:-target/fuzz/out}/$t
  rm -rf "$out"
  mkdir -p "$out"
  # -V: stop after SECONDS; -t: 2 s per input before it counts as a hang (the config loader on a large file
  # under load is slow, not stuck).
  if ! nice -n 19 cargo afl fuzz -V "$secs" -t 2000 -i "fuzz/corpus/$t" -o "$out" "$CARGO_TARGET_DIR/release/$t" \
    >"$out/afl.log" 2>&1; then
    echo "afl-fuzz failed for $t:" >&2
    tail -30 "$out/afl.log" >&2
    failed+=("$t")
    continue
  fi
  s=$out
  crashes=$(stat "$s" saved_crashes)
  printf '%-10s %10s %8s %12s %8s %6s\n' "$t" "$(stat "$s" execs_done)" "$(stat "$s" execs_per_sec)" \
    "$(stat "$s" edges_found)/$(stat "$s" total_edges)" "$(stat "$s" corpus_count)" "$crashes"
  if [ "$crashes" != 0 ]; then
    ls "$out"/default/crashes/id:* >&2
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found crashes (or could not run) in: ${failed[*]}" >&2
  exit 1
fi
