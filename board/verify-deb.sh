#!/usr/bin/env bash
# Installs the arm64 package into a Debian bookworm arm64 root (mmdebstrap minbase, run under qemu-user)
# and checks what the package promises:
#   board/verify-deb.sh [path/to/ember-edge_*_arm64.deb]     (default: the newest in target/deb/)
# 1. dpkg -i in the chroot (maintainer scripts run under qemu-aarch64-static): user ember-edge in groups
#    video, gpio, dialout; gpio group created; spool dir owned by the user; conffile registered;
# 2. the installed binary runs (--version) and accepts the installed config (check-config: the v4l2 feature
#    is in) and runs it for 3 s as the service user;
# 3. systemd-analyze verify of the installed unit (host systemd; warnings count as failures);
# 4. a second dpkg -i (upgrade path) and dpkg --purge (spool and conffile gone, user kept).
# The rootfs tarball is cached as target/deb-verify/bookworm-arm64-minbase.tar (delete it to rebuild).
# Needs root (chroot, binfmt_misc). A temporary binfmt entry with the F flag (interpreter opened at
# registration, so it works inside the chroot) is registered for the run and removed on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib/cross-env.sh
. "$(dirname "$0")/lib/cross-env.sh"

[ "$(id -u)" = 0 ] || xb_die "run as root (chroot, binfmt_misc)"
cd "$XB_ROOT"
deb=${1:-$(ls -t "$XB_TARGET"/deb/ember-edge_*_arm64.deb 2>/dev/null | head -n1 || true)}
[ -n "$deb" ] && [ -f "$deb" ] || xb_die "no arm64 .deb (run board/package.sh arm64 first)"
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")

xb_ensure_packages mmdebstrap arch-test qemu-user-static systemd
WORK=$XB_TARGET/deb-verify
TARBALL=$WORK/bookworm-arm64-minbase.tar
mkdir -p "$WORK"

BINFMT=/proc/sys/fs/binfmt_misc
ENTRY=ember-deb-qemu-aarch64
root=""
cleanup() {
  [ -n "$root" ] && { umount "$root/proc" 2>/dev/null || true; rm -rf "$root"; }
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
mount -t proc proc "$root/proc"
cp "$deb" "$root/tmp/"
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

xb_log "dpkg -i $(basename "$deb") in the arm64 root"
in_root dpkg -i "/tmp/$(basename "$deb")"
# shellcheck disable=SC2016  # ${...} is dpkg-query's format, not the shell's
status=$(in_root dpkg-query -W -f '${db:Status-Abbrev}' ember-edge || true)
check "package installed (status '$status')" test "$status" = "ii "
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

xb_log "upgrade path (dpkg -i again) and purge"
check "reinstall over itself (postinst idempotent)" in_root dpkg -i "/tmp/$(basename "$deb")"
check "dpkg --purge" in_root dpkg --purge ember-edge
check "purge removed the spool and the conffile" \
  sh -c "[ ! -e '$root/var/lib/ember-edge' ] && [ ! -e '$root/etc/ember-edge/ember-edge.toml' ]"
check "purge kept the ember-edge user" in_root getent passwd ember-edge

[ "$fails" = 0 ] || xb_die "$fails check(s) failed"
xb_log "all checks passed"
