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
        --cpus "$L2_CPUS" --memory "$L2_MEM" --serial stdio --metrics-path "$_out.metrics" $_dev
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

# elapsed T0 [T1]: seconds from T0 to T1 (default: now), two decimals.
elapsed() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.2f\n", b - a }'; }

# wait_for SECS FILE PATTERN [GONE]: until FILE has a line matching PATTERN (grep -E); false after SECS seconds
# or once the file GONE exists (the exit status of the process that writes FILE).
wait_for() {
  _wi=0
  until grep -qE "$3" "$2" 2>/dev/null; do
    [ $_wi -ge $(($1 * 20)) ] && return 1
    [ -z "${4:-}" ] || [ ! -f "$4" ] || return 1
    sleep 0.05
    _wi=$((_wi + 1))
  done
}

# spawn PREFIX CMD...: CMD in the background, stdin /dev/null, stderr to PREFIX.err, its exit status to PREFIX.rc
# and its pid to PREFIX.pid (sh -c writes $$, then execs CMD; busybox timeout execs its program in the same
# process and watches it from a child, so the pid is the VMM's). Sets SPAWNED to the background job's pid.
spawn() {
  _sp=$1
  shift
  rm -f "$_sp.pid" "$_sp.rc"
  # shellcheck disable=SC2016 # for the inner shell
  { sh -c 'echo $$ > "$0.pid"; exec "$@"' "$_sp" "$@" < /dev/null 2> "$_sp.err"; echo $? > "$_sp.rc"; } &
  SPAWNED=$!
}

# api NAME SOCKET METHOD PATH [BODY]: one request to a VMM's API (/lab/bin/api-call); appends
# "NAME rc=RC secs=S status=NNN BODY" to $_out.api. Returns api-call's status.
api() {
  _a0=$(now)
  /lab/bin/api-call -t 120 "$2" "$3" "$4" "${5:-}" > /tmp/api.out 2>&1
  _arc=$?
  echo "$1 rc=$_arc secs=$(elapsed "$_a0") $(tr '\n' ' ' < /tmp/api.out)" >> "$_out.api"
  return $_arc
}

