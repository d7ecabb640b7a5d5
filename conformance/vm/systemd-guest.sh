#!/bin/sh
# Runs inside the qemu guest booted with systemd as PID 1 (conformance/tests/cgroups_systemd.rs),
# as the oneshot unit skiff-test.service: exercises `skiff --systemd-cgroup` against the real
# systemd and prints "RESULT PASS name" / "RESULT FAIL name: why" / "RESULT SKIP name: why" lines,
# then "RESULT DONE". The unit powers the guest off when this script ends.
# Bundles (config.json + rootfs) were prepared by the test under /skiff-guest/bundles.
G=/skiff-guest
S="$G/skiff --root /run/skiff --systemd-cgroup"
CG=/sys/fs/cgroup
. "$(dirname "$0")/checks.sh"
# prop UNIT PROPERTY: what systemd says about the unit
prop() { systemctl show -p "$2" --value "$1" 2>&1; }
# gone NAME UNIT DIR: the unit is unknown to systemd and its cgroup is removed
gone() {
  i=0; while [ $i -lt 50 ] && [ -e "$3" ]; do sleep 0.1; i=$((i+1)); done
  check "$1-unit-gone" "inactive" "$(systemctl is-active "$2" 2>&1)"
  check "$1-unit-unloaded" "not-found" "$(prop "$2" LoadState)"
  if [ -e "$3" ]; then fail "$1-cgroup-gone" "$3 still exists"; else pass "$1-cgroup-gone"; fi
}
pid_of() { $S state "$1" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p'; }
# The guest runs pure cgroup v2 (systemd's default) or, booted with
# systemd.unified_cgroup_hierarchy=0, systemd's hybrid layout (v1 controllers, like the dev host).
if [ "$(stat -f -c %T $CG)" = cgroup2fs ]; then V2=1; else V2=; fi
# dir CONTROLLER CGROUP: the directory of CGROUP holding CONTROLLER's files
dir() { if [ -n "$V2" ]; then echo "$CG$2"; else echo "$CG/$1$2"; fi; }

echo "guest: cgroup layout $([ -n "$V2" ] && echo unified || echo hybrid/legacy), up $(cut -d" " -f1 /proc/uptime)s, kernel $(uname -r), pid 1 $(cat /proc/1/comm), cgroup fs $(stat -f -c %T $CG), systemd $(systemctl --version | head -1)"
check systemd-is-pid1 systemd "$(cat /proc/1/comm)"
# skiff talks to systemd over the D-Bus system bus, as runc does. Start only dbus itself (its
# usual dependencies would boot most of the system, minutes under TCG).
systemctl start --job-mode=ignore-dependencies dbus.socket >/dev/null 2>&1
systemctl start --job-mode=ignore-dependencies dbus.service >/dev/null 2>&1
check dbus-active active "$(systemctl is-active dbus.service 2>&1)"

# 1. system.slice:skiff:sd1
U=skiff-sd1.scope
P=/system.slice/$U
D=$(dir pids $P)
if $S create --bundle $G/bundles/sd1 sd1 >/tmp/sd1.out 2>&1; then
  pass sd1-create
  # create returns after systemd's job finished: the unit is active right away
  check sd1-unit-active active "$(systemctl is-active $U 2>&1)"
  check sd1-unit-cgroup /system.slice/$U "$(prop $U ControlGroup)"
  check sd1-unit-slice system.slice "$(prop $U Slice)"
  check sd1-unit-delegate yes "$(prop $U Delegate)"
  check sd1-unit-TasksMax 50 "$(prop $U TasksMax)"
  check sd1-unit-CPUQuota 200ms "$(prop $U CPUQuotaPerSecUSec)"
  PID=$(pid_of sd1)
  check_has sd1-init-in-scope "$PID" "$(cat $D/cgroup.procs 2>&1)"
  check sd1-pids.max 50 "$(rd $D/pids.max)"
  if [ -n "$V2" ]; then
    check sd1-unit-MemoryMax 67108864 "$(prop $U MemoryMax)"
    check sd1-unit-CPUWeight 20 "$(prop $U CPUWeight)"
    check sd1-unit-MemoryHigh 50331648 "$(prop $U MemoryHigh)"
    check sd1-proc-cgroup "0::$P" "$(cat /proc/$PID/cgroup 2>&1)"
    check sd1-memory.max 67108864 "$(rd $D/memory.max)"
    check sd1-cpu.max "20000 100000" "$(rd $D/cpu.max)"
    check sd1-cpu.weight 20 "$(rd $D/cpu.weight)"
    # a limit systemd has no property for, written by skiff into the scope's cgroup
    check sd1-direct-memory.oom.group 1 "$(rd $D/memory.oom.group)"
  else
    check sd1-unit-MemoryLimit 67108864 "$(prop $U MemoryLimit)"
    check sd1-unit-CPUShares 512 "$(prop $U CPUShares)"
    for c in pids memory cpu,cpuacct freezer cpuset; do
      check_has sd1-proc-cgroup-$c "$c:$P" "$(cat /proc/$PID/cgroup 2>&1)"
    done
    check sd1-memory.limit_in_bytes 67108864 "$(rd $(dir memory $P)/memory.limit_in_bytes)"
    check sd1-cpu.cfs_quota_us 20000 "$(rd $(dir cpu,cpuacct $P)/cpu.cfs_quota_us)"
    check sd1-cpu.shares 512 "$(rd $(dir cpu,cpuacct $P)/cpu.shares)"
    # hierarchies systemd does not manage: skiff makes the same path there
    check_has sd1-freezer-dir "$PID" "$(cat $(dir freezer $P)/cgroup.procs 2>&1)"
    check sd1-direct-swappiness 10 "$(rd $(dir memory $P)/memory.swappiness)"
  fi
  check_has sd1-state-created '"created"' "$($S state sd1)"
  $S start sd1
  check_has sd1-state-running '"running"' "$($S state sd1)"
  check sd1-ps-json "[$PID]" "$($S ps --format json sd1)"
  check_has sd1-exec-cgroupns "0::/" "$($S exec sd1 cat /proc/self/cgroup)"
  # update: systemd's properties and the files
  $S update --memory 100m --pids-limit 20 sd1 >/tmp/up.out 2>&1 || fail sd1-update "$(cat /tmp/up.out)"
  if [ -n "$V2" ]; then MEMPROP=MemoryMax; MEMFILE=memory.max; else MEMPROP=MemoryLimit; MEMFILE=memory.limit_in_bytes; fi
  MD=$(dir memory $P)
  check sd1-update-$MEMPROP 104857600 "$(prop $U $MEMPROP)"
  check sd1-update-TasksMax 20 "$(prop $U TasksMax)"
  check sd1-update-$MEMFILE 104857600 "$(rd $MD/$MEMFILE)"
  check sd1-update-pids.max 20 "$(rd $D/pids.max)"
  # Changing the unit's memory/tasks settings makes systemd re-write those controllers' files
  # from its properties: the updated limits survive because skiff told systemd about them.
  systemctl set-property --runtime $U MemoryAccounting=yes TasksAccounting=yes
  check sd1-reapplied-$MEMFILE 104857600 "$(rd $MD/$MEMFILE)"
  check sd1-reapplied-pids.max 20 "$(rd $D/pids.max)"
  # pause/resume through the scope's cgroup.freeze (v2) or the freezer hierarchy (v1)
  $S pause sd1
  if [ -n "$V2" ]; then check sd1-freeze 1 "$(rd $D/cgroup.freeze)";
  else check sd1-freeze FROZEN "$(rd $(dir freezer $P)/freezer.state)"; fi
  check_has sd1-state-paused '"paused"' "$($S state sd1)"
  $S resume sd1
  if [ -n "$V2" ]; then check sd1-thawed 0 "$(rd $D/cgroup.freeze)";
  else check sd1-thawed THAWED "$(rd $(dir freezer $P)/freezer.state)"; fi
  check_has sd1-state-resumed '"running"' "$($S state sd1)"
  EV=$($S events --stats sd1)
  check_has sd1-events-pids '"pids":{"current":1,"limit":20}' "$EV"
  check_has sd1-events-memlimit '"limit":104857600' "$EV"
  $S kill sd1 KILL
  i=0; while [ $i -lt 50 ] && ! $S state sd1 | grep -q '"stopped"'; do sleep 0.1; i=$((i+1)); done
  check_has sd1-state-stopped '"stopped"' "$($S state sd1)"
  $S delete sd1 >/tmp/del.out 2>&1 || fail sd1-delete "$(cat /tmp/del.out)"
  gone sd1 $U $D
  if [ -z "$V2" ]; then
    for c in freezer cpuset memory; do
      if [ -e "$(dir $c $P)" ]; then fail sd1-$c-dir-gone "$(dir $c $P) left"; else pass sd1-$c-dir-gone; fi
    done
  fi
else
  fail sd1-create "$(cat /tmp/sd1.out)"
fi

# 2. nested slice machine-test.slice:skiff:sd2; delete -f of a running container stops the unit
U=skiff-sd2.scope
D=$(dir pids /machine.slice/machine-test.slice/$U)
if $S run -d --bundle $G/bundles/sd2 sd2 >/tmp/sd2.out 2>&1; then
  pass sd2-run
  check sd2-unit-active active "$(systemctl is-active $U 2>&1)"
  check sd2-unit-slice machine-test.slice "$(prop $U Slice)"
  check sd2-unit-cgroup /machine.slice/machine-test.slice/$U "$(prop $U ControlGroup)"
  PID=$(pid_of sd2)
  check_has sd2-init-in-scope "$PID" "$(cat $D/cgroup.procs 2>&1)"
  check sd2-pids.max 7 "$(rd $D/pids.max)"
  check sd2-unit-TasksMax 7 "$(prop $U TasksMax)"
  $S update --pids-limit 9 sd2
  check sd2-update-TasksMax 9 "$(prop $U TasksMax)"
  check sd2-update-pids.max 9 "$(rd $D/pids.max)"
  $S delete -f sd2 >/tmp/del2.out 2>&1 || fail sd2-delete "$(cat /tmp/del2.out)"
  gone sd2 $U $D
else
  fail sd2-run "$(cat /tmp/sd2.out)"
fi

# 3. a create that fails after systemd made the unit (cpuset.cpus 99 cannot be written) leaves
#    no unit and no cgroup behind
U=skiff-sd3.scope
OUT=$($S create --bundle $G/bundles/sd3 sd3 2>&1)
check_has sd3-error "cpuset.cpus" "$OUT"
gone sd3 $U "$(dir pids /system.slice/$U)"
if [ -e "$(dir cpuset /system.slice/$U)" ]; then fail sd3-cpuset-gone "left"; else pass sd3-cpuset-gone; fi
check sd3-no-state "" "$(ls /run/skiff 2>/dev/null | grep sd3)"

# 4. an invalid slice name is refused before systemd is asked
OUT=$($S create --bundle $G/bundles/sd4 sd4 2>&1)
check_has sd4-bad-slice-error "not a valid slice name" "$OUT"
check sd4-no-unit "not-found" "$(prop skiff-sd4.scope LoadState)"

# 5. without a D-Bus system bus: a clear error, no unit, no state
systemctl stop dbus.socket dbus.service >/dev/null 2>&1
OUT=$($S create --bundle $G/bundles/sd5 sd5 2>&1)
check_has sd5-no-bus-error "system bus" "$OUT"
check sd5-no-bus-no-unit "not-found" "$(prop skiff-sd5.scope LoadState)"
check sd5-no-bus-no-state "" "$(ls /run/skiff 2>/dev/null | grep sd5)"

# 6. without the D-Bus helper next to skiff (nor on PATH): an error naming it, no unit, no state
if mv $G/skiff-systemd $G/skiff-systemd.off; then
  OUT=$($S create --bundle $G/bundles/sd5 sd6 2>&1)
  mv $G/skiff-systemd.off $G/skiff-systemd
  check_has sd6-no-helper-error "skiff-systemd was not found in $G" "$OUT"
  check sd6-no-helper-no-unit "not-found" "$(prop skiff-sd6.scope LoadState)"
  check sd6-no-helper-no-state "" "$(ls /run/skiff 2>/dev/null | grep sd6)"
else
  fail sd6-no-helper "cannot move $G/skiff-systemd away"
fi

echo "guest: skiff scopes left: [$(systemctl list-units --all --no-legend 'skiff-*.scope' 2>&1 | tr '\n' ' ')], uptime $(cut -d' ' -f1 /proc/uptime)s"
echo "RESULT DONE"
