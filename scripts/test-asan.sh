#!/usr/bin/env bash
# The test suite with the module built under AddressSanitizer and
# UndefinedBehaviorSanitizer (plus float-cast-overflow, which GCC's
# -fsanitize=undefined leaves out), loaded into Debian's nginx with the
# sanitizer runtimes preloaded. Any sanitizer report fails the run: a report
# aborts the worker (abort_on_error), so the test whose nginx it was fails on
# the "exited on signal" line of its error log (t/lib/Bytemark/Test.pm), and
# the reports themselves go to build-asan/reports/, printed at the end.
#
#   bash scripts/test-asan.sh [prove arguments]
#
# Without arguments: every test in t/ except those that do not run the
# module's code in nginx or that the plain suite covers already:
#   t/60-fuzz-regressions.t   (its drivers are ASan+UBSan builds themselves)
#   t/80-t/83, t/87-t/89     (packaging, upstream build, manual, config
#                             checks, alert rules, install paths: no
#                             module code in nginx)
# The sanitized module is about 2x slower, so the default is one test at a
# time: timing-sensitive tests (budgets, breakers, pools) keep their margins.
# BYTEMARK_ASAN_JOBS=2 runs two at a time; BYTEMARK_ASAN_ALL=1 runs every test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/deps.sh test
export BYTEMARK_WERROR=1
export BYTEMARK_BUILD_DIR="$root/build-asan"
san="-fsanitize=address,undefined,float-cast-overflow"
BYTEMARK_CC_OPT="-O1 -fno-omit-frame-pointer $san -fno-sanitize-recover=all" \
BYTEMARK_LD_OPT="$san" \
    bash scripts/build.sh

reports="$BYTEMARK_BUILD_DIR/reports"
rm -rf "$reports"; mkdir -p "$reports"

# nginx itself is not instrumented; the runtime must be loaded first.
cat > "$BYTEMARK_BUILD_DIR/nginx" <<WRAP
#!/bin/sh
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan" \\
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$reports/ubsan" \\
exec /usr/sbin/nginx "\$@"
WRAP
chmod +x "$BYTEMARK_BUILD_DIR/nginx"

export BYTEMARK_NGINX="$BYTEMARK_BUILD_DIR/nginx"
export BYTEMARK_MODULE="$BYTEMARK_BUILD_DIR/ngx_http_bytemark_module.so"

if [ $# -eq 0 ]; then
    tests=()
    for f in t/*.t; do
        case $f in
            t/60-fuzz-regressions.t|t/8[0-3]-*.t|t/8[7-9]-*.t)
                [ -n "${BYTEMARK_ASAN_ALL:-}" ] || continue ;;
        esac
        tests+=("$f")
    done
    set -- "${tests[@]}"
fi

start=$(date +%s)
status=0
prove -j"${BYTEMARK_ASAN_JOBS:-1}" --timer "$@" || status=$?

if ls "$reports"/* >/dev/null 2>&1; then
    echo "sanitizer reports:"; cat "$reports"/*
    status=1
fi
echo "sanitizer run: $( [ $status = 0 ] && echo clean || echo FAILED ) in $(( $(date +%s) - start ))s"
exit $status
