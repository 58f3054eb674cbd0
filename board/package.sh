#!/usr/bin/env bash
# Builds the Debian packages of ember-edge for the boards and a signed apt repository holding them:
#   board/package.sh [--release] [--no-build] [--revision N] [--out DIR] [--suite NAME] [--key FILE]
#                    [--passphrase-file FILE] [--no-repo] arm64|armhf|all
# Cross-builds first with board/cross-build.sh (a no-op when up to date; --no-build skips it), then
# assembles DIR/ember-edge_<version>-<N>_<arch>.deb with dpkg-deb (DIR: --out, default target/deb; N:
# --revision, default 1). Why dpkg-deb and not cargo-deb: see board/README.md ("Packages").
#
# Then (unless --no-repo) the apt repository DIR/apt: the .deb is added to pool/main/e/ember-edge/ (older
# versions stay, so boards can upgrade and roll back), dists/<suite>/main/binary-<arch>/Packages(.gz) are
# regenerated for every architecture in the pool (apt-ftparchive), then dists/<suite>/Release and its
# signatures InRelease (clear-signed) and Release.gpg (detached), and the public key as a binary keyring
# DIR/apt/ember-edge-archive.gpg (what a board's `signed-by=` points at). Suite: --suite, default `stable`.
# The key: --key FILE, an exported secret key (`gpg --export-secret-keys`; --passphrase-file if it has one),
# imported into a temporary GNUPGHOME that is deleted afterwards; without --key a throwaway test key
# (ed25519, expires in 7 days) is generated there, so each such run signs with a new key: fine for CI and
# tests, never for a fleet (board/README.md, "Fleet repository").
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

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

profile=debug build=1 debarches=() revision=1 out="" suite=stable key="" passfile="" repo=1
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --no-build) build=0 ;;
    --no-repo) repo=0 ;;
    --revision | --out | --suite | --key | --passphrase-file)
      [ $# -ge 2 ] || usage
      case "$1" in
        --revision) revision=$2 ;;
        --out) out=$2 ;;
        --suite) suite=$2 ;;
        --key) key=$2 ;;
        --passphrase-file) passfile=$2 ;;
      esac
      shift ;;
    arm64 | armhf) debarches+=("$1") ;;
    all) debarches+=(arm64 armhf) ;;
    *) usage ;;
  esac
  shift
