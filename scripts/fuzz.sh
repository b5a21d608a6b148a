#!/usr/bin/env bash
# Fuzz targets of the module's parsers (fuzz/), built with Debian's clang and
# libFuzzer under ASan + UBSan.
#
#   bash scripts/fuzz.sh build                 build build/fuzz/bin/<target>
#   bash scripts/fuzz.sh run [SECONDS] [TARGET...]
#                                              fuzz each target SECONDS (default
#                                              60) from fuzz/corpus/<target>
#   bash scripts/fuzz.sh regress [TARGET...]   plain drivers (no libFuzzer) over
#                                              fuzz/corpus and fuzz/regressions
#   bash scripts/fuzz.sh driver                just build them: build/fuzz/driver/<target>
#                                              (t/60-fuzz-regressions.t runs them)
#   bash scripts/fuzz.sh coverage [TARGET...]  line coverage of src/ by the corpora
#   bash scripts/fuzz.sh corpus                rewrite the seed corpora
#                                              (fuzz/make_corpus.py, pymongo)
#
# Targets: fuzz_bson (bytes as a cache document), fuzz_bson_struct (valid BSON
# built from the bytes), fuzz_ingest (ingest bodies, MySQL payloads and rows),
# fuzz_input (user ids, uuids, percent-decoding, status/version arguments).
# The BSON and MySQL checks are differential: src/'s canonical writer against
# the old jansson read path kept in fuzz/reference.c. BYTEMARK_FUZZ_STRICT=1
# also holds src/ to the old behaviour where it departs from it on purpose
# (reference.c: DIVERGENCE).
#
# The module's sources (input.c, json.c, render.c, ingest_body.c) are compiled as
# they are, with nginx's headers from the configured tree scripts/build.sh
# prepares (build/nginx-src) and five nginx core files (string, pool, array,
# alloc, ngx_http_arg) from the upstream tarball of Debian's nginx source
# package, cached in build/upstream/ (the one t/82-upstream-build.t uses;
# fetched with apt-get source when missing).
#
# run: the working corpus grows in build/fuzz/corpus/<target> (seeded from
# fuzz/corpus/<target> and fuzz/regressions/<target>); a crash stops that
# target, leaves its input in build/fuzz/artifacts/<target>/ and makes the
# command fail. Each target's last libFuzzer line (execs, coverage) is
# printed and kept in build/fuzz/logs/. BYTEMARK_FUZZ_JOBS=2 runs two
# targets at a time (default 1). BYTEMARK_FUZZ_SRC=dir compiles the module's
# sources from dir instead of src/ (to fuzz a proposed fix before it lands).
# Keep a crashing input as a regression case:
#   cp build/fuzz/artifacts/<target>/crash-* fuzz/regressions/<target>/
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

TARGETS=(fuzz_bson fuzz_bson_struct fuzz_ingest fuzz_input)
if [ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]; then
    export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-14/bin/llvm-symbolizer}
fi
out="$root/build/fuzz"
CC=${BYTEMARK_FUZZ_CC:-clang-14}

die() { echo "fuzz.sh: $*" >&2; exit 1; }

# --- nginx: headers of the configured tree, core .c files of the same version ---

