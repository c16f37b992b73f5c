#!/usr/bin/env bash
# bootstrap.sh - one command from a fresh Debian/Ubuntu or RHEL-family machine:
#   packaging/bootstrap.sh demo   install dependencies, build, run the sample
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
# DIR/bootstrap-build.log, which is printed only when a step fails.
build() {
    local dir=$1; shift
    mkdir -p "$dir"
    local log="$top/$dir/bootstrap-build.log"
    : > "$log"
    { { [ -x configure ] && [ configure -nt configure.ac ]; } || autoreconf -fi >>"$log" 2>&1; } &&
        (cd "$dir" && { [ -f Makefile ] || ../configure -q "$@" >>"$log" 2>&1; } && make -j"$(nproc)" >>"$log" 2>&1) ||
        { cat "$log" >&2; echo "bootstrap: the build in $dir failed (log above)" >&2; exit 1; }
}

# count_results DIR...: adds the PASS/FAIL/SKIP/ERROR/XFAIL/XPASS counts of
# every .trs under DIR to the totals; a skip is a failure in test mode,
# since every tool the suite uses is installed above.
n_pass=0 n_fail=0 n_skip=0
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

# The quick start: the sample Run Replicator logs (conf/sample/rrlogs) ->
# filewatch -> pubsub, published to the Google APIs fake (tests/fake), which
# this starts on a free port and stops at the end. The pubsub sink finds the
# fake through PUBSUB_EMULATOR_HOST, the standard emulator variable, which
# also makes its auth default to none; the fake is told not to require a
# token, like the Pub/Sub emulator. Everything else comes from the sample
# config and the built-in defaults.
run_demo() { # run_demo BUILD_DIR
    local build=$1
    local topic=projects/syncbridge-demo/topics/onprem-runs
    # globals: the EXIT trap runs after this function has returned
    demo_work=$(mktemp -d)
    local work=$demo_work
    demo_fake_pid=
    trap 'if [ -n "$demo_fake_pid" ]; then kill "$demo_fake_pid" 2>/dev/null; wait "$demo_fake_pid" 2>/dev/null; fi; rm -rf "$demo_work"' EXIT
    python3 tests/fake/gfake.py --port 0 --port-file "$work/fake.port" --quiet &
    demo_fake_pid=$!
    for _ in $(seq 100); do [ -f "$work/fake.port" ] && break; sleep 0.1; done
    [ -f "$work/fake.port" ] || { echo "bootstrap: the Google APIs fake did not start" >&2; exit 1; }
    local base
    base=http://127.0.0.1:$(cat "$work/fake.port")
    fake() { python3 - "$base" "$@" <<'PY'
import json, sys, urllib.request
base, method, path = sys.argv[1:4]
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(base + path, data=body, method=method, headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    sys.stdout.write(r.read().decode())
PY
    }
    fake POST /_fake/config '{"require_auth": false}' >/dev/null
    fake PUT "/v1/$topic" '{}' >/dev/null
    echo "bootstrap: Google APIs fake on $base, topic $topic"
    echo "bootstrap: running the sample: conf/sample/rrlogs/*.log -> filewatch -> route onprem -> pubsub (then stdout)"
    PUBSUB_EMULATOR_HOST=${base#http://} SYNCBRIDGE_PLUGIN_PATH="$build/plugins/.libs" \
        "$build/syncbridge" --once --state-dir "$work/state" -c conf/sample/syncbridge.json
    echo "bootstrap: the fake's topic now holds (messageId, attributes schema.table, body):"
    fake GET "/_fake/pubsub/messages?topic=$topic" | python3 -c '
import base64, json, sys
for m in json.load(sys.stdin):
    a = m.get("attributes", {})
    print("  %s  %s.%s  %s" % (m["messageId"], a.get("schema"), a.get("table"), base64.b64decode(m.get("data", "")).decode()))'
    echo "bootstrap: done. Each message also carries the attributes event_id, run_id and host."
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
    build _build --enable-werror
    (cd _build && SB_REQUIRE_CONFORMANCE=1 make -j"$(nproc)" check) || { show_failed_tests _build; exit 1; }
    refuse_skips _build
    count_results _build
    # distcheck's own output is long; on failure its failed tests are shown
    # from the unpacked tree it leaves behind.
    (cd _build && make -j"$(nproc)" distcheck >/dev/null) || { show_failed_tests _build/syncbridge-*/_build; exit 1; }
    echo "bootstrap: make distcheck passed"
    # the suite already ran twice above (make check, distcheck): the rpm build
    # skips its own %check run here
    (cd _build && make -s check-rpm RPMBUILD_FLAGS=--nocheck)
    if [ "${SB_SKIP_ASAN:-0}" != 1 ]; then
        build _build-asan --enable-werror \
            CFLAGS="-g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
            LDFLAGS="-fsanitize=address,undefined"
        (cd _build-asan && ASAN_OPTIONS=detect_leaks=1 SB_REQUIRE_CONFORMANCE=1 make -j"$(nproc)" check) ||
            { show_failed_tests _build-asan; exit 1; }
        refuse_skips _build-asan
        count_results _build-asan
    fi
    echo "bootstrap: $n_pass passed, $n_fail failed, $n_skip skipped"
    ;;
*)
    echo "usage: $0 demo|test|demo-run BUILD_DIR" >&2
    exit 2
    ;;
esac
