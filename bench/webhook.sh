#!/usr/bin/env bash
# Sync-webhook benchmark (issue: the rill core): rill serving bench/flows/bench.lua
# beside the peers in shared/peers/webhook (Node http, OpenResty), in one run,
# through the peers' own compare.sh. Prints the peers' table with ratios.
# Env: DURATION (10), CONNS (64), WORKERS (1), BENCH_SECRET; PEERS (../shared/peers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
[ -x "$peers/webhook/compare.sh" ] || { echo "bench: no peers at $peers" >&2; exit 1; }
[ -d "$peers/queue/node_modules" ] || "$peers/setup.sh" >&2
export BENCH_SECRET=${BENCH_SECRET:-bench-secret}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RILL_LOG_LEVEL=warn "$root/build/rill" serve --flows "$here/flows" --listen "127.0.0.1:$port" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
"$peers/webhook/compare.sh" "http://127.0.0.1:$port/hooks/bench" | sed 's/^extra /rill  /'
