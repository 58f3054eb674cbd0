#!/usr/bin/env bash
# Runs the test suite for the boards' architectures under QEMU:
#   board/qemu-test.sh user|system|all
#   user    the WHOLE suite (unit, integration, doctests) with `cargo test --target <triple>` for aarch64 and
#           armv7, each test binary run by qemu-user (the cargo runner), then the mqtt, browser and acceptance
#           targets (EMBER_SHARED, default ../shared). Same toolchain as board/cross-build.sh.
#   system  whole-system test: delegates to board/qemu-system.sh (written separately).
#   all     user, then system.
# Environment: QEMU_TEST_ARCHES="aarch64 armv7" (subset), QEMU_TEST_TIMEOUT=2400 (seconds per architecture),
#              QEMU_TEST_ARGS (extra args after `--` for the test harness, e.g. "--test-threads=1").
# Exits non-zero if any test fails, a target times out, or the setup fails.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/cross-env.sh
. "$(dirname "$0")/lib/cross-env.sh"

BINFMT=/proc/sys/fs/binfmt_misc

# Integration tests spawn the ember-edge and ember-tools binaries (env!("CARGO_BIN_EXE_…")), which here are
# ARM executables. The runner only wraps the test binary itself; for its children the kernel must know how to
# exec ARM ELF files, i.e. binfmt_misc with qemu registered. Set it up idempotently (root only).
# The interpreter is a tiny wrapper that adds the cross libc root (-L, via QEMU_LD_PREFIX), because the host
# has no /lib/ld-linux-aarch64.so.1 and must not get one (no multiarch libc6:arm64: F4 in board/README.md).
binfmt_magic() {
  # ELF header magic/mask as in Debian's qemu-user-binfmt (/usr/lib/binfmt.d/qemu-{aarch64,arm}.conf).
  case "$XB_QEMU" in
    qemu-aarch64) printf '%s' ':\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
    qemu-arm) printf '%s' ':\x7f\x45\x4c\x46\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' ;;
  esac
}

binfmt_setup() {
  [ "$(id -u)" = 0 ] || { xb_log "not root: cannot register qemu with binfmt_misc"; return 1; }
  if [ ! -e "$BINFMT/register" ]; then
    mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null || { xb_log "cannot mount binfmt_misc"; return 1; }
  fi
  [ "$(cat "$BINFMT/status")" = enabled ] || echo 1 >"$BINFMT/status"
  local dir=$XB_TARGET/binfmt name=ember-$XB_QEMU
  local wrap=$dir/$XB_QEMU
  mkdir -p "$dir"
  local body
  # shellcheck disable=SC2016  # "$@" and ${QEMU_LD_PREFIX...} are meant for the generated script
  body=$(printf '#!/bin/sh\n# binfmt_misc interpreter written by board/qemu-test.sh\nexport QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-%s}"\nexec /usr/bin/%s "$@"\n' \
    "$XB_LDPREFIX" "$XB_QEMU")
  if [ ! -x "$wrap" ] || [ "$(cat "$wrap")" != "$body" ]; then
    printf '%s\n' "$body" >"$wrap"
    chmod 755 "$wrap"
  fi
  # Re-register if the entry is missing, disabled or points at another checkout's wrapper.
  if [ -e "$BINFMT/$name" ]; then
    if grep -qx enabled "$BINFMT/$name" && grep -qx "interpreter $wrap" "$BINFMT/$name"; then
      return 0
    fi
    echo -1 >"$BINFMT/$name"
  fi
  # No flags: the interpreter path is resolved at exec time and gets the binary's path as argv[1].
  printf ':%s:M:%s:%s:\n' "$name" "$(binfmt_magic)" "$wrap" >"$BINFMT/register" ||
    { xb_log "binfmt_misc registration refused"; return 1; }
  xb_log "registered $BINFMT/$name -> $wrap"
}

