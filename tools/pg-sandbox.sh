#!/usr/bin/env bash
# pg-sandbox.sh start DIR   starts a throwaway Postgres (Debian's package) on
#                           127.0.0.1 with its files in DIR; prints its URL
# pg-sandbox.sh stop DIR    stops it and removes DIR
# For tests and benchmarks: a real server, its own cluster, trust auth on
# loopback, nothing shared with a system Postgres. As root, the server runs
# as the `postgres` user (Postgres refuses to run as root).
set -euo pipefail
cmd=${1:?usage: pg-sandbox.sh start|stop|pause|resume DIR}
dir=${2:?usage: pg-sandbox.sh start|stop|pause|resume DIR}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || { echo "pg-sandbox: no Postgres in /usr/lib/postgresql (make deps)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case $cmd in
start)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$dir"
    chmod o+x "$(dirname "$dir")" # a mktemp parent is 0700: let the postgres user through
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  as_pg "$bin/initdb" -D "$dir/data" -U rill -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U rill rill
  echo "$port" > "$dir/port"
  echo "postgres://rill@127.0.0.1:$port/rill"
  ;;
pause) # the server stops, its data kept (a store that went away)
  as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
resume) # the paused server starts again, on the same port
  port=$(cat "$dir/port")
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  [ -d "$dir/data" ] && as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*) echo "pg-sandbox: unknown command $cmd" >&2; exit 2 ;;
esac
