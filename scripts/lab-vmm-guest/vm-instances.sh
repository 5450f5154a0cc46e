#!/bin/sh
# boot8 in level 1 (busybox; sourced by run.sh, written by scripts/lab-vmm): vesseld runs VM instances made
# from the busybox image (`vessel run --vm`), each a level-2 guest booting Debian's cloud kernel with the
# initramfs vesseld writes (vessel-agent as init). Records what it saw in /lab/out/boot8.*; the host judges.
o=/lab/out/boot8
V="/lab/bin/vessel --root /tmp/vroot --host unix:///tmp/vrun/vessel.sock"
echo "== boot8: vesseld runs VM instances from the busybox image (vessel run --vm)"
mkdir -p /tmp/vroot/kernels /tmp/vrun
# mkfs.ext4 for vesseld's disks (Debian's, brought by scripts/lab-vmm).
PATH=/lab/e2fs:$PATH
export PATH
# The kernel vesseld would fetch with apt, unpacked on the host (its modules' files only): in its cache.
for k in /lab/kernels/*; do ln -s "$k" "/tmp/vroot/kernels/$(basename "$k")"; done
/lab/bin/vesseld --root /tmp/vroot --run-dir /tmp/vrun --name vlab --userns-default host \
  --agent /lab/bin/vessel-agent --vm-boot-timeout "$L2_TIMEOUT" > $o.vesseld 2>&1 &
i=0
while [ ! -S /tmp/vrun/vessel.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
$V image import --change 'CMD ["sh"]' /lab/rootfs t/busybox > $o.import 2>&1
echo "rc=$?" >> $o.import
# 1. In the foreground: the process's output and exit status, the guest's kernel.
t=$(date +%s)
$V run --vm --network none --name fg t/busybox sh -c 'echo hello from a vm; uname -r; exit 7' > $o.run1 2>&1
echo "$?" > $o.rc1
echo "$(($(date +%s) - t))" > $o.time1
# 2. Detached: logs, stop (SIGTERM to the process through the agent), the writable disk across a restart.
$V run -d --vm --network none --name w t/busybox \
  sh -c 'cat /marker 2>/dev/null || echo first boot; echo persisted > /marker; echo ready; sleep 1000' > $o.run2 2>&1
echo "rc=$?" >> $o.run2
i=0
while ! $V logs w 2>/dev/null | grep -q ready && [ $i -lt "$L2_TIMEOUT" ]; do sleep 1; i=$((i + 1)); done
$V stop -t 30 w > $o.stop1 2>&1
echo "rc=$? $($V inspect w 2>&1 | tr -d ' \n' | grep -o '"exit_code":[0-9-]*\|"status":"[a-z]*"' | tr '\n' ' ')" >> $o.stop1
$V start w > $o.start2 2>&1
echo "rc=$?" >> $o.start2
i=0
while [ "$($V logs w 2>/dev/null | grep -c ready)" -lt 2 ] && [ $i -lt "$L2_TIMEOUT" ]; do sleep 1; i=$((i + 1)); done
$V logs w > $o.logs 2>&1
$V stop -t 30 w > /dev/null 2>&1
$V rm w fg > $o.rm 2>&1
echo "rc=$?" >> $o.rm
ls /tmp/vroot/instances > $o.left 2>&1
cat /tmp/vroot/instances/*/console.log > $o.console 2>/dev/null
kill "$(cat /tmp/vrun/vesseld.pid 2>/dev/null)" 2>/dev/null
for f in import run1 rc1 time1 run2 stop1 start2 logs rm; do sed "s/^/   boot8 $f | /" $o.$f; done
tail -n 20 $o.vesseld | sed 's/^/   boot8 vesseld | /'