# snap_l2 OUT DISK CMDLINE-EXTRA: the snapshot boot, vessel-vmm only (its API). The guest is booted with the API
# on /tmp/l2a.sock and COM1 to OUT.a.serial; once its ticker printed "L2 tick $SNAP_AT" (default 10), level 1
# pauses it (PATCH /vm), snapshots it to $SNAP_FILE (default /tmp/l2.snap, level 1's tmpfs: the restored VM maps
# it, so it stays until that VM ends), SIGKILLs that vessel-vmm, waits $SNAP_GAP s (default 10) and resumes the
# snapshot in a new one (--restore, API on /tmp/l2b.sock, COM1 to OUT.b.serial), which runs until the guest ends.
# SNAP_CONSOLE=1 adds a virtio console written to OUT.hvc (by both processes). Records
#   OUT.a.{pid,err,rc}, OUT.b.{pid,err,rc}  the two VMM processes; OUT.rc and OUT.err are the second's
#   OUT.serial        both serial files, joined: the guest's whole output as it wrote it (no timestamps)
#   OUT.api           every API request and its answer
#   OUT.snap          the snapshot file's size and allocated KiB (sparse), and OUT.a.serial's size at the
#                     pause, after the snapshot and when the first VMM was dead
#   OUT.times         pause, snapshot, kill (to the process's end), restore_sock (launch -> the API socket exists:
#                     the snapshot is restored, the VM not yet started), restore_api (-> the API answers "Running"),
#                     restore_output (-> the first byte on COM1), restore_tick (-> the first tick line), exec
#                     (vessel-vmm --version, for scale), all in s of level 1's clock; gap (SNAP_GAP);
#                     OUT.time and OUT.marker as boot_l2's
snap_l2() {
  _out=$1 _disk=$2 _cmdline="$L2_CMDLINE $3"
  _snap=${SNAP_FILE:-/tmp/l2.snap} _at=${SNAP_AT:-10}
  rm -f "$_snap" /tmp/l2a.sock /tmp/l2b.sock "$_out".*
  : > "$_out.api"
  _dev=
  [ -z "$_disk" ] || [ "$_disk" = none ] || _dev="--disk $_disk"
  # The restored VM keeps the saved console destination: both processes append to OUT.hvc.
  [ "${SNAP_CONSOLE:-0}" = 0 ] || _dev="$_dev --console file:$_out.hvc"
  # shellcheck disable=SC2086 # $_dev is a list of arguments
  set -- /lab/bin/vessel-vmm --api-sock /tmp/l2a.sock --kernel /lab/vmlinuz --initrd /lab/l2.initrd.gz \
    --cmdline "$_cmdline" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial "file:$_out.a.serial" $_dev
  echo "$*" > "$_out.cmd"
  _t0=$(now)
  spawn "$_out.a" timeout -s KILL "$L2_TIMEOUT" "$@"
  _ajob=$SPAWNED
  _tpause='' _tsnap='' _tkill=''
  if wait_for "$L2_TIMEOUT" "$_out.a.serial" '^VESSEL-L2-UP' "$_out.a.rc"; then
    elapsed "$_t0" > "$_out.marker"
  else
    echo - > "$_out.marker"
  fi
  if wait_for "$L2_TIMEOUT" "$_out.a.serial" "^L2 tick $_at " "$_out.a.rc"; then
    api running-a /tmp/l2a.sock GET /
    _p0=$(now)
    api pause /tmp/l2a.sock PATCH /vm '{"state": "Paused"}'
    _tpause=$(elapsed "$_p0")
    _size_pause=$(wc -c < "$_out.a.serial")
    api paused-a /tmp/l2a.sock GET /
    _s0=$(now)
    api snapshot /tmp/l2a.sock PUT /snapshot/create "{\"snapshot_path\": \"$_snap\"}"
    _tsnap=$(elapsed "$_s0")
    api after-snapshot-a /tmp/l2a.sock GET /
    _size_snap=$(wc -c < "$_out.a.serial")
  else
    echo "no 'L2 tick $_at' from the guest within $L2_TIMEOUT s" >> "$_out.api"
  fi
  _k0=$(now)
  [ ! -f "$_out.a.pid" ] || kill -KILL "$(cat "$_out.a.pid")" 2>/dev/null
  wait "$_ajob"
  _tkill=$(elapsed "$_k0")
  echo "bytes=$(wc -c < "$_snap" 2>/dev/null || echo none) allocated_kb=$(du -k "$_snap" 2>/dev/null | cut -f1)" \
    "serial_at_pause=${_size_pause:-none} serial_after_snapshot=${_size_snap:-none}" \
    "serial_at_death=$(wc -c < "$_out.a.serial")" > "$_out.snap"
  _tapi='' _tout='' _ttick='' _bjob='' _texec='' _tsock=''
  if [ -f "$_snap" ]; then
    # The VM does not exist for SNAP_GAP s (default 10): a guest clock that counted that time would show it.
    sleep "${SNAP_GAP:-10}"
    # For scale: starting the (static) binary and nothing else.
    _e0=$(now)
    /lab/bin/vessel-vmm --version > /dev/null 2>&1
    _texec=$(elapsed "$_e0")
    set -- /lab/bin/vessel-vmm --restore "$_snap" --api-sock /tmp/l2b.sock --serial "file:$_out.b.serial"
    echo "$*" >> "$_out.cmd"
    _r0=$(now)
    spawn "$_out.b" timeout -s KILL "$L2_TIMEOUT" "$@"
    _bjob=$SPAWNED
    # Until the API says Running, COM1 has output and a tick line came (or the VMM ended / 60 s passed).
    _i=0
    while [ $_i -lt 1200 ] && [ ! -f "$_out.b.rc" ]; do
      [ -n "$_tsock" ] || [ ! -S /tmp/l2b.sock ] || _tsock=$(elapsed "$_r0")
      if [ -z "$_tapi" ] && /lab/bin/api-call -t 5 /tmp/l2b.sock GET / 2>/dev/null | grep -q '"Running"'; then
        _tapi=$(elapsed "$_r0")
      fi
      [ -n "$_tout" ] || [ ! -s "$_out.b.serial" ] || _tout=$(elapsed "$_r0")
      [ -n "$_ttick" ] || ! grep -q '^L2 tick ' "$_out.b.serial" 2>/dev/null || _ttick=$(elapsed "$_r0")
      # The output may have come between the two looks.
      [ -n "$_tout" ] || [ -z "$_ttick" ] || _tout=$_ttick
      [ -n "$_tapi" ] && [ -n "$_ttick" ] && break
      sleep 0.05
      _i=$((_i + 1))
    done
    api running-b /tmp/l2b.sock GET /
    wait "$_bjob"
    cp "$_out.b.rc" "$_out.rc"
    cp "$_out.b.err" "$_out.err"
  else
    echo "no snapshot file: no restore" >> "$_out.api"
    echo none > "$_out.rc"
  fi
  elapsed "$_t0" > "$_out.time"
  cat "$_out.a.serial" "$_out.b.serial" > "$_out.serial" 2>/dev/null
  echo "pause=${_tpause:-none} snapshot=${_tsnap:-none} kill=${_tkill:-none} restore_api=${_tapi:-none}" \
    "restore_output=${_tout:-none} restore_tick=${_ttick:-none} exec=${_texec:-none} restore_sock=${_tsock:-none}" \
    "gap=${SNAP_GAP:-10}" > "$_out.times"
}

