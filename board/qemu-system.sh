#!/usr/bin/env bash
# Whole-system test rig: boots Debian's arm64 kernel under qemu-system-aarch64 (-M virt and/or
# -M raspi3b) with a busybox initramfs that holds vivid (V4L2), gpio-sim/gpio-mockup (built here
# out of tree), a GPIO probe, and the aarch64 test binaries given; parses the console for the
# verdict. See board/qemu/README.md and ../shared/docs/cross-and-qemu.md §6.
#
# usage: board/qemu-system.sh [--tests DIR_OR_LIST] [--tests-json FILE] [--bin PATH]
#                             [--skip NAME]... [--reboot-test NAME] [--power-cut TOOLS] [--machine virt|raspi3b|all]
#                             [--setup-only]
#   --tests       a directory (every aarch64 ELF executable in it) or a comma/space separated
#                 list of executables; each runs as `BIN --include-ignored --test-threads=1 [--skip ..]`
#   --tests-json  output of `cargo test --no-run --message-format=json --target aarch64-unknown-linux-gnu`;
#                 every "executable" in it is added to the tests
#   --bin         an aarch64 build of the application, packed at /opt/ember/bin/ and smoke-run (--version)
#   --skip NAME   libtest filter passed as `--skip NAME` to every test binary (repeatable); the
#                 filters in board/qemu/guest-skips.txt are added unless --no-default-skips
#   --fixtures DIR  fixtures folder packed at the guest path <checkout>/../shared/fixtures, where
#                 tests/common/fixtures.rs looks for the shared sets (default: ../shared/fixtures if
#                 present; only tests/acceptance.rs reads them); --no-fixtures
#   --reboot-test NAME  the test (exact libtest name) that must reset the board through the watchdog: skipped in
#                 the normal runs, run alone last; on virt QEMU then reboots instead of exiting, and the machine
#                 passes only if the second boot reports a watchdog reset (i6300esb bootstatus) after it started
#   --power-cut TOOLS  after the machines, a power-cut run on virt: TOOLS (the aarch64 ember-tools) spools alerts to
#                 an ext4 virtio disk until the host resets the VM from the QEMU monitor (system_reset) at a random
#                 moment; the second boot delivers the spool to a collector; every alert the first boot said was
#                 spooled (fsync'd) must arrive exactly once (QEMU_RIG_CUT_MIN/MAX: the cut's window in s, default 2-6)
#   --cargo-lib   build the crate's lib unit-test binary for aarch64 with board/lib/cross-env.sh
#                 (`cargo test --no-run --lib`) and add it to the tests
#   --machine     default virt; all = virt then raspi3b
# env: QEMU_RIG_TIMEOUT (host timeout per boot, s, default 240), QEMU_RIG_GUEST_TIMEOUT (per test
#      binary inside the guest, s, default 120), QEMU_RIG_KVER (pin a kernel ABI, e.g. 6.1.0-56-arm64)
# exit: 0 if every GUEST-EXIT is 0 and INIT: done appeared on every machine (and the power cut passed); 1 otherwise;
#       2 usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RIG=$ROOT/board/qemu
KMOD_SRC=$ROOT/board/kmod
CACHE=$ROOT/target/qemu          # everything downloaded/built lives here (rebuildable)
HOST_TIMEOUT=${QEMU_RIG_TIMEOUT:-240}
GUEST_TIMEOUT=${QEMU_RIG_GUEST_TIMEOUT:-120}

