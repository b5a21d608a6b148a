#!/usr/bin/env bash
# Print a shipped example configuration (example/nginx.conf,
# example/gateway/nginx.conf) adapted to a run of the demo or the tests:
#
#   tools/example_conf.sh <example> module=<.so> dir=<state dir> port=<N> \
#       [auth_port=<N>] mongo_uri=<uri> mongo_coll=<db.coll> mysql='host=... ...'
#
# The examples are written for an operator's Debian install (the module
# loaded by modules-enabled/, logs in /var/log/nginx, the backends' addresses
# to fill in); this replaces exactly those values -- and fails when one of
# them is no longer in the example, so the two cannot drift apart.
set -euo pipefail

file=$1; shift
declare -A v=()
for a in "$@"; do v[${a%%=*}]=${a#*=}; done
for k in module dir port mongo_uri mongo_coll mysql; do
    [ -n "${v[$k]:-}" ] || { echo "example_conf.sh: $k= is missing" >&2; exit 2; }
done

conf=$(cat "$file")

# replace <literal> <replacement>: every occurrence, at least one
replace() {
    case $conf in
        *"$1"*) conf=${conf//"$1"/"$2"} ;;
        *) echo "example_conf.sh: \"$1\" is not in $file" >&2; exit 1 ;;
    esac
}

replace 'include /etc/nginx/modules-enabled/*.conf;' "load_module ${v[module]};"
replace 'pid /run/nginx.pid;' "pid ${v[dir]}/nginx.pid;"
replace '/var/log/nginx/' "${v[dir]}/"
replace '/var/lib/nginx/' "${v[dir]}/"
replace 'listen 8080;' "listen 127.0.0.1:${v[port]};"
replace 'mongodb://127.0.0.1:27017/' "${v[mongo_uri]}"
replace ' cache.bytemark_tickets_cache;' " ${v[mongo_coll]};"
replace 'host=127.0.0.1 port=3306 user=bytemark password=change-me database=portal' "${v[mysql]}"
if [ -n "${v[auth_port]:-}" ]; then
    replace '127.0.0.1:8081' "127.0.0.1:${v[auth_port]}"
fi

printf '%s\n' "$conf"
