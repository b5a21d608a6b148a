#!/usr/bin/env bash
# Compatibility matrix (issue 15): every nginx an operator runs.
#
#   scripts/matrix.sh [--quick] [--clean] [--build-only] [version...]
#
# For Debian's nginx (source package, `apt-get source nginx`) and every
# upstream release tarball in $BYTEMARK_NGINX_TARBALLS (default
# /work/shared/nginx-src, nginx-X.Y.Z.tar.gz), build nginx with
#   --with-compat --with-threads --with-http_ssl_module --with-http_v2_module
# and this module as a dynamic module (--add-dynamic-module), everything with
# -Wall -Wextra -Werror, install it into build/matrix/<version>/, and run the
# core of t/ against that binary and module (BYTEMARK_NGINX, BYTEMARK_MODULE).
# Once per run, on the newest selected release, also:
#   <version>-static     the module compiled in (--add-module), same tests
#   <version>-nothreads  nginx without --with-threads: t/85-no-threads.t
#                        checks that a MySQL-only configuration runs on it and
#                        that a MongoDB backend is refused with a clear message
#   <version>-nginxorg   the recipe of doc/manual.md ("Building against your
#                        own nginx"): nginx built with the configure flags of
#                        nginx.org's Debian/Ubuntu packages (--with-compat and
#                        the rest; install paths under build/matrix/<row>/),
#                        then the module built apart from it the way an
#                        operator does: `nginx -V` -> a fresh tree of the same
#                        release -> ./configure <those arguments>
#                        --add-dynamic-module -> make modules; that module is
#                        loaded into that nginx for the same tests + t/86
#
# --quick: the oldest and the newest release only (what CI runs), plus the
# three once-per-run builds. --nginxorg-only: only the <version>-nginxorg
# row (of the newest selected release). Versions may be named on the command line
# (1.22.1 is Debian's). --clean: unpack and configure every tree afresh (by
# default a tree is reused and only rebuilt by make when its configure flags
# and the module's config file are unchanged). --build-only: no tests.
#
# Builds run make -j${BYTEMARK_MAKE_JOBS:-2}, tests prove -j${BYTEMARK_TEST_JOBS:-2}.
# BYTEMARK_SKIP_DEPS=1 skips scripts/deps.sh test.
# The summary (version, build, tests, seconds) is printed at the end and
# written to build/matrix/summary.md; logs are build/matrix/<row>/build.log
# and test.log. Exits non-zero when any build or test failed.
set -euo pipefail

# One compound command, read whole before it runs: editing this file while
# a matrix runs does not change the running one.
{
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

out="$root/build/matrix"
# beside the clone (../shared/nginx-src), else the workplace's copy
tarballs="${BYTEMARK_NGINX_TARBALLS:-}"
if [ -z "$tarballs" ]; then
    if [ -d "$root/../shared/nginx-src" ]; then tarballs="$root/../shared/nginx-src"
    else tarballs=/work/shared/nginx-src; fi
fi
make_jobs="${BYTEMARK_MAKE_JOBS:-2}"
test_jobs="${BYTEMARK_TEST_JOBS:-2}"

# The core of t/: read path, writes, status, one fault test, directives, HTTP/2.
core_tests=(t/01-config.t t/10-tickets.t t/11-pass.t t/20-backend-failures.t
            t/40-status.t t/50-ingest.t t/51-purge.t t/84-http2.t)

cc_opt="-g -O2 -fPIC -Wall -Wextra -Werror"
common_flags=(--with-compat --with-http_ssl_module --with-http_v2_module)

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-0}"; }

quick=0 clean=0 build_only=0 nginxorg_only=0 want=()
for a in "$@"; do
    case "$a" in
        --quick) quick=1 ;;
        --clean) clean=1 ;;
        --build-only) build_only=1 ;;
        --nginxorg-only) nginxorg_only=1 ;;
        -h|--help) usage 0 ;;
        -*) echo "matrix: unknown option $a" >&2; usage 2 >&2 ;;
        *) want+=("$a") ;;
    esac
done

run_start=$(date +%s)
mkdir -p "$out"
exec 8>"$out/.lock"
flock -n 8 || { echo "matrix: another scripts/matrix.sh is running (build/matrix/.lock)" >&2; exit 1; }

