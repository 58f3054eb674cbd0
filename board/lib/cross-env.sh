# shellcheck shell=bash
# shellcheck disable=SC2034  # XB_* variables are read by the scripts that source this file
# Shared settings for board/cross-build.sh and board/qemu-test.sh (sourced, not run).
#
# Route (measured in shared/docs/cross-and-qemu.md, "Recipe A"): Debian bookworm's rustc-web/cargo-web +
# the target std rlibs unpacked from libstd-rust-web-dev_<same version>_{arm64,armhf}.deb into a private
# folder (passed with --sysroot) + Debian's cross gcc as linker + qemu-user as the test runner.
# rustup's toolchain cannot be used: no rust-std for the ARM targets can be downloaded here, and Debian's
# std rlibs only load in the exact Debian rustc that built them.
#
# After `xb_setup <arch> [231]` the caller can run `/usr/bin/cargo build|test --target "$XB_TRIPLE"`.
# Every function dies with a message on failure (callers use `set -euo pipefail`).

XB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# The project's target dir; everything this tooling creates lives below it (never in /).
XB_TARGET=${XB_TARGET:-$XB_ROOT/target}
XB_CARGO=/usr/bin/cargo
XB_RUSTC=/usr/bin/rustc

# $SECONDS = time since the calling script started, so each step's cost shows in the log.
xb_log() { printf '==> [%ss] %s\n' "$SECONDS" "$*" >&2; }
xb_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Per-architecture names. Sets XB_TRIPLE, XB_GNU (binutils/gcc prefix), XB_DEBARCH, XB_QEMU, XB_LDPREFIX.
xb_arch() {
  case "$1" in
    aarch64) XB_TRIPLE=aarch64-unknown-linux-gnu XB_GNU=aarch64-linux-gnu XB_DEBARCH=arm64 XB_QEMU=qemu-aarch64 ;;
    armv7) XB_TRIPLE=armv7-unknown-linux-gnueabihf XB_GNU=arm-linux-gnueabihf XB_DEBARCH=armhf XB_QEMU=qemu-arm ;;
    *) xb_die "unknown architecture '$1' (expected aarch64 or armv7)" ;;
  esac
  # The cross libc6 packages' root: qemu-user looks up the target's ld.so and libc here (-L).
  XB_LDPREFIX=/usr/$XB_GNU
  # Upper-case triple with '-' -> '_', as cargo's CARGO_TARGET_<TRIPLE>_* variables want it.
  XB_TVAR=$(printf '%s' "$XB_TRIPLE" | tr 'a-z-' 'A-Z_')
}

# ---------------------------------------------------------------------------------------------------------
# Debian packages. Fast path: dpkg-query says everything is installed -> no apt at all.
XB_PACKAGES=(rustc-web cargo-web gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
  libc6-dev-arm64-cross libc6-dev-armhf-cross binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf
  qemu-user curl ca-certificates jq libclang-dev)

xb_missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f '${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || printf '%s\n' "$p"
  done
}

