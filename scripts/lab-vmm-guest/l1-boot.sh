# shellcheck shell=sh
# Level-1 side of scripts/lab-vmm and scripts/bench-vmm-lab: boots one level-2 guest. Sourced by /lab/run.sh in
# level 1 (busybox sh, no bash); copied into the lab directory as /lab/l1-boot.sh.
#
# boot_l2 [-k SUFFIX] [-d DISK]... [-c] [-n] [-N TAP,MAC] [-V CID,PATH] OUT VMM DISK CMDLINE-EXTRA
#   VMM   vessel (/lab/bin/vessel-vmm) or qemu (/lab/qemu: QEMU microvm, ACPI, virtio-mmio)
#   DISK  PATH[,ro][,id=NAME]: the first virtio-blk disk (/dev/vda under vessel-vmm); -d adds more, in order.
#         id= is the serial the guest reads (/sys/block/vdX/serial); "none": no disk
#   -N    a virtio-net NIC on the tap TAP (created by the VMM) with the MAC address MAC
#   -V    a virtio-vsock device, guest CID CID, host side on the unix socket PATH (vessel-vmm only: QEMU's
#         vhost-vsock has no unix-socket host side, so it is left out under qemu)
#   -k    boot /lab/vmlinuzSUFFIX with /lab/l2SUFFIX.initrd.gz (default: /lab/vmlinuz, /lab/l2.initrd.gz)
#   -c    a virtio console (/dev/hvc0 in the guest) written to OUT.hvc
#   -n    no virtio-rng device (vessel-vmm --no-rng)
#   Records OUT.cmd (the command run), OUT.serial (the guest's serial output, each line prefixed with level 1's
#   uptime when it arrived), OUT.err (the VMM's stderr), OUT.rc (its exit status), OUT.time (launch -> exit, s)
#   and OUT.marker (launch -> VESSEL-L2-UP, s, or "-").
#
# Settings (the lab scripts write them into run.sh): L2_MEM (MiB), L2_CPUS, L2_TIMEOUT (s per boot),
# L2_CMDLINE (base kernel command line; CMDLINE-EXTRA is appended). Paths must not contain spaces.
L2_MEM=${L2_MEM:-256}
L2_CPUS=${L2_CPUS:-2}
L2_TIMEOUT=${L2_TIMEOUT:-180}
L2_CMDLINE=${L2_CMDLINE:-console=ttyS0 quiet panic=-1}
# Level 1 has no shared libraries: QEMU runs through its own copied loader and libraries.
QEMU="/lab/qemu/ld-linux-x86-64.so.2 --library-path /lab/qemu/lib /lab/qemu/bin/qemu-system-x86_64 -L /lab/qemu/share"

now() { read -r _u _ < /proc/uptime; echo "$_u"; }

# Prefix each line with level 1's uptime (centiseconds) as it arrives: the launch -> marker time without
# forking per line. A last line without a newline is kept.
stamp() {
  while IFS= read -r _l || [ -n "$_l" ]; do
    read -r _u _ < /proc/uptime
    echo "$_u $_l"
  done
}

# qemu_disk N SPEC: QEMU's arguments for disk number N given as vessel-vmm's PATH[,ro][,id=NAME].
qemu_disk() {
  _qp=${2%%,*} _qo=
  case ",${2#"$_qp"}," in *,ro,*) _qo=,readonly=on ;; esac
  _qs=$(echo "$2" | sed -n 's/.*,id=\([^,]*\).*/,serial=\1/p')
  echo "-drive id=d$1,file=$_qp,format=raw,if=none$_qo -device virtio-blk-device,drive=d$1$_qs"
}

# l1_tun: loads level 1's tun module (/lab/l1/tun.ko), once, so the VMMs can make taps.
l1_tun() {
  [ -c /dev/net/tun ] || insmod /lab/l1/tun.ko || echo "l1_tun: insmod tun.ko failed" >&2
}

# tap_up TAP ADDR/PREFIX SECONDS: waits up to SECONDS for the VMM to create TAP, then brings it up with the
# address. Prints "tap=up wait=S" (S: seconds waited), "tap=missing" or "tap=failed".
tap_up() {
  _t0=$(now) _i=0
  while [ ! -e "/sys/class/net/$1" ]; do
    if [ $_i -ge $(($3 * 10)) ]; then echo "tap=missing"; return 1; fi
    sleep 0.1
    _i=$((_i + 1))
  done
  if ip link set "$1" up && ip addr add "$2" dev "$1"; then
    echo "tap=up wait=$(awk -v a="$_t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')"
  else
    echo "tap=failed"
    return 1
  fi
}

