#!/usr/bin/env bash
# Build build/ngx_http_bytemark_module.so.
#
# Default: against Debian's nginx, using the configured source tree that
# nginx-dev installs in /usr/share/nginx/src and its conf_flags, so the module's
# binary signature matches /usr/sbin/nginx.
# NGINX_SRC=/path/to/nginx-x.y.z: against a plain upstream tree instead,
# configured with --with-compat --with-threads.
# Extra compiler flags (sanitizers, say) come from BYTEMARK_CC_OPT and
# BYTEMARK_LD_OPT; BYTEMARK_BUILD_DIR keeps such a build apart (default build/).
#
# Build dependencies (scripts/deps.sh build): when some are missing, run as
# root it installs them (and says which); otherwise it names them and stops.
# Warnings are errors only for the developers' and CI's builds
# (BYTEMARK_WERROR=1, which scripts/test.sh, test-asan.sh and matrix.sh set,
# or CI=true): a newer compiler's new warning must not break an operator's
# build. nginx's configure adds -Werror of its own; -Wno-error undoes it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out="${BYTEMARK_BUILD_DIR:-$root/build}"

if command -v dpkg-query >/dev/null 2>&1 \
   && ! missing=$(bash "$root/scripts/deps.sh" --check build); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "build.sh: installing the build dependencies: $missing"
        bash "$root/scripts/deps.sh" build
    else
        echo "build.sh: missing build dependencies (Debian packages): $missing" >&2
        echo "build.sh: install them as root: apt-get install $missing" >&2
        echo "build.sh: (or run: sudo bash scripts/deps.sh build)" >&2
        exit 1
    fi
fi

mkdir -p "$out"

if [ "${BYTEMARK_WERROR:-}" = 1 ] || [ "${CI:-}" = true ]; then
    werror=-Werror
else
    werror=-Wno-error
fi
cc_opt="-g -O2 -fPIC -Wall -Wextra $werror ${BYTEMARK_CC_OPT:-}"
ld_opt="${BYTEMARK_LD_OPT:-}"

if [ -n "${NGINX_SRC:-}" ]; then
    tree=$(cd "$NGINX_SRC" && pwd)
    flags=(--with-compat --with-threads)
else
    tree="$out/nginx-src"
    if [ ! -f "$tree/configure" ] || [ /usr/share/nginx/src/conf_flags -nt "$tree/configure" ]; then
        rm -rf "$tree"
        cp -a /usr/share/nginx/src "$tree"
    fi
    # shellcheck disable=SC1091
    . /usr/share/nginx/src/conf_flags
    flags=("${NGX_CONF_FLAGS[@]}")
fi

cd "$tree"
# config lists each layer's files by folder (src/LAYERS): a file added or
# removed is a new configuration
srcs=$(cd "$root" && echo src/*/*.[ch])
stamp="$root ${flags[*]} $cc_opt $ld_opt $srcs"
if [ ! -f objs/Makefile ] || [ "$(cat objs/.bytemark-stamp 2>/dev/null)" != "$stamp" ] \
   || [ "$root/config" -nt objs/Makefile ]; then
    ./configure "${flags[@]}" --with-cc-opt="$cc_opt" --with-ld-opt="$ld_opt" \
        --add-dynamic-module="$root" > "$out/configure.log" 2>&1 \
        || { tail -30 "$out/configure.log"; exit 1; }
    echo "$stamp" > objs/.bytemark-stamp
fi
make -j"$(nproc)" -f objs/Makefile modules
# a new inode, never an overwrite: running nginx processes have the old
# file mapped, and rewriting it in place would crash them
cp objs/ngx_http_bytemark_module.so "$out/.ngx_http_bytemark_module.so.$$"
mv -f "$out/.ngx_http_bytemark_module.so.$$" "$out/ngx_http_bytemark_module.so"
echo "built $out/ngx_http_bytemark_module.so"