# xb_ensure_packages PKG...: installs what is missing.
xb_ensure_packages() {
  local missing
  mapfile -t missing < <(xb_missing_packages "$@")
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || xb_die "missing packages (run as root or install them): ${missing[*]}"
  xb_log "installing from Debian: ${missing[*]}"
  # F2: a stale mirror index makes `apt-get update` exit 100 although the packages we need are fine.
  # Treat it as fatal only if the packages are still missing after the install attempt below.
  local rc=0
  apt-get -o DPkg::Lock::Timeout=300 update -qq || rc=$?
  [ "$rc" = 0 ] || xb_log "apt-get update exited $rc (stale mirror? see board/README.md F2); trying the install anyway"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    "${missing[@]}" >&2 || true
  mapfile -t missing < <(xb_missing_packages "$@")
  [ ${#missing[@]} -eq 0 ] || xb_die "could not install: ${missing[*]} (apt-get update exit $rc)"
}

# ---------------------------------------------------------------------------------------------------------
# Target std of EXACTLY the installed rustc-web version, unpacked into $XB_TARGET/xstd/<version>.
# Sets XB_RUSTVER and XB_XSTD (the --sysroot, i.e. the folder holding lib/rustlib/<triple>).
xb_ensure_std() {
  XB_RUSTVER=$(dpkg-query -W -f '${Version}' rustc-web) || xb_die "rustc-web is not installed"
  local dir=$XB_TARGET/xstd/${XB_RUSTVER//[:~+]/_}
  XB_XSTD=$dir/root/usr
  local stamp=$dir/.ok-$XB_DEBARCH
  if [ -f "$stamp" ] && [ -d "$XB_XSTD/lib/rustlib/$XB_TRIPLE/lib" ]; then
    return 0
  fi
  # Drop the std of any older rustc-web version: it cannot be used with this compiler anyway (~170 MB each).
  local old
  for old in "$XB_TARGET"/xstd/*; do
    [ -d "$old" ] && [ "$old" != "$dir" ] && { xb_log "removing stale target std $old"; rm -rf "$old"; }
  done
  mkdir -p "$dir/debs"
  # The pool URL of the amd64 deb of the same version; the arm64/armhf debs sit beside it. Deriving the
  # URL avoids `dpkg --add-architecture` and the stale armhf security index (F2/F3 in board/README.md).
  local url
  url=$(apt-get download --print-uris "libstd-rust-web-dev:amd64=$XB_RUSTVER" 2>/dev/null | cut -d"'" -f2 | head -n1)
  case "$url" in
    *_amd64.deb) ;;
    *) xb_die "cannot find libstd-rust-web-dev $XB_RUSTVER in the apt index (run apt-get update?)" ;;
  esac
  url=${url/%_amd64.deb/_$XB_DEBARCH.deb}
  local deb=$dir/debs/${url##*/}
  if [ ! -s "$deb" ]; then
    xb_log "downloading ${url##*/}"
    curl -fsSL --retry 3 -o "$deb.part" "$url" || xb_die "download failed: $url"
    mv "$deb.part" "$deb"
  fi
  # F5: never unpack into / ; a private folder only.
  dpkg-deb -x "$deb" "$dir/root" || xb_die "cannot unpack $deb"
  [ -d "$XB_XSTD/lib/rustlib/$XB_TRIPLE/lib" ] || xb_die "$deb holds no std for $XB_TRIPLE"
  touch "$stamp"
}

# ---------------------------------------------------------------------------------------------------------
# glibc 2.31 sysroot (Debian bullseye), for JetPack 5 / Ubuntu 20.04 boards. Sets XB_SYSROOT231.
xb_mirror() {
  # The Debian archive URI already configured on the machine (not the security one).
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '/^URIs:/{for(i=2;i<=NF;i++) if ($i !~ /security/) {print $i; exit}}' "$f")
    [ -n "$uri" ] && { printf '%s\n' "$uri"; return 0; }
  done
  uri=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$uri" ] || xb_die "no Debian mirror found in /etc/apt/sources.list*"
  printf '%s\n' "$uri"
}

xb_ensure_sysroot231() {
  XB_SYSROOT231=$XB_TARGET/sysroot-bullseye-$XB_DEBARCH
  [ -f "$XB_SYSROOT231/.ok" ] && return 0
  xb_ensure_packages mmdebstrap
  local mirror
  mirror=$(xb_mirror)
  rm -rf "$XB_SYSROOT231"
  xb_log "building the glibc 2.31 sysroot $XB_SYSROOT231 from bullseye ($mirror)"
  # extract = unpack only, no maintainer scripts, so no emulation is needed and the host apt is untouched.
  mmdebstrap --quiet --variant=extract --architectures="$XB_DEBARCH" \
    --include=libc6-dev,libgcc-s1,linux-libc-dev bullseye "$XB_SYSROOT231" "deb $mirror bullseye main" >&2 ||
    xb_die "mmdebstrap of bullseye failed (is bullseye still on the mirror?)"
  # F8: bullseye's libpthread.so, libm.so, ... are absolute symlinks that dangle outside the sysroot, so
  # ld would silently fall back to the static archives. Point them into the sysroot.
  local l
  while IFS= read -r l; do
    ln -sfn "$XB_SYSROOT231$(readlink "$l")" "$l"
  done < <(find "$XB_SYSROOT231" -type l -lname '/*')
  [ -f "$XB_SYSROOT231/usr/lib/$XB_GNU/libc.so" ] || xb_die "sysroot has no libc.so"
  touch "$XB_SYSROOT231/.ok"
}

# ---------------------------------------------------------------------------------------------------------
# xb_setup ARCH [231]: packages, std, optional sysroot, and the cargo environment for ARCH.
# Exports the settings as per-target variables, so host build scripts and proc-macros are unaffected.
xb_setup() {
  local arch=$1 glibc=${2:-}
  xb_arch "$arch"
  xb_ensure_packages "${XB_PACKAGES[@]}"
  xb_ensure_std
  # Global RUSTFLAGS would override the per-target flags (and reach build scripts): keep them out.
  unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS RUSTDOCFLAGS CARGO_ENCODED_RUSTDOCFLAGS CARGO_BUILD_TARGET
  export RUSTC=$XB_RUSTC RUSTDOC=/usr/bin/rustdoc
  local flags="--sysroot=$XB_XSTD" runner="$XB_QEMU -L $XB_LDPREFIX"
  XB_GLIBC_CEIL=2.34
  XB_TARGET_DIR=$XB_TARGET/cross
  if [ "$glibc" = 231 ]; then
    xb_ensure_sysroot231
    local b=$XB_SYSROOT231 m=$XB_GNU
    # F8: --sysroot alone is not enough, the cross gcc searches its own 2.36 lib dir first: -B/-L too.
    flags+=" -C link-arg=--sysroot=$b -C link-arg=-B$b/usr/lib/$m -C link-arg=-L$b/usr/lib/$m -C link-arg=-L$b/lib/$m"
    runner="$XB_QEMU -L $b"   # tests then run against glibc 2.31 itself
    XB_GLIBC_CEIL=2.31
    XB_TARGET_DIR=$XB_TARGET/cross-glibc231
  fi
  export "CARGO_TARGET_${XB_TVAR}_LINKER=$XB_GNU-gcc"
  export "CARGO_TARGET_${XB_TVAR}_RUSTFLAGS=$flags"
  # F6: doctests are compiled by rustdoc, which needs the same private std.
  export "CARGO_TARGET_${XB_TVAR}_RUSTDOCFLAGS=--sysroot=$XB_XSTD"
  export "CARGO_TARGET_${XB_TVAR}_RUNNER=$runner"
  # Debian-rustc artefacts stay apart from rustup's target/debug and target/release.
  export CARGO_TARGET_DIR=$XB_TARGET_DIR
  # Debug builds for the boards are run under emulation, where every instruction costs ~10x: the crate's own
  # code at opt-level 1 (dependencies are at 2 already, Cargo.toml) roughly halves the suite under qemu-user,
  # and line tables keep backtraces readable while the ~20 test binaries link faster. Overflow checks and
  # debug assertions stay on. Set either variable to override.
  export CARGO_PROFILE_DEV_OPT_LEVEL=${CARGO_PROFILE_DEV_OPT_LEVEL:-1}
  export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}
}

