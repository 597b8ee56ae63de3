#!/usr/bin/env bash
# Durable async webhook benchmark (issue: the durable queue): rill serving
# bench/queue-flows/bench.lua (signature checked, run stored before the 202,
# the run checks the HMAC again and parses the event) on each store, beside
# BullMQ on Redis doing the same, in one invocation: the peers' own
# shared/peers/queue/compare.sh measures BullMQ and the first store, then
# their bench.sh (the same poster, warmup and done-count) each other store.
# The done-count is `rill runs count --state succeeded` on the store.
# Env: N (20000), WARMUP_N (2000), CONC, BENCH_SECRET; STORES ("sqlite
# postgres"): sqlite is a fresh file, postgres a throwaway server
# (tools/pg-sandbox.sh), or give postgres:// URLs; PEERS (../shared/peers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
[ -x "$peers/queue/compare.sh" ] || { echo "bench: no peers at $peers" >&2; exit 1; }
[ -d "$peers/queue/node_modules" ] || "$peers/setup.sh" >&2
export BENCH_SECRET=${BENCH_SECRET:-bench-secret}
n=${N:-20000}
. "$here/lib.sh"
tmp=$(mktemp -d)
cleanup() {
  stop_rill
  if [ -d "$tmp/pg" ]; then "$root/tools/pg-sandbox.sh" stop "$tmp/pg"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

first=1
for s in ${STORES:-sqlite postgres}; do
  case $s in
    sqlite) store=sqlite:$tmp/rill.db; name=sqlite ;;
    postgres) store=$("$root/tools/pg-sandbox.sh" start "$tmp/pg"); name=postgres ;;
    *) store=$s; name=postgres ;;
  esac
  serve_rill "$here/queue-flows" --store "$store"
  url=$rill_base/hooks/bench
  done_cmd="$root/build/rill runs count --state succeeded --store '$store'"
  if [ $first = 1 ]; then
    "$peers/queue/compare.sh" "$url" "$done_cmd" 2> "$tmp/compare.err" > /dev/null \
      || { cat "$tmp/compare.err" >&2; exit 1; }
    grep '^bullmq events=' "$tmp/compare.err" > "$tmp/results"
    grep '^extra events=' "$tmp/compare.err" | sed "s/^extra/rill-$name/" >> "$tmp/results"
    first=0
  else
    "$peers/queue/bench.sh" --done-cmd "$done_cmd" "$url" "${WARMUP_N:-2000}" > /dev/null
    echo "rill-$name $("$peers/queue/bench.sh" --done-cmd "$done_cmd" "$url" "$n" | tail -n1)" >> "$tmp/results"
  fi
  stop_rill
  if [ -d "$tmp/pg" ]; then "$root/tools/pg-sandbox.sh" stop "$tmp/pg"; fi
done

echo "# durable async webhook: $n events, $(nproc) cores, 1 KiB body, ${CONC:-64} in flight"
awk '{ split($3,s,"="); split($4,r,"="); name[NR]=$1; sec[NR]=s[2]; rps[NR]=r[2] }
  END { printf "%-14s %10s %12s %10s\n", "peer", "seconds", "runs/s", "vs_bullmq"
        for (i = 1; i <= NR; i++) printf "%-14s %10.3f %12.1f %10.2f\n", name[i], sec[i], rps[i], rps[i] / rps[1] }' \
  "$tmp/results"
