#!/bin/bash
# SPDX-License-Identifier: MIT
# The Debian package: dpkg-buildpackage -b -us -uc on a copy of this source
# tree (tracked and new files, no build outputs), lintian with no errors, the
# contents each binary package promises, the shipped configuration accepted
# by tierd -t.  Leaves the .debs in $top_builddir/tests/debs for the VM suite
# (tests/vm/deb.sh), which installs them under systemd.  Needs root (the
# package builds as root, Rules-Requires-Root: no).  Prints TAP.
#
# Runs in the main build only: a release tarball (make distcheck's) has no
# debian/ and no git checkout, and the test skips there.
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/.." && pwd)}
top_builddir=${top_builddir:-$top_srcdir}
debs=$top_builddir/tests/debs
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; }
comment() { sed 's/^/# /'; }
# A TAP plan of 0 with SKIP and exit status 0: the TAP driver counts a skip
# (77 is for tests without TAP; here it would be an error).
skip_all() { echo "1..0 # SKIP $1"; exit 0; }

rm -rf "$debs"
[ "$(id -u)" = 0 ] || skip_all "needs root"
for t in dpkg-buildpackage dh lintian git; do
	command -v "$t" >/dev/null 2>&1 || skip_all "$t not installed (contrib/install-deps.sh)"
done
[ -f "$top_srcdir/debian/control" ] || skip_all "no debian/ in this tree (a release tarball)"
[ "$(git -C "$top_srcdir" rev-parse --show-toplevel 2>/dev/null)" = "$(cd "$top_srcdir" && pwd -P)" ] ||
	skip_all "$top_srcdir is not a git checkout"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tierd-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "1..9"

