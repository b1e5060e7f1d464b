#!/bin/sh
# Runs inside the full VM (Debian 12, systemd as PID 1), started by the
# harness's unit once boot has finished; prints TAP.  Proves the harness:
# systemd 252 is PID 1 and runs a Type=notify unit to readiness; then runs the
# service's own checks (guest-systemd-check.sh) when they were copied in.
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() {
	what=$1
	shift
	if "$@" >/dev/null 2>&1; then ok "$what"; else not_ok "$what"; fi
}
comment() { sed 's/^/# /'; }

check "PID 1 is systemd" [ "$(cat /proc/1/comm)" = systemd ]
ver=$(systemctl --version | head -1)
case $ver in
"systemd 252 "*) ok "systemd version 252 ($ver)" ;;
*) not_ok "systemd version 252 (got '$ver')" ;;
esac
state=$(systemctl is-system-running)
case $state in
running) ok "boot finished, system running" ;;
*)
	not_ok "boot finished, system running (state $state)"
	systemctl --failed --no-legend 2>&1 | comment
	;;
esac

# A Type=notify unit: start returns once the service said READY=1, with its
# STATUS= text kept by the manager.
mkdir -p /run/systemd/system
cat >/run/systemd/system/vm-notify.service <<'UNIT'
[Service]
Type=notify
NotifyAccess=all
ExecStart=/bin/sh -c 'sleep 1; systemd-notify --ready --status="vm check ready"; exec sleep 600'
TimeoutStartSec=60
UNIT
# The converse: a notify unit that never says READY=1 must fail to start,
# or the check above proves nothing.
cat >/run/systemd/system/vm-never-ready.service <<'UNIT'
[Service]
Type=notify
ExecStart=/bin/sleep 600
TimeoutStartSec=3
UNIT
systemctl daemon-reload
check "Type=notify unit starts" systemctl start vm-notify.service
check "Type=notify unit is active" systemctl is-active vm-notify.service
status=$(systemctl show -p StatusText --value vm-notify.service)
check "STATUS= reached the manager ('$status')" [ "$status" = "vm check ready" ]
check "Type=notify unit stops" systemctl stop vm-notify.service
check "stopped unit is inactive" [ "$(systemctl is-active vm-notify.service)" = inactive ]
check "a notify unit that never reports READY fails to start" eval '! systemctl start vm-never-ready.service'

# The installed build, when the harness installed one.
if command -v tierd >/dev/null 2>&1; then
	# Whether it is installed and its libraries resolve, not its leaks: the
	# sanitizers' exit path drops a piped stdout.
	check "tierd installed ($(command -v tierd)) and runs" \
		sh -c 'ASAN_OPTIONS=detect_leaks=0 tierd -V | grep -q "^tierd "'
else
	echo "ok $((n = n + 1)) # SKIP no tierd installed in this guest"
fi
echo "1..$n"

if [ -f ./guest-systemd-check.sh ]; then
	# What the service's checks expect to find: a demo checkpoint for
	# the model they configure.
	if command -v tierctl >/dev/null 2>&1 && [ ! -d /var/lib/tierd/demo ]; then
		mkdir -p /var/lib/tierd
		ASAN_OPTIONS=detect_leaks=0 tierctl demo-store /var/lib/tierd/demo --layers 2 --experts 8 \
			--hidden 64 --ffn 128 2>&1 | comment
	fi
	echo "# service checks: guest-systemd-check.sh"
	chmod +x ./guest-systemd-check.sh
	./guest-systemd-check.sh || failed=$((failed + 1))
fi
[ $failed -eq 0 ]
