#!/usr/bin/env bash
# THE test command: dependencies (scripts/deps.sh test), build (warnings
# are errors), then every test under t/.
#
# Tests are independent (own temp dir, own free ports, own servers), so they
# run two at a time. Two passes: every test against the MongoDB stand-in (or
# a local mongod), then every test that starts a MongoDB against FerretDB
# (built by scripts/deps.sh). Environment: BYTEMARK_TEST_JOBS (default 2),
# BYTEMARK_TEST_MONGO_URI (use that MongoDB instead of a local one),
# BYTEMARK_TEST_KEEP=1 (keep each test's temp dir), BYTEMARK_NGINX /
# BYTEMARK_MODULE (another nginx binary / module). Extra arguments go to
# prove (e.g. scripts/test.sh t/00-harness.t).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# the developers' gate: warnings are errors (scripts/build.sh, t/82's build)
export BYTEMARK_WERROR=1
bash scripts/deps.sh test
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
ferret=${BYTEMARK_FERRETDB:-$root/build/ferretdb/ferretdb}
echo "test.sh: nginx $(${BYTEMARK_NGINX:-/usr/sbin/nginx} -v 2>&1 | sed 's/.*: //'), module ${BYTEMARK_MODULE:-build/ngx_http_bytemark_module.so}"

# Pass 1: every test, MongoDB = $kind.
echo "test.sh: pass 1: every test, MongoDB used by the tests: $kind"
if [ $# -gt 0 ]; then
    exec prove -r -j"${BYTEMARK_TEST_JOBS:-2}" --timer "$@"
fi
status=0
prove -r -j"${BYTEMARK_TEST_JOBS:-2}" --timer t/ || status=$?

# Pass 2: every test that starts a MongoDB, against FerretDB (a real server
# by others), unless the run was pinned to one server. Tests that need what
# only the stand-in has skip themselves there, naming the missing feature;
# packaging tests (t/80-t/83) do not exercise the MongoDB side and stay out.
if [ -z "${BYTEMARK_TEST_MONGO_URI:-}" ] && [ -z "${BYTEMARK_TEST_MONGO_KIND:-}" ]; then
    mapfile -t ferret_tests < <(grep -l 'mongo *=> *1' t/*.t | grep -v '^t/8[0-3]-')
    echo "test.sh: pass 2: ${#ferret_tests[@]} tests, MongoDB used by the tests: ferretdb ($("$ferret" --version))"
    BYTEMARK_TEST_MONGO_KIND=ferretdb \
        prove -j"${BYTEMARK_TEST_JOBS:-2}" --timer "${ferret_tests[@]}" || status=$?
fi
echo "test.sh: servers used: $kind$( [ -z "${BYTEMARK_TEST_MONGO_URI:-}${BYTEMARK_TEST_MONGO_KIND:-}" ] && echo ", then ferretdb ($("$ferret" --version))" ); $( [ $status = 0 ] && echo PASS || echo FAIL )"
exit $status