boot_l2() {
  _sfx='' _extra='' _con=0 _rng=1 _nic='' _vsock=''
  OPTIND=1
  while getopts k:d:cnN:V: _o; do
    case $_o in
      k) _sfx=$OPTARG ;;
      d) _extra="$_extra $OPTARG" ;;
      c) _con=1 ;;
      n) _rng=0 ;;
      N) _nic=$OPTARG ;;
      V) _vsock=$OPTARG ;;
      *) echo "boot_l2: bad option" >&2; return 2 ;;
    esac
  done
  shift $((OPTIND - 1))
  _out=$1 _vmm=$2 _disk=$3
  [ "$_disk" != none ] || _disk=
  _cmdline="$L2_CMDLINE $4"
  _kernel=/lab/vmlinuz$_sfx _initrd=/lab/l2$_sfx.initrd.gz
  rm -f "$_out.hvc"
  case $_vmm in
    vessel)
      _dev=
      for _d in $_disk $_extra; do _dev="$_dev --disk $_d"; done
      [ $_con = 1 ] && _dev="$_dev --console file:$_out.hvc"
      [ $_rng = 1 ] || _dev="$_dev --no-rng"
      [ -z "$_nic" ] || _dev="$_dev --net tap=${_nic%%,*},mac=${_nic#*,}"
      [ -z "$_vsock" ] || _dev="$_dev --vsock cid=${_vsock%%,*},path=${_vsock#*,}"
      # shellcheck disable=SC2086 # $_dev is a list of arguments
      set -- /lab/bin/vessel-vmm --kernel "$_kernel" --initrd "$_initrd" --cmdline "$_cmdline" \
        --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio $_dev
      ;;
    qemu)
      _dev='' _n=0
      for _d in $_disk $_extra; do _dev="$_dev $(qemu_disk $_n "$_d")"; _n=$((_n + 1)); done
      [ $_con = 1 ] && _dev="$_dev -device virtio-serial-device -chardev file,id=hvc,path=$_out.hvc -device virtconsole,chardev=hvc"
      [ $_rng = 1 ] && _dev="$_dev -device virtio-rng-device"
      # vhost=off: the virtio-net device model in QEMU's process, as vessel-vmm's is in its own.
      [ -z "$_nic" ] || _dev="$_dev -netdev tap,id=n0,ifname=${_nic%%,*},script=no,downscript=no,vhost=off -device virtio-net-device,netdev=n0,mac=${_nic#*,}"
      # -no-reboot: a guest reset ends QEMU (status 0), as a VMM process per boot should. Debian 12's microvm
      # (QEMU 7.2) gave Linux no reset that worked (no i8042; ACPI reset had no effect), so Linux fell through to
      # its real-mode BIOS restart, which died in KVM ("emulation failure"): reset by triple fault instead
      # (reboot=t, as QEMU's microvm docs recommend).
      # shellcheck disable=SC2086 # $QEMU and $_dev are lists of arguments
      set -- $QEMU -M microvm,acpi=on -accel kvm -cpu host -m "$L2_MEM" -smp "$L2_CPUS" -nodefaults \
        -no-user-config -nographic -serial stdio -no-reboot -kernel "$_kernel" -initrd "$_initrd" \
        -append "$_cmdline reboot=t" $_dev
      ;;
    *)
      echo "boot_l2: unknown VMM $_vmm" >&2
      return 2
      ;;
  esac
  echo "$*" > "$_out.cmd"
  _t0=$(now)
  # stdin is /dev/null: a VMM with --serial stdio must keep running when its input is at EOF.
  { timeout -s KILL "$L2_TIMEOUT" "$@" < /dev/null 2> "$_out.err"; echo $? > "$_out.rc"; } | stamp > "$_out.serial"
  _t1=$(now)
  awk -v a="$_t0" -v b="$_t1" 'BEGIN { printf "%.2f\n", b - a }' > "$_out.time"
  awk -v a="$_t0" '/VESSEL-L2-UP/ { printf "%.2f\n", $1 - a; found = 1; exit } END { if (!found) print "-" }' \
    "$_out.serial" > "$_out.marker"
}
