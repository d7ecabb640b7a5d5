#!/bin/sh
# Runs as PID 1 inside the qemu guest (pure cgroup v2): exercises skiff's v2 driver and prints
# "RESULT PASS name" / "RESULT FAIL name: why" lines, then "RESULT DONE" and powers off.
# Bundles (config.json + rootfs) were prepared by conformance/tests/cgroups_v2.rs under /bundles.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
ip link set lo up 2>/dev/null

S="/skiff --root /run/skiff"
CG=/sys/fs/cgroup
. "$(dirname "$0")/checks.sh"

echo "guest: kernel $(uname -r), cgroup fs $(stat -f -c %T /sys/fs/cgroup), controllers: $(cat $CG/cgroup.controllers)"

# 1. every resource of the full bundle, read back from the v2 files
if $S run -d --bundle /bundles/full c1 >/tmp/c1.out 2>&1; then
  pass run-full
  D=$CG/c1
  check cpu.weight 20 "$(rd $D/cpu.weight)"
  check cpu.max "20000 100000" "$(rd $D/cpu.max)"
  check cpuset.cpus 0 "$(rd $D/cpuset.cpus)"
  check memory.max 67108864 "$(rd $D/memory.max)"
  check memory.low 33554432 "$(rd $D/memory.low)"
  if [ -e $D/memory.swap.max ]; then check memory.swap.max 67108864 "$(rd $D/memory.swap.max)"; fi
  check pids.max 50 "$(rd $D/pids.max)"
  if [ -e $D/io.bfq.weight ]; then check_has io.bfq.weight 500 "$(rd $D/io.bfq.weight)";
  else check_has io.weight "default 4950" "$(rd $D/io.weight)"; fi
  check unified.memory.high 50331648 "$(rd $D/memory.high)"
  PID=$($S state c1 | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')
  check_has init-in-cgroup "$PID" "$(cat $D/cgroup.procs)"
  check ps-json "[$PID]" "$($S ps --format json c1)"
  check_has ps-table "sleep" "$($S ps c1)"
  check_has exec-cgroup "0::/" "$($S exec c1 cat /proc/self/cgroup)"
  # pause/resume through cgroup.freeze
  $S pause c1
  check freeze-file 1 "$(rd $D/cgroup.freeze)"
  check_has state-paused '"paused"' "$($S state c1)"
  $S resume c1
  check_has state-running '"running"' "$($S state c1)"
  check thawed 0 "$(rd $D/cgroup.freeze)"
  # update
  $S update --memory 100m --memory-swap 200m --pids-limit 20 --cpu-quota 30000 --cpu-share 1024 c1
  check update.memory.max 104857600 "$(rd $D/memory.max)"
  check update.pids.max 20 "$(rd $D/pids.max)"
  check update.cpu.max "30000 100000" "$(rd $D/cpu.max)"
  check update.cpu.weight 39 "$(rd $D/cpu.weight)"
  echo '{"unified":{"pids.max":"33"}}' | $S update -r - c1
  check update.unified 33 "$(rd $D/pids.max)"
  # events --stats
  EV=$($S events --stats c1)
  check_has events-type '"type":"stats"' "$EV"
  check_has events-pids '"pids":{"current":1,"limit":33}' "$EV"
  check_has events-memlimit '"limit":104857600' "$EV"
  $S kill c1 KILL; sleep 1
  $S delete c1
  if [ -e $D ]; then fail delete-removes-cgroup "$D still exists"; else pass delete-removes-cgroup; fi
else
  fail run-full "$(cat /tmp/c1.out)"
fi

# 2. device eBPF program: /dev/ttyS0 bind-mounted in; denied unless a rule allows c 4:64
OUT=$($S run --bundle /bundles/devdeny c2 2>&1)
check_has bpf-deny "Operation not permitted" "$OUT"
OUT=$($S run --bundle /bundles/devallow c3 2>&1)
check_has bpf-allow "opened-ok" "$OUT"
check_has bpf-null-allowed "null-ok" "$OUT"
$S delete -f c2 >/dev/null 2>&1; $S delete -f c3 >/dev/null 2>&1

# 3. seed: cpu quota 20000/100000 on a busy loop
if $S run -d --bundle /bundles/busy c4 >/tmp/c4.out 2>&1; then
  sleep 1
  U0=$(sed -n 's/^usage_usec //p' $CG/c4/cpu.stat); T0=$(cut -d' ' -f1 /proc/uptime)
  sleep 3
  U1=$(sed -n 's/^usage_usec //p' $CG/c4/cpu.stat); T1=$(cut -d' ' -f1 /proc/uptime)
  PCT=$(awk -v a=$U0 -v b=$U1 -v s=$T0 -v e=$T1 'BEGIN{printf "%d", (b-a)/((e-s)*1000000)*100}')
  echo "guest: busy loop with quota 20000/100000 used ${PCT}% of a CPU"
  if [ "$PCT" -ge 8 ] && [ "$PCT" -le 35 ]; then pass cpu-quota-20pct; else fail cpu-quota-20pct "$PCT%"; fi
  $S delete -f c4
else
  fail cpu-quota-20pct "$(cat /tmp/c4.out)"
fi

# 4. seed: memory limit -> OOM kill and an oom event
if $S create --bundle /bundles/oom c5 >/tmp/c5.out 2>&1; then
  $S events --interval 1s c5 >/tmp/ev5 2>&1 &
  EVPID=$!
  sleep 0.5
  $S start c5
  i=0; while [ $i -lt 100 ] && ! grep -q '"oom"' /tmp/ev5; do sleep 0.2; i=$((i+1)); done
  check_has oom-event '{"type":"oom","id":"c5"}' "$(cat /tmp/ev5)"
  check_has oom-kill-counted "oom_kill 1" "$(cat $CG/c5/memory.events)"
  kill $EVPID 2>/dev/null
  $S delete -f c5
else
  fail oom-event "$(cat /tmp/c5.out)"
fi

# 5. seed: pids limit makes fork fail
OUT=$($S run --bundle /bundles/pids c6 2>&1)
check_has pids-fork-fails "can't fork" "$OUT"
$S delete -f c6 >/dev/null 2>&1

# 6. bad input leaves nothing behind
OUT=$($S run -d --bundle /bundles/badcpus c7 2>&1)
check_has bad-cpus-error "cpuset.cpus" "$OUT"
if [ -e $CG/c7 ]; then fail bad-cpus-no-cgroup "$CG/c7 left"; else pass bad-cpus-no-cgroup; fi
OUT=$($S run -d --bundle /bundles/badunified c8 2>&1)
check_has bad-unified-error "no such cgroup file" "$OUT"
if [ -e $CG/c8 ]; then fail bad-unified-no-cgroup "$CG/c8 left"; else pass bad-unified-no-cgroup; fi
OUT=$($S run -d --bundle /bundles/rt c9 2>&1)
check_has realtime-error "not supported on cgroup v2" "$OUT"

echo "guest: leftover cgroups: $(ls -d $CG/*/ 2>/dev/null | tr '\n' ' ')"
echo "RESULT DONE"
poweroff -f