done
[ ${#debarches[@]} -gt 0 ] || usage
# Debian revision: digits (a dot allowed), so versions sort as numbers (1 < 2 < 10).
[[ "$revision" =~ ^[0-9]+(\.[0-9]+)*$ ]] || xb_die "--revision: '$revision' is not a number like 2 or 2.1"
# The suite is a directory name and a Release field: no slashes or spaces.
[[ "$suite" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || xb_die "--suite: '$suite' is not a plain name"
# Relative paths are meant from where the script was called, before the cd below.
[ -z "$out" ] || out=$(mkdir -p "$out" && cd "$out" && pwd)
[ -z "$key" ] || { [ -r "$key" ] || xb_die "--key: cannot read $key"; key=$(cd "$(dirname "$key")" && pwd)/$(basename "$key"); }
[ -z "$passfile" ] || { [ -r "$passfile" ] || xb_die "--passphrase-file: cannot read $passfile"; passfile=$(cd "$(dirname "$passfile")" && pwd)/$(basename "$passfile"); }
[ "$repo" = 1 ] && xb_ensure_packages apt-utils gnupg

cd "$XB_ROOT"
DEB=$XB_ROOT/board/deb
OUT=${out:-$XB_TARGET/deb}
mkdir -p "$OUT"
version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$version" ] || xb_die "no version in Cargo.toml"
debversion=$version-$revision
debs=()

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
  debs+=("$deb")
done
[ "$repo" = 1 ] || exit 0

# ---------------------------------------------------------------------------------------------------------
# The signed apt repository.
REPO=$OUT/apt
pool=$REPO/pool/main/e/ember-edge
mkdir -p "$pool"
for deb in "${debs[@]}"; do
  install -m 0644 "$deb" "$pool/"
done

# Private keyring for this run only: nothing lands in root's ~/.gnupg, and a secret key given with --key
# exists unpacked only while the script runs. A short /tmp path keeps gpg-agent's socket path under its limit.
GNUPGHOME=$(mktemp -d /tmp/ember-gpg.XXXXXX)
export GNUPGHOME
chmod 0700 "$GNUPGHOME"
cleanup_gpg() { gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$GNUPGHOME"; }
trap cleanup_gpg EXIT
gpg_batch=(gpg --batch --quiet --no-tty --trust-model always)
if [ -n "$passfile" ]; then
  gpg_batch+=(--pinentry-mode loopback --passphrase-file "$passfile")
else
  gpg_batch+=(--pinentry-mode loopback --passphrase "")
fi
if [ -n "$key" ]; then
  "${gpg_batch[@]}" --import "$key" 2>/dev/null || xb_die "--key: gpg cannot import $key"
  keynote="key from $key"
else
  "${gpg_batch[@]}" --quick-generate-key "ember-edge throwaway test archive key <ember-edge@localhost>" \
    ed25519 sign 7d || xb_die "gpg could not generate the test key"
  keynote="THROWAWAY TEST KEY (pass --key for a fleet)"
fi
# The first secret key that can sign (field 12 of the `sec` line holds its capabilities).
fpr=$(gpg --batch --trust-model always --with-colons --list-secret-keys | awk -F: '
  $1 == "sec" { want = ($12 ~ /[sS]/) && $2 != "r" && $2 != "e"; next }
  $1 == "fpr" && want { print $10; exit }')
[ -n "$fpr" ] || xb_die "no usable signing key (expired, revoked or without the sign capability) in ${key:-the test keyring}"

cd "$REPO"
dist=dists/$suite
# One suite per repository folder: every suite here would list the whole pool, and an older suite's
# signature would go stale once this run exports another key.
for d in dists/*/; do
  [ -d "$d" ] || continue
  d=${d#dists/} d=${d%/}
  [ "$d" = "$suite" ] || xb_die "$REPO already holds suite '$d'; use another --out for suite '$suite'"
done
# Regenerated from the pool, not appended: the indices always describe exactly the files that are there.
rm -rf "$dist"
archs=()
mapfile -t archs < <(find pool -name '*.deb' -printf '%f\n' | sed -n 's/.*_\([a-z0-9]*\)\.deb$/\1/p' | sort -u)
[ ${#archs[@]} -gt 0 ] || xb_die "no .deb in $REPO/pool"
for a in "${archs[@]}"; do
  mkdir -p "$dist/main/binary-$a"
  # Paths in Packages are relative to the repository root (the `Filename:` field apt fetches).
  apt-ftparchive --arch "$a" packages pool/main >"$dist/main/binary-$a/Packages" ||
    xb_die "apt-ftparchive packages failed for $a"
  gzip -9n -k -f "$dist/main/binary-$a/Packages"
done
# Release lists the SHA256 (and MD5/SHA1/SHA512) of every index; InRelease/Release.gpg sign it, so one
# signature check covers every Packages file and, through them, every .deb's size and SHA256.
apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=ember-edge \
  -o APT::FTPArchive::Release::Label=ember-edge \
  -o "APT::FTPArchive::Release::Suite=$suite" \
  -o "APT::FTPArchive::Release::Codename=$suite" \
  -o "APT::FTPArchive::Release::Architectures=${archs[*]}" \
  -o APT::FTPArchive::Release::Components=main \
  -o "APT::FTPArchive::Release::Description=ember-edge fire-detection appliance packages" \
  release "$dist" >"$dist/Release.part" || xb_die "apt-ftparchive release failed"
mv "$dist/Release.part" "$dist/Release"
"${gpg_batch[@]}" --local-user "$fpr" --digest-algo SHA512 --clearsign -o "$dist/InRelease" "$dist/Release" ||
  xb_die "gpg could not sign $dist/Release"
"${gpg_batch[@]}" --local-user "$fpr" --digest-algo SHA512 --detach-sign -o "$dist/Release.gpg" "$dist/Release" ||
  xb_die "gpg could not sign $dist/Release"
# Binary keyring (not ASCII armour): apt's signed-by= takes it as is under /usr/share/keyrings/ or /etc/apt/keyrings/.
gpg --batch --export "$fpr" >ember-edge-archive.gpg.part && mv ember-edge-archive.gpg.part ember-edge-archive.gpg
# Check what was written with gpgv and only the exported key, as apt will.
gpgv --keyring "$REPO/ember-edge-archive.gpg" "$dist/InRelease" 2>/dev/null ||
  xb_die "InRelease does not verify with the exported key"
printf '%s  suite %s, %s, signed by %s (%s)\n' "${REPO#"$XB_ROOT"/}" "$suite" "${archs[*]}" "$fpr" "$keynote"
