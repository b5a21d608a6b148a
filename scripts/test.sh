#!/usr/bin/env bash
# THE test command: dependencies, build, then every test under t/.
#
# Tests are independent (own temp dir, own free ports, own servers), so they
# run two at a time. Environment: BYTEMARK_TEST_JOBS (default 2),
# BYTEMARK_TEST_MONGO_URI (use that MongoDB instead of a local one),
# BYTEMARK_TEST_KEEP=1 (keep each test's temp dir), BYTEMARK_NGINX /
# BYTEMARK_MODULE (another nginx binary / module). Extra arguments go to
# prove (e.g. scripts/test.sh t/00-harness.t).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/deps.sh
bash scripts/build.sh

if [ -n "${BYTEMARK_TEST_MONGO_URI:-}" ]; then
    kind="external ($(printf '%s' "$BYTEMARK_TEST_MONGO_URI" | sed -E 's#//[^@/]*@#//***@#'))"
elif [ -n "${BYTEMARK_TEST_MONGO_KIND:-}" ]; then
    kind="$BYTEMARK_TEST_MONGO_KIND"
elif command -v mongod >/dev/null 2>&1; then
    kind="mongod ($(command -v mongod))"
else
    kind="standin (tools/mongo_standin.py)"
fi
echo "test.sh: MongoDB used by the tests: $kind"
echo "test.sh: nginx $(${BYTEMARK_NGINX:-/usr/sbin/nginx} -v 2>&1 | sed 's/.*: //'), module ${BYTEMARK_MODULE:-build/ngx_http_bytemark_module.so}"

if [ $# -eq 0 ]; then
    set -- t/
fi
exec prove -r -j"${BYTEMARK_TEST_JOBS:-2}" --timer "$@"
