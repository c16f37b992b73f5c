#!/usr/bin/env bash
# make check entry for the conformance suite (tests/conformance/README.md):
# Google's Node.js clients against tests/fake.  Skips (77) when node or the
# suite's node_modules is missing, unless SB_REQUIRE_CONFORMANCE=1, which
# makes either a failure (CI sets it after `npm ci`).
set -uo pipefail
src=${SB_TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
here="$src/tests/conformance"
modules=${SB_CONFORMANCE_NODE_MODULES:-$here/node_modules}

missing() {
    if [ "${SB_REQUIRE_CONFORMANCE:-0}" = 1 ]; then
        echo "conformance: FAIL: $1 (SB_REQUIRE_CONFORMANCE=1)" >&2
        exit 1
    fi
    echo "conformance: SKIP: $1"
    exit 77
}

node=${NODE:-node}
command -v "$node" >/dev/null 2>&1 || missing "no node on PATH (Debian: nodejs npm; RHEL: nodejs npm)"
major=$("$node" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || missing "$node does not run"
[ "$major" -ge 18 ] 2>/dev/null || missing "node $major is too old (18 or newer needed)"
[ -d "$modules/@google-cloud/storage" ] && [ -d "$modules/googleapis" ] ||
    missing "$modules is missing: run 'npm ci' in $here"

# node resolves require() from the test files' folder; NODE_PATH covers a
# node_modules kept elsewhere (SB_CONFORMANCE_NODE_MODULES).
export NODE_PATH="$modules${NODE_PATH:+:$NODE_PATH}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$node" --test "$here"/*.test.js 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
pass=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -1)
fail=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -1)
todo=$(sed -n 's/^# todo \([0-9]*\)$/\1/p' "$log" | tail -1)
echo "conformance: ${pass:-0} passed, ${fail:-0} failed, ${todo:-0} skipped"
[ -n "$pass" ] || rc=1
exit "$rc"
