#!/bin/sh
# test_rpm.sh - build the rpms (make rpm) and check what they contain:
# files per package (no .la/.a), library requirements only in the family
# subpackages, a unit systemd-analyze accepts inside the extracted payload,
# and the unit's security exposure (must be 2.0 or lower: "OK").
# Run from the build tree (make check-rpm). Needs rpmbuild, rpm2cpio, cpio,
# systemd-analyze (systemd >= 252 for --offline).
set -eu
build=${SB_TOP_BUILDDIR:-$(pwd)}
cd "$build"
fail=0
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }

for tool in rpmbuild rpm rpm2cpio cpio systemd-analyze; do
    command -v $tool >/dev/null 2>&1 || { echo "SKIP: $tool not installed"; exit 77; }
done

# Families this tree built (configure found their libraries): -gcp,
# -kafka and -odbc.
flags=${RPMBUILD_FLAGS:-}
if [ -f libsyncbridge_gcp.la ]; then with_gcp=1; else with_gcp=0; flags="$flags --without gcp"; fi
if [ -f plugins/kafka.la ]; then with_kafka=1; else with_kafka=0; flags="$flags --without kafka"; fi
if [ -f plugins/cloudsql.la ]; then with_odbc=1; else with_odbc=0; flags="$flags --without odbc"; fi

make rpm RPMBUILD_FLAGS="$flags" >rpm-build.log 2>&1 || { tail -40 rpm-build.log; echo "FAIL - make rpm (see rpm-build.log)"; exit 1; }
ok "make rpm"

pkg() { ls rpms/syncbridge-$1[0-9]*.rpm 2>/dev/null | grep -v -- '-debug' | head -1; }
main=$(pkg ""); devel=$(pkg devel-); gcp=$(pkg gcp-); kafka=$(pkg kafka-); odbc=$(pkg odbc-)
[ -n "$main" ] && ok "main package $main" || bad "no main package"
[ -n "$devel" ] && ok "devel package" || bad "no -devel package"
[ $with_gcp = 1 ] && { [ -n "$gcp" ] && ok "gcp package" || bad "no -gcp package"; }
[ $with_kafka = 1 ] && { [ -n "$kafka" ] && ok "kafka package" || bad "no -kafka package"; }
[ $with_odbc = 1 ] && { [ -n "$odbc" ] && ok "odbc package" || bad "no -odbc package"; }

has() { # rpm, path regex
    if rpm -qlp "$1" 2>/dev/null | grep -Eq "$2"; then ok "$(basename "$1"): $2"; else bad "$(basename "$1") lacks $2"; fi
}
lacks() {
    if rpm -qlp "$1" 2>/dev/null | grep -Eq "$2"; then bad "$(basename "$1") has $2"; else ok "$(basename "$1"): no $2"; fi
}
for re in '^/usr/bin/syncbridge$' '/libsyncbridge\.so\.2' '/syncbridge/file_in\.so$' '/syncbridge/file_out\.so$' \
          '/syncbridge/stdout\.so$' '/syncbridge/discard\.so$' '/syncbridge/filewatch\.so$' '^/etc/syncbridge/syncbridge\.json$' \
          '^/etc/syncbridge/conf\.d$' '/systemd/system/syncbridge\.service$' '/sysusers\.d/syncbridge\.conf$' \
          '/tmpfiles\.d/syncbridge\.conf$' '^/var/lib/syncbridge$' 'LICENSE$' 'operations\.md$' 'seed-flow\.md$' \
          '/examples/onprem-node\.json$' '/examples/gcp-side\.json$' '/examples/README\.md$'; do
    has "$main" "$re"
done
lacks "$main" '/libsyncbridge\.so$'
lacks "$main" 'libsyncbridge_gcp'
for re in '/include/syncbridge/plugin\.h$' '/include/syncbridge/syncbridge\.h$' '/pkgconfig/syncbridge\.pc$' \
          '/libsyncbridge\.so$'; do
    has "$devel" "$re"