# button_l2 OUT CMDLINE-EXTRA: the power-button boot, vessel-vmm only (its API). The guest (vessel.button=1, no
# disk) boots with the API on /tmp/l2p.sock and COM1 to OUT.serial; once it says "L2 button ready" (its reader
# waits on the power button's input device), level 1 presses the button (PUT /actions PressPowerButton), again
# every 15 s while the VMM runs and the guest has not reported the event (4 presses at most), then waits for the
# VMM's end. Records OUT.{cmd,err,rc,time,marker} as boot_l2 does, OUT.api (each request and its answer),
# OUT.presses (how many were sent) and OUT.times (press_to_exit: the last press -> the VMM's end, s).
button_l2() {
  _out=$1 _cmdline="$L2_CMDLINE $2"
  rm -f /tmp/l2p.sock "$_out".*
  : > "$_out.api"
  set -- /lab/bin/vessel-vmm --api-sock /tmp/l2p.sock --kernel /lab/vmlinuz --initrd /lab/l2.initrd.gz \
    --cmdline "$_cmdline" --cpus "$L2_CPUS" --memory "$L2_MEM" --serial "file:$_out.serial"
  echo "$*" > "$_out.cmd"
  _t0=$(now)
  spawn "$_out" timeout -s KILL "$L2_TIMEOUT" "$@"
  _job=$SPAWNED
  if wait_for "$L2_TIMEOUT" "$_out.serial" '^VESSEL-L2-UP' "$_out.rc"; then
    elapsed "$_t0" > "$_out.marker"
  else
    echo - > "$_out.marker"
  fi
  _n=0 _tp=''
  if wait_for "$L2_TIMEOUT" "$_out.serial" '^L2 button ready' "$_out.rc"; then
    while [ $_n -lt 4 ] && [ ! -f "$_out.rc" ] && ! grep -q '^L2 button event' "$_out.serial"; do
      _n=$((_n + 1))
      _tp=$(now)
      api "press$_n" /tmp/l2p.sock PUT /actions '{"action_type": "PressPowerButton"}'
      wait_for 15 "$_out.serial" '^L2 button event' "$_out.rc"
    done
  else
    echo "no 'L2 button ready' from the guest: no press" >> "$_out.api"
  fi
  echo "$_n" > "$_out.presses"
  wait "$_job"
  echo "press_to_exit=$([ -n "$_tp" ] && elapsed "$_tp" || echo none)" > "$_out.times"
  elapsed "$_t0" > "$_out.time"
}
