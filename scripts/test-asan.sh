#!/usr/bin/env bash
# The test suite with the module built under AddressSanitizer and
# UndefinedBehaviorSanitizer, loaded into Debian's nginx with the ASan runtime
# preloaded. Any sanitizer report fails the run: reports go to
# build-asan/reports/ and the suite's error-log checks look for them too.
#
#   bash scripts/test-asan.sh [prove arguments, default t/]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/deps.sh
export BYTEMARK_BUILD_DIR="$root/build-asan"
BYTEMARK_CC_OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
BYTEMARK_LD_OPT="-fsanitize=address,undefined" \
    bash scripts/build.sh

reports="$BYTEMARK_BUILD_DIR/reports"
rm -rf "$reports"; mkdir -p "$reports"

# nginx itself is not instrumented; the runtime must be loaded first.
cat > "$BYTEMARK_BUILD_DIR/nginx" <<WRAP
#!/bin/sh
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)" \\
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan" \\
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \\
exec /usr/sbin/nginx "\$@"
WRAP
chmod +x "$BYTEMARK_BUILD_DIR/nginx"

export BYTEMARK_NGINX="$BYTEMARK_BUILD_DIR/nginx"
export BYTEMARK_MODULE="$BYTEMARK_BUILD_DIR/ngx_http_bytemark_module.so"

status=0
prove -j2 --timer "${@:-t/}" || status=$?

if ls "$reports"/* >/dev/null 2>&1; then
    echo "sanitizer reports:"; cat "$reports"/*
    status=1
fi
echo "sanitizer run: $( [ $status = 0 ] && echo clean || echo FAILED )"
exit $status
