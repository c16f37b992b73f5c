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
# the pkg-config file names the ABI the headers define
abi=$(pkg-config --variable=abi_version syncbridge)
printf '#include <syncbridge/plugin.h>\n#if SB_ABI_MAJOR * 1000 + SB_ABI_MINOR != %s\n#error "syncbridge.pc says ABI %s"\n#endif\n' \
    "$(echo "$abi" | awk -F. '{ print $1 * 1000 + $2 }')" "$abi" |
    cc -fsyntax-only -x c - $(pkg-config --cflags syncbridge)
echo "syncbridge.pc: abi_version $abi, as plugin.h defines"

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