nginx_tree() {
    local tree="$root/build/nginx-src"
    if [ ! -f "$tree/objs/ngx_auto_config.h" ]; then
        bash scripts/build.sh >/dev/null
    fi
    [ -f "$tree/objs/ngx_auto_config.h" ] || die "no configured nginx tree in $tree"

    local version
    version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$tree/src/core/nginx.h")
    [ -n "$version" ] || die "cannot read the nginx version from $tree"

    # a snapshot of the headers: scripts/build.sh may reconfigure the tree
    # while a fuzz build runs
    local inc="$out/nginx-$version"
    if [ ! -f "$inc/.ok" ] || [ "$tree/objs/ngx_auto_config.h" -nt "$inc/.ok" ]; then
        rm -rf "$inc"
        mkdir -p "$inc/objs"
        (cd "$tree" && find src -name '*.h' -print0 | tar cf - --null -T -) | tar xf - -C "$inc"
        cp "$tree"/objs/ngx_auto_config.h "$tree"/objs/ngx_auto_headers.h "$inc/objs/"

        local cache="$root/build/upstream" tarball
        mkdir -p "$cache"
        tarball="$cache/nginx_$version.orig.tar.gz"
        if [ ! -f "$tarball" ]; then
            echo "fuzz.sh: fetching the nginx $version source (apt-get source)"
            (
                flock 9
                cd "$cache"
                [ -f "$tarball" ] || apt-get -q source --download-only --tar-only nginx >/dev/null \
                    || die "apt-get source nginx failed (deb-src in /etc/apt/sources.list.d/debian.sources?)"
            ) 9>>"$cache/.lock"
        fi
        [ -f "$tarball" ] || die "no $tarball"
        tar xzf "$tarball" -C "$inc" --strip-components=1 \
            "nginx-$version/src/core/ngx_string.c" "nginx-$version/src/core/ngx_palloc.c" \
            "nginx-$version/src/core/ngx_array.c" "nginx-$version/src/os/unix/ngx_alloc.c" \
            "nginx-$version/src/http/ngx_http_parse.c"
        touch "$inc/.ok"
    fi
    NGX="$inc"
}

# --- build ------------------------------------------------------------------------

# The module's files under test: the core and render layers (no request
# state, no backends: src/LAYERS) and the client input of the http layer.
# The headers of every layer are on the include path: input.c includes the
# http layer's header, which includes those below it.
fuzzed_layers() {
    sed -n 's/^\([a-z][a-z]*\).*/\1/p' "${BYTEMARK_FUZZ_SRC:-$root/src}/LAYERS"
}

