#!/usr/bin/env bash
# Installs the arm64 package through apt from the signed repository board/package.sh writes, into a Debian
# bookworm arm64 root (mmdebstrap minbase, run under qemu-user), and checks what the package and the
# repository promise:
#   board/verify-deb.sh [--release]      (packages what board/cross-build.sh [--release] aarch64 built)
# 0. a test archive key (made here, exported as a secret-key file) signs a repository with revision 1 of
#    the package (package.sh --key ... --revision 1); the root gets its public key and a
#    `deb [signed-by=...] file:/srv/... stable main` source, nothing else (no mirror: the run stays offline);
# 1. apt-get install ember-edge (maintainer scripts run under qemu-aarch64-static): user ember-edge in groups
#    video, gpio, dialout; gpio group created; spool dir owned by the user; conffile registered;
# 2. the installed binary runs (--version) and accepts the installed config (check-config: the v4l2 feature
#    is in) and runs it for 3 s as the service user (which writes the event log);
# 3. systemd-analyze verify of the installed unit (host systemd; warnings count as failures);
# 4. upgrade: revision 2 is added to the repository, `apt-get upgrade` installs it, and the locally edited
#    /etc/ember-edge/ember-edge.toml, every file of the spool and the event log are unchanged; the new binary
#    reads the old event log and appends to it;
# 5. refusal: the same repository signed with another key (a throwaway one) is refused by `apt-get update`,
#    and a .deb whose bytes were changed after Packages was written is refused by apt (hash mismatch); the
#    installed revision stays 2 in both cases;
# 6. apt-get install --reinstall (postinst idempotent) and dpkg --purge (spool and conffile gone, user kept).
# Every check prints PASS or FAIL; any FAIL exits non-zero.
# The rootfs tarball is cached as target/deb-verify/bookworm-arm64-minbase.tar (delete it to rebuild).
# Needs root (chroot, binfmt_misc). A temporary binfmt entry with the F flag (interpreter opened at
# registration, so it works inside the chroot) is registered for the run and removed on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/cross-env.sh
. "$(dirname "$0")/lib/cross-env.sh"

release=()
case "${1:-}" in
  "") ;;
  --release) release=(--release) ;;
  *) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || xb_die "run as root (chroot, binfmt_misc)"
