#!/usr/bin/env bash
# THE run command: a working ngx_http_bytemark_module on this machine.
#
#   scripts/demo.sh          install the demo's deps (scripts/deps.sh demo),
#                            build, start MariaDB + MongoDB + nginx
#                            (as daemons, state in tmp/demo/), print curl lines
#   scripts/demo.sh stop     stop all of it
#   scripts/demo.sh status   what is running
#
# Ports: nginx on 127.0.0.1:${PORT:-8080}; MariaDB on 13306 and MongoDB on
# 27117 unless taken (then free ones). MongoDB is a real mongod when one is on
# PATH, else FerretDB (a MongoDB-compatible server on SQLite, built by
# scripts/deps.sh when Go >= 1.24 is at hand), else the stand-in
# (tools/mongo_standin.py, in memory); BYTEMARK_DEMO_MONGO=mongod|ferretdb|standin
# picks one. nginx runs example/nginx.conf
# with the demo's addresses and paths (tools/example_conf.sh; tmp/demo/nginx.conf).
# Starting again restarts everything with fresh sample data.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo="$root/tmp/demo"
py=/usr/bin/python3            # Debian's python3 (pymongo), not a pyenv one
nginx_bin=${BYTEMARK_NGINX:-/usr/sbin/nginx}
module="$root/build/ngx_http_bytemark_module.so"
http_port=${PORT:-8080}
my_user=bytemark
my_pw=s3cret-pw
my_db=portal
mongo_db=cache
mongo_coll=bytemark_tickets_cache

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() { $py -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pick_port() { if listening "$1"; then free_port; else echo "$1"; fi; }
pid_of() { [ -s "$1" ] && read -r p < "$1" && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; }

# stop NAME:PIDFILE ...: SIGTERM to all of them at once, wait up to 30s,
# then SIGKILL what is left.
stop() {
    local spec name file p i
    local -a names=() pids=()
    for spec in "$@"; do
        name=${spec%%:*} file=${spec#*:}
        if p=$(pid_of "$file"); then
            kill -CONT "$p" 2>/dev/null || true
            kill -TERM "$p" 2>/dev/null || true
            names+=("$name") pids+=("$p")
        fi
        rm -f "$file"
    done
    for i in "${!pids[@]}"; do
        for _ in $(seq 1 300); do
            kill -0 "${pids[$i]}" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "${pids[$i]}" 2>/dev/null; then
            say "${names[$i]} did not stop, killing it"
            kill -KILL "${pids[$i]}" 2>/dev/null || true
        fi
        say "stopped ${names[$i]} (pid ${pids[$i]})"
    done
}

stop_all() {
    # nginx first, so that it closes its backend connections itself.
    stop "nginx:$demo/nginx.pid"
    stop "MongoDB:$demo/mongo.pid" "MariaDB:$demo/mariadbd.pid"
    rm -f "$demo/ports.env"
}

status() {
    local n
    for n in nginx:nginx.pid MongoDB:mongo.pid MariaDB:mariadbd.pid; do
        if p=$(pid_of "$demo/${n#*:}"); then say "${n%%:*} running (pid $p)"
        else say "${n%%:*} not running"; fi
    done
    [ -f "$demo/ports.env" ] && sed 's/^/demo:   /' "$demo/ports.env"
    return 0
}

case "${1:-start}" in
    stop)   stop_all; exit 0 ;;
    status) status; exit 0 ;;
    start)  ;;
    *)      die "usage: $0 [start|stop|status]" ;;
esac

bash scripts/deps.sh demo
bash scripts/build.sh

mkdir -p "$demo"
stop_all >/dev/null
listening "$http_port" && die "port $http_port is in use; run with PORT=<free port>"

