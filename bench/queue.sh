#!/usr/bin/env bash
# Durable async webhook benchmark (issue: the durable queue): rill serving
# bench/queue-flows/bench.lua (signature checked, run stored before the 202,
# run checks the HMAC again and parses the event) beside BullMQ on Redis,
# through the peers' own shared/peers/queue/compare.sh, in one run.
# The done-count is `rill runs count --state succeeded` on the same store.
# Env: N (20000), WARMUP_N, CONC, BENCH_SECRET; STORE (sqlite, the default: a
# fresh file in a temp dir; postgres: a throwaway server, tools/pg-sandbox.sh;
# or a postgres:// URL); PEERS (../shared/peers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
[ -x "$peers/queue/compare.sh" ] || { echo "bench: no peers at $peers" >&2; exit 1; }
[ -d "$peers/queue/node_modules" ] || "$peers/setup.sh" >&2
export BENCH_SECRET=${BENCH_SECRET:-bench-secret}
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; fi
  if [ -d "$tmp/pg" ]; then "$root/tools/pg-sandbox.sh" stop "$tmp/pg"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
case ${STORE:-sqlite} in
  sqlite) store=sqlite:$tmp/rill.db ;;
  postgres) store=$("$root/tools/pg-sandbox.sh" start "$tmp/pg") ;;
  *) store=$STORE ;;
esac
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RILL_LOG_LEVEL=warn "$root/build/rill" serve --flows "$here/queue-flows" --listen "127.0.0.1:$port" \
  --store "$store" &
pid=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
"$peers/queue/compare.sh" "http://127.0.0.1:$port/hooks/bench" \
  "$root/build/rill runs count --state succeeded --store '$store'" | sed "s/^extra /rill  /"
