#!/bin/sh
# Runs inside the initramfs VM (busybox sh) with QEMU's emulated NVMe
# controller as /dev/nvme0; prints TAP.  Copied in by tests/vm/nvme.sh with
# nvme-cli and the programs listed in ./progs (one command line each).
ctrl=/dev/nvme0
ns=/dev/nvme0n1
tracing=/sys/kernel/tracing
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
failed=0
not_ok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $*"; }
check() {
	what=$1
	shift
	if "$@"; then ok "$what"; else not_ok "$what"; fi
}
comment() { sed 's/^/# /'; }

# A number in nvme-cli's JSON output, "name":N or "name":"N" (128-bit
# counters are strings).
json_num() {
	tr ',' '\n' | sed -n "s/.*\"$1\"[[:space:]]*:[[:space:]]*\"\{0,1\}\([0-9][0-9]*\).*/\1/p" | head -1
}

smart() {
	nvme smart-log $ctrl -o json 2>/dev/null | json_num "$1"
}

check "controller $ctrl and namespace $ns exist" test -c $ctrl -a -b $ns

idctrl=$(nvme id-ctrl $ctrl -o json 2>&1)
echo "$idctrl" | grep -q '"mn" *: *"QEMU NVMe Ctrl' && ok "id-ctrl: model is QEMU NVMe Ctrl" ||
	{ not_ok "id-ctrl: model is QEMU NVMe Ctrl"; echo "$idctrl" | head -20 | comment; }
npsd=$(echo "$idctrl" | json_num npss)
maxp=$(echo "$idctrl" | grep -A3 '"psds"' | json_num max_power)
if [ -n "$npsd" ] && [ -n "$maxp" ] && [ "$maxp" -gt 0 ]; then
	ok "power state descriptors readable (npss=$npsd, ps0 max_power=$maxp)"
else
	not_ok "power state descriptors readable (npss='$npsd' max_power='$maxp')"
fi

dur0=$(smart data_units_read)
duw0=$(smart data_units_written)
if [ -n "$dur0" ] && [ -n "$duw0" ]; then
	ok "SMART log readable (data units read $dur0, written $duw0)"
else
	not_ok "SMART log readable"
	nvme smart-log $ctrl 2>&1 | comment
fi

check "module BTF of nvme_core present" test -f /sys/kernel/btf/nvme_core
check "nvme tracepoints present" test -d $tracing/events/nvme/nvme_setup_cmd -a \
	-d $tracing/events/nvme/nvme_complete_rq

# QEMU counts 512-byte sectors moved by the namespace's block backend and
# reports DIV_ROUND_UP(sectors, 1000) data units, so reading B bytes with no
# other I/O advances the count by floor or ceil of B / 512000.
units_ok() { # delta bytes
	lo=$(($2 / 512000))
	hi=$((($2 + 511999) / 512000))
	[ "$1" -ge "$lo" ] && [ "$1" -le "$hi" ]
}
bytes=$((64 * 1024 * 1024))
if dd if=$ns of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null; then
	dur1=$(smart data_units_read)
	d=$((dur1 - dur0))
	check "SMART data units read advanced by $d for $bytes bytes read (expect $((bytes / 512000))..$(((bytes + 511999) / 512000)))" \
		units_ok "$d" "$bytes"
else
	not_ok "read 64 MiB with O_DIRECT from $ns"
fi
wbytes=$((8 * 1024 * 1024))
if dd if=/dev/zero of=$ns bs=1M count=8 seek=128 oflag=direct 2>/dev/null; then
	duw1=$(smart data_units_written)
	d=$((duw1 - duw0))
	check "SMART data units written advanced by $d for $wbytes bytes written" units_ok "$d" "$wbytes"
else
	not_ok "write 8 MiB with O_DIRECT to $ns"
fi

# A host-initiated power-state change (Set Features, feature 0x02 power
# management) is seen by the nvme_setup_cmd tracepoint.  QEMU's answer to the
# command does not matter here, only that the driver issued it.
echo 0 >$tracing/tracing_on
: >$tracing/trace
echo 1 >$tracing/events/nvme/nvme_setup_cmd/enable
echo 1 >$tracing/tracing_on
nvme set-feature $ctrl -f 2 -v 0 >/tmp/setf.out 2>&1
setf=$?
echo 0 >$tracing/tracing_on
echo 0 >$tracing/events/nvme/nvme_setup_cmd/enable
echo "set-feature exit status $setf: $(head -1 /tmp/setf.out)" | comment
if grep -q 'nvme_admin_set_features.*fid=0x2\|nvme_admin_set_features.*cdw10=02' $tracing/trace; then
	ok "Set Features (power management) seen by nvme:nvme_setup_cmd"
else
	not_ok "Set Features (power management) seen by nvme:nvme_setup_cmd"
	grep -v '^#' $tracing/trace | head -5 | comment
fi

# tierd's own view through libnvme (tests/nvme-info) must agree with
# nvme-cli's: same model, same number of power states, same SMART count.
if command -v nvme-info >/dev/null; then
	info=$(nvme-info $ctrl 2>&1)
	echo "$info" | grep -q '"model": *"QEMU NVMe Ctrl' && ok "nvme-info: model QEMU NVMe Ctrl" ||
		{ not_ok "nvme-info: model QEMU NVMe Ctrl"; echo "$info" | head -c 2000 | comment; }
	nps=$(echo "$info" | grep -o '"max_w"' | wc -l)
	check "nvme-info: $nps power state descriptors, nvme-cli says npss=$npsd" [ "$nps" = $((npsd + 1)) ]
	a=$(echo "$info" | json_num data_units_read)
	b=$(smart data_units_read)
	check "nvme-info: SMART data units read $a, nvme-cli $b" [ -n "$a" -a "$a" = "$b" ]
fi

# The programs under test, one command line each.  A program that prints
# TAP has its lines passed on (the host renumbers them); any other counts as
# one test, passed when it exits 0.
if [ -f ./progs ]; then
	while IFS= read -r cmd; do
		[ -n "$cmd" ] || continue
		sh -c "$cmd" </dev/null >/tmp/prog.out 2>&1
		rc=$?
		if grep -qE '^(ok|not ok) [0-9]|^1\.\.[0-9]|^Bail out!' /tmp/prog.out; then
			echo "# $cmd:"
			grep -vE '^(ok|not ok) [0-9]|^1\.\.[0-9]|^Bail out!|^#' /tmp/prog.out | comment
			grep -E '^(ok|not ok) [0-9]|^1\.\.[0-9]|^Bail out!|^#' /tmp/prog.out
		else
			comment </tmp/prog.out | head -25
		fi
		if [ $rc -eq 0 ]; then ok "$cmd"; else not_ok "$cmd (exit $rc)"; fi
	done <./progs
fi

echo "1..$n"
[ $failed -eq 0 ]
