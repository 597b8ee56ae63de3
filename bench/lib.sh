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
