# shellcheck shell=bash disable=SC2154 # $top and $me come from the sourcing script
# Host side shared by scripts/lab-vmm and scripts/bench-vmm-lab (sourced by bash with set -euo pipefail; $top is
# the repository, $me the calling script's name). Prepares a lab directory that level 1 sees at /lab:
#   vmlinuz            the level-2 kernel: Debian's cloud flavour (ext4 built in; virtio, virtio_mmio as modules)
#   l2.initrd.gz       busybox-static, its virtio modules and scripts/lab-vmm-guest/init; l2.modules: load order
#   vmlinuz-std        with lv_prepare's NEED-STD: Debian's standard kernel (linux-image-amd64's, as level 1 runs),
#   l2-std.initrd.gz   where ext4 (jbd2, mbcache, crc16) and crc32c are modules too; l2-std.modules
#   disk.img           ext4 made with mkfs.ext4 -d: seed.txt and seed.bin (2 MiB random)
#   net-h2g.bin        2 MiB random, which level 1 sends the guest over virtio-net; its md5 in net-h2g.md5
#   bin/vsock-echo     scripts/lab-vmm-guest/vsock-echo.c, static (gcc -static): vsock and unix-socket echo
#                      server and client, for level 1 and (in the initramfs, /bin/vsock-echo) level 2
#   bin/api-call       scripts/lab-vmm-guest/api-call.c, static: one HTTP request to vessel-vmm's API socket
#   bin/tcp-bulk       scripts/lab-vmm-guest/tcp-bulk.c, static: bulk TCP sender and sink (64 KiB writes and
#                      reads) for the throughput benchmark, in level 1 and (/bin/tcp-bulk) level 2
#                      (level 1's busybox has no HTTP client for unix sockets)
#   l1/tun.ko          level 1's tun module (vmlab loads only kvm_amd and 9p): /dev/net/tun for the taps
#   bin/vessel-vmm     static (LAB_VMM=vessel)
#   qemu/              QEMU with its libraries, loader and firmware (LAB_VMM=qemu, the benchmark, comparison by hand)
#   l1-boot.sh         boot_l2, which run.sh uses to boot one level-2 guest
#
# Environment
#   LAB_VMM              vessel (default) or qemu: what boots level 2 (qemu proves the lab without vessel-vmm)
#   VESSEL_VMM_BIN       a vessel-vmm binary to use instead of building one (must be static); a script (a wrapper
#                        for level 1's busybox sh) is copied as it is
#   VESSEL_L2_KERNEL     Debian kernel package for level 2 (default: what linux-image-cloud-amd64 depends on);
#                        VMLAB_KERNEL keeps choosing level 1's kernel (default: the standard one)
#   VESSEL_L2_STD_KERNEL the standard-kernel package (default: what linux-image-amd64 depends on)
#   VESSEL_LAB_TARGET_DIR  parent of the lab dirs (default target/lab); the static build goes to the usual
#                          cargo target dir, target/x86_64-unknown-linux-gnu, shared with scripts/bench-vmm

lv_die() {
  echo "$me: FAILED before the lab could run: $*" >&2
  exit 2
}

# Debian packages the lab needs on the host; installed only when missing.
lv_deps() {
  local p missing=()
  for p in busybox-static cpio e2fsprogs qemu-system-x86 binutils kmod gzip gcc libc6-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "$me: installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      lv_die "apt-get install ${missing[*]} failed"
  fi
  # Level 2 has no libraries either: the busybox put into its initramfs must be the static one.
  if readelf -l /bin/busybox | grep -q 'program interpreter'; then
    lv_die "/bin/busybox is dynamically linked (install busybox-static, not busybox)"
  fi
}