run_user() {
  local arches=("$@") failed=() arch rc t0 log timeout_s=${QEMU_TEST_TIMEOUT:-2400}
  local -a harness_args=()
  # Word splitting of QEMU_TEST_ARGS is intended (a list of harness flags).
  read -r -a harness_args <<<"${QEMU_TEST_ARGS:-}"
  local results=()
  for arch in "${arches[@]}"; do
    xb_setup "$arch"
    # The boards' feature set (board/*.toml), so the suite tests what ships and shares its build with
    # board/cross-build.sh (same crate features: one compile of the library and the binary, not two).
    local features feat_args=()
    features=$(xb_board_features)
    [ -n "$features" ] && feat_args=(--features "$features")
    # With the `tflite` feature (the aarch64 boards), tests/tflite.rs needs the real library on ARM: fetch it
    # (once) and its C++ runtime, so the CNN is checked against TensorFlow's outputs in the same run.
    unset EMBER_TFLITE_LIB
    if [ "$arch" = aarch64 ] && [[ ",$features," == *,tflite,* ]]; then
      xb_litert
      xb_ensure_packages libstdc++6-arm64-cross
      export EMBER_TFLITE_LIB=$XB_LITERT_LIB
      xb_log "TFLite library for the tflite tests: ${XB_LITERT_LIB#"$XB_ROOT"/}"
    fi
    # Lets tests recognise qemu-user (no TCGETS2 ioctl, synthetic /proc/self/stat) if they choose to.
    export EMBER_TEST_QEMU_USER=$XB_QEMU
    # Emulation runs several times slower than native: stretch the tests' deadlines to match.
    export EMBER_TEST_TIME_SCALE=${EMBER_TEST_TIME_SCALE:-4}
    log=$XB_TARGET_DIR/qemu-test-$arch.log
    mkdir -p "$XB_TARGET_DIR"
    xb_log "building the tests for $XB_TRIPLE (rustc-web $XB_RUSTVER, features: ${features:-none})"
    "$XB_CARGO" test --locked --target "$XB_TRIPLE" "${feat_args[@]}" --no-run || { failed+=("$arch:build"); continue; }
    # The spawned-binary tests need binfmt_misc; check that an ARM executable really execs from a host process
    # (qemu-user forwards a guest execve to the host kernel, so this is the same path the tests take).
    local bin=$XB_TARGET_DIR/$XB_TRIPLE/debug/ember-edge
    if binfmt_setup && "$bin" --version >/dev/null 2>&1; then
      xb_log "binfmt_misc: $XB_TRIPLE executables exec directly ($("$bin" --version 2>&1 | head -n1))"
    else
      xb_log "WARNING: ARM executables cannot be exec'd here; tests that spawn ember-edge will fail (see board/README.md)"
    fi
    xb_log "cargo test --target $XB_TRIPLE under $XB_QEMU (timeout ${timeout_s}s; log ${log#"$XB_ROOT"/})"
    t0=$SECONDS rc=0
    # --no-fail-fast: report every failing test binary, not only the first one.
    timeout --kill-after=30 "$timeout_s" "$XB_CARGO" test --locked --no-fail-fast --target "$XB_TRIPLE" \
      "${feat_args[@]}" -- "${harness_args[@]}" 2>&1 | tee "$log" || rc=$?
    [ "$rc" = 124 ] && xb_log "TIMEOUT after ${timeout_s}s for $XB_TRIPLE"
    # The targets plain `cargo test` leaves out (Cargo.toml `test = false`) that this host can serve: the
    # broker and browser tests (host mosquitto and Chromium) and the acceptance checks on the shared sets.
    if [ "$rc" = 0 ]; then
      EMBER_SHARED=${EMBER_SHARED:-$XB_ROOT/../shared} timeout --kill-after=30 "$timeout_s" "$XB_CARGO" test --locked \
        --no-fail-fast --target "$XB_TRIPLE" "${feat_args[@]}" --test mqtt --test browser --test acceptance \
        -- "${harness_args[@]}" 2>&1 | tee -a "$log" || rc=$?
      [ "$rc" = 124 ] && xb_log "TIMEOUT after ${timeout_s}s for $XB_TRIPLE (mqtt, browser, acceptance)"
    fi
    results+=("$(printf '%-8s rc=%-3s %4ss  %s' "$arch" "$rc" "$((SECONDS - t0))" \
      "$(grep -E '^test result:' "$log" | awk '{p+=$4; f+=$6; i+=$8} END {printf "%d passed, %d failed, %d ignored in %d test binaries", p, f, i, NR}')")")
    [ "$rc" = 0 ] || failed+=("$arch")
  done
  printf '\nqemu-user summary:\n' >&2
  printf '  %s\n' "${results[@]}" >&2
  [ ${#failed[@]} -eq 0 ] || xb_die "qemu-user tests failed for: ${failed[*]}"
}

# ---------------------------------------------------------------------------------------------------------
# System mode is owned by board/qemu-system.sh (another script); this is only the hand-over.
# Extra arguments after the mode are passed on to it.
# Whole-system pass: the hardware tests (tests/hardware.rs: gpio backend on gpio-sim, ack button, rppal on
# raspi3b, the V4L2 source capturing from vivid, the hardware watchdog on virt's i6300esb), the real binary, and a
# power cut of virt while the spool is written (--power-cut), cross-built for aarch64 and run by board/qemu-system.sh.
run_system() {
  local sys json
  sys=$(dirname "$0")/qemu-system.sh
  xb_setup aarch64
  json=$XB_TARGET_DIR/hardware-tests.json
  # The boards' features (which for aarch64 already hold rppal and v4l2): the same build as the user pass.
  local features
  features=$(xb_features_with rppal v4l2)
  xb_log "building the hardware tests and the binary for $XB_TRIPLE (features: $features)"
  "$XB_CARGO" build --locked --target "$XB_TRIPLE" --features "$features" --bins
  "$XB_CARGO" test --locked --no-run --target "$XB_TRIPLE" --features "$features" --test hardware \
    --message-format=json-render-diagnostics >"$json"
  # The watchdog's reboot test resets the virt machine (i6300esb): run alone and last, the reset checked by the rig.
  # Then the power cut: ember-tools spools alerts on an ext4 disk until the rig resets virt from the QEMU monitor;
  # after the reboot every alert it said was spooled must reach a collector exactly once.
  bash "$sys" --tests-json "$json" --bin "$XB_TARGET_DIR/$XB_TRIPLE/debug/ember-edge" --machine all \
    --reboot-test watchdog::a_stalled_fusion_loop_reboots_the_board \
    --power-cut "$XB_TARGET_DIR/$XB_TRIPLE/debug/ember-tools" "$@"
}

mode=${1:-}
read -r -a arches <<<"${QEMU_TEST_ARCHES:-aarch64 armv7}"
cd "$XB_ROOT"
case "$mode" in
  user) run_user "${arches[@]}" ;;
  system) run_system "${@:2}" ;;
  all) run_user "${arches[@]}" && run_system "${@:2}" ;;
  *) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
