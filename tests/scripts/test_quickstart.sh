#!/usr/bin/env bash
# The README's quick start must keep working: run the same demo steps as
# `packaging/bootstrap.sh demo` (sample Run Replicator logs -> filewatch ->
# pubsub on the Google APIs fake) against this build tree, and check what
# was published and that the fake was stopped.
#
# The demo runs from a copy of the sources alone in a temporary directory,
# so that a file it needs from outside the repository, or one that was never
# committed, fails here and not on a user's machine: in a git checkout the
# copy is `git archive` of HEAD plus the uncommitted changes to tracked
# files (git stash create); in a release tarball (make distcheck), the
# unpacked tarball's files.
set -euo pipefail
src=${SB_TOP_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
build=$(cd "${SB_TOP_BUILDDIR:-.}" && pwd)
[ -f "$build/plugins/.libs/pubsub.so" ] || { echo "SKIP: no pubsub plugin in $build"; exit 77; }

alone=$(mktemp -d "${TMPDIR:-/tmp}/sb-quickstart.XXXXXX")
trap 'rm -rf "$alone"' EXIT
mkdir "$alone/src"
# (a release tree unpacked inside a checkout, as distcheck does, is not one)
if [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$(cd "$src" && pwd -P)" ]; then
    rev=$(git -C "$src" stash create 2>/dev/null || true)
    git -C "$src" archive "${rev:-HEAD}" | tar -x -C "$alone/src"
    echo "the demo runs from git archive ${rev:-HEAD} in $alone/src"
else
    (cd "$src" && tar -c --exclude=./_build --exclude='./_build-*' .) | tar -x -C "$alone/src"
    echo "the demo runs from a copy of the release sources in $alone/src"
fi
src=$alone/src

out=$(cd "$src" && bash packaging/bootstrap.sh demo-run "$build" 2>&1) || { echo "$out"; echo "FAIL: the demo exited non-zero"; exit 1; }
echo "$out"
fail() { echo "FAIL: $*"; exit 1; }

n_logs=$(ls "$src"/conf/sample/rrlogs/*.log | wc -l)
[ "$n_logs" -ge 4 ] || fail "expected the sample logs under conf/sample/rrlogs, found $n_logs"
# one run per sample log, each printed by the stdout step after pubsub ...
published=$(grep -c '^published ' <<<"$out" || true)
[ "$published" -eq "$n_logs" ] || fail "$published runs published, expected $n_logs"
# ... and each listed from the fake's topic: messageId, schema.table, the command
listed=$(grep -cE '^  [0-9]+  [a-z_]+\.[a-z_]+  (sh )?[^ ]*run_replicator\.sh ' <<<"$out" || true)
[ "$listed" -eq "$n_logs" ] || fail "$listed messages in the fake's topic, expected $n_logs"
grep -q '^  [0-9]*  groupon_production\.im_brand_list  sh /opt/etl/code/cerebro/run_replicator\.sh groupon_production im_brand_list$' <<<"$out" ||
    fail "the full-refresh run's message is missing"
port=$(sed -n 's|^bootstrap: Google APIs fake on http://127.0.0.1:\([0-9]*\),.*|\1|p' <<<"$out")
[ -n "$port" ] || fail "no fake port in the output"
if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$port" 2>/dev/null; then
    fail "the fake still listens on $port after the demo"
fi
echo "PASS: quick start published $published runs"