# lv_pkg META: the versioned kernel package Debian's metapackage META depends on.
lv_pkg() {
  local pkg
  pkg=$(apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
  if [ -z "$pkg" ]; then
    apt-get update -qq >/dev/null
    pkg=$(apt-cache depends "$1" | awk '/Depends: linux-image-/ { print $2; exit }')
  fi
  [ -n "$pkg" ] || lv_die "cannot resolve the Debian kernel package $1 depends on"
  echo "$pkg"
}

# lv_kernel PKG: the kernel package, downloaded and unpacked by scripts/vmlab into its cache. Sets K_DIR, K_VER.
lv_kernel() {
  local d
  K_DIR=$(VMLAB_KERNEL=$1 "$top/scripts/vmlab" kernel) || lv_die "scripts/vmlab could not fetch $1"
  for d in "$K_DIR"/lib/modules/*/; do K_VER=$(basename "$d"); break; done
}

# The cloud kernel, level 2's default. Sets L2_PKG, L2_KDIR, L2_KVER.
lv_l2_kernel() {
  L2_PKG=${VESSEL_L2_KERNEL:-$(lv_pkg linux-image-cloud-amd64)}
  lv_kernel "$L2_PKG"
  L2_KDIR=$K_DIR L2_KVER=$K_VER
}

# The standard kernel. Sets STD_PKG, STD_KDIR, STD_KVER.
lv_std_kernel() {
  STD_PKG=${VESSEL_L2_STD_KERNEL:-$(lv_pkg linux-image-amd64)}
  lv_kernel "$STD_PKG"
  STD_KDIR=$K_DIR STD_KVER=$K_VER
}

# lv_initramfs LAB SUFFIX PKG KDIR KVER MODULE...: LAB/vmlinuzSUFFIX, LAB/l2SUFFIX.initrd.gz with the modules
# (and what they depend on) and LAB/l2SUFFIX.modules, their load order.
lv_initramfs() {
  local lab=$1 sfx=$2 pkg=$3 kdir=$4 kver=$5 root
  shift 5
  cp "$kdir/boot/vmlinuz-$kver" "$lab/vmlinuz$sfx"
  root=$(mktemp -d -t lab-vmm-initramfs.XXXXXX)
  mkdir -p "$root"/{bin,dev,proc,sys,mnt,tmp,lib/modules}
  cp /bin/busybox "$root/bin/"
  cp "$lab/bin/vsock-echo" "$lab/bin/tcp-bulk" "$root/bin/"
  # vmlab skips built-in modules and adds each module's dependencies (modules.dep; not softdeps) in load order.
  VMLAB_KERNEL=$pkg "$top/scripts/vmlab" modules "$root/lib/modules" "$@" >/dev/null ||
    lv_die "scripts/vmlab modules failed for $pkg"
  # The kernel opens /dev/console for /init before devtmpfs is mounted. Debian's kernels carry a built-in
  # initramfs with that node, so this is a second line of defence only (mknod needs CAP_MKNOD).
  mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null || true
  install -m 755 "$top/scripts/lab-vmm-guest/init" "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$lab/l2$sfx.initrd.gz"
  cp "$root/lib/modules/load-order" "$lab/l2$sfx.modules"
  rm -rf "$root"
}

# Level 2's modules: virtio_mmio is the transport the VMM announces in ACPI; virtio_blk gives /dev/vda,
# virtio_rng hw_random, virtio_console /dev/hvc0. The cloud kernel has ext4 (jbd2, crc32c) built in.
LV_MODULES="virtio_mmio virtio_blk virtio_rng virtio_console"
# The cloud kernel's initramfs also has virtio_net (eth0) and the vsock transport (AF_VSOCK over virtio).
LV_NET_MODULES="virtio_net vsock vmw_vsock_virtio_transport"
# And the power button (boot7): the ACPI button driver, which turns the DSDT's PNP0C0C notifications into
# KEY_POWER, and evdev for /dev/input/eventN (both modules in Debian's kernels; the GED driver is built in).
LV_BUTTON_MODULES="button evdev"
# The standard kernel has ext4 as a module, and crc32c too: ext4 and jbd2 ask for it through the crypto API
# (a softdep, which no modprobe resolves here) when mounting a metadata_csum file system, so it comes first.
LV_STD_MODULES="$LV_MODULES crc32c_generic ext4"

# lv_disk LAB: disk.img (64 MiB ext4) with seed.txt and seed.bin; their expected contents in seed.txt / seed.md5.
lv_disk() {
  local lab=$1 seed
  seed=$(mktemp -d -t lab-vmm-seed.XXXXXX)
  echo "vessel seed $(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')" > "$seed/seed.txt"
  head -c 2097152 /dev/urandom > "$seed/seed.bin"
  cp "$seed/seed.txt" "$lab/seed.txt"
  md5sum < "$seed/seed.bin" | cut -d' ' -f1 > "$lab/seed.md5"
  rm -f "$lab/disk.img"
  mkfs.ext4 -q -F -L vessel-l2 -E root_owner=0:0 -d "$seed" "$lab/disk.img" 64M >/dev/null ||
    lv_die "mkfs.ext4 -d failed"
  rm -rf "$seed"
}

# lv_net LAB: vsock-echo (static), level 1's tun module, and the file level 1 sends the guest over the network.
lv_net() {
  local lab=$1
  mkdir -p "$lab/bin" "$lab/l1"
  gcc -static -O2 -s -Wall -o "$lab/bin/vsock-echo" "$top/scripts/lab-vmm-guest/vsock-echo.c" ||
    lv_die "gcc -static could not build scripts/lab-vmm-guest/vsock-echo.c"
  gcc -static -O2 -s -Wall -o "$lab/bin/api-call" "$top/scripts/lab-vmm-guest/api-call.c" ||
    lv_die "gcc -static could not build scripts/lab-vmm-guest/api-call.c"
  gcc -static -O2 -s -Wall -o "$lab/bin/tcp-bulk" "$top/scripts/lab-vmm-guest/tcp-bulk.c" ||
    lv_die "gcc -static could not build scripts/lab-vmm-guest/tcp-bulk.c"
  # Level 1 runs vmlab's kernel: VMLAB_KERNEL (or the standard one), as vmlab run will pick it.
  "$top/scripts/vmlab" modules "$lab/l1" tun >/dev/null || lv_die "scripts/vmlab modules could not find tun"
  head -c 2097152 /dev/urandom > "$lab/net-h2g.bin"
  md5sum < "$lab/net-h2g.bin" | cut -d' ' -f1 > "$lab/net-h2g.md5"
}

# lv_qemu LAB: QEMU with everything it loads, for a level 1 without shared libraries.
lv_qemu() {
  local q=$1/qemu lib
  mkdir -p "$q/bin" "$q/lib" "$q/share"
  cp /usr/bin/qemu-system-x86_64 "$q/bin/"
  for lib in $(ldd /usr/bin/qemu-system-x86_64 | awk '/=> \// { print $3 }'); do cp -L "$lib" "$q/lib/"; done
  cp -L "$(ldd /usr/bin/qemu-system-x86_64 | awk '/ld-linux/ { print $1 }')" "$q/ld-linux-x86-64.so.2"
  # Firmware and option ROMs (microvm boots qboot, bios-microvm.bin); dangling links (OVMF) are skipped.
  local f
  for f in /usr/share/qemu/*; do if [ -f "$f" ]; then cp -L "$f" "$q/share/"; fi; done
  [ -f "$q/share/bios-microvm.bin" ] || lv_die "QEMU's microvm firmware (bios-microvm.bin) is missing"
}

# lv_vmm LAB: a static vessel-vmm into LAB/bin, built here unless VESSEL_VMM_BIN names one.
lv_vmm() {
  local lab=$1 bin triple=x86_64-unknown-linux-gnu
  mkdir -p "$lab/bin"
  if [ -n "${VESSEL_VMM_BIN:-}" ]; then
    bin=$VESSEL_VMM_BIN
    [ -x "$bin" ] || lv_die "VESSEL_VMM_BIN=$bin is not an executable"
    echo "== $me: using $bin (VESSEL_VMM_BIN; not built)"
  else
    local t0 target_dir=${CARGO_TARGET_DIR:-$top/target}; t0=$(date +%s)
    echo "== $me: building a static vessel-vmm (release, $target_dir/$triple)"
    rustup target list --installed 2>/dev/null | grep -qx "$triple" || rustup target add "$triple" >/dev/null 2>&1 || true
    # Level 1 is busybox only: no libc to link against at run time.
    (cd "$top" && env -u CARGO_ENCODED_RUSTFLAGS RUSTFLAGS='-C target-feature=+crt-static' CARGO_TERM_COLOR=never \
      cargo build --quiet --release -p vessel-vmm --target "$triple") || lv_die "the static build of vessel-vmm failed (see above)"
    bin=$target_dir/$triple/release/vessel-vmm
    echo "   built in $(($(date +%s) - t0)) s"
  fi
  if [ "$(head -c 4 "$bin")" != $'\x7fELF' ]; then
    cp "$bin" "$lab/bin/vessel-vmm"
    return
  fi
  if readelf -l "$bin" | grep -q 'program interpreter'; then
    lv_die "$bin is dynamically linked; level 1 has no shared libraries (build with -C target-feature=+crt-static)"
  fi
  # Debug info is of no use in level 1 and would be read over 9p by a software CPU.
  strip -o "$lab/bin/vessel-vmm" "$bin"
}

# lv_prepare LAB NEED-VESSEL NEED-QEMU [NEED-STD] (0 or 1 each): everything above, and the level-1 boot helper.
# lv_vessel_instances LAB: what boot8 needs in level 1: static vesseld, vessel-supervisor, vessel and vessel-agent
# (built as scripts/lab-cgroup-v2 builds them, in the same target dir), the busybox image's root filesystem, and the
# level-2 kernel's tree as vesseld's kernel cache holds it (vmlinuz, modules.dep, modules.builtin and the module
# files of the lines that name what vessel's initramfs loads).
lv_vessel_instances() {
  local lab=$1 triple=x86_64-unknown-linux-gnu t0 b dir
  t0=$(date +%s)
  dir=${VESSEL_LAB_TARGET_DIR:-$top/target/lab}
  echo "== $me: building static vesseld, vessel-supervisor, vessel and vessel-agent ($dir/$triple)"
  (cd "$top" && env -u CARGO_ENCODED_RUSTFLAGS CARGO_TARGET_DIR="$dir" RUSTFLAGS='-C target-feature=+crt-static' \
    LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu CARGO_TERM_COLOR=never \
    cargo build --quiet -p vessel-daemon --bins -p vessel --bin vessel -p vessel-agent --bin vessel-agent \
    --target "$triple") || lv_die "the static build of vesseld, vessel and vessel-agent failed (see above)"
  mkdir -p "$lab/bin"
  for b in vesseld vessel-supervisor vessel vessel-agent; do
    if readelf -l "$dir/$triple/debug/$b" | grep -q 'program interpreter'; then
      lv_die "$b is dynamically linked; level 1 has no shared libraries"
    fi
    strip -o "$lab/bin/$b" "$dir/$triple/debug/$b"
  done
  # vesseld looks for vessel-vmm beside itself.
  [ -f "$lab/bin/vessel-vmm" ] || lv_die "boot8 needs the static vessel-vmm in $lab/bin"
  echo "   built in $(($(date +%s) - t0)) s"
  "$top/scripts/busybox-rootfs" "$lab/rootfs" >/dev/null || lv_die "scripts/busybox-rootfs failed"
  local k=$lab/kernels/$L2_PKG m=lib/modules/$L2_KVER
  mkdir -p "$k/boot" "$k/$m"
  cp "$L2_KDIR/boot/vmlinuz-$L2_KVER" "$k/boot/"
  cp "$L2_KDIR/$m/modules.dep" "$L2_KDIR/$m/modules.builtin" "$k/$m/"
  grep -E 'virtio|vsock|overlay|failover|crc32c|ext4|jbd2|mbcache|crc16' "$L2_KDIR/$m/modules.dep" | tr -d ':' |
    tr ' ' '\n' | grep . | sort -u | while read -r f; do
      mkdir -p "$k/$m/$(dirname "$f")"
      cp "$L2_KDIR/$m/$f" "$k/$m/$f"
    done
  # vesseld builds ext4 disks with mkfs.ext4 -d; level 1's busybox has none: Debian's, with its libraries and
  # loader, behind a wrapper named as vesseld calls it.
  local e2=$lab/e2fs mke2fs
  mke2fs=$(command -v mke2fs) || lv_die "mke2fs is missing (apt-get install e2fsprogs)"
  mkdir -p "$e2"
  cp "$mke2fs" "$e2/mke2fs"
  ldd "$mke2fs" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /ld-linux/ { print $1 }' | while read -r l; do
    cp -L "$l" "$e2/"
  done
  # mke2fs takes the file system type from its name (--argv0).
  printf '#!/bin/sh\nexec /lab/e2fs/ld-linux-x86-64.so.2 --library-path /lab/e2fs --argv0 mkfs.ext4 /lab/e2fs/mke2fs "$@"\n' \
    > "$e2/mkfs.ext4"
  chmod +x "$e2/mkfs.ext4"
  cp "$top/scripts/lab-vmm-guest/vm-instances.sh" "$lab/vm-instances.sh"
}

lv_prepare() {
  local lab=$1 need_vessel=$2 need_qemu=$3 need_std=${4:-0}
  rm -rf "$lab"
  mkdir -p "$lab/out"
  lv_deps
  if [ "$need_vessel" = 1 ]; then lv_vmm "$lab"; fi
  lv_net "$lab"
  lv_l2_kernel
  echo "== $me: level 2: $L2_PKG ($L2_KVER); level 1: ${VMLAB_KERNEL:-the standard Debian kernel}"
  # shellcheck disable=SC2086 # a list of module names
  lv_initramfs "$lab" "" "$L2_PKG" "$L2_KDIR" "$L2_KVER" $LV_MODULES $LV_NET_MODULES $LV_BUTTON_MODULES
  if [ "$need_std" = 1 ]; then
    lv_std_kernel
    echo "== $me: level 2 also: $STD_PKG ($STD_KVER)"
    # shellcheck disable=SC2086
    lv_initramfs "$lab" -std "$STD_PKG" "$STD_KDIR" "$STD_KVER" $LV_STD_MODULES
  fi
  lv_disk "$lab"
  if [ "$need_qemu" = 1 ]; then lv_qemu "$lab"; fi
  cp "$top/scripts/lab-vmm-guest/l1-boot.sh" "$lab/l1-boot.sh"
}
