#!/usr/bin/env bash
# Install what one purpose needs (Debian bookworm), and nothing else.
#
#   scripts/deps.sh build     compiler, pkg-config, nginx's configured source
#                             tree (nginx-dev) and what its conf_flags need,
#                             the module's four libraries
#   scripts/deps.sh package   build + what the Debian package build needs
#                             (nginx, dpkg-dev, debhelper)
#   scripts/deps.sh demo      build + nginx, MariaDB, the MongoDB stand-in's
#                             Python, curl (FerretDB when Go is at hand)
#   scripts/deps.sh source    Debian source packages (deb-src) for apt-get
#                             source: t/82, scripts/matrix.sh, scripts/fuzz.sh
#   scripts/deps.sh test      everything the tests, the fuzzer and the
#                             benchmark need: all of the above, promtool,
#                             clang, valgrind, wrk, Node.js, FerretDB (Go >= 1.24)
#   scripts/deps.sh           the same as `test` (what scripts/test.sh and CI run)
#
#   scripts/deps.sh --check <purpose>   installs nothing: prints the missing
#                             Debian packages, one line, and exits 1 if any
#
# Idempotent: apt runs only when a package is missing, npm only when
# t/js/node_modules is missing. Needs root (or sudo) for apt. Only `source`
# and `test` change the APT sources (they add deb-src, once).
# NGINX_SRC=<tree> (scripts/build.sh against an upstream tree): `build` does
# not need nginx-dev.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
purpose=${1:-test}

# build: nginx's configured source tree + what its conf_flags need (PCRE2
# for --with-pcre-jit, zlib, OpenSSL for --with-http_ssl_module and the
# payload hash), the module's own libraries (found with pkg-config by config)
build_pkgs=(build-essential pkg-config libpcre2-dev zlib1g-dev libssl-dev
            libmongoc-dev libbson-dev libjansson-dev libmariadb-dev)
[ -n "${NGINX_SRC:-}" ] || build_pkgs+=(nginx-dev)

# the Debian package (scripts/build-deb.sh): dpkg-buildpackage, debhelper
# (dh_nginx comes with nginx-dev), nginx (debian/control Build-Depends)
package_pkgs=(nginx nginx-dev dpkg-dev debhelper)

# the demo: Debian's nginx, MariaDB server and client, Debian's python3 with
# pymongo and mongomock (tools/mongo_cli.py, the stand-in), curl
demo_pkgs=(nginx mariadb-server mariadb-client python3 python3-pymongo
           python3-mongomock curl procps)

# the tests: the demo's servers, Perl, wrk;
# promtool (t/40-status.t checks the Prometheus exposition with it); the
# package (t/80); clang with libFuzzer and the sanitizer runtimes,
# llvm-symbolizer (scripts/fuzz.sh, t/60); valgrind (bench/run.sh)
test_pkgs=(perl wrk prometheus
           clang-14 libclang-rt-14-dev llvm-14 valgrind)

case $purpose in
    build)   pkgs=("${build_pkgs[@]}") ;;
    package) pkgs=("${build_pkgs[@]}" "${package_pkgs[@]}") ;;
    demo)    pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
    source)  pkgs=() ;;
    test)    pkgs=("${build_pkgs[@]}" "${package_pkgs[@]}" "${demo_pkgs[@]}"
                   "${test_pkgs[@]}") ;;
    *)  echo "usage: $0 [--check] [build|package|demo|source|test]" >&2; exit 2 ;;
esac

sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$p")
    fi
done
# Node.js for the driver-compatibility tests in t/js (npm comes with it in
# the NodeSource build; Debian splits it out).
if [ "$purpose" = test ]; then
    if ! command -v node >/dev/null 2>&1; then
        missing+=(nodejs npm)
    elif ! command -v npm >/dev/null 2>&1; then
        missing+=(npm)
    fi
fi

if [ $check = 1 ]; then
    [ ${#missing[@]} -eq 0 ] && exit 0
    echo "${missing[*]}"
    exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps ($purpose): installing ${missing[*]}"
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
    echo "deps ($purpose): Debian packages present"
fi

# Source packages: t/82, scripts/matrix.sh and the fuzz build
# (scripts/fuzz.sh) use nginx's source package (apt-get source). Enable
# deb-src beside deb once, if APT does not know the source package yet --
# only for the purposes that fetch source packages.
# (grep without -q: under pipefail, grep -q quitting early makes apt-cache
# die of SIGPIPE, and the test would fail every time)
if [ "$purpose" = source ] || [ "$purpose" = test ]; then
    if ! apt-cache showsrc nginx 2>/dev/null | grep '^Package: nginx$' >/dev/null; then
        src=/etc/apt/sources.list.d/debian.sources
        if [ -f "$src" ] && grep -q '^Types: deb$' "$src"; then
            "${sudo[@]}" sed -i 's/^Types: deb$/Types: deb deb-src/' "$src"
        else
            . /etc/os-release
            echo "deb-src http://deb.debian.org/debian ${VERSION_CODENAME:-bookworm} main" \
                | "${sudo[@]}" tee /etc/apt/sources.list.d/bytemark-deb-src.list >/dev/null
        fi
        echo "deps ($purpose): enabled Debian source packages (deb-src)"
        "${sudo[@]}" apt-get update
    fi
fi

case $purpose in
    test|demo) ;;
    *) exit 0 ;;
esac

# FerretDB (a MongoDB-wire-compatible server, SQLite backend): the real
# MongoDB of the tests, the demo and the benchmark. Built from the Go module
# proxy by tools/ferretdb (why not `go install …/cmd/ferretdb@v1.24.2`: see
# tools/ferretdb/main.go), only when the binary is missing or older than the
# module's go.mod/go.sum/main.go. The demo does without it (it runs the
# stand-in instead); the tests need it.
ferret="$root/build/ferretdb/ferretdb"
fresh=1
[ -x "$ferret" ] || fresh=0
for f in go.mod go.sum main.go; do
    [ "$fresh" = 1 ] && [ "$root/tools/ferretdb/$f" -nt "$ferret" ] && fresh=0
done
if [ "$fresh" = 0 ]; then
    go=$(command -v go || echo /usr/local/go/bin/go)
    if [ ! -x "$go" ]; then
        if [ "$purpose" = demo ]; then
            echo "deps (demo): no Go >= 1.24 for FerretDB; the demo will use the MongoDB stand-in"
            exit 0
        fi
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

if [ "$purpose" = test ] && [ -f "$root/t/js/package.json" ] && [ ! -d "$root/t/js/node_modules" ]; then
    echo "deps: npm install in t/js"
    (cd "$root/t/js" && npm install --no-package-lock --no-audit --no-fund)
fi
