#!/usr/bin/env bash
# The benchmark (issue 6): one command.
#
#   bash bench/run.sh            # full: 1 000 000 MySQL rows, 100 000 cache documents
#   bash bench/run.sh --quick    # smoke test: small data set, short runs
#
# Installs what is missing (scripts/deps.sh, which also builds FerretDB),
# builds the module (scripts/build.sh), then bench/bench.py starts its own
# MariaDB, MongoDB stand-in, FerretDB (build/ferretdb/ferretdb, on SQLite) and
# three nginx instances in a temporary directory, loads the data set (into
# FerretDB only the first --ferretdb-docs cache documents: it scans them on
# every lookup), runs wrk against each scenario, the MongoDB hit and miss ones
# against the stand-in and against FerretDB, profiles the hot path with
# callgrind, and writes bench/results/<date>-<host>[-quick].md (and .json),
# the two servers' rows side by side. Then (issue 13) the section "Connections
# (issue 13)": the ceiling, MongoDB hits, MySQL without MongoDB and the fallback
# at 1, 32 and 256 connections (--conn-levels), req/s, p50, p99, worker, module
# and database CPU per request, with its goals (module µs at 32 connections, the
# c=1 p50 against the newest committed non-quick bench/results/*.json, worker
# CPU under half the database's). The section "Micro-cache expiry (issue
# 16)": the hot set at ttl=5s for 15 s against the ceiling, both at 32
# connections, with the goal p99 within 2x. Nothing is left running: bench.py stops
# what it started, and the trap below kills whatever is still listed in the
# work directory's pid file (bench.py itself killed with SIGKILL, say).
#
# Other options go to bench.py (python3 bench/bench.py --help): --workers N,
# --connections N, --wrk-threads N, --duration S, --no-profile, --rows N,
# --conn-levels 1,32,256, --results-dir DIR,
# --mongo-users N, --ferretdb-docs N, --quiet-cores C, --quiet-wait S.
# --batch-rounds N: alternating rounds of the section "MySQL coalescing (issue
# 27)" (MySQL and the fallback with coalescing against bytemark_mysql_batch 1,
# at --conn-levels); --only mysql-batch: that section alone, printed.
# --only side-by-side: the comparison with the baseline alone (MongoDB hits,
# MySQL and the fallback at 1 and at --connections connections: p50 and the
# worker CPU per request; with named backends in this build, the same
# configuration as a named backend too), printed.
# --replica-rounds N: alternating rounds of the section "Replica reads (issue
# 26)" (a second MariaDB replicating from the primary's binary log, a read
# replica: bytemark_mysql_read primary against spread, the primary's CPU per
# request); --only replica-reads: that section alone.
# BYTEMARK_BUILD_DIR: build (and benchmark) the module in another directory.
# --baseline REV (default 97dec3d, before issue 13) / --no-baseline: the module
# of an earlier commit, built here and measured side by side (p50 at c=1,
# worker CPU per request at --connections).
# BENCH_NO_BUILD=1: use the module already built.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
    bash scripts/deps.sh
    bash scripts/build.sh
fi
module="${BYTEMARK_BUILD_DIR:-$root/build}/ngx_http_bytemark_module.so"
[ -f "$module" ] || { echo "bench: $module is missing" >&2; exit 1; }

# --baseline REV (default 97dec3d, the last commit before issue 13: MySQL and
# MongoDB both on the thread pool, one lookup per task) is built from a
# detached worktree into the work directory and measured side by side at one
# connection; --no-baseline skips it.
baseline=97dec3d
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --baseline) baseline="$2"; shift 2 ;;
        --baseline=*) baseline="${1#--baseline=}"; shift ;;
        --no-baseline) baseline=; shift ;;
        *) args+=("$1"); shift ;;
    esac
done

workdir=$(mktemp -d /tmp/bytemark-bench.XXXXXX)
bench_pid=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
        kill -TERM "$bench_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$bench_pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$bench_pid" 2>/dev/null || true
    fi
    # whatever bench.py could not stop: each pid it recorded, by id
    if [ -f "$workdir/pids" ]; then
        while read -r pid name; do
            [ -n "$pid" ] || continue
            if kill -0 "$pid" 2>/dev/null; then
                echo "bench: killing leftover $name ($pid)" >&2
                pkill -KILL -P "$pid" 2>/dev/null || true   # its children (nginx workers)
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done < "$workdir/pids"
    fi
    if [ -d "$workdir/baseline-src" ]; then
        git -C "$root" worktree remove --force "$workdir/baseline-src" 2>/dev/null || true
    fi
    rm -rf "$workdir"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ -n "$baseline" ]; then
    rev=$(git -C "$root" rev-parse --short "$baseline^{commit}")
    git -C "$root" worktree add --detach "$workdir/baseline-src" "$rev" > /dev/null
    echo "bench: building the baseline $rev"
    BYTEMARK_BUILD_DIR="$workdir/baseline-build" bash "$workdir/baseline-src/scripts/build.sh" \
        > "$workdir/baseline-build.log" 2>&1 \
        || { tail -20 "$workdir/baseline-build.log" >&2; exit 1; }
    args+=(--baseline-module "$workdir/baseline-build/ngx_http_bytemark_module.so"
           --baseline-label "commit $rev")
fi

start=$(date +%s)
# in the background and waited for, so that a signal reaches the trap at once
/usr/bin/python3 bench/bench.py --workdir "$workdir" --module "$module" ${args[@]+"${args[@]}"} &
bench_pid=$!
set +e
wait "$bench_pid"
rc=$?
set -e
bench_pid=
echo "bench: done in $(( $(date +%s) - start )) s (exit $rc)"
exit "$rc"