# Cargo features for ARCH's boards: the union of `features = [...]` of every board/*.toml with that target.
# Only the simple one-line form is read; an empty union means the default features.
xb_board_features() {
  local f t feats=()
  for f in "$XB_ROOT"/board/*.toml; do
    [ -f "$f" ] || continue
    t=$(sed -n 's/^target *= *"\(.*\)".*/\1/p' "$f" | head -n1)
    [ "$t" = "$XB_TRIPLE" ] || continue
    mapfile -t -O "${#feats[@]}" feats < <(sed -n 's/^features *= *\[\(.*\)\].*/\1/p' "$f" | tr ',' '\n' |
      tr -d ' "' | grep -v '^$' || true)
  done
  [ ${#feats[@]} -eq 0 ] && return 0
  printf '%s\n' "${feats[@]}" | sort -u | paste -sd, -
}

# xb_litert: the aarch64 TFLite C-API library (libLiteRtRuntimeCApi.so from the ai-edge-litert wheel on PyPI,
# Apache-2.0), downloaded once into target/litert/<version>; sets XB_LITERT_LIB. The `tflite` tests need it on
# every architecture but x86_64 (tests/tflite.rs), so the qemu-user suite and scripts/tflite-qemu-test.sh use it.
XB_LITERT_VERSION=1.4.0
xb_litert() {
  local dir=$XB_TARGET/litert/$XB_LITERT_VERSION whl f
  local lib=$dir/libLiteRtRuntimeCApi.so
  if [ ! -s "$lib" ]; then
    mkdir -p "$dir"
    xb_log "downloading ai-edge-litert $XB_LITERT_VERSION (manylinux_2_17_aarch64) from PyPI"
    python3 -m pip download --quiet --disable-pip-version-check "ai-edge-litert==$XB_LITERT_VERSION" --no-deps \
      --only-binary=:all: --platform manylinux_2_17_aarch64 --python-version 3.11 -d "$dir" ||
      xb_die "pip download of ai-edge-litert $XB_LITERT_VERSION failed"
    whl=""
    for f in "$dir"/ai_edge_litert-"$XB_LITERT_VERSION"-*.whl; do [ -f "$f" ] && { whl=$f; break; }; done
    [ -n "$whl" ] || xb_die "no wheel in $dir"
    python3 - "$whl" "$lib" <<'EOF' || xb_die "cannot extract libLiteRtRuntimeCApi.so from $whl"
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.endswith("/libLiteRtRuntimeCApi.so")]
    if not names:
        sys.exit("libLiteRtRuntimeCApi.so not in the wheel")
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        dst.write(src.read())
import os
os.replace(out + ".part", out)
EOF
  fi
  XB_LITERT_LIB=$lib
}

# xb_features_with FEATURE...: the boards' features for the current target plus FEATURE... (comma-separated,
# sorted, no duplicates). Test scripts that need a feature use this instead of their own set, so every script
# for a target shares one compile of the crate with board/cross-build.sh.
xb_features_with() {
  { xb_board_features | tr ',' '\n'; printf '%s\n' "$@"; } | grep -v '^$' | sort -u | paste -sd, -
}

# Highest GLIBC_x.y symbol version an ELF file needs (objdump -T of the cross binutils), or "none".
xb_glibc_max() {
  local v
  v=$("$XB_GNU-objdump" -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)
  printf '%s\n' "${v:-none}"
}

# True if version $1 <= $2.
xb_version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }
