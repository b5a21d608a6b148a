#!/usr/bin/env bash
# Run the edge-gateway example (example/gateway/nginx.conf) next to the demo's
# databases: start `bash scripts/demo.sh` first (MariaDB with sql/sample.sql,
# MongoDB), then
#
#   bash example/gateway/run.sh          # gateway on 127.0.0.1:${PORT:-8090},
#                                        # auth stub on 127.0.0.1:${AUTH_PORT:-8091}
#   bash example/gateway/run.sh stop
#
# MODULE=/usr/lib/nginx/modules/ngx_http_bytemark_module.so runs the module of
# the Debian package instead of build/'s. State (filled-in config, logs) is in
# tmp/gateway/. The demo's MySQL account is the one scripts/demo.sh creates.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
state="$root/tmp/gateway"
nginx_bin=${BYTEMARK_NGINX:-/usr/sbin/nginx}
module=${MODULE:-$root/build/ngx_http_bytemark_module.so}
port=${PORT:-8090}
auth_port=${AUTH_PORT:-8091}

say() { printf 'gateway: %s\n' "$*"; }
die() { printf 'gateway: error: %s\n' "$*" >&2; exit 1; }

stop() {
    local p
    if [ -s "$state/nginx.pid" ] && read -r p < "$state/nginx.pid" && kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p"
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        say "stopped nginx (pid $p)"
    fi
    rm -f "$state/nginx.pid"
}

case "${1:-start}" in
    stop)  stop; exit 0 ;;
    start) ;;
    *)     die "usage: $0 [start|stop]" ;;
esac

[ -f "$root/tmp/demo/ports.env" ] || die "the demo is not running: bash scripts/demo.sh first"
# shellcheck disable=SC1091
. "$root/tmp/demo/ports.env"
[ -f "$module" ] || die "no module at $module (bash scripts/build.sh, or MODULE=...)"

mkdir -p "$state"
stop >/dev/null
mysql="host=127.0.0.1 port=$MYSQL_PORT user=bytemark password=s3cret-pw database=portal"
{
    [ "$(id -u)" -eq 0 ] && echo "user root;    # added by example/gateway/run.sh (running as root)"
    bash "$root/tools/example_conf.sh" "$root/example/gateway/nginx.conf" \
        module="$module" dir="$state" port="$port" auth_port="$auth_port" \
        mongo_uri="$MONGO_URI" mongo_coll=cache.bytemark_tickets_cache mysql="$mysql"
} > "$state/nginx.conf"
"$nginx_bin" -t -q -p "$state/" -c "$state/nginx.conf" || die "nginx -t failed ($state/nginx.conf)"
"$nginx_bin" -p "$state/" -c "$state/nginx.conf" || die "nginx did not start; see $state/error.log"
say "gateway on 127.0.0.1:$port, auth stub on 127.0.0.1:$auth_port (config $state/nginx.conf)"

base="http://127.0.0.1:$port"
cat <<EOF

Try it:
  curl -i $base/v1/users/me/tickets                                          # 401
  curl -i -H 'Authorization: Bearer alice-token' $base/v1/users/me/tickets   # user 12345's tickets
  curl -i -H 'Authorization: Bearer bob-token'   $base/v1/users/me/tickets   # user 777's
  curl -i -H 'Authorization: Bearer alice-token' $base/v1/users/me/passes/b5a4c3d2-e1f0-4a9b-8c7d-6e5f4a3b2c1d
  curl -i -H 'Authorization: Bearer alice-token' $base/v1/users/me/passes/0e1d2c3b-4a59-4687-9a0b-c1d2e3f4a5b6   # bob's: 404
  curl -s '$base/internal/bytemark-status?format=prometheus'

Logs: $state/gateway.log, $state/error.log. Stop: bash example/gateway/run.sh stop
EOF
