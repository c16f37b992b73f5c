#!/bin/sh
# test_deps.sh - the package lists cannot drift apart. packaging/deps.txt
# is the one list (bootstrap.sh installs from it); this checks that
#   - every BuildRequires of the rpm spec has a row there, so bootstrap's
#     test mode installs its Debian counterpart;
#   - every library configure.ac requires is a BuildRequires of the spec
#     (the spec configures with every feature on) and has a row whose
#     package names match configure's "install it" hint;
#   - README.md's package block is the one deps.sh prints.
set -eu
src=${SB_TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
deps="$src/packaging/deps.sh"
spec="$src/packaging/syncbridge.spec.in"
fail=0
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; fail=1; }

debian_test=$(sh "$deps" list debian test)
in_debian_test() { printf '%s\n' "$debian_test" | grep -qx -- "$1"; }

# 1. the spec's BuildRequires
for req in $(sed -n 's/^BuildRequires:[ \t]*//p' "$spec"); do
    case "$req" in
    'pkgconfig('*')') m=${req#pkgconfig(}; m=${m%)}; row=$(sh "$deps" row-for-pc "$m") || { bad "BuildRequires $req: no row with pkg-config module '$m' in packaging/deps.txt"; continue; } ;;
    *) row=$(sh "$deps" row-for-rhel "$req") || { bad "BuildRequires $req: no row naming RHEL package '$req' in packaging/deps.txt"; continue; } ;;
    esac
    deb=$(echo "$row" | awk '{ print $2 }')
    if [ "$deb" = - ]; then
        ok "BuildRequires $req: no Debian counterpart needed (deps.txt says so)"
    elif in_debian_test "$deb"; then
        ok "BuildRequires $req: bootstrap test installs $deb"
    else
        bad "BuildRequires $req: its Debian package $deb is not in bootstrap's test list"
    fi
done

# 2. configure.ac's SB_REQUIRE_PKG([VAR], [module >= v], [deb], [rhel])
sed -n 's/^.*SB_REQUIRE_PKG(\[[A-Z_]*\], *\[\([^] ]*\)[^]]*\], *\[\([^]]*\)\], *\[\([^]]*\)\]).*$/\1 \2 \3/p' "$src/configure.ac" |
while read -r m deb rhel; do
    row=$(sh "$deps" row-for-pc "$m") || { bad "configure.ac requires $m: no row in packaging/deps.txt"; continue; }
    set -- $row
    [ "$2" = "$deb" ] && [ "$3" = "$rhel" ] && ok "configure.ac $m: $deb / $rhel" ||
        bad "configure.ac names $deb / $rhel for $m, packaging/deps.txt $2 / $3"
    grep -q "^BuildRequires:[ \t]*pkgconfig($m)" "$spec" && ok "spec BuildRequires pkgconfig($m)" ||
        bad "configure.ac requires $m but the spec has no BuildRequires: pkgconfig($m)"
done | { out=$(cat); echo "$out"; ! echo "$out" | grep -q '^FAIL'; } || fail=1

# 3. README's block
want=$(sh "$deps" readme)
have=$(sed -n '/<!-- deps:begin/,/<!-- deps:end/p' "$src/README.md" | sed '1,2d;$d' | sed '$d')
if [ "$want" = "$have" ]; then
    ok "README.md lists the packages deps.txt does"
else
    bad "README.md's package block differs from packaging/deps.sh readme:"
    printf '%s\n' "$want" > "${TMPDIR:-/tmp}/sb-deps-want.$$"
    printf '%s\n' "$have" | diff -u - "${TMPDIR:-/tmp}/sb-deps-want.$$" || true
    rm -f "${TMPDIR:-/tmp}/sb-deps-want.$$"
fi

[ $fail = 0 ] && echo "PASS: the package lists agree" || { echo "FAIL: fix packaging/deps.txt or the file named above"; exit 1; }
