#!/usr/bin/env bash
# bootstrap.sh - one command from a fresh Debian/Ubuntu or RHEL-family machine:
#   packaging/bootstrap.sh demo   install dependencies, build, run the sample
#   packaging/bootstrap.sh test   install dependencies, build, run the whole test suite
#                                 (warnings are errors; then again under ASan+UBSan)
# Build trees: _build (normal) and _build-asan, next to this checkout's sources.
set -euo pipefail

mode=${1:-demo}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_deps() {
    if command -v apt-get >/dev/null 2>&1; then
        local pkgs=(build-essential autoconf automake libtool pkg-config
            libjansson-dev libsqlite3-dev libssl-dev librdkafka-dev libcurl4-openssl-dev
            unixodbc-dev libmicrohttpd-dev libsystemd-dev check python3 openssl sqlite3)
        if [ "$mode" = test ]; then
            pkgs+=(kcat postgresql odbc-postgresql libsqliteodbc rpm cpio systemd valgrind curl)
        fi
        local missing=()
        for p in "${pkgs[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            echo "bootstrap: installing ${missing[*]}"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    elif command -v dnf >/dev/null 2>&1; then
        local pkgs=(gcc make autoconf automake libtool pkgconf-pkg-config jansson-devel sqlite-devel
            openssl-devel librdkafka-devel libcurl-devel unixODBC-devel libmicrohttpd-devel systemd-devel
            check-devel python3 openssl sqlite)
        if [ "$mode" = test ]; then
            pkgs+=(postgresql-server postgresql-odbc rpm-build cpio valgrind curl)
        fi
        as_root dnf install -y -q "${pkgs[@]}" || as_root dnf install -y -q --enablerepo=crb,epel "${pkgs[@]}"
    else
        echo "bootstrap: neither apt-get nor dnf found; install the packages listed in README.md by hand" >&2
        exit 1
    fi
}

build() { # build DIR [configure args...]
    local dir=$1; shift
    [ -x configure ] && [ configure -nt configure.ac ] || autoreconf -fi >/dev/null
    mkdir -p "$dir"
    (cd "$dir" && { [ -f Makefile ] || ../configure -q "$@"; } && make -j"$(nproc)" >/dev/null)
}

install_deps
case "$mode" in
demo)
    build _build
    state=$(mktemp -d)
    trap 'rm -rf "$state"' EXIT
    echo "bootstrap: running the sample: Run Replicator events -> file_in -> route finished_runs -> stdout"
    SYNCBRIDGE_PLUGIN_PATH="$top/_build/plugins/.libs" \
        ./_build/syncbridge --once --state-dir "$state" -c conf/sample/syncbridge.json
    echo "bootstrap: done. The run ledger of this run: ./_build/syncbridge runs --state-dir <dir>"
    ;;
test)
    build _build --enable-werror
    (cd _build && make -j"$(nproc)" check && make -j"$(nproc)" distcheck >/dev/null)
    echo "bootstrap: make distcheck passed"
    (cd _build && make -s check-rpm)
    if [ "${SB_SKIP_ASAN:-0}" != 1 ]; then
        build _build-asan --enable-werror \
            CFLAGS="-g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
            LDFLAGS="-fsanitize=address,undefined"
        (cd _build-asan && ASAN_OPTIONS=detect_leaks=1 make -j"$(nproc)" check)
    fi
    ;;
*)
    echo "usage: $0 demo|test" >&2
    exit 2
    ;;
esac
