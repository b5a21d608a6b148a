#!/usr/bin/env bash
# Install everything the build, the tests and the demo need (Debian bookworm).
# Idempotent: apt runs only when a package is missing, npm only when
# t/js/node_modules is missing. Needs root (or sudo) for apt.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(
    # build: nginx's configured source tree + what its conf_flags need
    # (PCRE2 for --with-pcre-jit, zlib, OpenSSL for --with-http_ssl_module)
    build-essential pkg-config
    nginx nginx-dev libpcre2-dev zlib1g-dev libssl-dev
    # the module's own libraries (found with pkg-config by ./config)
    libmongoc-dev libbson-dev libjansson-dev libmariadb-dev
    # tests and demo: MariaDB server and client, the MongoDB stand-in and
    # tools/mongo_cli.py (Debian's python3 + pymongo), load generator, curl
    mariadb-server mariadb-client
    python3 python3-pymongo python3-mongomock
    perl procps curl wrk
    # promtool (t/40-status.t checks the Prometheus exposition with it)
    prometheus
    # the Debian package (scripts/build-deb.sh, t/80): dpkg-buildpackage,
    # debhelper (dh_nginx comes with nginx-dev); apt-get source (t/82)
    dpkg-dev debhelper
    # fuzzing and the fuzz regressions (scripts/fuzz.sh, t/60): clang with
    # libFuzzer and the sanitizer runtimes, llvm-symbolizer for the stacks
    clang-14 libclang-rt-14-dev llvm-14
    # the benchmark (bench/run.sh): callgrind profile of the hot path (wrk
    # and python3-pymongo are listed above)
    valgrind
)

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
# Node.js for the driver-compatibility tests in t/js (npm comes with it in
# the NodeSource build; Debian splits it out).
if ! command -v node >/dev/null 2>&1; then
    missing+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    echo "deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # mariadb-server's and nginx's maintainer scripts would start system
    # services; we never use them (the tests and the demo run their own
    # servers), and in a container without an init system a failing start
    # would fail the whole install. A temporary policy-rc.d tells invoke-rc.d
    # not to start anything (the standard Debian mechanism; only if none is
    # in place already).
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        trap '"${sudo[@]}" rm -f "$policy"' EXIT
    fi
    "${sudo[@]}" apt-get update
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "deps: Debian packages present"
fi

# Source packages: t/82 and the fuzz build (scripts/fuzz.sh) use the upstream
# nginx tarball of Debian's nginx source package (apt-get source). Enable
# deb-src beside deb once, if APT does not know the source package yet.
# (grep without -q: under pipefail, grep -q quitting early makes apt-cache
# die of SIGPIPE, and the test would fail every time)
if ! apt-cache showsrc nginx 2>/dev/null | grep '^Package: nginx$' >/dev/null; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    src=/etc/apt/sources.list.d/debian.sources
    if [ -f "$src" ] && grep -q '^Types: deb$' "$src"; then
        "${sudo[@]}" sed -i 's/^Types: deb$/Types: deb deb-src/' "$src"
    else
        . /etc/os-release
        echo "deb-src http://deb.debian.org/debian ${VERSION_CODENAME:-bookworm} main" \
            | "${sudo[@]}" tee /etc/apt/sources.list.d/bytemark-deb-src.list >/dev/null
    fi
    echo "deps: enabled Debian source packages (deb-src)"
    "${sudo[@]}" apt-get update
fi

# FerretDB (a MongoDB-wire-compatible server, SQLite backend): the real
# MongoDB of the tests, the demo and the benchmark. Built from the Go module
# proxy by tools/ferretdb (why not `go install …/cmd/ferretdb@v1.24.2`: see
# tools/ferretdb/main.go), only when the binary is missing or older than the
# module's go.mod/go.sum/main.go.
ferret="$root/build/ferretdb/ferretdb"
fresh=1
[ -x "$ferret" ] || fresh=0
for f in go.mod go.sum main.go; do
    [ "$fresh" = 1 ] && [ "$root/tools/ferretdb/$f" -nt "$ferret" ] && fresh=0
done
if [ "$fresh" = 0 ]; then
    go=$(command -v go || echo /usr/local/go/bin/go)
    if [ ! -x "$go" ]; then
        echo "deps: FerretDB needs Go >= 1.24 (not found on PATH or at /usr/local/go)" >&2
        exit 1
    fi
    echo "deps: building FerretDB ($(grep -o 'github.com/FerretDB/FerretDB v[^ ]*' "$root/tools/ferretdb/go.mod" | cut -d' ' -f2)) with $("$go" version)"
    t0=$(date +%s)
    mkdir -p "$root/build/ferretdb"
    (cd "$root/tools/ferretdb" && "$go" build -trimpath -o "$ferret.tmp" . && mv "$ferret.tmp" "$ferret")
    echo "deps: FerretDB built in $(( $(date +%s) - t0 ))s: $("$ferret" --version)"
else
    echo "deps: $("$ferret" --version) present"
fi

if [ -f "$root/t/js/package.json" ] && [ ! -d "$root/t/js/node_modules" ]; then
    echo "deps: npm install in t/js"
    (cd "$root/t/js" && npm install --no-package-lock --no-audit --no-fund)
fi