TESTS=() SKIPS=() BIN="" MACHINE=virt SETUP_ONLY=0 DEFAULT_SKIPS=1 CARGO_LIB=0 REBOOT_TEST="" POWER_CUT=""
FIXTURES=$(cd "$ROOT/.." && pwd)/shared/fixtures; [[ -d $FIXTURES ]] || FIXTURES=""
log() { printf '[qemu-system] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
usage() { sed -n '7,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

add_tests() {  # a directory, or a comma/space separated list of files
    local arg=$1 f
    if [[ -d $arg ]]; then
        for f in "$arg"/*; do
            # only aarch64 ELF executables: cargo's deps/ dir also holds .d files and rlibs
            [[ -f $f && -x $f ]] || continue
            file -b "$f" 2>/dev/null | grep -q 'ELF 64-bit.*ARM aarch64' && TESTS+=("$f")
        done
    else
        for f in ${arg//,/ }; do [[ -f $f ]] || die "no such test binary: $f"; TESTS+=("$f"); done
    fi
}

# Test executables in cargo's JSON messages. Only artifacts built with the test profile: a `--test` build also
# lists the package's binary (built for CARGO_BIN_EXE_*), which is not a test harness.
test_executables() {
    python3 -c 'import json,sys
seen=set()
for line in open(sys.argv[1]):
    try: m=json.loads(line)
    except ValueError: continue
    if m.get("reason")=="compiler-artifact" and m.get("profile",{}).get("test") and m.get("executable") and m["executable"] not in seen:
        seen.add(m["executable"]); print(m["executable"])' "$1"
}

while (($#)); do
    case $1 in
        --tests) add_tests "${2:?}"; shift 2 ;;
        --tests-json)
            [[ -f ${2:?} ]] || die "no such file: $2"
            while read -r f; do [[ -n $f ]] && TESTS+=("$f"); done < <(test_executables "$2")
            shift 2 ;;
        --bin) BIN=${2:?}; [[ -f $BIN ]] || die "no such binary: $BIN"; shift 2 ;;
        --skip) SKIPS+=("${2:?}"); shift 2 ;;
        --reboot-test) REBOOT_TEST=${2:?}; shift 2 ;;
        --power-cut) POWER_CUT=${2:?}; [[ -f $POWER_CUT ]] || die "no such binary: $POWER_CUT"; shift 2 ;;
        --no-default-skips) DEFAULT_SKIPS=0; shift ;;
        --fixtures) FIXTURES=$(cd "${2:?}" && pwd); shift 2 ;;
        --no-fixtures) FIXTURES=""; shift ;;
        --machine) MACHINE=${2:?}; shift 2 ;;
        --setup-only) SETUP_ONLY=1; shift ;;
        --cargo-lib) CARGO_LIB=1; shift ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
case $MACHINE in virt) MACHINES=(virt) ;; raspi3b) MACHINES=(raspi3b) ;; all) MACHINES=(virt raspi3b) ;;
    *) usage ;; esac

T0=$SECONDS
if ((CARGO_LIB)); then
    # the team's cross toolchain setup (Debian rustc-web + private target std); subshell keeps its env out
    [[ -f $ROOT/board/lib/cross-env.sh ]] || die "--cargo-lib needs board/lib/cross-env.sh"
    json=$(mktemp)
    ( cd "$ROOT" && . board/lib/cross-env.sh && xb_setup aarch64 &&
      "$XB_CARGO" test --no-run --locked --lib --target "$XB_TRIPLE" --message-format=json-render-diagnostics
    ) > "$json" || die "cross build of the lib tests failed"
    while read -r f; do [[ -n $f ]] && TESTS+=("$f"); done < <(test_executables "$json")
    rm -f "$json"
    log "cross build took $((SECONDS - T0)) s"
fi
# --------------------------------------------------------------------------------------
# 1. host packages (idempotent: apt only runs when something is missing)
# --------------------------------------------------------------------------------------
apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}
missing=()
for p in qemu-system-arm cpio kmod xz-utils make gcc-aarch64-linux-gnu libc6-dev-arm64-cross file e2fsprogs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
# Only arm64 as a foreign architecture: bookworm-security's armhf index is stale on the mirror (F2).
# Needed only for the arm64 package *index* (apt-get download); nothing arm64 is installed.
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64; need_update=1
fi
apt_update() { apt-get update -q >&2 || log "apt-get update failed (continuing if packages resolve)"; }
((need_update)) && apt_update
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    apt_install "${missing[@]}" || { apt_update; apt_install "${missing[@]}"; }
fi

# --------------------------------------------------------------------------------------
# 2. resolve the kernel ABI at run time (Debian bumps 6.1.0-N), download and unpack
# --------------------------------------------------------------------------------------
resolve_kver() {
    apt-cache depends linux-image-arm64:arm64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/{print $2; exit}' | sed 's/^linux-image-//; s/:arm64$//'
}
KVER=${QEMU_RIG_KVER:-$(resolve_kver)}
# no arm64 index yet (fresh machine, or lists cleaned): refresh once and retry
[[ -n $KVER ]] || { apt_update; KVER=$(resolve_kver); }
if [[ -z $KVER ]]; then
    # offline / no index: fall back to the newest fully built cache
    KVER=$(ls -1 "$CACHE" 2>/dev/null | while read -r d; do [[ -f $CACHE/$d/.ready ]] && echo "$d"; done | sort -V | tail -1)
    [[ -n $KVER ]] || die "cannot resolve linux-image-arm64's kernel version and no cache exists"
    log "could not resolve the kernel from apt; using cached $KVER"
fi
KMM=$(echo "$KVER" | cut -d. -f1,2)            # 6.1 -> linux-kbuild-6.1, linux-source-6.1
KD=$CACHE/$KVER
mkdir -p "$KD/debs"
log "kernel $KVER (cache $KD)"

download() {  # apt-get download into $KD/debs; refresh the index once if the ABI moved under us
    (cd "$KD/debs" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2) ||
        { apt_update; (cd "$KD/debs" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2); }
}

if [[ ! -f $KD/.ready ]]; then
    tset=$SECONDS
    rm -rf "$KD/k" "$KD/bb" "$KD/hdr" "$KD/kbuild" "$KD/extra"
    hdr_common=$(apt-cache depends "linux-headers-$KVER:arm64" 2>/dev/null |
        awk '/Depends: linux-headers-.*-common/{print $2; exit}' | sed 's/:.*//')
    [[ -n $hdr_common ]] || hdr_common=linux-headers-${KVER%-arm64}-common
    ls "$KD"/debs/linux-image-"$KVER"_*.deb >/dev/null 2>&1 ||
        download "linux-image-$KVER:arm64" busybox-static:arm64 "linux-headers-$KVER:arm64" "$hdr_common"
    # never extract into / (F5: the headers carry ./lib/modules and break merged /usr)
    dpkg-deb -x "$KD"/debs/linux-image-"$KVER"_*.deb "$KD/k"
    dpkg-deb -x "$KD"/debs/busybox-static_*.deb "$KD/bb"
    for f in "$KD"/debs/linux-headers-*.deb; do dpkg-deb -x "$f" "$KD/hdr"; done

    # kbuild host tools must match the headers' Debian version (fixdep/modpost are amd64 binaries)
    hver=$(dpkg-deb -f "$KD"/debs/linux-headers-"$KVER"_*.deb Version)
    if [[ $(dpkg-query -W -f='${Version}' "linux-kbuild-$KMM" 2>/dev/null || true) != "$hver" ]]; then
        apt_install "linux-kbuild-$KMM=$hver" || { apt_update; apt_install "linux-kbuild-$KMM=$hver"; }
    fi
    # headers' scripts/tools are relative links to ../../lib/linux-kbuild-X.Y: point them at the host's
    mkdir -p "$KD/hdr/usr/lib"
    ln -sfn "/usr/lib/linux-kbuild-$KMM" "$KD/hdr/usr/lib/linux-kbuild-$KMM"
    # the arch headers' Makefile includes the -common one by absolute /usr/src path: repoint it
    sed -i "s|/usr/src/|$KD/hdr/usr/src/|g" "$KD/hdr/usr/src/linux-headers-$KVER/Makefile"

    # ---- out-of-tree gpio-sim / gpio-mockup / irq_sim (not enabled in Debian's config) ----
    build_kmod() {  # $1 = folder with gpio-sim.c gpio-mockup.c gpiolib.h irq_sim.c
        rm -rf "$KD/kbuild" && mkdir -p "$KD/kbuild"
        cp "$1"/gpio-sim.c "$1"/gpio-mockup.c "$1"/gpiolib.h "$1"/irq_sim.c "$KD/kbuild/"
        # irq_to_desc() is not exported to modules; generic_handle_irq() does the same here
        sed -i 's|handle_simple_irq(irq_to_desc(irqnum));|generic_handle_irq(irqnum);|' "$KD/kbuild/irq_sim.c"
        grep -q '^MODULE_LICENSE' "$KD/kbuild/irq_sim.c" || echo 'MODULE_LICENSE("GPL");' >> "$KD/kbuild/irq_sim.c"
        echo 'obj-m += irq_sim.o gpio-sim.o gpio-mockup.o' > "$KD/kbuild/Kbuild"
        make -s -C "$KD/hdr/usr/src/linux-headers-$KVER" M="$KD/kbuild" ARCH=arm64 \
            CROSS_COMPILE=aarch64-linux-gnu- -j"$(nproc)" modules >&2
    }
    # Sources: board/kmod (GPL-2.0, from linux-source-6.1, see board/kmod/README.md) when they are
    # for this kernel series; otherwise (or if they no longer build) fetch linux-source-X.Y (133 MB).
    if [[ $(cut -d. -f1,2 "$KMOD_SRC/SOURCE_VERSION" 2>/dev/null) == "$KMM" ]] && build_kmod "$KMOD_SRC"; then
        log "gpio-sim/irq_sim/gpio-mockup built from board/kmod"
    else
        log "building gpio modules from linux-source-$KMM"
        download "linux-source-$KMM"
        rm -rf "$KD/lsrc" && mkdir -p "$KD/lsrc"
        dpkg-deb --fsys-tarfile "$KD"/debs/linux-source-"$KMM"_*.deb | tar -xO "./usr/src/linux-source-$KMM.tar.xz" |
            tar -xJ -C "$KD/lsrc" --strip-components=1 --wildcards '*/drivers/gpio/gpio-sim.c' \
                '*/drivers/gpio/gpio-mockup.c' '*/drivers/gpio/gpiolib.h' '*/kernel/irq/irq_sim.c'
        mkdir -p "$KD/lsrc/flat" && cp "$KD"/lsrc/drivers/gpio/{gpio-sim.c,gpio-mockup.c,gpiolib.h} \
            "$KD/lsrc/kernel/irq/irq_sim.c" "$KD/lsrc/flat/"
        build_kmod "$KD/lsrc/flat"
    fi
    # vermagic must equal the kernel's, or insmod refuses the module
    want=$(modinfo -F vermagic "$(find "$KD/k/lib/modules/$KVER" -name 'vivid.ko*' | head -1)" 2>/dev/null ||
        true)
    got=$(modinfo -F vermagic "$KD/kbuild/gpio-sim.ko")
    [[ -z $want || $want == "$got" ]] || die "vermagic mismatch: kernel '$want' vs built '$got'"
    log "vermagic: $got"
    mkdir -p "$KD/k/lib/modules/$KVER/extra"
    cp "$KD"/kbuild/{irq_sim,gpio-sim,gpio-mockup}.ko "$KD/k/lib/modules/$KVER/extra/"
    depmod -b "$KD/k" "$KVER"    # the .deb has no modules.dep; depmod reads arm64 modules fine

    # the probe: static, so it runs before/without the glibc copy
    aarch64-linux-gnu-gcc -static -O2 -Wall -o "$KD/gpio-probe" "$RIG/gpio-probe.c"
    touch "$KD/.ready"
    log "setup of $KVER took $((SECONDS - tset)) s"
fi
# the probe source may change without the kernel changing
if [[ $RIG/gpio-probe.c -nt $KD/gpio-probe ]]; then
    aarch64-linux-gnu-gcc -static -O2 -Wall -o "$KD/gpio-probe" "$RIG/gpio-probe.c"
fi
log "setup done in $((SECONDS - T0)) s"
((SETUP_ONLY)) && exit 0

# --------------------------------------------------------------------------------------
# 3. initramfs (rebuilt every run: ~1 s, and the test binaries change)
# --------------------------------------------------------------------------------------
tpack=$SECONDS
M=$KD/k/lib/modules/$KVER
IR=$CACHE/run/ir
rm -rf "$CACHE/run" && mkdir -p "$IR"/{bin,sbin,proc,sys,dev,tmp,run,lib,mods,tests,opt/ember,etc}
cp "$KD/bb/bin/busybox" "$IR/bin/"
cp "$RIG/init" "$IR/init" && chmod 755 "$IR/init"
cp "$KD/gpio-probe" "$IR/opt/ember/"

# module closure: modules.dep lists every (transitive) dependency; reversed = load order
declare -A seen=()
: > "$IR/modorder"
add_mod() {  # $1 = file name without .ko, $2 = insmod parameters
    local line deps d order=() m b
    line=$(grep -E "(^|/)$1\.ko(\.xz|\.zst)?:" "$M/modules.dep" | head -1) || true
    if [[ -z $line ]]; then
        grep -qE "(^|/)$1\.ko" "$M/modules.builtin" && return 0   # built into the kernel
        die "module $1 not found for $KVER"
    fi
    deps=${line#*:}
    for d in $deps; do order=("$d" "${order[@]}"); done
    order+=("${line%%:*}")
    for m in "${order[@]}"; do
        b=$(basename "$m"); b=${b%.xz}; b=${b%.zst}
        [[ -n ${seen[$b]:-} ]] && continue
        seen[$b]=1
        case $m in
            *.xz) xz -dc "$M/$m" > "$IR/mods/$b" ;;
            *.zst) zstd -qdc "$M/$m" > "$IR/mods/$b" ;;
            *) cp "$M/$m" "$IR/mods/$b" ;;
        esac
        if [[ $m == "${line%%:*}" ]]; then echo "$b ${2:-}" >> "$IR/modorder"; else echo "$b" >> "$IR/modorder"; fi
    done
}
add_mod configfs
add_mod vivid
add_mod gpio-sim
add_mod gpio-mockup "gpio_mockup_ranges=-1,8"
# the watchdog QEMU emulates on virt (-device i6300esb below); on raspi3b it loads and finds no device
add_mod i6300esb
# the power-cut run's spool disk: virtio-blk on virt's PCIe bus, ext4 (crc32c first: ext4 asks the crypto API for
# it, and there is no modprobe in the guest to load it on demand)
add_mod virtio_pci
add_mod virtio_blk
add_mod crc32c_generic
add_mod ext4

# aarch64 glibc runtime from the cross toolchain (ld.so and libc must come from the same build, F4)
XLIB=/usr/aarch64-linux-gnu/lib
for l in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1 libpthread.so.0 libdl.so.2 librt.so.1 \
         libutil.so.1 libresolv.so.2 libstdc++.so.6; do
    [[ -e $XLIB/$l ]] && cp -L "$XLIB/$l" "$IR/lib/"
done
check_needed() {  # warn early about a NEEDED library the guest will not have
    local n
    for n in $(aarch64-linux-gnu-readelf -d "$1" 2>/dev/null | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p'); do
        [[ -e $IR/lib/$n ]] && continue
        if [[ -e $XLIB/$n ]]; then cp -L "$XLIB/$n" "$IR/lib/"; else log "WARNING: $1 needs $n (not packed)"; fi
    done
}

if [[ -n $BIN ]]; then
    mkdir -p "$IR/opt/ember/bin"
    cp "$BIN" "$IR/opt/ember/bin/" && check_needed "$BIN"
    echo "/opt/ember/bin/$(basename "$BIN")" > "$IR/opt/ember/bin-path"
fi
if [[ -n $POWER_CUT ]]; then
    mkdir -p "$IR/opt/ember/bin"
    # without debug info (~50 MB of it), as the test binaries below
    aarch64-linux-gnu-strip --strip-debug -o "$IR/opt/ember/bin/ember-tools" "$POWER_CUT" && check_needed "$POWER_CUT"
fi
if ((${#TESTS[@]})); then
    : > "$IR/tests/list"
    for t in "${TESTS[@]}"; do
        file -b "$t" | grep -q 'ARM aarch64' || die "not an aarch64 executable: $t"
        n=$(basename "$t")
        # debug info makes Rust test binaries ~60 MB: strip it (symbols stay, so backtraces keep
        # function names); QEMU_RIG_NOSTRIP=1 keeps the binary as is
        if [[ -n ${QEMU_RIG_NOSTRIP:-} ]]; then cp "$t" "$IR/tests/$n"
        else aarch64-linux-gnu-strip --strip-debug -o "$IR/tests/$n" "$t"; fi
        chmod 755 "$IR/tests/$n"
        check_needed "$t"
        echo "$n" >> "$IR/tests/list"
    done
    if ((DEFAULT_SKIPS)); then
        while read -r s; do SKIPS+=("$s"); done < <(sed 's/#.*//; s/[[:space:]]*$//; /^$/d' "$RIG/guest-skips.txt")
    fi
    if ((${#SKIPS[@]})); then printf '%s\n' "${SKIPS[@]}" > "$IR/tests/skip"; fi
    [[ -n $REBOOT_TEST ]] && printf '%s\n' "$REBOOT_TEST" > "$IR/tests/reboot-test"
    # fixture tests resolve ../shared from the compile-time CARGO_MANIFEST_DIR (= this checkout), so
    # recreate that path in the guest
    if [[ -n $FIXTURES ]]; then
        mkdir -p "$IR$(dirname "$ROOT")/shared"
        cp -r "$FIXTURES" "$IR$(dirname "$ROOT")/shared/fixtures"
    fi
    # in-repo fixtures are read through CARGO_MANIFEST_DIR too (e.g. tests/fixtures/thermal/*.bin)
    if [[ -d $ROOT/tests/fixtures ]]; then
        mkdir -p "$IR$ROOT/tests" && cp -r "$ROOT/tests/fixtures" "$IR$ROOT/tests/fixtures"
    fi
fi
(cd "$IR" && find . | cpio -o -H newc --quiet | gzip -1) > "$CACHE/run/initrd.gz"
[[ -z $REBOOT_TEST || ${#TESTS[@]} -gt 0 ]] || die "--reboot-test needs test binaries"
# GUEST-EXIT lines each machine must print (the reboot test's comes from the second boot on virt)
EXPECT=$((1 + ${#TESTS[@]} + (${#BIN} ? 1 : 0) + (${#REBOOT_TEST} ? 1 : 0)))
log "initramfs $(du -h "$CACHE/run/initrd.gz" | cut -f1) with ${#TESTS[@]} test binaries, packed in $((SECONDS - tpack)) s"

# --------------------------------------------------------------------------------------
# 4. boot, watch the console, decide
# --------------------------------------------------------------------------------------
KERNEL=$KD/k/boot/vmlinuz-$KVER
APPEND="console=ttyAMA0 panic=-1 quiet rig.timeout=$GUEST_TIMEOUT"
boot() {  # $1 = machine; prints the verdict, returns 0/1
    local mach=$1 logf=$CACHE/console-$1.log qpid start rc=0 args boots=1 reboot=(-no-reboot) why=""
    case $mach in
        # i6300esb: Intel's PCI watchdog, on virt's PCIe bus; QEMU resets the machine when it fires (the default
        # -action watchdog=reset). -no-reboot would turn that reset into an exit, so the reboot test goes without it
        # and the second boot is watched for (below).
        virt) args=(-M virt -cpu cortex-a72 -smp 2 -m 1024 -device i6300esb -append "$APPEND rig.machine=virt")
              [[ -n $REBOOT_TEST ]] && boots=2 reboot=() ;;
        # raspi3b: fixed 4 cores/1 GiB; rppal needs /dev/mem on real GPIO registers (CONFIG_IO_STRICT_DEVMEM=y)
        raspi3b) args=(-M raspi3b -m 1G -dtb "$KD/k/usr/lib/linux-image-$KVER/broadcom/bcm2837-rpi-3-b.dtb"
                       -append "$APPEND iomem=relaxed rig.machine=raspi3b") ;;
    esac
    : > "$logf"
    start=$SECONDS
    # -nic none: no default NIC, so no efi-virtio.rom needed (F7); the guest only uses lo
    timeout -k 5 "$HOST_TIMEOUT" qemu-system-aarch64 "${args[@]}" -nic none -nographic "${reboot[@]}" \
        -kernel "$KERNEL" -initrd "$CACHE/run/initrd.gz" < /dev/null > "$logf" 2>&1 &
    qpid=$!
    # raspi3b never exits on poweroff (F9): stop QEMU ourselves once the sentinel is printed
    local n
    while kill -0 "$qpid" 2>/dev/null; do
        # without -no-reboot a panic also reboots: stop at a boot the reboot test did not announce
        n=$(grep -c '^INIT: machine=' "$logf" || true)
        if ((n > boots)) || { ((n > 1)) && ! grep -q '^REBOOT-TEST: start' "$logf"; }; then
            why="unexpected reboot (boot $n)"; kill "$qpid" 2>/dev/null || true; break
        fi
        if grep -q 'INIT: done' "$logf"; then
            for _ in 1 2 3 4; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done   # let virt power off
            kill "$qpid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    wait "$qpid" 2>/dev/null || true
    local secs=$((SECONDS - start))
    grep -E '^(RIG-(PASS|FAIL)|PROBE-(PASS|FAIL)|GUEST-EXIT|REBOOT-TEST|WDOG-STALL):' "$logf" | sed "s/^/[$mach] /" | tr -d '\r'
    # the reboot: announced on the first boot, reported as the watchdog's by the second, nothing after it
    if ((boots == 2)) && [[ -z $why ]] &&
        ! tr -d '\r' < "$logf" | awk '/^INIT: machine=/ {b++} /^REBOOT-TEST: start/ && b == 1 {s = 1}
            /^RIG-PASS: watchdog reset/ && b == 2 {r = 1} END {exit !(b == 2 && s && r)}'; then
        why="no watchdog reboot after the reboot test started ($(grep -c '^INIT: machine=' "$logf" || true) boots)"
    fi
    local n_exit n_bad
    n_exit=$(grep -c '^GUEST-EXIT: ' "$logf" || true)
    n_bad=$(grep '^GUEST-EXIT: ' "$logf" | grep -vc '^GUEST-EXIT: 0 ' || true)
    if [[ -n $why ]]; then
        log "[$mach] FAIL: $why (${secs} s); tail of $logf:"; tail -n 25 "$logf" >&2; rc=1
    elif ! grep -q 'INIT: done' "$logf"; then
        log "[$mach] FAIL: no 'INIT: done' after ${secs} s (timeout ${HOST_TIMEOUT} s or guest crash); tail of $logf:"
        tail -n 25 "$logf" >&2; rc=1
    elif ((n_bad > 0 || n_exit != EXPECT)); then
        log "[$mach] FAIL: $n_bad non-zero GUEST-EXIT, $n_exit of $EXPECT reported (${secs} s, log $logf)"; rc=1
    else
        log "[$mach] PASS: $n_exit/$EXPECT GUEST-EXIT 0 in ${secs} s (log $logf)"
    fi
    return $rc
}

# --------------------------------------------------------------------------------------
# 5. the power cut (--power-cut): virt with an ext4 spool disk, reset from the QEMU monitor mid-writing
# --------------------------------------------------------------------------------------
# The reset (system_reset) drops whatever the guest kernel had not yet handed to the virtual disk (page cache,
# queued requests), as a power cut does; what QEMU had completed stays in the image (QEMU's own cache is the host's
# page cache, which the reset does not touch), so a drive's volatile write cache is not modelled. Console lines
# that were still in the guest's tty buffer are lost too, which only makes the host's list of promises shorter.
power_cut() {
    local logf=$CACHE/console-powercut.log img=$CACHE/run/spool.img sock=$CACHE/run/qmp.sock
    local qpid start=$SECONDS why="" cut_at="" cut_min=${QEMU_RIG_CUT_MIN:-2} cut_max=${QEMU_RIG_CUT_MAX:-6}
    rm -f "$img" "$sock"
    truncate -s 64M "$img"
    mkfs.ext4 -q -F -L ember-spool "$img" || { log "[power-cut] FAIL: mkfs.ext4"; return 1; }
    # a random moment, in ms, after the first alert the guest reports spooled
    local delay_ms=$((cut_min * 1000 + RANDOM % ((cut_max - cut_min) * 1000 + 1)))
    : > "$logf"
    # no -no-reboot: with it QEMU would exit on the reset instead of booting again; no watchdog device
    timeout -k 5 "$HOST_TIMEOUT" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nic none -nographic \
        -drive "file=$img,format=raw,if=none,id=spool" -device virtio-blk-pci,drive=spool \
        -qmp "unix:$sock,server=on,wait=off" -kernel "$KERNEL" -initrd "$CACHE/run/initrd.gz" \
        -append "$APPEND rig.machine=virt rig.powercut=1" < /dev/null > "$logf" 2>&1 &
    qpid=$!
    local first="" n
    while kill -0 "$qpid" 2>/dev/null; do
        n=$(grep -c '^INIT: machine=' "$logf" || true)
        if ((n > 2)); then why="a third boot"; break; fi
        if [[ -z $cut_at ]]; then
            if [[ -z $first ]] && grep -q 'spooled seq=[0-9]* synced=1' "$logf"; then first=$(date +%s%3N); fi
            if grep -q '^POWERCUT: the writer returned\|^GUEST-EXIT' "$logf"; then why="boot 1 ended before the cut"; break; fi
            if [[ -n $first ]] && (($(date +%s%3N) - first >= delay_ms)); then
                # the count the host has seen when it pulls the plug (more may still be in flight: all are checked)
                cut_at=$(grep -c 'spooled seq=[0-9]* synced=1' "$logf" || true)
                # QMP: the greeting, capabilities, then the reset, each answered before the next (so it is done)
                python3 -c 'import json,socket,sys
s=socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1]); f=s.makefile("rw")
def answer():
    while True:
        m=json.loads(f.readline())
        if "return" in m or "error" in m: return m
json.loads(f.readline())
for c in ("qmp_capabilities", "system_reset"):
    f.write(json.dumps({"execute": c}) + "\n"); f.flush()
    m=answer()
    if "error" in m: sys.exit(c + ": " + str(m["error"]))' "$sock" || { why="the QEMU monitor (QMP) did not reset"; break; }
                log "[power-cut] system_reset ${delay_ms} ms after the first spooled alert ($cut_at seen spooled)"
            fi
        elif grep -q 'INIT: done' "$logf"; then
            for _ in 1 2 3 4; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.5; done
            break
        fi
        sleep 0.2
    done
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
    local secs=$((SECONDS - start))
    tr -d '\r' < "$logf" | grep -E '^(POWERCUT|GUEST-EXIT)' | grep -v '^POWERCUT-DELIVERED' | sed 's/^/[power-cut] /' >&2
    # every seq the first boot promised (lines before the second boot), and what the collector wrote after it
    local verdict
    verdict=$(tr -d '\r' < "$logf" | python3 -c '
import json, re, sys
boots, spooled, delivered, dups, epochs, report, exitc = 0, [], None, None, None, None, None
for line in sys.stdin:
    if "INIT: machine=" in line: boots += 1   # may follow a line the reset cut short
    m = re.search(r"spooled seq=(\d+) synced=1", line)
    if m and boots == 1: spooled.append(int(m.group(1)))
    if line.startswith("POWERCUT-DELIVERED: "):
        delivered = []
        for r in line.split(": ", 1)[1].split(","):
            if "-" in r:
                a, b = r.split("-"); delivered.append((int(a), int(b)))
    if line.startswith("POWERCUT-DUPLICATES:"): dups = line.split(":", 1)[1].split()
    if line.startswith("POWERCUT-EPOCHS:"): epochs = line.split(":", 1)[1].split()
    if line.startswith("POWERCUT-REPORT: "): report = line.split(": ", 1)[1].strip()
    if line.startswith("GUEST-EXIT: ") and line.split()[-1] == "power-cut": exitc = int(line.split()[1])
def fail(why): print("FAIL: " + why); sys.exit(0)
if boots != 2: fail(f"{boots} boots, expected 2 (the reset must reboot once)")
if not spooled: fail("the first boot reported no alert spooled before the reset")
if delivered is None or exitc is None: fail("the second boot did not report a delivery")
if exitc != 0: fail(f"the delivery run exited {exitc} (report: {report})")
if dups: fail(f"written twice by the collector: {dups[:10]}")
if epochs is None or len(epochs) != 1: fail(f"alerts under {epochs} epochs, expected one")
if len(delivered) != 1 or delivered[0][0] != 1: fail(f"delivered seqs not one run from 1: {delivered[:10]}")
top = delivered[0][1]
lost = [s for s in spooled if s > top]
if lost: fail(f"{len(lost)} alerts reported spooled before the cut never arrived (first {lost[:10]}, delivered 1-{top})")
if sorted(spooled) != list(range(1, max(spooled) + 1)): fail("the spooled lines of boot 1 are not 1..N")
try: rep = json.loads(report)
except (TypeError, ValueError): fail(f"no JSON report from the delivery run: {report}")
# everything delivered came out of the recovered spool, and the spool counted exactly that
recovered, torn = rep.get("recovered_records"), rep.get("torn_bytes")
if rep.get("produced_now") != 0 or recovered != top:
    fail(f"the spool recovered {recovered} records but 1-{top} were delivered: {report}")
print(f"PASS: {len(spooled)} alerts reported spooled before the cut (last seq {max(spooled)}), 1-{top} delivered "
      f"exactly once after it ({top - max(spooled)} more written but not yet reported); the spool recovered "
      f"{recovered} records and cut {torn} torn bytes")
')
    if [[ -n $why ]]; then
        log "[power-cut] FAIL: $why (${secs} s); tail of $logf:"; tail -n 25 "$logf" >&2; return 1
    elif [[ -z $cut_at ]]; then
        log "[power-cut] FAIL: no reset sent (${secs} s, no 'spooled' line?); tail of $logf:"; tail -n 25 "$logf" >&2
        return 1
    elif [[ $verdict != PASS:* ]]; then
        log "[power-cut] ${verdict:-FAIL: no verdict} (${secs} s, log $logf)"; return 1
    fi
    # the file system the second boot unmounted must be consistent (its journal replayed at the mount)
    if ! e2fsck -fn "$img" > "$CACHE/run/e2fsck.log" 2>&1; then
        log "[power-cut] FAIL: e2fsck -fn finds the spool disk damaged after recovery:"; cat "$CACHE/run/e2fsck.log" >&2
        return 1
    fi
    log "[power-cut] $verdict (${secs} s, log $logf)"
}

overall=0
for m in "${MACHINES[@]}"; do boot "$m" || overall=1; done
if [[ -n $POWER_CUT ]]; then power_cut || overall=1; fi
log "total $((SECONDS - T0)) s; $( ((overall)) && echo FAILED || echo PASSED )"
exit $overall