# core/'s directive parameters (params.c) need nginx's configuration parser,
# which the drivers do not link: no input reaches them at run time.
fuzzed_sources() {
    local src=$1 f
    for f in "$src"/core/*.c; do
        [ "$(basename "$f")" = ngx_http_bytemark_params.c ] || echo "$f"
    done
    echo "$src"/render/*.c "$src"/http/ngx_http_bytemark_input.c
}

# build_set <dir> <sanitizer flags for objects>
build_objects() {
    local dir=$1 san=$2
    # every object is compiled anew: none of a renamed or removed source stays
    rm -rf "$dir"
    mkdir -p "$dir"
    local incs=(-I"$NGX/src/core" -I"$NGX/src/event" -I"$NGX/src/event/modules"
                -I"$NGX/src/os/unix" -I"$NGX/objs" -I"$NGX/src/http"
                -I"$NGX/src/http/modules" -I"$NGX/src/http/v2")
    local layer
    for layer in $(fuzzed_layers); do
        incs+=(-I"${BYTEMARK_FUZZ_SRC:-$root/src}/$layer")
    done
    incs+=(-I"$root/fuzz")
    # shellcheck disable=SC2207
    local pc=($(pkg-config --cflags libbson-1.0 jansson libcrypto))
    # shellcheck disable=SC2206  # $san: several flags
    local base=(-g -O1 -fno-omit-frame-pointer -gline-tables-only $san "${incs[@]}" "${pc[@]}")
    local pids=() f o
    for f in "$NGX"/src/core/ngx_string.c "$NGX"/src/core/ngx_palloc.c "$NGX"/src/core/ngx_array.c \
             "$NGX"/src/os/unix/ngx_alloc.c "$NGX"/src/http/ngx_http_parse.c; do
        o="$dir/core_$(basename "$f" .c).o"
        "$CC" "${base[@]}" -w -c "$f" -o "$o" & pids+=($!)
    done
    local src=${BYTEMARK_FUZZ_SRC:-$root/src}
    for f in $(fuzzed_sources "$src"); do
        "$CC" "${base[@]}" -Wall -Wextra -Wno-unused-parameter -c "$f" -o "$dir/$(basename "$f" .c).o" & pids+=($!)
    done
    for f in fuzz/stubs.c fuzz/common.c fuzz/reference.c fuzz/driver.c "${TARGETS[@]/#/fuzz/}"; do
        f=${f%.c}.c
        "$CC" "${base[@]}" -Wall -Wextra -Werror -Wno-unused-parameter -c "$f" -o "$dir/$(basename "$f" .c).o" & pids+=($!)
    done
    local p rc=0
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [ $rc = 0 ] || die "compilation failed"
}

libs() {
    pkg-config --libs libbson-1.0 jansson libcrypto
}

# one build at a time: the test suite (t/60) and a fuzzing session may overlap
lock() {
    mkdir -p "$out"
    exec 8>>"$out/.lock"
    flock 8
}

unlock() {
    exec 8>&-
}

build() {
    command -v "$CC" >/dev/null || die "$CC not found (bash scripts/deps.sh test installs clang-14)"
    lock
    nginx_tree
    local obj="$out/obj"
    local san="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all"
    build_objects "$obj" "$san"
    mkdir -p "$out/bin"
    local shared=("$obj"/core_*.o "$obj"/ngx_http_bytemark_*.o "$obj"/stubs.o "$obj"/common.o "$obj"/reference.o)
    local t
    for t in "${TARGETS[@]}"; do
        # shellcheck disable=SC2046
        "$CC" -fsanitize=address,undefined,fuzzer "$obj/$t.o" "${shared[@]}" $(libs) -o "$out/bin/$t"
    done
    unlock
    echo "fuzz.sh: built ${TARGETS[*]} in $out/bin"
}

build_driver() {
    command -v "$CC" >/dev/null || die "$CC not found (bash scripts/deps.sh test installs clang-14)"
    lock
    nginx_tree
    local obj="$out/obj-driver"
    local san="-fsanitize=address,undefined -fno-sanitize-recover=all"
    build_objects "$obj" "$san"
    mkdir -p "$out/driver"
    local shared=("$obj"/core_*.o "$obj"/ngx_http_bytemark_*.o "$obj"/stubs.o "$obj"/common.o "$obj"/reference.o)
    local t
    for t in "${TARGETS[@]}"; do
        # shellcheck disable=SC2046
        "$CC" -fsanitize=address,undefined "$obj/$t.o" "$obj/driver.o" "${shared[@]}" $(libs) \
            -o "$out/driver/$t"
    done
    unlock
}

# --- run --------------------------------------------------------------------------

pick_targets() {
    if [ $# -eq 0 ]; then
        SELECTED=("${TARGETS[@]}")
        return
    fi
    SELECTED=()
    local t
    for t in "$@"; do
        [[ " ${TARGETS[*]} " == *" $t "* ]] || die "unknown target $t (${TARGETS[*]})"
        SELECTED+=("$t")
    done
}

# libFuzzer options per target
opts_for() {
    case $1 in
        fuzz_input)  echo "-max_len=512 -dict=$root/fuzz/dict/input.dict" ;;
        fuzz_ingest) echo "-max_len=16384 -dict=$root/fuzz/dict/json.dict" ;;
        fuzz_bson)   echo "-max_len=16384 -dict=$root/fuzz/dict/bson.dict" ;;
        *)           echo "-max_len=8192" ;;
    esac
}

run_one() {
    local t=$1 secs=$2
    local work="$out/corpus/$t" art="$out/artifacts/$t/" log="$out/logs/$t.log"
    mkdir -p "$work" "$art" "$out/logs"
    cp -n fuzz/corpus/"$t"/* "$work"/ 2>/dev/null || true
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        cp -n fuzz/regressions/"$t"/* "$work"/ 2>/dev/null || true
    fi
    local rc=0
    # shellcheck disable=SC2046
    ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        "$out/bin/$t" $(opts_for "$t") -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1 -artifact_prefix="$art" "$work" > "$log" 2>&1 || rc=$?
    local last execs
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ $rc -ne 0 ]; then
        echo "$t: FAILED (exit $rc) after ${execs:-?} execs; see $log and $art"
        grep -E 'ERROR|runtime error|invariant failed|Test unit written' "$log" | head -5 | sed 's/^/    /'
        return 1
    fi
    echo "$t: ${secs}s, ${execs:-?} execs, corpus $(find "$work" -type f | wc -l) inputs; $last"
}

run() {
    local secs=${1:-60}
    [[ $secs =~ ^[0-9]+$ ]] || die "run SECONDS: not a number: $secs"
    shift || true
    pick_targets "$@"
    build
    local jobs=${BYTEMARK_FUZZ_JOBS:-1} status=0 pids=() t
    for t in "${SELECTED[@]}"; do
        run_one "$t" "$secs" & pids+=($!)
        if [ ${#pids[@]} -ge "$jobs" ]; then
            wait "${pids[0]}" || status=1
            pids=("${pids[@]:1}")
        fi
    done
    for t in "${pids[@]}"; do wait "$t" || status=1; done
    [ $status = 0 ] && echo "fuzz.sh: no finding" || echo "fuzz.sh: FINDINGS (see above)"
    return $status
}

regress() {
    pick_targets "$@"
    build_driver
    local status=0 t dirs
    for t in "${SELECTED[@]}"; do
        dirs=("fuzz/corpus/$t")
        [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
            "$out/driver/$t" "${dirs[@]}" || { echo "$t: FAILED"; status=1; }
    done
    return $status
}

# line coverage of the module's fuzzed sources: plain drivers built with
# clang's source-based coverage replay the seeds, the regressions and the
# working corpus that runs have grown (build/fuzz/corpus)
coverage() {
    pick_targets "$@"
    command -v "$CC" >/dev/null || die "$CC not found (bash scripts/deps.sh test installs clang-14)"
    local bin=/usr/lib/llvm-14/bin
    [ -x $bin/llvm-cov ] || die "llvm-cov not found (llvm-14)"
    lock
    nginx_tree
    local obj="$out/obj-cov" prof="$out/profiles"
    build_objects "$obj" "-fprofile-instr-generate -fcoverage-mapping"
    mkdir -p "$out/cov"
    rm -rf "$prof"; mkdir -p "$prof"
    local shared=("$obj"/core_*.o "$obj"/ngx_http_bytemark_*.o "$obj"/stubs.o "$obj"/common.o "$obj"/reference.o)
    local t dirs
    for t in "${SELECTED[@]}"; do
        # shellcheck disable=SC2046
        "$CC" -fprofile-instr-generate "$obj/$t.o" "$obj/driver.o" "${shared[@]}" $(libs) -o "$out/cov/$t"
    done
    unlock
    for t in "${SELECTED[@]}"; do
        dirs=("fuzz/corpus/$t")
        [ -d "fuzz/regressions/$t" ] && dirs+=("fuzz/regressions/$t")
        [ -d "$out/corpus/$t" ] && dirs+=("$out/corpus/$t")
        LLVM_PROFILE_FILE="$prof/$t.profraw" "$out/cov/$t" "${dirs[@]}" >/dev/null 2>&1 || true
    done
    $bin/llvm-profdata merge -o "$prof/all.profdata" "$prof"/*.profraw
    local src=${BYTEMARK_FUZZ_SRC:-$root/src} objs=()
    for t in "${SELECTED[@]}"; do objs+=(-object "$out/cov/$t"); done
    # shellcheck disable=SC2046
    $bin/llvm-cov report "${objs[@]:1}" -instr-profile="$prof/all.profdata" \
        $(fuzzed_sources "$src")
    echo "fuzz.sh: line by line: $bin/llvm-cov show ${objs[*]:1} -instr-profile=$prof/all.profdata $src/render/ngx_http_bytemark_json.c"
}

cmd=${1:-}
shift || true
case $cmd in
    build)   build ;;
    run)     run "$@" ;;
    regress) regress "$@" ;;
    driver)  build_driver; echo "fuzz.sh: built plain drivers in $out/driver" ;;
    coverage) coverage "$@" ;;
    corpus)  /usr/bin/python3 fuzz/make_corpus.py ;;
    *)       sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
