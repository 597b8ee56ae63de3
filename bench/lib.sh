# bench/lib.sh: what the benchmark scripts share; source it after setting
# $root (the repository). Serves flows with rill on a free loopback port.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# serve_rill FLOWS_DIR [rill serve options...]: starts `rill serve` ($RILL_BIN,
# else build/rill; log
# level warn; other settings from the caller's environment), sets rill_pid
# and rill_base (http://127.0.0.1:PORT), and returns once it answers.
serve_rill() {
  local port
  port=$(free_port)
  RILL_LOG_LEVEL=warn "${RILL_BIN:-$root/build/rill}" serve --flows "$1" --listen "127.0.0.1:$port" "${@:2}" &
  rill_pid=$!
  rill_base=http://127.0.0.1:$port
  for _ in $(seq 50); do curl -s -o /dev/null "$rill_base/" && break; sleep 0.1; done
}

# stop_rill: stops the rill serve_rill started, if any.
stop_rill() {
  if [ -n "${rill_pid:-}" ]; then
    kill "$rill_pid" 2>/dev/null
    wait "$rill_pid" 2>/dev/null || true
    rill_pid=
  fi
}

# thread_ticks PID: "loop other": the clock ticks of the process's main
# thread (rill's loop) and of its other threads together (the SQLite
# worker runs on libuv's pool).
thread_ticks() {
  local pid=$1 loop=0 other=0 t f
  for t in /proc/"$pid"/task/*; do
    f=$(cat "$t/stat" 2>/dev/null) || continue
    f=${f##*) }
    set -- $f
    if [ "${t##*/}" = "$pid" ]; then loop=$(( ${12} + ${13} )); else other=$(( other + ${12} + ${13} )); fi
  done
  echo "$loop $other"
}

# pg_pids DIR: the processes of the tools/pg-sandbox.sh server in DIR (none
# without one); pg_ticks DIR: their clock ticks (0 without one).
pg_pids() {
  local pm
  [ -f "$1/data/postmaster.pid" ] || return 0
  pm=$(head -n1 "$1/data/postmaster.pid")
  echo "$pm" $(pgrep -P "$pm")
}
pg_ticks() {
  local sum=0 p f
  for p in $(pg_pids "$1"); do
    f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
    f=${f##*) }
    set -- $f
    sum=$(( sum + ${12} + ${13} ))
  done
  echo "$sum"
}

# written PID...: bytes the processes caused to be written to storage
# (write_bytes of /proc/PID/io: the WAL, the database files).
written() {
  local sum=0 p b
  for p in "$@"; do
    b=$(awk '/^write_bytes:/ { print $2 }' /proc/"$p"/io 2>/dev/null) || continue
    sum=$(( sum + ${b:-0} ))
  done
  echo "$sum"
}

# perf_record NAME PID[,PID...]: with PERF set (a directory), `perf record -e
# cpu-clock -g` of those processes into $PERF/NAME.data until perf_stop;
# nothing without PERF or without a process. perf_record_pg NAME DIR: the
# same for the tools/pg-sandbox.sh server in DIR (its backends).
perf_pids=()
perf_record() {
  [ -n "${PERF:-}" ] && [ -n "$2" ] || return 0
  mkdir -p "$PERF"
  perf record -q -e cpu-clock -g -p "$2" -o "$PERF/$1.data" 2> /dev/null &
  perf_pids+=($!)
}
perf_record_pg() {
  [ -f "$2/data/postmaster.pid" ] || return 0
  perf_record "$1" "$(pgrep -d, -P "$(head -n1 "$2/data/postmaster.pid")")"
}
perf_stop() {
  local p
  for p in "${perf_pids[@]}"; do kill -INT "$p"; wait "$p" || true; done
  perf_pids=()
}