cd "$XB_ROOT"
profile=debug
[ ${#release[@]} = 0 ] || profile=release
xb_arch aarch64
[ -x "$XB_TARGET/cross/$XB_TRIPLE/$profile/board/ember-edge" ] ||
  xb_die "no $profile aarch64 build (run board/cross-build.sh ${release[*]} aarch64 first)"

xb_ensure_packages mmdebstrap arch-test qemu-user-static systemd apt-utils gnupg
WORK=$XB_TARGET/deb-verify
TARBALL=$WORK/bookworm-arm64-minbase.tar
mkdir -p "$WORK"

BINFMT=/proc/sys/fs/binfmt_misc
ENTRY=ember-deb-qemu-aarch64
root="" keyhome=""
cleanup() {
  [ -n "$root" ] && { umount "$root/proc" 2>/dev/null || true; rm -rf "$root"; }
  [ -n "$keyhome" ] && { GNUPGHOME=$keyhome gpgconf --kill all >/dev/null 2>&1 || true; rm -rf "$keyhome"; }
  [ -e "$BINFMT/$ENTRY" ] && echo -1 >"$BINFMT/$ENTRY"
  return 0
}
trap cleanup EXIT
[ -e "$BINFMT/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT"
[ -e "$BINFMT/$ENTRY" ] && echo -1 >"$BINFMT/$ENTRY"
# Same magic/mask as Debian's qemu-user-binfmt for aarch64; registered last, so it is matched first.
printf ':%s:M::%s:%s:%s:F\n' "$ENTRY" \
  '\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' \
  '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' \
  /usr/bin/qemu-aarch64-static >"$BINFMT/register"

if [ ! -s "$TARBALL" ]; then
  mirror=$(xb_mirror)
  xb_log "building the bookworm arm64 minbase root with mmdebstrap ($mirror)"
  mmdebstrap --quiet --variant=minbase --architectures=arm64 --format=tar bookworm "$TARBALL.part" \
    "deb $mirror bookworm main" || xb_die "mmdebstrap failed"
  mv "$TARBALL.part" "$TARBALL"
fi
root=$(mktemp -d "$WORK/root.XXXXXX")
tar -C "$root" -xf "$TARBALL"
# mktemp made it 0700; as the root's "/" it must let apt's sandbox user _apt through to /srv.
chmod 0755 "$root"
mount -t proc proc "$root/proc"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
fails=0
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then
    printf 'PASS  %s\n' "$what"
  else
    printf 'FAIL  %s\n' "$what"
    fails=$((fails + 1))
  fi
}
# apt_log NAME ARGS...: apt-get in the root; the whole output is kept in $WORK/apt-NAME.log, its errors and
# warnings are indented into this log (check() hides them; the refusal steps call it directly to show why).
apt_log() {
  local name=$1 rc=0
  shift
  in_root DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0 "$@" </dev/null >"$WORK/apt-$name.log" 2>&1 || rc=$?
  grep -E '^(E|W|Err):' "$WORK/apt-$name.log" | sed "s/^/      apt $name: /" || true
  return "$rc"
}
pkgver=$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
installed() { # shellcheck disable=SC2016  # ${...} is dpkg-query's format, not the shell's
  in_root dpkg-query -W -f '${db:Status-Abbrev}${Version}' ember-edge 2>/dev/null || true
}

# The archive key a fleet would keep offline, made here for the run and handed to package.sh as a file,
# exactly as --key is used for real.
keyhome=$(mktemp -d /tmp/ember-verify-gpg.XXXXXX)
chmod 0700 "$keyhome"
GNUPGHOME=$keyhome gpg --batch --quiet --pinentry-mode loopback --passphrase "" \
  --quick-generate-key "ember-edge verify-deb archive key <ember-edge@localhost>" ed25519 sign 1d ||
  xb_die "gpg could not make the test archive key"
GNUPGHOME=$keyhome gpg --batch --quiet --pinentry-mode loopback --passphrase "" --export-secret-keys \
  >"$keyhome/archive.sec"
# package.sh ARGS...: the arm64 package of the cross build into the repository ARGS name.
package() { "$XB_ROOT/board/package.sh" --no-build "${release[@]}" "$@" arm64 | sed 's/^/      package.sh: /'; }
REPO_GOOD=/srv/ember-good REPO_OTHER=/srv/ember-other
source_list=$root/etc/apt/sources.list.d/ember-edge.list
use_repo() { # use_repo PATH-IN-ROOT: the board's only apt source
  printf 'deb [signed-by=/usr/share/keyrings/ember-edge-archive.gpg] file:%s/apt stable main\n' "$1" >"$source_list"
}

xb_log "repository with revision 1, signed with the test archive key; apt-get install in the arm64 root"
package --revision 1 --key "$keyhome/archive.sec" --out "$root$REPO_GOOD"
# The Debian mirror source from mmdebstrap goes: the package's dependencies are all in minbase, and
# Recommends (systemd, udev) are left out below, so the run needs no network and nothing but this repository.
rm -f "$root/etc/apt/sources.list" "$root"/etc/apt/sources.list.d/*
install -m 0644 "$root$REPO_GOOD/apt/ember-edge-archive.gpg" "$root/usr/share/keyrings/ember-edge-archive.gpg"
use_repo "$REPO_GOOD"
check "apt-get update from the signed repository" apt_log update1 update
check "apt-get install ember-edge from the repository" apt_log install install --no-install-recommends ember-edge
status=$(installed)
check "package installed through apt, revision 1 (status '$status')" test "$status" = "ii $pkgver-1"
passwd=$(in_root getent passwd ember-edge || true)
printf '      passwd: %s\n' "$passwd"
check "system user ember-edge, no login shell, home /var/lib/ember-edge" \
  sh -c "case '$passwd' in ember-edge:x:*:*:*:/var/lib/ember-edge:/usr/sbin/nologin) exit 0;; *) exit 1;; esac"
uid=$(printf '%s' "$passwd" | cut -d: -f3)
check "uid $uid is a system uid (< 1000)" test "${uid:-9999}" -lt 1000
groups=$(in_root id -nG ember-edge || true)
printf '      groups: %s\n' "$groups"
for g in video gpio dialout; do
  check "ember-edge is in group $g" sh -c "printf ' %s ' '$groups' | grep -q ' $g '"
done
check "group gpio exists (created by postinst)" in_root getent group gpio
check "/usr/bin/ember-edge is an executable aarch64 ELF" \
  sh -c "[ -x '$root/usr/bin/ember-edge' ] && file -b '$root/usr/bin/ember-edge' | grep -q 'ARM aarch64'"
for f in /etc/ember-edge/ember-edge.toml /lib/systemd/system/ember-edge.service /lib/udev/rules.d/60-ember-edge.rules \
  /usr/share/ember-edge/boards/rpi4.toml /usr/share/doc/ember-edge/README.md \
  /usr/lib/ember-edge/libLiteRtRuntimeCApi.so /usr/share/ember-edge/fire-int8.tflite /usr/share/doc/ember-edge/MODEL.md; do
  check "$f installed" test -f "$root$f"
done
check "conffile registered" sh -c "chroot '$root' dpkg-query -W -f '\${Conffiles}' ember-edge | grep -q /etc/ember-edge/ember-edge.toml"
# stat inside the root: names come from its passwd, not the host's.
spool=$(in_root stat -c '%U:%G %a' /var/lib/ember-edge/spool 2>/dev/null || echo missing)
printf '      spool: %s\n' "$spool"
check "spool /var/lib/ember-edge/spool owned by ember-edge, mode 750" test "$spool" = "ember-edge:ember-edge 750"
version=$(in_root /usr/bin/ember-edge --version 2>&1 || true)
printf '      --version: %s\n' "$version"
check "binary runs in the arm64 root" test -n "$version"
check "installed config passes check-config (v4l2 feature present)" \
  in_root /usr/bin/ember-edge check-config /etc/ember-edge/ember-edge.toml
in_root /usr/bin/ember-edge check-config /etc/ember-edge/ember-edge.toml || true
# `detector = "model"` works after install: the shipped runtime loads the shipped model at [model]'s default paths.
check "the shipped CNN runtime loads the shipped model (model check)" \
  in_root /usr/bin/ember-edge model check --library /usr/lib/ember-edge/libLiteRtRuntimeCApi.so \
  --model /usr/share/ember-edge/fire-int8.tflite
# The service user can run the installed config: spool writable, ports bindable, missing camera survived.
run_log=$WORK/run.log
rc=0
chroot --userspec=ember-edge:ember-edge "$root" /usr/bin/env -i PATH=/usr/bin:/bin RUST_LOG=info \
  /usr/bin/ember-edge run --config /etc/ember-edge/ember-edge.toml --duration 3 >"$run_log" 2>&1 || rc=$?
sed 's/^/      run: /' "$run_log" | head -n 20
check "ember-edge runs the installed config as the service user for 3 s (exit $rc)" test "$rc" = 0

xb_log "systemd-analyze verify (host systemd $(systemd-analyze --version | head -n1 | awk '{print $2}'))"
verify_out=$WORK/verify.log
# verify resolves ExecStart on the host and wants the default units (sysinit.target, ...) that a minbase root
# lacks, so the installed unit is checked from a copy whose ExecStart points into the root. It exits 0 even
# for lines it ignores ("Failed to parse ..., ignoring"), so any output about the unit counts as a failure.
unit_dir=$(mktemp -d)
sed "s|/usr/bin/ember-edge|$root/usr/bin/ember-edge|" "$root/lib/systemd/system/ember-edge.service" \
  >"$unit_dir/ember-edge.service"
rc=0
systemd-analyze verify "$unit_dir/ember-edge.service" >"$verify_out" 2>&1 || rc=$?
if [ "$rc" = 0 ] && ! grep -q 'ember-edge.service' "$verify_out"; then
  printf 'PASS  systemd-analyze verify ember-edge.service (no warnings)\n'
else
  printf 'FAIL  systemd-analyze verify ember-edge.service (exit %s)\n' "$rc"
  fails=$((fails + 1))
fi
sed 's/^/      verify: /' "$verify_out"
security=$(systemd-analyze security --offline=true "$unit_dir/ember-edge.service" 2>/dev/null | grep 'Overall exposure' || true)
[ -n "$security" ] && printf '      security: %s\n' "$security"
rm -rf "$unit_dir"

xb_log "upgrade to revision 2 through apt: local config edit, spool and event log kept"
conf=/etc/ember-edge/ember-edge.toml
# The site's edit: the uplink on, to a control room that is down (nothing listens on the discard port), so
# the run below leaves real spool state behind, not just the marker.
sed -i 's|^enabled = false|# verify-deb: a local edit that an upgrade must keep\nenabled = true\nserver = "127.0.0.1:9"|' "$root$conf"
conf_sum=$(md5sum <"$root$conf")
check "the local edit is in place (uplink on)" grep -q '^server = "127.0.0.1:9"' "$root$conf"
rc=0
chroot --userspec=ember-edge:ember-edge "$root" /usr/bin/env -i PATH=/usr/bin:/bin \
  /usr/bin/ember-edge run --config "$conf" --duration 3 >"$WORK/run1b.log" 2>&1 || rc=$?
check "the edited config runs as the service user with the uplink down (exit $rc)" test "$rc" = 0
# Marker files beside what the 3 s run left there, then the checksum of every file under /var/lib/ember-edge.
in_root sh -c 'echo spool-marker >/var/lib/ember-edge/spool/verify-deb-marker; echo events-marker >/var/lib/ember-edge/events/verify-deb-marker; chown ember-edge:ember-edge /var/lib/ember-edge/spool/verify-deb-marker /var/lib/ember-edge/events/verify-deb-marker'
state_before=$WORK/state-before.md5
(cd "$root" && find var/lib/ember-edge -type f -print0 | sort -z | xargs -0 md5sum) >"$state_before"
printf '      state: %s files under /var/lib/ember-edge: %s\n' "$(wc -l <"$state_before")" \
  "$(awk '{sub("^var/lib/ember-edge/", "", $2); printf "%s ", $2}' "$state_before")"
events_before=$WORK/events-before.json
in_root /usr/bin/ember-edge events --json >"$events_before" 2>&1 || true
printf '      event log: %s events before the upgrade\n' "$(wc -l <"$events_before")"
check "the event log has events before the upgrade" test -s "$events_before"
package --revision 2 --key "$keyhome/archive.sec" --out "$root$REPO_GOOD"
check "apt-get update sees revision 2" apt_log update2 update
check "apt-get upgrade" apt_log upgrade upgrade
status=$(installed)
check "upgraded to revision 2 (status '$status')" test "$status" = "ii $pkgver-2"
check "locally edited $conf kept as it was" test "$(md5sum <"$root$conf")" = "$conf_sum"
check "every spool and event-log file unchanged by the upgrade" \
  sh -c "cd '$root' && md5sum --quiet -c '$state_before'"
check "spool owner/mode kept" test "$(in_root stat -c '%U:%G %a' /var/lib/ember-edge/spool 2>/dev/null)" = "ember-edge:ember-edge 750"
events_after=$WORK/events-after.json
in_root /usr/bin/ember-edge events --json >"$events_after" 2>&1 || true
check "the upgraded binary reads the same event log" cmp -s "$events_before" "$events_after"
rc=0
chroot --userspec=ember-edge:ember-edge "$root" /usr/bin/env -i PATH=/usr/bin:/bin \
  /usr/bin/ember-edge run --config "$conf" --duration 3 >"$WORK/run2.log" 2>&1 || rc=$?
check "the upgraded binary runs the kept config as the service user (exit $rc)" test "$rc" = 0
in_root /usr/bin/ember-edge events --json >"$events_after" 2>&1 || true
printf '      event log: %s events after a run of the upgraded binary\n' "$(wc -l <"$events_after")"
check "the upgraded binary appends to the old event log (old events first, then new ones)" \
  sh -c "[ \$(wc -l <'$events_after') -gt \$(wc -l <'$events_before') ] && head -n \$(wc -l <'$events_before') '$events_after' | cmp -s - '$events_before'"

xb_log "refusal: the repository signed with another key"
# A throwaway key (package.sh without --key): the board's signed-by keyring does not hold it.
package --revision 3 --out "$root$REPO_OTHER"
use_repo "$REPO_OTHER"
rc=0
apt_log update-other update || rc=$?
check "apt-get update refuses the repository signed with another key (exit $rc)" test "$rc" != 0
check "apt names the signature problem (NO_PUBKEY / not signed)" \
  grep -q -e NO_PUBKEY -e 'is not signed' -e "couldn't be verified" "$WORK/apt-update-other.log"
rc=0
apt_log install-other install --no-install-recommends "ember-edge=$pkgver-3" || rc=$?
status=$(installed)
check "revision 3 from that repository not installable, revision 2 stays (status '$status')" \
  sh -c "[ $rc != 0 ] && [ '$status' = 'ii $pkgver-2' ]"

xb_log "refusal: a .deb changed after its Packages entry was written"
use_repo "$REPO_GOOD"
package --revision 3 --key "$keyhome/archive.sec" --out "$root$REPO_GOOD"
pooled=$root$REPO_GOOD/apt/pool/main/e/ember-edge/ember-edge_${pkgver}-3_arm64.deb
size=$(stat -c %s "$pooled")
# Same size, 16 bytes in the middle inverted: only the hashes can tell.
python3 - "$pooled" <<'PY'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    data = bytearray(f.read())
    mid = len(data) // 2
    data[mid:mid + 16] = bytes(b ^ 0xFF for b in data[mid:mid + 16])
    f.seek(0)
    f.write(data)
PY
check "tampered .deb has the size Packages lists ($size bytes)" test "$(stat -c %s "$pooled")" = "$size"
check "apt-get update (the indices themselves are intact and signed)" apt_log update3 update
rc=0
apt_log install-tampered install --no-install-recommends ember-edge || rc=$?
check "apt refuses the tampered .deb (exit $rc)" test "$rc" != 0
check "apt reports a hash mismatch" grep -q -i -e 'hash sum mismatch' -e 'hashes of expected file' "$WORK/apt-install-tampered.log"
status=$(installed)
check "revision 2 stays installed (status '$status')" test "$status" = "ii $pkgver-2"

xb_log "reinstall through apt and purge"
check "apt-get install --reinstall (postinst idempotent)" apt_log reinstall install --reinstall --no-install-recommends "ember-edge=$pkgver-2"
check "dpkg --purge" in_root dpkg --purge ember-edge
check "purge removed the spool and the conffile" \
  sh -c "[ ! -e '$root/var/lib/ember-edge' ] && [ ! -e '$root/etc/ember-edge/ember-edge.toml' ]"
check "purge kept the ember-edge user" in_root getent passwd ember-edge

[ "$fails" = 0 ] || xb_die "$fails check(s) failed"
xb_log "all checks passed"