done
[ -n "$gcp" ] && has "$gcp" '/libsyncbridge_gcp\.so\.2'
[ -n "$gcp" ] && has "$devel" '/pkgconfig/syncbridge-gcp\.pc$'
[ -n "$gcp" ] && has "$gcp" '/syncbridge/pubsub\.so$'
[ -n "$kafka" ] && has "$kafka" '/syncbridge/kafka\.so$'
[ -n "$odbc" ] && has "$odbc" '/syncbridge/cloudsql\.so$'
lacks "$main" '/syncbridge/(kafka|pubsub|cloudsql)\.so$'
for r in rpms/*.rpm; do lacks "$r" '\.(la|a)$'; done

# FILEFLAGS: 1 = %config, 16 = noreplace
cflags=$(rpm -qp --queryformat '[%{FILENAMES} %{FILEFLAGS}\n]' "$main" | awk '$1 == "/etc/syncbridge/syncbridge.json" { print $2 }')
if [ -n "$cflags" ] && [ $((cflags & 17)) -eq 17 ]; then
    ok "syncbridge.json is %config(noreplace)"
else
    bad "syncbridge.json is not %config(noreplace)"
fi

# Library requirements belong to the family that uses them.
req() { rpm -qp --requires "$1" 2>/dev/null; }
only_in() { # soname regex, package that may need it
    for r in rpms/*.rpm; do
        if req "$r" | grep -Eq "$1"; then
            [ "$r" = "$2" ] && ok "$(basename "$r") requires $1" || bad "$(basename "$r") requires $1"
        fi
    done
}
only_in '^librdkafka' "${kafka:-none}"
only_in '^libcurl' "${gcp:-none}"
only_in '^libodbc' "${odbc:-none}"
[ -n "$odbc" ] && { req "$odbc" | grep -q '^unixODBC' && ok "odbc requires unixODBC" || bad "odbc does not require unixODBC"; }
[ -n "$gcp" ] && { req "$gcp" | grep -q '^libcurl' && ok "gcp requires libcurl" || bad "gcp does not require libcurl"; }
# bigquery's time_zone reads /usr/share/zoneinfo at run time
[ -n "$gcp" ] && { req "$gcp" | grep -qx 'tzdata' && ok "gcp requires tzdata" || bad "gcp does not require tzdata"; }
req "$main" | grep -q '^libmicrohttpd' && ok "main requires libmicrohttpd" || bad "main lacks libmicrohttpd requirement"
req "$main" | grep -q '^libsqlite3' && ok "main requires libsqlite3" || bad "main lacks libsqlite3 requirement"
req "$devel" | grep -q '^syncbridge(' && ok "devel requires the main package" || bad "devel does not require main"

# The unit inside the payload. systemd-analyze verify --root would need a
# whole OS tree (sysinit.target, /bin/kill); instead verify a copy whose
# /usr/bin/syncbridge points at the packaged binary in the extracted root,
# against the host's systemd units.
root=$(mktemp -d "${TMPDIR:-/tmp}/sb-rpmroot.XXXXXX")
trap 'rm -rf "$root"' EXIT
(cd "$root" && rpm2cpio "$build/$main" | cpio -idm --quiet)
unit=$(find "$root" -name syncbridge.service | head -1)
[ -n "$unit" ] && ok "unit in payload: ${unit#$root}" || bad "no unit in the payload"
if [ -n "$unit" ]; then
    mkdir -p "$root/verify"
    sed "s|/usr/bin/syncbridge|$root/usr/bin/syncbridge|g" "$unit" >"$root/verify/syncbridge.service"
    [ -x "$root/usr/bin/syncbridge" ] && ok "packaged binary is executable" || bad "no executable /usr/bin/syncbridge in payload"
    if out=$(systemd-analyze verify "$root/verify/syncbridge.service" 2>&1) && ! printf '%s' "$out" | grep -q .; then
        ok "systemd-analyze verify accepts the unit"
    else
        printf '%s\n' "$out"
        bad "systemd-analyze verify"
    fi
    score=$(systemd-analyze security --offline=true "$unit" 2>&1 | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "exposure score: ${score:-?}"
    if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then ok "exposure $score <= 2.0"; else bad "exposure ${score:-?} > 2.0"; fi
fi
[ $fail = 0 ] && echo "PASS: rpm checks" || echo "FAIL: rpm checks"
exit $fail
