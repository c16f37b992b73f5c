#!/bin/bash
# fuzz.sh - build the libFuzzer targets with clang (ASan+UBSan) and run them.
#
#   fuzz.sh SRCDIR BUILDDIR SECONDS [TARGET...]
#
# Each target is built from the core's sources (and the plugin sources it
# exercises) into BUILDDIR/fuzz/, then run for SECONDS from its seed corpus
# in SRCDIR/tests/fuzz/corpus/TARGET, two at a time. New inputs go to a
# scratch corpus in BUILDDIR/fuzz/, never into the repository; a crash
# leaves its input in BUILDDIR/fuzz/ (copy it into the seed corpus as a
# regression input once fixed) and fails the run. FUZZ_RUNS=N also stops
# each target after N executions, whichever comes first (the long campaign:
# FUZZ_RUNS=10000000 and SECONDS=3600).
set -u
src=$1 build=$2 secs=$3; shift 3
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(json_event command rrlog template_match gcp_reply config admin tzif)
out="$build/fuzz"
mkdir -p "$out"
cc=${FUZZ_CC:-clang}
command -v "$cc" >/dev/null || { echo "fuzz.sh: $cc is missing (packaging/deps.txt lists clang)" >&2; exit 1; }

flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
       -D_GNU_SOURCE -I"$build" -I"$src/core" -I"$src/core/include" -I"$src/core/events" -I"$src/plugins/filewatch"
       $(pkg-config --cflags jansson sqlite3 libcrypto libcurl))
libs=($(pkg-config --libs jansson sqlite3 libcrypto libcurl) -lpthread -lm)
grep -q '^#define SB_WITH_ADMIN 1' "$build/build_config.h" && { flags+=($(pkg-config --cflags libmicrohttpd)); libs+=($(pkg-config --libs libmicrohttpd)); }
grep -q '^#define SB_WITH_LIBSYSTEMD 1' "$build/build_config.h" && libs+=($(pkg-config --libs libsystemd))

# The core library's sources (everything but main()), compiled once.
core_objs=()
for f in "$src"/core/{util,log,events,config,ledger,engine,ops,daemon}/*.c; do
    o="$out/obj/$(basename "$(dirname "$f")")_$(basename "$f" .c).o"
    mkdir -p "$out/obj"
    # rebuilt when the source or any header it included is newer (-MMD)
    if [ ! -f "$o" ] || [ "$f" -nt "$o" ] || { [ -f "${o%.o}.d" ] &&
        [ -n "$(find $(sed -e 's/^[^:]*://' -e 's/\\$//' "${o%.o}.d") -newer "$o" 2>/dev/null | head -1)" ]; }; then
        "$cc" "${flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}" -MMD -c "$f" -o "$o" || exit 1
    fi
    core_objs+=("$o")
done
gcp_srcs=("$src"/core/gcp/*.c)

extra_for() {
    case $1 in
    rrlog) echo "$src/plugins/filewatch/rrlog.c" ;;
    gcp_reply) echo "${gcp_srcs[*]}" ;;
    tzif) echo "$src/plugins/bigquery/tzif.c" ;;
    esac
}

# The targets themselves with warnings as errors: a call to an undeclared
# function (its pointer result cut to an int) once built silently.
warn=(-Wall -Wextra -Wno-unused-parameter -Werror)
for t in "${targets[@]}"; do
    # shellcheck disable=SC2046
    "$cc" "${flags[@]}" "${warn[@]}" -o "$out/fuzz_$t" "$src/tests/fuzz/fuzz_$t.c" $(extra_for "$t") "${core_objs[@]}" "${libs[@]}" ||
        { echo "fuzz.sh: building fuzz_$t failed" >&2; exit 1; }
done

run_one() {
    local t=$1 scratch="$out/corpus-$1"
    mkdir -p "$scratch"
    local args=()
    [ -f "$src/tests/fuzz/$t.dict" ] && args=(-dict="$src/tests/fuzz/$t.dict")
    [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        ./fuzz_"$t" -max_total_time="$secs" -max_len=65536 -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/crash-$t-" ${args[@]+"${args[@]}"} "$scratch" "$src/tests/fuzz/corpus/$t" >"$out/fuzz_$t.log" 2>&1)
    local rc=$?
    local execs; execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz_$t.log")
    if [ $rc -ne 0 ]; then
        echo "fuzz_$t: FAILED after ${execs:-?} executions (log: $out/fuzz_$t.log)"
        tail -40 "$out/fuzz_$t.log"
        return 1
    fi
    local took; took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$out/fuzz_$t.log")
    echo "fuzz_$t: ${execs:-?} executions in ${took:-$secs}s, no crash"
}

# two at a time: the machine's two cores
rc=0 pids=()
for t in "${targets[@]}"; do
    run_one "$t" & pids+=($!)
    if [ ${#pids[@]} -ge 2 ]; then
        wait "${pids[0]}" || rc=1
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
