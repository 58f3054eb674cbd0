#!/usr/bin/env bash
# Cross-builds the ember-edge binaries for the boards without rustup targets or Docker:
#   board/cross-build.sh [--release] [--glibc 2.31] aarch64|armv7|all
# Debian bookworm's rustc-web + target std unpacked under target/xstd/<version> + Debian cross gcc.
# Idempotent: a second run installs and unpacks nothing and only lets cargo check freshness.
# Output: target/cross/<triple>/{debug,release}/ (target/cross-glibc231/... with --glibc 2.31); the binaries
# with exactly the boards' features are also copied to .../{debug,release}/board/ (what board/package.sh ships).
# Then checks the highest GLIBC symbol version each binary needs against the floor of the boards:
#   default  <= 2.34 (Pi OS bookworm 2.36, JetPack 6 2.35)
#   --glibc 2.31  <= 2.31 (JetPack 5 / Ubuntu 20.04), linked against a bullseye sysroot
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/cross-env.sh
. "$(dirname "$0")/lib/cross-env.sh"

usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

profile=debug release=() glibc="" arches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release release=(--release) ;;
    --glibc)
      [ $# -ge 2 ] || usage
      case "$2" in
        2.31) glibc=231 ;;
        *) xb_die "--glibc: only 2.31 is supported (the default build already runs on glibc >= 2.34)" ;;
      esac
      shift ;;
    --glibc=2.31) glibc=231 ;;
    aarch64 | armv7) arches+=("$1") ;;
    all) arches+=(aarch64 armv7) ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
  shift
done
[ ${#arches[@]} -gt 0 ] || usage

cd "$XB_ROOT"
started=$(date +%s)
summary=()
msgs=$(mktemp)
trap 'rm -f "$msgs"' EXIT
for arch in "${arches[@]}"; do
  xb_setup "$arch" "$glibc"
  features=$(xb_board_features)
  feat_args=()
  [ -n "$features" ] && feat_args=(--features "$features")
  xb_log "cargo build ${release[*]} --bins --target $XB_TRIPLE ${feat_args[*]} (rustc-web $XB_RUSTVER, CARGO_TARGET_DIR=${CARGO_TARGET_DIR#"$XB_ROOT"/})"
  # JSON messages give the paths of the produced executables; diagnostics are still rendered to stderr.
  if ! "$XB_CARGO" build --locked "${release[@]}" --bins --target "$XB_TRIPLE" "${feat_args[@]}" \
    --message-format=json-render-diagnostics >"$msgs"; then
    xb_die "cargo build for $XB_TRIPLE failed"
  fi
  mapfile -t bins < <(jq -r 'select(.reason == "compiler-artifact" and .executable != null) | .executable' "$msgs")
  [ ${#bins[@]} -gt 0 ] || xb_die "cargo produced no executable for $XB_TRIPLE"
  for bin in "${bins[@]}"; do
    # Stripped size = what ships; the release profile already strips, debug binaries are stripped to a temp copy.
    tmp=$(mktemp)
    "$XB_GNU-strip" -o "$tmp" "$bin"
    size=$(stat -c %s "$tmp")
    rm -f "$tmp"
    max=$(xb_glibc_max "$bin")
    line=$(printf '%-14s %-8s GLIBC max %-5s (limit %s)  %6.2f MiB stripped  %s' \
      "$arch" "$profile" "$max" "$XB_GLIBC_CEIL" "$(awk -v s="$size" 'BEGIN{print s/1048576}')" "${bin#"$XB_ROOT"/}")
    summary+=("$line")
    if [ "$max" = none ]; then
      xb_die "$bin: no GLIBC symbol versions found (not a dynamic glibc binary?)"
    fi
    xb_version_le "$max" "$XB_GLIBC_CEIL" ||
      xb_die "$bin needs GLIBC_$max, above the $XB_GLIBC_CEIL floor of the target boards"
    # The test scripts build the same binary with other feature sets (rppal, tflite) into the same folder;
    # this copy is the one with exactly the boards' features, and the one board/package.sh ships.
    install -D -m 0755 "$bin" "$(dirname "$bin")/board/$(basename "$bin")"
  done
done
printf '\n'
printf '%s\n' "${summary[@]}"
printf 'done in %ss\n' "$(($(date +%s) - started))"
