#!/usr/bin/env bash
# Install the SDK into a scratch prefix, build tests/sdk/example_upper.c out
# of tree with nothing but `pkg-config syncbridge`, and run it in the daemon.
set -euo pipefail
build=${SB_TOP_BUILDDIR:?} src=${SB_TOP_SRCDIR:?}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# Only the SDK: headers, pkg-config file and libsyncbridge. A full `make
# install` would relink the plugins inside the build tree while other tests
# (run in parallel) load them.
make -s -C "$build" install-sbincludeHEADERS install-pkgconfigDATA DESTDIR="$scratch/root" >/dev/null
libdir=$(pkg-config --variable=libdir "$build/core/syncbridge.pc")
mkdir -p "$scratch/root$libdir"
"$build/libtool" --quiet --mode=install install -c "$build/libsyncbridge.la" "$scratch/root$libdir/" >/dev/null 2>&1
pcdir=$(dirname "$(find "$scratch/root" -name syncbridge.pc | head -1)")
export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$scratch/root"
mkdir -p "$scratch/plugins"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -fPIC -shared -o "$scratch/plugins/example_upper.so" \
    "$src/tests/sdk/example_upper.c" $(pkg-config --cflags --libs syncbridge)
echo "built example_upper.so against $(pkg-config --modversion syncbridge) from $pcdir"
# the shared body decoder (syncbridge/decode.h, ABI 2.2) from outside the tree
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -fPIC -shared -o "$scratch/plugins/example_decode.so" \
    "$src/tests/sdk/example_decode.c" $(pkg-config --cflags --libs syncbridge)
# the pkg-config file names the ABI the headers define
abi=$(pkg-config --variable=abi_version syncbridge)
printf '#include <syncbridge/plugin.h>\n#if SB_ABI_MAJOR * 1000 + SB_ABI_MINOR != %s\n#error "syncbridge.pc says ABI %s"\n#endif\n' \
    "$(echo "$abi" | awk -F. '{ print $1 * 1000 + $2 }')" "$abi" |
    cc -fsyntax-only -x c - $(pkg-config --cflags syncbridge)
echo "syncbridge.pc: abi_version $abi, as plugin.h defines"
# the Google layer's pkg-config file, when built: its header compiles
# alone and the library it names is the versioned one
if [ -f "$pcdir/syncbridge-gcp.pc" ]; then
    pkg-config --libs syncbridge-gcp | grep -q -- '-lsyncbridge_gcp'
    [ "$(pkg-config --variable=abi_version syncbridge-gcp)" = "$abi" ]
    printf '#include <syncbridge/gcp.h>\nstatic sb_gcp_request r = SB_GCP_REQUEST_INIT;\nint f(void);\nint f(void) { return (int)r.size; }\n' |
        cc -std=c11 -Wall -Wextra -Werror -fsyntax-only -x c - $(pkg-config --cflags syncbridge-gcp)
    echo "syncbridge-gcp.pc: $(pkg-config --libs syncbridge-gcp)"
fi

cat > "$scratch/input.jsonl" <<'JSON'
{"event_id": "a", "schema": "edw", "table": "orders_daily"}
{"event_id": "b", "schema": "edw", "table": "deal_catalog"}
JSON
cat > "$scratch/syncbridge.json" <<JSON
{"state_dir": "$scratch/state", "plugin_path": ["$scratch/plugins"], "log": {"level": "warn"},
 "sources": {"in": {"plugin": "file_in", "path": "$scratch/input.jsonl", "format": "json", "id_field": "event_id"}},
 "actions": {"upper": {"plugin": "example_upper"}},
 "sinks": {"out": {"plugin": "file_out", "path": "$scratch/out.jsonl"}},
 "routes": {"r": {"sources": ["in"], "steps": ["upper", "out"]}}}
JSON
"$build/syncbridge" check -c "$scratch/syncbridge.json" | grep -q "upper (action example_upper)"
"$build/syncbridge" plugins -c "$scratch/syncbridge.json" example_upper | grep -q "upper-cases a field"
"$build/syncbridge" --once -c "$scratch/syncbridge.json"
grep -q '"upper_table":"ORDERS_DAILY"' "$scratch/out.jsonl"
grep -q '"upper_table":"DEAL_CATALOG"' "$scratch/out.jsonl"
echo "out-of-tree plugin loaded and ran: $(wc -l < "$scratch/out.jsonl") events"

# example_decode: the Run Replicator command as the on-prem side sends it, a JSON body and a line that is no run,
# decoded by the core's decoder from the out-of-tree plugin
cat > "$scratch/bodies.txt" <<'TXT'
${RUN_SCRIPT} "sh ${ETL_CODE_BASE}/cerebro/run_replicator.sh groupon_production im_brand_list"
{"schema": "edw", "table": "orders_daily"}
sh run_replicator.sh "bad;schema" t
TXT
cat > "$scratch/decode.json" <<JSON
{"state_dir": "$scratch/state2", "plugin_path": ["$scratch/plugins"], "log": {"level": "error"},
 "sources": {"in": {"plugin": "file_in", "path": "$scratch/bodies.txt"}},
 "actions": {"dec": {"plugin": "example_decode"}},
 "sinks": {"out": {"plugin": "file_out", "path": "$scratch/decoded.jsonl"}},
 "routes": {"r": {"sources": ["in"], "steps": ["dec", "out"]}}}
JSON
# exit 4: --once finished with a dead letter (the line that is no run)
rc=0; "$build/syncbridge" --once -c "$scratch/decode.json" || rc=$?
[ "$rc" -eq 4 ]
grep -q '"decoded":{"command":"${RUN_SCRIPT} .*"schema":"groupon_production","table":"im_brand_list",.*"full_refresh":true,"run_id":' \
    "$scratch/decoded.jsonl"
grep -q '"decoded":{"schema":"edw","table":"orders_daily"}' "$scratch/decoded.jsonl"
[ "$(wc -l < "$scratch/decoded.jsonl")" -eq 2 ]
"$build/syncbridge" dlq list -c "$scratch/decode.json" | grep -q 'is not a valid identifier'
echo "out-of-tree plugin decoded bodies with sb_decode_body: 2 events, 1 dead letter"
