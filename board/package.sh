#!/usr/bin/env bash
# Builds the Debian packages of ember-edge for the boards:
#   board/package.sh [--release] [--no-build] arm64|armhf|all
# Cross-builds first with board/cross-build.sh (a no-op when up to date; --no-build skips it), then
# assembles target/deb/ember-edge_<version>-1_<arch>.deb with dpkg-deb. Why dpkg-deb and not cargo-deb:
# see board/README.md ("Packages").
#
# Contents: /usr/bin/ember-edge (the board features, see board/*.toml; not ember-tools, the development
# binary), /etc/ember-edge/ember-edge.toml (conffile, from board/deb/ember-edge.toml),
# /lib/systemd/system/ember-edge.service,
# /lib/udev/rules.d/60-ember-edge.rules, /usr/share/ember-edge/boards/*.toml, /usr/share/doc/ember-edge/,
# on arm64 the CNN's runtime /usr/lib/ember-edge/libLiteRtRuntimeCApi.so (ai-edge-litert wheel, Apache-2.0) and
# model /usr/share/ember-edge/fire-int8.tflite (the paths [model] defaults to, so `detector = "model"` works
# after `apt install`; there is no 32-bit ARM wheel, so armhf has neither), and maintainer scripts that create the ember-edge user (groups video, gpio, dialout) and the spool.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/cross-env.sh
. "$(dirname "$0")/lib/cross-env.sh"

usage() { sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

profile=debug build=1 debarches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --no-build) build=0 ;;
    arm64 | armhf) debarches+=("$1") ;;
    all) debarches+=(arm64 armhf) ;;
    *) usage ;;
  esac
  shift
done
[ ${#debarches[@]} -gt 0 ] || usage

cd "$XB_ROOT"
DEB=$XB_ROOT/board/deb
OUT=$XB_TARGET/deb
mkdir -p "$OUT"
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || xb_die "no version in Cargo.toml"
debversion=$version-1

for debarch in "${debarches[@]}"; do
  case "$debarch" in arm64) arch=aarch64 ;; armhf) arch=armv7 ;; esac
  xb_arch "$arch"
  if [ "$build" = 1 ]; then
    if [ "$profile" = release ]; then
      "$XB_ROOT/board/cross-build.sh" --release "$arch"
    else
      "$XB_ROOT/board/cross-build.sh" "$arch"
    fi
  fi
  # The copy board/cross-build.sh made: the same folder also holds builds with other features (tests).
  bin=$XB_TARGET/cross/$XB_TRIPLE/$profile/board/ember-edge
  [ -x "$bin" ] || xb_die "no $bin (run board/cross-build.sh${profile/debug/} $arch first)"
  glibc=$(xb_glibc_max "$bin")
  [ "$glibc" != none ] || xb_die "$bin: no GLIBC symbol versions (not a glibc binary?)"

  root=$(mktemp -d "$OUT/.root-$debarch.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  chmod 0755 "$root"   # mktemp makes it 0700; it becomes "/" in the archive
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/etc/ember-edge" "$root/lib/systemd/system" \
    "$root/lib/udev/rules.d" "$root/usr/share/ember-edge/boards" "$root/usr/share/doc/ember-edge"
  # Debug builds are not stripped by the profile; a package never ships symbols.
  "$XB_GNU-strip" -o "$root/usr/bin/ember-edge" "$bin"
  chmod 0755 "$root/usr/bin/ember-edge"
  install -m 0644 "$DEB/ember-edge.toml" "$root/etc/ember-edge/ember-edge.toml"
  install -m 0644 "$DEB/ember-edge.service" "$root/lib/systemd/system/ember-edge.service"
  install -m 0644 "$DEB/60-ember-edge.rules" "$root/lib/udev/rules.d/60-ember-edge.rules"
  install -m 0644 board/*.toml "$root/usr/share/ember-edge/boards/"
  install -m 0644 README.md "$root/usr/share/doc/ember-edge/README.md"
  printf 'ember-edge %s\nLicense: MIT OR Apache-2.0\n' "$version" >"$root/usr/share/doc/ember-edge/copyright"
  depends="libc6 (>= $glibc), libgcc-s1, passwd"
  if [ "$arch" = aarch64 ]; then
    xb_litert
    install -d "$root/usr/lib/ember-edge"
    install -m 0644 "$XB_LITERT_LIB" "$root/usr/lib/ember-edge/libLiteRtRuntimeCApi.so"
    install -m 0644 models/fire-int8.tflite "$root/usr/share/ember-edge/fire-int8.tflite"
    # The model's README carries the CC BY 4.0 attribution of its training images, which must travel with it.
    install -m 0644 models/README.md "$root/usr/share/doc/ember-edge/MODEL.md"
    cat "$DEB/copyright-litert" >>"$root/usr/share/doc/ember-edge/copyright"
    sed -i "s/@LITERT_VERSION@/$XB_LITERT_VERSION/" "$root/usr/share/doc/ember-edge/copyright"
    depends="$depends, libstdc++6"
  fi
  install -m 0755 "$DEB/postinst" "$DEB/prerm" "$DEB/postrm" "$root/DEBIAN/"
  echo /etc/ember-edge/ember-edge.toml >"$root/DEBIAN/conffiles"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  size_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat >"$root/DEBIAN/control" <<EOF
Package: ember-edge
Version: $debversion
Architecture: $debarch
Maintainer: ember-edge maintainers <ember-edge@localhost>
Installed-Size: $size_kb
Depends: $depends
Recommends: systemd, udev
Section: misc
Priority: optional
Homepage: https://example.invalid/ember-edge
Description: fire-detection appliance for Raspberry Pi and Jetson boards
 Cameras (V4L2, replay), EmberEye thermal/smoke sensors over TCP and serial,
 multi-source fusion, GPIO alarm outputs with an ack button, and a durable
 uplink to a control room. Runs as the ember-edge system user under systemd.
EOF
  deb=$OUT/ember-edge_${debversion}_$debarch.deb
  # root:root ownership inside the archive without fakeroot.
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
  rm -rf "$root"
  trap - EXIT
  printf '%s  %s KiB  (%s %s, libc6 >= %s)\n' "${deb#"$XB_ROOT"/}" "$(($(stat -c %s "$deb") / 1024))" \
    "$XB_TRIPLE" "$profile" "$glibc"
done
