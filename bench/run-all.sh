#!/usr/bin/env bash
# Every benchmark, one after the other; each prints its own figures.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
rill="$here/../build/rill"
echo "== runs: memory of an idle run, runs started per second"
"$rill" lua "$here/runs.lua" "${RUNS_N:-100000}"
echo "== jit-cost: flow code interpreted vs compiled"
"$rill" lua "$here/jit-cost.lua"
echo "== webhook: signed sync webhook beside Node http and OpenResty"
"$here/webhook.sh"
echo "== queue: durable async webhooks on SQLite and Postgres beside BullMQ"
"$here/queue.sh"
echo "== http-fanout: outbound requests beside Node's fetch"
"$here/http-fanout.sh"
echo "== db: db.query round trips beside pgbench select-only"
"$here/db.sh"
echo "== parked: runs parked by sleep_until, memory and resume rate"
"$here/parked.sh"
echo "== parked-heap: the Lua heap held by parked runs"
"$rill" lua "$here/parked-heap.lua" "${PARKED_N:-60000}"
