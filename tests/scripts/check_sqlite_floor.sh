#!/usr/bin/env bash
# check_sqlite_floor.sh BUILD_DIR: the ledger against the oldest SQLite
# releases syncbridge supports, not only the one this machine has:
#   3.24.0  configure's floor (the ledger's upserts are new in 3.24)
#   3.26.0  RHEL 8's, the oldest a target distribution ships
# core/ledger/walbuf.c leans on how SQLite writes its WAL, which changes from
# release to release; this runs the tests that hold it and the ledger to
# their promises (test_walbuf, test_ledger, SIGKILLs, a full disk, ledger
# damage) with each release's library in place of the system's, and checks
# that a library without JSON1 is refused with a clear error.
#
# The sources: SQLite's own autoconf tarballs, as node-sqlite3 bundles them
# under deps/ in its npm packages (the npm registry is what CI can reach;
# sqlite.org is not). npm checks each package against the registry's
# sha512; the SHA-256 of the SQLite tarball inside is pinned below, as it
# was when first fetched (2026-12-07). The library is built with the options
# distributions use that matter here (JSON1, usleep, fdatasync).
#
# `make check-sqlite-floor` runs it; CI runs that after make check.
# Needs npm, gcc, python3; the disk-full test needs root (as in CI).
set -euo pipefail

build=$(cd "${1:?usage: $0 BUILD_DIR}" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# version  npm package  tarball under deps/  its SHA-256
releases="
3.24.0 sqlite3@4.0.2 sqlite-autoconf-3240000.tar.gz d9d14e88c6fb6d68de9ca0d1f9797477d82fc3aed613558f87ffbdbbc5ceb74a
3.26.0 sqlite3@4.0.6 sqlite-autoconf-3260000.tar.gz 5daa6a3fb7d1e8c767cd59c4ded8da6e4b00c61d3b466d0685e35c4dd6d7bf5d
"

fail() { echo "check_sqlite_floor: $*" >&2; exit 1; }

# loads_from LIBDIR CMD...: CMD's dynamic loader initialises LIBDIR's
# libsqlite3 (the output is kept whole: a grep -q in the pipe could end CMD
# with SIGPIPE)
loads_from() {
    local lib=$1 out; shift
    out=$(LD_DEBUG=libs "$@" 2>&1) || true
    grep -qF "calling init: $lib/libsqlite3.so.0" <<<"$out" ||
        { tail -n 20 <<<"$out" >&2; fail "$* did not load $lib/libsqlite3.so.0"; }
}

tested=0
# the rows come on fd 3: nothing run below can read them from stdin
while read -r version pkg tarball sha <&3; do
    [ -n "$version" ] || continue
    t0=$SECONDS
    dir=$work/$version
    mkdir -p "$dir/lib"
    tgz=$(cd "$dir" && npm pack "$pkg" --silent --no-audit --no-fund) || fail "npm pack $pkg failed"
    tar -xzf "$dir/$tgz" -C "$dir" "package/deps/$tarball" || fail "$pkg has no deps/$tarball"
    echo "$sha  $dir/package/deps/$tarball" | sha256sum -c --quiet - || fail "$tarball from $pkg is not the one pinned here"
    tar -xzf "$dir/package/deps/$tarball" -C "$dir"
    gcc -O1 -fPIC -shared -w -Wl,-soname,libsqlite3.so.0 -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_JSON1 \
        -DHAVE_USLEEP=1 -DHAVE_FDATASYNC=1 -DSQLITE_SECURE_DELETE \
        "$dir/${tarball%.tar.gz}/sqlite3.c" -o "$dir/lib/libsqlite3.so.0" -lpthread -ldl -lm
    # the daemon the Python tests drive, with this release's library
    # shellcheck disable=SC2016 # $LD_LIBRARY_PATH and $@ are the wrapper's
    printf '#!/bin/sh\nLD_LIBRARY_PATH='"'%s'"'${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec '"'%s'"' "$@"\n' \
        "$dir/lib" "$build/syncbridge" > "$dir/syncbridge"
    chmod +x "$dir/syncbridge"
    loads_from "$dir/lib" "$dir/syncbridge" --version
    echo "check_sqlite_floor: SQLite $version (from $pkg), built in $((SECONDS - t0)) s"
    (
        cd "$build"
        export SB_TOP_BUILDDIR=$build SB_TOP_SRCDIR=$src SB_BIN=$dir/syncbridge SB_CRASH_TRIALS=10
        export SYNCBRIDGE_PLUGIN_PATH=$build/plugins/.libs:$build/tests/plugins/.libs
        for t in test_walbuf test_ledger; do
            CK_RUN_SUITE=none LD_LIBRARY_PATH=$dir/lib loads_from "$dir/lib" ./tests/unit/$t
            LD_LIBRARY_PATH=$dir/lib ./tests/unit/$t >"$dir/$t.log" 2>&1 ||
                { tail -n 50 "$dir/$t.log" >&2; fail "$t failed on SQLite $version"; }
            echo "check_sqlite_floor:   $(tail -n 1 "$dir/$t.log") ($t)"
        done
        for t in test_crash test_ledger_disk_full test_reliab; do
            python3 "$src/tests/scripts/$t.py" >"$dir/$t.log" 2>&1 ||
                { tail -n 50 "$dir/$t.log" >&2; fail "$t.py failed on SQLite $version"; }
            echo "check_sqlite_floor:   $(tail -n 1 "$dir/$t.log") ($t.py)"
        done
    )
    echo "check_sqlite_floor: SQLite $version passed in $((SECONDS - t0)) s"
    tested=$((tested + 1))
done 3<<<"$releases"
want=$(grep -c . <<<"$releases")
[ "$tested" -eq "$want" ] || fail "$tested releases tested, not $want"

# A SQLite without JSON1 (an option before 3.38, which configure cannot
# see): the daemon must refuse to start and say what is missing.
first=$(awk 'NF { print $1 " " $3; exit }' <<<"$releases")
nojson=$work/no-json1
mkdir -p "$nojson/lib"
gcc -O1 -fPIC -shared -w -Wl,-soname,libsqlite3.so.0 -DSQLITE_THREADSAFE=1 -DHAVE_USLEEP=1 \
    "$work/${first% *}/$(basename "${first#* }" .tar.gz)/sqlite3.c" -o "$nojson/lib/libsqlite3.so.0" -lpthread -ldl -lm
printf '{"state_dir": "%s/state", "sources": {"s": {"plugin": "testsrc", "count": 0}},
 "sinks": {"d": {"plugin": "discard"}}, "routes": {"r": {"sources": ["s"], "steps": ["d"]}}}\n' "$nojson" \
    > "$nojson/syncbridge.json"
if out=$(LD_LIBRARY_PATH=$nojson/lib SYNCBRIDGE_PLUGIN_PATH=$build/plugins/.libs:$build/tests/plugins/.libs \
    "$build/syncbridge" --once -c "$nojson/syncbridge.json" 2>&1 </dev/null); then
    fail "syncbridge started on SQLite ${first% *} without JSON1"
fi
grep -qF "lacks the JSON1 functions" <<<"$out" || { echo "$out" >&2; fail "no clear error without JSON1"; }
echo "check_sqlite_floor: SQLite ${first% *} without JSON1: refused with a clear error"