# ---------------------------------------------------------------- MariaDB
my_port=$(pick_port 13306)
my_sock="$demo/mysql.sock"
# A unix socket path must fit in 108 bytes.
[ ${#my_sock} -lt 100 ] || my_sock="/tmp/bytemark-demo-$(id -u).sock"
mkdir -p "$demo/mysql-tmp"
my_opts=(--no-defaults --datadir="$demo/mysql-data" --tmpdir="$demo/mysql-tmp"
         --innodb-buffer-pool-size=64M --innodb-log-file-size=16M --skip-log-bin
         --skip-name-resolve --character-set-server=utf8mb4
         --collation-server=utf8mb4_general_ci)
[ "$(id -u)" -eq 0 ] && my_opts+=(--user=root)
if [ ! -d "$demo/mysql-data/mysql" ]; then
    say "initializing MariaDB data directory"
    mariadb-install-db "${my_opts[@]}" --auth-root-authentication-method=normal \
        --skip-test-db > "$demo/mariadb-install.log" 2>&1 \
        || { tail -20 "$demo/mariadb-install.log"; die "mariadb-install-db failed"; }
fi
say "starting MariaDB on 127.0.0.1:$my_port"
setsid /usr/sbin/mariadbd "${my_opts[@]}" --port="$my_port" --bind-address=127.0.0.1 \
    --socket="$my_sock" --pid-file="$demo/mariadbd.pid" --log-error="$demo/mariadb.err" \
    < /dev/null > /dev/null 2>&1 &
for i in $(seq 1 300); do
    mariadb-admin --no-defaults --socket="$my_sock" -uroot --connect-timeout=1 ping \
        > /dev/null 2>&1 && break
    [ "$i" -eq 300 ] && { tail -20 "$demo/mariadb.err"; die "MariaDB did not start"; }
    sleep 0.1
done
root_sql() { mariadb --no-defaults --socket="$my_sock" -uroot --default-character-set=utf8mb4 "$@"; }
root_sql <<SQL
CREATE DATABASE IF NOT EXISTS $my_db CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$my_user'@'127.0.0.1' IDENTIFIED BY '$my_pw';
CREATE USER IF NOT EXISTS '$my_user'@'localhost' IDENTIFIED BY '$my_pw';
GRANT ALL PRIVILEGES ON $my_db.* TO '$my_user'@'127.0.0.1';
GRANT ALL PRIVILEGES ON $my_db.* TO '$my_user'@'localhost';
DROP TABLE IF EXISTS $my_db.bytemark_pass;
SQL
root_sql "$my_db" < sql/schema.sql
root_sql "$my_db" < sql/sample.sql
say "loaded sql/schema.sql and sql/sample.sql into $my_db"

# ---------------------------------------------------------------- MongoDB
mongo_port=$(pick_port 27117)
rm -f "$demo/mongo.pid"
ferretdb="$root/build/ferretdb/ferretdb"
want=${BYTEMARK_DEMO_MONGO:-}
if [ -z "$want" ]; then
    if command -v mongod > /dev/null 2>&1; then want=mongod
    elif [ -x "$ferretdb" ]; then want=ferretdb
    else want=standin    # no Go to build FerretDB with (scripts/deps.sh demo)
    fi
fi
case $want in
mongod)
    mongo_kind="mongod ($(mongod --version | head -1))"
    mkdir -p "$demo/mongo-data"
    say "starting mongod on 127.0.0.1:$mongo_port"
    setsid mongod --dbpath "$demo/mongo-data" --port "$mongo_port" --bind_ip 127.0.0.1 \
        --pidfilepath "$demo/mongo.pid" --logpath "$demo/mongo.log" --logappend \
        --nounixsocket --wiredTigerCacheSizeGB 0.25 < /dev/null > /dev/null 2>&1 &
    ;;
ferretdb)
    # FerretDB: a MongoDB-compatible server by FerretDB Inc., on SQLite
    # (scripts/deps.sh builds it from tools/ferretdb); fresh data each start.
    mongo_kind="FerretDB $("$ferretdb" --version | sed 's/^FerretDB //')"
    rm -rf "$demo/ferretdb-data"; mkdir -p "$demo/ferretdb-data"
    say "starting $mongo_kind on 127.0.0.1:$mongo_port (data in $demo/ferretdb-data)"
    setsid "$ferretdb" --listen-addr "127.0.0.1:$mongo_port" \
        --sqlite-url "file:$demo/ferretdb-data/" --log-level warn \
        < /dev/null > "$demo/mongo.log" 2>&1 &
    echo $! > "$demo/mongo.pid"
    ;;
standin)
    mongo_kind="the MongoDB stand-in (tools/mongo_standin.py, in memory)"
    say "starting $mongo_kind on 127.0.0.1:$mongo_port"
    setsid $py tools/mongo_standin.py --host 127.0.0.1 --port "$mongo_port" \
        --pidfile "$demo/mongo.pid" < /dev/null > "$demo/mongo.log" 2>&1 &
    ;;
*)  die "BYTEMARK_DEMO_MONGO=$want: not mongod, ferretdb or standin" ;;
esac
mongo_uri="mongodb://127.0.0.1:$mongo_port/"
mcli() { $py tools/mongo_cli.py "$mongo_uri" "$mongo_db" "$mongo_coll" "$@"; }
for i in $(seq 1 300); do
    mcli ping > /dev/null 2>&1 && break
    [ "$i" -eq 300 ] && { tail -20 "$demo/mongo.log"; die "MongoDB did not start"; }
    sleep 0.1
done
mcli drop
mcli index-unique user_id > /dev/null

# The cache entry of user 12345 as the Node service writes it (JS numbers:
# int32 when small, double otherwise), with the same passes as MySQL.
now=$(date +%s%3N)
mcli insert - > /dev/null <<EOF
{
  "user_id": 12345,
  "timestamp": {"\$numberDouble": "$now"},
  "passes": [
    {"pass_uuid": "7c2d9e4f-6a1b-4d3c-8e5f-0a9b8c7d6e5f", "timestamp": {"\$numberDouble": "1729500000000"},
     "status": "expired", "free_ticket_status": 1,
     "payload": {"activation_time": "2024-10-21T08:40:00Z", "expiration_time": "2024-10-21T10:40:00Z",
                 "fare": {"amount": 275, "currency": "USD"}, "note": "free transfer used",
                 "product": {"name": "Single Ride", "type": "RIDE", "uuid": "c4e6a8b0-5d7f-4a1c-9e3b-6f8d0a2c4e6b"},
                 "rider": "Adult", "zones": ["A"]},
     "payload_hash": "fb4e6c3b4ba581ca9dfa2d69b3a61e7f71f6cc0dc152a17dd76e6d966ae93552"},
    {"pass_uuid": "3f8e2a6c-1b4d-4c7e-9a2f-5d6b8c0e1f23", "timestamp": {"\$numberDouble": "1732100000000"},
     "status": "active", "free_ticket_status": 0,
     "payload": {"activation_time": "2024-11-20T10:53:20Z", "expiration_time": "2024-12-20T10:53:20Z",
                 "fare": {"amount": 8900, "currency": "USD"}, "order_uuid": "0b9d7f5e-3c1a-4e8b-b6d4-2f0a8c6e4b1d",
                 "product": {"name": "Monthly Pass", "type": "PERIOD", "uuid": "a1c3e5f7-2b4d-4f6a-8c0e-1d3f5a7b9c2e"},
                 "rider": "Adult", "zones": ["A", "B"]},
     "payload_hash": "6c54317ef0dfe1e26c483032e30cdd05fd41b5dba796d4b352bd5e978b4ed76b"}
  ],
  "passes4": [
    {"pass_uuid": "b5a4c3d2-e1f0-4a9b-8c7d-6e5f4a3b2c1d", "timestamp": {"\$numberDouble": "1732150000000"},
     "status": "active", "free_ticket_status": 0,
     "payload": {"activation_time": null, "expiration_time": null,
                 "fare": {"amount": 3400, "currency": "USD"}, "links": {"terms": "https://example.com/terms/7-day"},
                 "product": {"name": "7-Day Pass", "type": "PERIOD", "uuid": "e7f9b1d3-8c0a-4b2e-a4c6-9d1f3b5d7e9a"},
                 "rider": "Reduced Fare", "visual_validation": {"code": "K7", "color": "#1E90FF"},
                 "zones": ["A", "B", "C"]},
     "payload_hash": "2dd122f6e1129abf778e96865b953cb825741ad4cce97cd8a22f47a370fe7810"}
  ],
  "passesLog": [
    {"server_time": "$(date -u -d "@${now%???}" +%Y-%m-%dT%H:%M:%S.000Z)",
     "data": {"op": "sync", "source": "bytemark-api", "passes": 2}}
  ],
  "passes4Log": []
}
EOF
say "MongoDB ($mongo_kind): unique index on user_id, cache entry for user 12345"

