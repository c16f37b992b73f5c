#!/bin/sh
# deps.sh - read packaging/deps.txt, the one list of system packages.
#   deps.sh list debian|rhel build|test   the packages to install, one a line
#                                         (test includes build)
#   deps.sh readme                        the package block README.md carries
#                                         between its deps:begin/end markers
#   deps.sh row-for-pc MODULE             the row that provides a pkg-config module
#   deps.sh row-for-rhel PACKAGE          the row that names an RHEL package
# POSIX sh and awk only: it runs on a brand-new machine before anything
# else is installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
list=${SB_DEPS_FILE:-$here/deps.txt}

rows() { awk '!/^[ \t]*(#|$)/ { print $1, $2, $3, $4 }' "$list"; }

case "${1:-}" in
list)
    family=${2:?family: debian or rhel}; need=${3:?need: build or test}
    case "$family" in debian) col=2 ;; rhel) col=3 ;; *) echo "deps.sh: unknown family '$family'" >&2; exit 2 ;; esac
    case "$need" in build|test) ;; *) echo "deps.sh: unknown need '$need'" >&2; exit 2 ;; esac
    rows | awk -v col="$col" -v need="$need" '
        ($1 == "build" || need == "test") && $col != "-" { n = split($col, p, ","); for (i = 1; i <= n; i++) print p[i] }'
    ;;
readme)
    only() { rows | awk -v col="$2" -v need="$1" '$1 == need && $col != "-" { gsub(",", " ", $col); printf "%s%s", sep, $col; sep = " " }'; }
    printf '# to build and run (Debian/Ubuntu, then RHEL/Fedora):\n'
    printf 'apt-get install %s\n' "$(only build 2)"
    printf 'dnf install %s\n' "$(only build 3)"
    printf '# also, to run the whole suite and build the rpm (RHEL: kcat, like sqliteodbc above, is in EPEL):\n'
    printf 'apt-get install %s\n' "$(only test 2)"
    printf 'dnf install %s\n' "$(only test 3)"
    ;;
row-for-pc)
    rows | awk -v m="${2:?module}" '$4 == m { print; found = 1 } END { exit !found }'
    ;;
row-for-rhel)
    rows | awk -v p="${2:?package}" '{ n = split($3, q, ","); for (i = 1; i <= n; i++) if (q[i] == p) { print; found = 1 } } END { exit !found }'
    ;;
*)
    echo "usage: $0 list debian|rhel build|test | readme | row-for-pc MODULE | row-for-rhel PACKAGE" >&2
    exit 2
    ;;
esac