# the tests' dependencies, deb-src for `apt-get source nginx` included
# (BYTEMARK_SKIP_DEPS=1: installed already)
[ -n "${BYTEMARK_SKIP_DEPS:-}" ] || bash scripts/deps.sh test
export BYTEMARK_WERROR=1

# --- the releases ------------------------------------------------------------

debian_version=$(apt-cache showsrc --only-source nginx 2>/dev/null \
                 | sed -n 's/^Version: \([0-9.]*\)-.*/\1/p' | sort -V | tail -1 || true)
declare -A tarball_of=()
for f in "$tarballs"/nginx-*.tar.gz; do
    [ -f "$f" ] || continue
    v=$(basename "$f" .tar.gz); v=${v#nginx-}
    tarball_of[$v]=$f
done
mapfile -t all < <( { [ -n "$debian_version" ] && echo "$debian_version"
                      printf '%s\n' "${!tarball_of[@]}"; } | sort -uV)
[ ${#all[@]} -gt 0 ] || { echo "matrix: no nginx releases (no deb-src, nothing in $tarballs)" >&2; exit 1; }

if [ ${#want[@]} -gt 0 ]; then
    for v in "${want[@]}"; do
        known=0
        for a in "${all[@]}"; do [ "$a" = "$v" ] && known=1; done
        [ $known = 1 ] || { echo "matrix: unknown version $v (have: ${all[*]})" >&2; exit 2; }
    done
    mapfile -t versions < <(printf '%s\n' "${want[@]}" | sort -uV)
elif [ $quick = 1 ]; then
    versions=("${all[0]}")
    [ ${#all[@]} -gt 1 ] && versions+=("${all[-1]}")
else
    versions=("${all[@]}")
fi
newest=${versions[-1]}
echo "matrix: releases ${versions[*]}; once per run on $newest: static module, nginx without threads, the nginx.org recipe"

# --- sources -----------------------------------------------------------------

# Debian's nginx source package, patched by dpkg-source, in
# build/matrix/debian-src/nginx-<version>/ (kept between runs). `apt-get
# source nginx` takes the candidate version; when the archive no longer has
# that one (a security update whose .dsc is gone from the mirror), the other
# versions the Sources index lists are tried, newest first.
debian_tree() {
    local d="$out/debian-src" tree v
    mkdir -p "$d"
    tree="$d/nginx-$debian_version"
    if [ ! -d "$tree/debian/patches" ] || [ ! -f "$d/VERSION" ]; then
        rm -rf "$tree" "$d/VERSION"
        if (cd "$d" && DEBIAN_FRONTEND=noninteractive apt-get -q source nginx) >"$d/fetch.log" 2>&1; then
            apt-cache showsrc --only-source nginx | sed -n 's/^Version: //p' | sort -V | tail -1 > "$d/VERSION"
        else
            for v in $(apt-cache showsrc --only-source nginx | sed -n 's/^Version: //p' | sort -rV); do
                rm -rf "$tree"
                if (cd "$d" && DEBIAN_FRONTEND=noninteractive apt-get -q source "nginx=$v") >>"$d/fetch.log" 2>&1; then
                    echo "$v" > "$d/VERSION"
                    break
                fi
            done
        fi
        [ -d "$tree/debian/patches" ] && [ -f "$d/VERSION" ] \
            || { echo "matrix: apt-get source nginx failed:" >&2; tail -20 "$d/fetch.log" >&2; return 1; }
    fi
    echo "$tree"
}

# unpack <version> <dest-dir>: a fresh tree at <dest-dir>/nginx-<version>
unpack() {
    local v=$1 dest=$2
    rm -rf "$dest"; mkdir -p "$dest"
    if [ -n "${tarball_of[$v]:-}" ]; then
        tar -C "$dest" -xzf "${tarball_of[$v]}"
    else
        local deb; deb=$(debian_tree) || return 1
        cp -a "$deb" "$dest/"
    fi
    [ -d "$dest/nginx-$v/src/core" ] || { echo "matrix: no nginx-$v tree in $dest" >&2; return 1; }
}

# --- one build ---------------------------------------------------------------

# build <row> <version> <module flag> <configure flags...>
# Unpacks (or reuses) build/matrix/<row>/src/nginx-<version>, configures it
# with --prefix=build/matrix/<row>, make, make install. Output in build.log.
build() {
    local row=$1 v=$2 modflag=$3; shift 3
    local dir="$out/$row" tree="$out/$row/src/nginx-$v"
    local args=(--prefix="$dir" "$@" --with-cc-opt="$cc_opt" "$modflag=$root")
    # config lists the files of each layer folder: a file added or removed
    # is a new configuration too
    local stamp; stamp="${args[*]} $(sha256sum "$root/config" | cut -c1-16)"
    stamp="$stamp $(cd "$root" && echo src/*/*.[ch] | sha256sum | cut -c1-16)"
    mkdir -p "$dir"
    {
        echo "== $row: nginx $v $* $modflag=$root"
        if [ $clean = 1 ] || [ ! -f "$tree/objs/Makefile" ] || [ "$(cat "$tree/.matrix-stamp" 2>/dev/null)" != "$stamp" ]; then
            unpack "$v" "$dir/src" || return 1
            # release tarballs ship ./configure, repository snapshots auto/configure
            local conf=./configure
            [ -x "$tree/configure" ] || conf=auto/configure
            (cd "$tree" && $conf "${args[@]}") || return 1
            echo "$stamp" > "$tree/.matrix-stamp"
        fi
        make -C "$tree" -j"$make_jobs" || return 1
        make -C "$tree" install || return 1
    } > "$dir/build.log" 2>&1
}

# --- the recipe: a module built apart from an nginx.org-configured nginx ------

# The configure arguments `nginx -V` shows for nginx.org's Debian and Ubuntu
# packages (https://nginx.org/en/linux_packages.html), install paths moved
# under <dir>; their -flto and -ffile-prefix-map are left out of the compiler
# flags (build time, nothing the module's binary signature depends on).
nginxorg_flags() {
    local dir=$1 tree=$2
    echo --prefix="$dir" --sbin-path="$dir/sbin/nginx" --modules-path="$dir/modules" \
         --conf-path="$dir/conf/nginx.conf" --error-log-path="$dir/logs/error.log" \
         --http-log-path="$dir/logs/access.log" --pid-path="$dir/logs/nginx.pid" \
         --lock-path="$dir/logs/nginx.lock" \
         --http-client-body-temp-path="$dir/cache/client_temp" \
         --http-proxy-temp-path="$dir/cache/proxy_temp" \
         --http-fastcgi-temp-path="$dir/cache/fastcgi_temp" \
         --http-uwsgi-temp-path="$dir/cache/uwsgi_temp" \
         --http-scgi-temp-path="$dir/cache/scgi_temp" \
         --user=nginx --group=nginx --with-compat --with-file-aio --with-threads \
         --with-http_addition_module --with-http_auth_request_module \
         --with-http_dav_module --with-http_flv_module --with-http_gunzip_module \
         --with-http_gzip_static_module --with-http_mp4_module \
         --with-http_random_index_module --with-http_realip_module \
         --with-http_secure_link_module --with-http_slice_module \
         --with-http_ssl_module --with-http_stub_status_module \
         --with-http_sub_module --with-http_v2_module
    # nginx.org's packages have HTTP/3 since the release that has it
    grep -q 'with-http_v3_module)' "$tree/auto/options" && echo --with-http_v3_module
    echo --with-mail --with-mail_ssl_module --with-stream --with-stream_realip_module \
         --with-stream_ssl_module --with-stream_ssl_preread_module
}
nginxorg_cc_opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -Wp,-D_FORTIFY_SOURCE=2 -fPIC"
nginxorg_ld_opt="-Wl,-z,relro -Wl,-z,now -Wl,--as-needed -pie"

# release tarballs ship ./configure, repository snapshots auto/configure
conf_of() { if [ -x "$1/configure" ]; then echo ./configure; else echo auto/configure; fi; }

# build_recipe <row> <version>: nginx as nginx.org builds it (kept between
# runs unless --clean), then the module by the recipe, always afresh.
build_recipe() {
    local row=$1 v=$2
    local dir="$out/$row" tree="$out/$row/src/nginx-$v" mtree="$out/$row/module-src/nginx-$v"
    local args
    mkdir -p "$dir"
    {
        if [ $clean = 1 ] || [ ! -x "$dir/sbin/nginx" ]; then
            echo "== $row: nginx $v with nginx.org's package flags"
            unpack "$v" "$dir/src" || return 1
            # shellcheck disable=SC2046
            (cd "$tree" && $(conf_of "$tree") $(nginxorg_flags "$dir" "$tree") \
                --with-cc-opt="$nginxorg_cc_opt" --with-ld-opt="$nginxorg_ld_opt") || return 1
            make -C "$tree" -j"$make_jobs" || return 1
            make -C "$tree" install || return 1
        fi
        echo "== $row: the recipe: nginx -V, the same release's source, ./configure <arguments> --add-dynamic-module, make modules"
        "$dir/sbin/nginx" -V 2>&1
        args=$("$dir/sbin/nginx" -V 2>&1 | sed -n 's/^configure arguments: //p')
        [ -n "$args" ] || return 1
        unpack "$v" "$dir/module-src" || return 1
        (cd "$mtree" && eval "$(conf_of "$mtree") $args --add-dynamic-module=\"\$root\"" \
            && make -j"$make_jobs" modules) || return 1
        mkdir -p "$dir/modules"
        cp "$mtree/objs/ngx_http_bytemark_module.so" "$dir/modules/.new.so"
        mv -f "$dir/modules/.new.so" "$dir/modules/ngx_http_bytemark_module.so"
    } > "$dir/build.log" 2>&1
}

# --- tests -------------------------------------------------------------------

# run_tests <row> <env...> -- <prove args...>
run_tests() {
    local row=$1; shift
    local envs=()
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    echo "== $row: ${envs[*]} prove $*" > "$out/$row/test.log"
    env "${envs[@]}" prove -j"$test_jobs" --timer "$@" 2>&1 | tee -a "$out/$row/test.log" | sed "s/^/[$row] /"
    return "${PIPESTATUS[0]}"
}

# The harness adds a load_module line unless the module is compiled in
# (BYTEMARK_MODULE=static). Until t/lib/Bytemark/Test.pm knows that, a
# small shim loaded into each test (prove --exec 'perl -M...') adds
# no_module => 1. Sets static_args (extra prove arguments).
static_args=()
static_prove_args() {
    static_args=()
    if grep -q 'static' <(sed -n '/^sub nginx_conf/,/^}/p' t/lib/Bytemark/Test.pm); then
        return
    fi
    local shim="$out/shim/Bytemark/StaticShim.pm"
    mkdir -p "$(dirname "$shim")"
    cat > "$shim" <<'EOF'
package Bytemark::StaticShim;
# Written by scripts/matrix.sh: the module is compiled into nginx, so the
# harness must not add a load_module line (BYTEMARK_MODULE=static).
use strict;
use warnings;
use Bytemark::Test;
my $orig = \&Bytemark::Test::nginx_conf;
{
    no warnings 'redefine';
    *Bytemark::Test::nginx_conf = sub {
        my ($self, $body, %o) = @_;
        return $orig->($self, $body, %o, no_module => 1);
    };
}
1;
EOF
    static_args=(--exec "$(command -v perl) -I$root/t/lib -I$out/shim -MBytemark::StaticShim")
}

# --- the matrix --------------------------------------------------------------

rows=() failed=0
declare -A res_build=() res_tests=() res_secs=() res_label=()

record() {    # record <row> <label> <build> <tests> <start>
    rows+=("$1"); res_label[$1]=$2; res_build[$1]=$3; res_tests[$1]=$4
    res_secs[$1]=$(( $(date +%s) - $5 ))
    { [ "$3" = ok ] && { [ "$4" = ok ] || [ "$4" = - ]; }; } || failed=1
}

label_of() {
    local v=$1
    if [ -z "${tarball_of[$v]:-}" ]; then
        echo "$v (Debian $(cat "$out/debian-src/VERSION" 2>/dev/null || echo '?'))"
    else
        echo "$v"
    fi
}

do_row() {    # do_row <row> <version> <label-suffix> <module flag> <flags...>
    local row=$1 v=$2 suffix=$3 modflag=$4; shift 4
    local t0; t0=$(date +%s)
    echo "matrix: $row: building"
    local built=0
    case "$row" in
        *-nginxorg) build_recipe "$row" "$v" && built=1 ;;
        *)          build "$row" "$v" "$modflag" "$@" && built=1 ;;
    esac
    if [ $built = 0 ]; then
        echo "matrix: $row: BUILD FAILED, see build/matrix/$row/build.log"
        tail -25 "$out/$row/build.log" | sed "s/^/[$row] /"
        record "$row" "$(label_of "$v")$suffix" FAIL - "$t0"
        return
    fi
    echo "matrix: $row: built in $(( $(date +%s) - t0 ))s"
    if [ $build_only = 1 ]; then
        record "$row" "$(label_of "$v")$suffix" ok - "$t0"
        return
    fi
    local st=0
    case "$row" in
        *-static)
            static_prove_args
            run_tests "$row" BYTEMARK_NGINX="$out/$row/sbin/nginx" BYTEMARK_MODULE=static -- \
                "${static_args[@]}" "${core_tests[@]}" || st=$?
            ;;
        *-nothreads)
            run_tests "$row" BYTEMARK_NGINX_NOTHREADS="$out/$row/sbin/nginx" \
                BYTEMARK_MODULE_NOTHREADS="$out/$row/modules/ngx_http_bytemark_module.so" \
                BYTEMARK_NGINX="$out/$v/sbin/nginx" \
                BYTEMARK_MODULE_THREADED="$out/$v/modules/ngx_http_bytemark_module.so" -- \
                t/85-no-threads.t || st=$?
            ;;
        *-nginxorg)
            run_tests "$row" BYTEMARK_NGINX="$out/$row/sbin/nginx" \
                BYTEMARK_MODULE="$out/$row/modules/ngx_http_bytemark_module.so" -- \
                t/86-version.t "${core_tests[@]}" || st=$?
            ;;
        *)
            run_tests "$row" BYTEMARK_NGINX="$out/$row/sbin/nginx" \
                BYTEMARK_MODULE="$out/$row/modules/ngx_http_bytemark_module.so" -- \
                "${core_tests[@]}" || st=$?
            ;;
    esac
    record "$row" "$(label_of "$v")$suffix" ok "$( [ $st = 0 ] && echo ok || echo FAIL )" "$t0"
}

if [ $nginxorg_only = 0 ]; then
    for v in "${versions[@]}"; do
        do_row "$v" "$v" "" --add-dynamic-module --with-threads "${common_flags[@]}"
    done
    do_row "$newest-static" "$newest" " static (--add-module)" --add-module --with-threads "${common_flags[@]}"
    do_row "$newest-nothreads" "$newest" " without --with-threads" --add-dynamic-module "${common_flags[@]}"
fi
do_row "$newest-nginxorg" "$newest" " nginx.org's flags, module by the recipe (make modules)" -

# --- summary -----------------------------------------------------------------

total=$(( $(date +%s) - run_start ))
commit="$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD -- src config 2>/dev/null || echo '+dirty')"
{
    echo "# nginx compatibility matrix"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), \`scripts/matrix.sh $*\`, module $commit, ${total}s in all."
    echo "Configure: \`${common_flags[*]} --with-threads --add-dynamic-module\` (cc: \`$cc_opt\`)."
    echo "Tests: ${core_tests[*]} (t/85-no-threads.t for the build without threads;"
    echo "t/86-version.t too for the module built by the recipe into nginx.org's configuration)."
    echo
    echo "| nginx | build | tests | seconds |"
    echo "|---|---|---|---|"
    for r in "${rows[@]}"; do
        echo "| ${res_label[$r]} | ${res_build[$r]} | ${res_tests[$r]} | ${res_secs[$r]} |"
    done
} > "$out/summary.md"
echo
cat "$out/summary.md"
echo
if [ $failed = 0 ]; then
    echo "matrix: PASS (${total}s)"
else
    echo "matrix: FAIL (${total}s); logs in build/matrix/<row>/build.log and test.log"
fi
exit $failed
}