# ---------------------------------------------------------------- nginx
my_directive="host=127.0.0.1 port=$my_port user=$my_user password=$my_pw database=$my_db"
{
    [ "$(id -u)" -eq 0 ] && echo "user root;    # added by scripts/demo.sh (running as root)"
    bash tools/example_conf.sh example/nginx.conf module="$module" dir="$demo" \
        port="$http_port" mongo_uri="$mongo_uri" mongo_coll="$mongo_db.$mongo_coll" \
        mysql="$my_directive"
} > "$demo/nginx.conf"
"$nginx_bin" -t -p "$demo/" -c "$demo/nginx.conf" > "$demo/nginx-t.log" 2>&1 \
    || { cat "$demo/nginx-t.log"; die "nginx -t failed"; }
"$nginx_bin" -p "$demo/" -c "$demo/nginx.conf" || { tail -20 "$demo/error.log"; die "nginx did not start"; }
for i in $(seq 1 100); do listening "$http_port" && break; sleep 0.1; done
say "nginx on 127.0.0.1:$http_port (config $demo/nginx.conf)"

cat > "$demo/ports.env" <<EOF
HTTP=http://127.0.0.1:$http_port
MYSQL_PORT=$my_port
MYSQL_SOCKET=$my_sock
MONGO_URI=$mongo_uri
MONGO_KIND="$mongo_kind"
EOF

# ---------------------------------------------------------------- check
base="http://127.0.0.1:$http_port"
pass=3f8e2a6c-1b4d-4c7e-9a2f-5d6b8c0e1f23
check() {   # check URL EXPECTED_SOURCE
    local hdr
    hdr=$(curl -s -o /dev/null -D - --max-time 10 "$1" | tr -d '\r') || true
    local code=$(printf '%s\n' "$hdr" | awk 'NR==1 {print $2}')
    local src=$(printf '%s\n' "$hdr" | awk -F': ' 'tolower($1)=="x-bytemark-source" {print $2}')
    if [ "$code" = 200 ] && [ "$src" = "$2" ]; then
        say "  ok   $1 -> 200, source $src"
    else
        say "  FAIL $1 -> ${code:-no answer}, source ${src:-none} (expected 200 from $2); see $demo/error.log"
        failed=1
    fi
}
failed=0
say "self-check:"
check "$base/v1/tickets?user_id=12345" mongo
check "$base/v1/tickets?user_id=777" mysql
check "$base/v1/users/12345/passes/$pass" mongo
# The 777 lookup above filled the cache; drop that entry again so that the
# first curl below shows the MySQL fallback.
sleep 0.5
mcli delete '{"user_id": 777}' > /dev/null

cat <<EOF

Try it:
  curl -i '$base/v1/tickets?user_id=12345'                 # from the MongoDB cache (X-Bytemark-Source: mongo)
  curl -i '$base/v1/tickets?user_id=777'                   # no cache entry: MySQL fallback (mysql), which fills the cache
  curl -i '$base/v1/tickets?user_id=777'                   # ... so the second time it comes from mongo
  curl -i '$base/v1/tickets?user_id=12345&status=active&version=3'
  curl -i '$base/v1/users/12345/passes/$pass'
  curl -i '$base/v1/users/777/passes/$pass'                # another user's pass: 404
  curl -i -X POST '$base/v1/users/777/passes' -d '{"pass_uuid":"11111111-2222-4333-8444-555555555555","status":"active"}'
  curl -i -X DELETE '$base/v1/users/777/cache'             # purge: 204

MongoDB server: $mongo_kind on 127.0.0.1:$mongo_port; MariaDB on 127.0.0.1:$my_port.
Logs: $demo/bytemark.log, $demo/error.log. Stop everything: scripts/demo.sh stop
EOF
[ "$failed" -eq 0 ] || { say "the self-check failed (the servers keep running; scripts/demo.sh stop)"; exit 1; }
