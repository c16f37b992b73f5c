#!/usr/bin/env bash
# bootstrap.sh - one command from a fresh Debian/Ubuntu or RHEL-family machine:
#   packaging/bootstrap.sh demo   install dependencies, build, run the seed flow on the
#                                 sample (on-prem daemon, then the GCP side's) against
#                                 the Google APIs fake
#   packaging/bootstrap.sh test   install dependencies, build, run the whole test suite
#                                 (warnings are errors; then again under ASan+UBSan)
#   packaging/bootstrap.sh demo-run BUILD_DIR
#                                 only the demo, against an existing build tree (no
#                                 packages, no build); tests/scripts/test_quickstart.sh uses it
# Build trees: _build (normal) and _build-asan, next to this checkout's sources.
set -euo pipefail

mode=${1:-demo}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The packages come from packaging/deps.txt, the one list (deps.sh reads it;
# tests/scripts/test_deps.sh keeps the rpm spec and README in step with it).
install_deps() {
    local need=build
    [ "$mode" = test ] && need=test
    if command -v apt-get >/dev/null 2>&1; then
        local list pkgs missing=()
        list=$(sh packaging/deps.sh list debian "$need") # set -e stops here if the list is broken
        mapfile -t pkgs <<<"$list"
        for p in "${pkgs[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            echo "bootstrap: installing ${missing[*]}"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    elif command -v dnf >/dev/null 2>&1; then
        local list pkgs
        list=$(sh packaging/deps.sh list rhel "$need")
        mapfile -t pkgs <<<"$list"
        # RHEL 9's default nodejs is 16; the conformance suite needs 18 or newer
        [ "$mode" = test ] && { as_root dnf module -y -q enable nodejs:20 >/dev/null 2>&1 || true; }
        echo "bootstrap: installing ${pkgs[*]}"
        as_root dnf install -y -q "${pkgs[@]}" || as_root dnf install -y -q --enablerepo=crb,epel "${pkgs[@]}"
    else
        echo "bootstrap: neither apt-get nor dnf found; install the packages listed in README.md by hand" >&2
        exit 1
    fi
}

# build DIR [configure args...]: autotools and compiler chatter goes to
# DIR/bootstrap-build.log, which is printed only when a step fails. A tree
# configured before with other arguments (say, by hand without
# --enable-werror) is configured again, so test mode always builds as CI does.
build() {
    local dir=$1; shift
    mkdir -p "$dir"
    local log="$top/$dir/bootstrap-build.log" stamp="$top/$dir/bootstrap-configure-args"
    : > "$log"
    local want; want=$(printf '%s\n' "$@")
    if [ ! -f "$dir/Makefile" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        # objects built with other flags would hide their warnings: rebuild all
        if [ -f "$dir/Makefile" ]; then (cd "$dir" && make -s clean >/dev/null 2>&1) || true; fi
        rm -f "$stamp" "$dir/Makefile"
    fi
    { { [ -x configure ] && [ configure -nt configure.ac ]; } || autoreconf -fi >>"$log" 2>&1; } &&
        (cd "$dir" && { [ -f Makefile ] || { ../configure -q "$@" >>"$log" 2>&1 && printf '%s\n' "$want" > "$stamp"; }; } &&
            make -j"$(nproc)" >>"$log" 2>&1) ||
        { cat "$log" >&2; echo "bootstrap: the build in $dir failed (log above)" >&2; exit 1; }
}

# count_results DIR...: adds the PASS/FAIL/SKIP/ERROR/XFAIL/XPASS counts of
# every .trs under DIR to the totals; a skip is a failure in test mode,
# since every tool the suite uses is installed above.
n_pass=0 n_fail=0 n_skip=0
# took WHAT: how long WHAT took since the last call, so a slow CI shows where
stage_start=$SECONDS
took() { echo "bootstrap: $1 took $((SECONDS - stage_start)) s"; stage_start=$SECONDS; }
count_results() {
    local r
    while read -r r; do
        case "$r" in
        PASS|XFAIL) n_pass=$((n_pass + 1)) ;;
        SKIP) n_skip=$((n_skip + 1)) ;;
        *) n_fail=$((n_fail + 1)) ;;
        esac
    done < <(find "$@" -name '*.trs' -exec sed -n 's/^:test-result: //p' {} + 2>/dev/null)
}