# 1: the package builds.  From a copy: dpkg-buildpackage builds in the
# source directory, which must stay free of an in-tree configure.
src=$tmp/tierd
mkdir -p "$src"
(cd "$top_srcdir" && git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$src")
t0=$(date +%s)
if (cd "$src" && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS DEB_BUILD_OPTIONS="nocheck parallel=2" \
	dpkg-buildpackage -b -us -uc) >"$tmp/build.log" 2>&1; then
	ok "dpkg-buildpackage -b -us -uc ($(($(date +%s) - t0)) s)"
else
	notok "dpkg-buildpackage -b -us -uc"
	tail -30 "$tmp/build.log" | comment
fi
ver=$(dpkg-parsechangelog -l "$top_srcdir/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
deb() { echo "$tmp/${1}_${ver}_$2.deb"; }

# 2: the four binary packages.
missing=""
for p in "tierd $arch" "libtierd-client0 $arch" "libtierd-client-dev $arch" "python3-tierd all"; do
	# shellcheck disable=SC2086
	[ -f "$(deb $p)" ] || missing="$missing ${p% *}"
done
[ -z "$missing" ] && ok "four binary packages built" || notok "four binary packages built (missing:$missing)"

# 3: lintian, no errors; what it still warns of is printed (README.md
# lists each and why).
changes=$tmp/tierd_${ver}_$arch.changes
if lintian --fail-on error --tag-display-limit 0 "$changes" </dev/null >"$tmp/lintian.out" 2>&1; then
	ok "lintian: no errors ($(grep -c '^W: ' "$tmp/lintian.out") warnings)"
else
	notok "lintian: no errors"
fi
comment <"$tmp/lintian.out"

# 4-7: what each package holds.
has() { # PACKAGE-FILE PATH...: each path is in the package
	local f=$1 p
	shift
	dpkg-deb -c "$f" >"$tmp/list" 2>/dev/null || return 1
	for p in "$@"; do
		grep -Eq " \./${p}( ->|$)" "$tmp/list" || { echo "# no $p in $(basename "$f")"; return 1; }
	done
}
multi=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
if has "$(deb tierd "$arch")" usr/sbin/tierd usr/bin/tierctl lib/systemd/system/tierd.service \
	lib/systemd/system/tierd.socket usr/lib/sysusers.d/tierd.conf etc/tierd/tierd.conf \
	usr/share/man/man8/tierd.8.gz usr/share/man/man5/tierd.conf.5.gz usr/share/man/man8/tierctl.8.gz \
	usr/share/doc/tierd/examples/tierd.conf lib/udev/rules.d/60-tierd.rules; then
	ok "tierd: daemon, tierctl, units, sysusers.d user, udev rule, configuration, man pages, example"
else
	notok "tierd: daemon, tierctl, units, sysusers.d user, udev rule, configuration, man pages, example"
fi
if has "$(deb libtierd-client0 "$arch")" "usr/lib/$multi/libtierd-client.so.0" &&
	! grep -q '\.so -> \|include/' "$tmp/list"; then
	ok "libtierd-client0: the shared library and nothing for development"
else
	notok "libtierd-client0: the shared library and nothing for development"
fi
if has "$(deb libtierd-client-dev "$arch")" usr/include/tierd-client.h usr/include/tierd-types.h \
	"usr/lib/$multi/libtierd-client.a" "usr/lib/$multi/libtierd-client.so" \
	"usr/lib/$multi/pkgconfig/libtierd-client.pc" usr/share/man/man3/libtierd-client.3.gz; then
	ok "libtierd-client-dev: headers, .pc, static library, man page"
else
	notok "libtierd-client-dev: headers, .pc, static library, man page"
fi
if has "$(deb python3-tierd all)" usr/lib/python3/dist-packages/tierd_client.py &&
	has "$(deb python3-tierd all)" usr/lib/python3/dist-packages/tierd/torch.py &&
	mkdir -p "$tmp/py" && dpkg-deb -x "$(deb python3-tierd all)" "$tmp/py" &&
	PYTHONPATH=$tmp/py/usr/lib/python3/dist-packages /usr/bin/python3 -c 'import tierd_client, tierd.decoder' 2>&1 | comment &&
	[ "${PIPESTATUS[0]}" = 0 ]; then
	ok "python3-tierd: tierd_client and the tierd package (torch client) in python3's path, import"
else
	notok "python3-tierd: tierd_client and the tierd package (torch client) in python3's path, import"
fi

# 8: the packaged daemon accepts the packaged configuration, and the
# sysusers.d line makes a system user named tierd.
mkdir -p "$tmp/root"
if dpkg-deb -x "$(deb tierd "$arch")" "$tmp/root" &&
	"$tmp/root/usr/sbin/tierd" -t -c "$tmp/root/etc/tierd/tierd.conf" 2>&1 | comment &&
	[ "${PIPESTATUS[0]}" = 0 ] &&
	grep -Eq '^u +tierd ' "$tmp/root/usr/lib/sysusers.d/tierd.conf"; then
	ok "tierd -t accepts /etc/tierd/tierd.conf as packaged; sysusers.d names user tierd"
else
	notok "tierd -t accepts /etc/tierd/tierd.conf as packaged; sysusers.d names user tierd"
fi

# 9: the maintainer scripts create the user (systemd-sysusers) and do not
# start a daemon before the operator configured a model.
ctl=$tmp/ctl
mkdir -p "$ctl" && dpkg-deb -e "$(deb tierd "$arch")" "$ctl"
if grep -q systemd-sysusers "$ctl/postinst" && ! grep -q 'deb-systemd-invoke.*start' "$ctl/postinst" &&
	grep -q 'purge' "$ctl/postrm"; then
	ok "postinst: systemd-sysusers, no start; postrm: purge"
else
	notok "postinst: systemd-sysusers, no start; postrm: purge"
fi

if [ $failed = 0 ] || [ -f "$(deb tierd "$arch")" ]; then
	mkdir -p "$debs" && find "$tmp" -maxdepth 1 -name "*.deb" ! -name "*-dbgsym_*" -exec cp -t "$debs/" {} +
fi
[ $failed = 0 ]
