#!/usr/bin/env bash
# The README's quick start must keep working: run the same demo steps as
# `packaging/bootstrap.sh demo` (the seed flow: sample Run Replicator logs
# -> filewatch -> pubsub on the Google APIs fake, then the GCP side's
# daemon: pubsub_pull -> BigQuery -> Composer or Dataproc -> Cloud SQL on
# SQLite -> BigQuery) against this build tree, and check what each step
# left, that it took under a minute, and that the fake was stopped.
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
for p in pubsub pubsub_pull bigquery composer dataproc cloudsql; do
    [ -f "$build/plugins/.libs/$p.so" ] || { echo "SKIP: no $p plugin in $build"; exit 77; }
done
odbcinst -q -d 2>/dev/null | grep -qx '\[SQLite3\]' || { echo "SKIP: no SQLite3 ODBC driver registered (libsqliteodbc)"; exit 77; }

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
# the GCP side, per run: rows before (GCP pending) and after, the DAG run or
# workflow, the Cloud SQL row
grep -c '^run [0-9]*  ' <<<"$out" | grep -qx "$n_logs" || fail "expected $n_logs runs through the GCP side"
before=$(grep -c '^  BigQuery before the update: onprem timestamp 20[0-9T:-]* | gcp    timestamp NULL (pending)$' <<<"$out" || true)
[ "$before" -eq "$n_logs" ] || fail "$before runs shown with a pending GCP row, expected $n_logs"
after=$(grep -c '^  BigQuery after the update:  onprem timestamp 20[0-9T:-]* | gcp    timestamp 20[0-9T:.-]*$' <<<"$out" || true)
[ "$after" -eq "$n_logs" ] || fail "$after runs shown with the GCP row updated, expected $n_logs"
dags=$(grep -A1 '^  Composer   DAG run_replicator_copy, run sb_[^ ]*$' <<<"$out" | grep -c '^             state success: ' || true)
wfs=$(grep -A1 '^  Dataproc   workflow [^ ]* on cluster rr-copy-[^ ]*$' <<<"$out" | grep -c '^             state DONE: job ' || true)
[ "$dags" -eq $((n_logs - 1)) ] && [ "$wfs" -eq 1 ] || fail "$dags DAG runs and $wfs workflows, expected $((n_logs - 1)) and 1"
sql=$(grep -c '^  Cloud SQL  runs row: id [0-9]*, source gcp, timestamp 20' <<<"$out" || true)
[ "$sql" -eq "$n_logs" ] || fail "$sql Cloud SQL rows, expected $n_logs"
secs=$(sed -n 's/^bootstrap: done in \([0-9]*\) s: .*/\1/p' <<<"$out")
[ -n "$secs" ] && [ "$secs" -lt 60 ] || fail "the demo took ${secs:-?} s, the quick start promises under a minute"
port=$(sed -n 's|^bootstrap: Google APIs fake on http://127.0.0.1:\([0-9]*\),.*|\1|p' <<<"$out")
[ -n "$port" ] || fail "no fake port in the output"
if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$port" 2>/dev/null; then
    fail "the fake still listens on $port after the demo"
fi
echo "PASS: quick start published $published runs and took them through the GCP side in $secs s"
