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
. "$here/lib.sh"
trap stop_rill EXIT
serve_rill "$here/flows"
"$peers/webhook/compare.sh" "$rill_base/hooks/bench" | sed 's/^extra /rill  /'