refuse_skips() { # DIR...: names the skipped tests and fails
    local skipped
    skipped=$(find "$@" -name '*.trs' -exec grep -l '^:test-result: SKIP' {} + 2>/dev/null || true)
    [ -z "$skipped" ] && return 0
    echo "bootstrap: these tests were skipped, but everything they need should be installed by now:" >&2
    for t in $skipped; do echo "  ${t%.trs}: $(grep -m1 -i 'skip' "${t%.trs}.log" || true)" >&2; done
    exit 1
}

# Prints the log of every test that failed under the given build trees, so a
# CI run that fails says why without a second run.
show_failed_tests() {
    local trs
    find "$@" -name '*.trs' 2>/dev/null | while read -r trs; do
        if grep -Eq '^:test-result: (FAIL|ERROR|XPASS)' "$trs"; then
            echo "==================== ${trs%.trs}.log"
            tail -n 200 "${trs%.trs}.log"
        fi
    done
}

# The quick start: the seed flow across both sites, against the Google APIs
# fake (tests/fake), which this starts on a free port and stops at the end.
#  1. on-prem: the sample Run Replicator logs (conf/sample/rrlogs) ->
#     filewatch -> pubsub, one --once run of conf/sample/syncbridge.json,
#     which names nothing but the logs and the topic: the rest is defaults;
#  2. GCP side: conf/sample/gcp-side.json, a daemon pulling the topic's
#     subscription -> BigQuery (on-prem row, pending GCP row) -> Composer
#     DAG run (or, for the dwh_fin schema, a Dataproc workflow) -> Cloud SQL
#     (SQLite through its ODBC driver) -> BigQuery (the GCP row updated),
#     stopped with SIGTERM once every run is through.
# packaging/demo_flow.py prepares the fake (DAG runs finish on its clock)
# and prints each run. The daemons find the fake through the emulator
# variables (PUBSUB_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST, which also make
# their auth default to none) and, for Composer and Dataproc, which have
# none, through SB_DEMO_FAKE in the sample's endpoint options.
run_demo() { # run_demo BUILD_DIR
    local build=$1 t0=$SECONDS
    local topic=projects/syncbridge-demo/topics/onprem-runs
    # globals: the EXIT trap runs after this function has returned
    demo_work=$(mktemp -d)
    local work=$demo_work
    demo_fake_pid= demo_gcp_pid=
    trap 'for p in $demo_gcp_pid $demo_fake_pid; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$demo_work"' EXIT
    python3 tests/fake/gfake.py --port 0 --port-file "$work/fake.port" --quiet &
    demo_fake_pid=$!
    for _ in $(seq 100); do [ -f "$work/fake.port" ] && break; sleep 0.1; done
    [ -f "$work/fake.port" ] || { echo "bootstrap: the Google APIs fake did not start" >&2; exit 1; }
    local base
    base=http://127.0.0.1:$(cat "$work/fake.port")
    python3 packaging/demo_flow.py setup "$base"
    echo "bootstrap: Google APIs fake on $base, topic $topic"
    echo "bootstrap: on-prem: conf/sample/rrlogs/*.log -> filewatch -> route onprem -> pubsub (then stdout)"
    PUBSUB_EMULATOR_HOST=${base#http://} SYNCBRIDGE_PLUGIN_PATH="$build/plugins/.libs" \
        "$build/syncbridge" --once --state-dir "$work/onprem" -c conf/sample/syncbridge.json
    echo "bootstrap: the fake's topic now holds (messageId, attributes schema.table, body):"
    python3 packaging/demo_flow.py published "$base"
    local n
    n=$(ls conf/sample/rrlogs/*.log | wc -l)
    echo "bootstrap: GCP side: subscription gcp-side -> BigQuery -> Composer DAG or Dataproc workflow -> Cloud SQL (SQLite) -> BigQuery"
    # the watcher looks first, so that it sees each run's GCP row pending
    python3 packaging/demo_flow.py watch "$base" "$n" "$work/cloudsql.db" "$work/watching" >"$work/report" &
    local watcher=$!
    for _ in $(seq 100); do [ -f "$work/watching" ] && break; sleep 0.1; done
    PUBSUB_EMULATOR_HOST=${base#http://} BIGQUERY_EMULATOR_HOST=$base SB_DEMO_FAKE=$base SB_DEMO_DIR=$work \
        SYNCBRIDGE_PLUGIN_PATH="$build/plugins/.libs" \
        "$build/syncbridge" --state-dir "$work/gcp" -c conf/sample/gcp-side.json 2>"$work/gcp.log" &
    demo_gcp_pid=$!
    if ! wait "$watcher"; then
        cat "$work/report" "$work/gcp.log" >&2
        exit 1
    fi
    cat "$work/report"
    kill -TERM "$demo_gcp_pid"
    wait "$demo_gcp_pid" || { cat "$work/gcp.log" >&2; echo "bootstrap: the GCP side daemon failed" >&2; exit 1; }
    demo_gcp_pid=
    echo "bootstrap: done in $((SECONDS - t0)) s: $n runs published on-prem, registered, copied and recorded on the GCP side."
}

case "$mode" in
demo-run)
    [ $# -ge 2 ] || { echo "usage: $0 demo-run BUILD_DIR" >&2; exit 2; }
    run_demo "$(cd "$2" && pwd)"
    exit 0
    ;;
esac

install_deps
case "$mode" in
demo)
    build _build
    run_demo "$top/_build"
    ;;
test)
    # a test whose tool is missing fails instead of skipping (sbtest.needs)
    export SB_STRICT_TESTS=1
    # Google's Node.js clients, pinned by package-lock.json, for the
    # conformance suite; a release tarball has none, so only the checkout's
    # make check runs require them (SB_REQUIRE_CONFORMANCE)
    echo "bootstrap: npm ci in tests/conformance (Google's Node.js clients)"
    (cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
        { echo "bootstrap: npm ci in tests/conformance failed" >&2; exit 1; }
    took "installing packages and npm ci"
    build _build --enable-werror
    took "the build"
    (cd _build && SB_REQUIRE_CONFORMANCE=1 make -j"$(nproc)" check) || { show_failed_tests _build; exit 1; }
    refuse_skips _build
    count_results _build
    took "make check"
    # the ledger on the oldest SQLite releases supported, not only this one
    (cd _build && make -s check-sqlite-floor) || exit 1
    took "make check-sqlite-floor"
    # distcheck's own output is long; on failure its failed tests are shown
    # from the unpacked tree it leaves behind. The suite runs whole twice
    # here (make check, ASan): distcheck checks the tarball with the C tests.
    (cd _build && make -j"$(nproc)" distcheck-quick >/dev/null) || { show_failed_tests _build/syncbridge-*/_build; exit 1; }
    took "make distcheck-quick"
    # the suite runs whole in make check and under ASan: the rpm build
    # skips its own %check run here
    (cd _build && make -s check-rpm RPMBUILD_FLAGS=--nocheck)
    took "the rpm build"
    if [ "${SB_SKIP_ASAN:-0}" != 1 ]; then
        build _build-asan --enable-werror \
            CFLAGS="-g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
            LDFLAGS="-fsanitize=address,undefined"
        (cd _build-asan && ASAN_OPTIONS=detect_leaks=1 SB_REQUIRE_CONFORMANCE=1 make -j"$(nproc)" check) ||
            { show_failed_tests _build-asan; exit 1; }
        refuse_skips _build-asan
        count_results _build-asan
        took "the ASan+UBSan build and make check"
    fi
    # each fuzzer for a minute from its seed corpus, under ASan+UBSan
    echo "bootstrap: make fuzz-smoke (7 fuzzers, 60 s each, two at a time)"
    (cd _build && make -s fuzz-smoke) || { echo "bootstrap: a fuzzer failed (above)" >&2; exit 1; }
    took "make fuzz-smoke"
    echo "bootstrap: $SECONDS s in all"
    echo "bootstrap: $n_pass passed, $n_fail failed, $n_skip skipped"
    ;;
*)
    echo "usage: $0 demo|test|demo-run BUILD_DIR" >&2
    exit 2
    ;;
esac
