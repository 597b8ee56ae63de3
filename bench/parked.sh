#!/usr/bin/env bash
# Parked runs (issue: durable steps): N runs each parked by sleep_until in the
# store, on SQLite and on Postgres: rill's memory (RSS) before and after
# parking them, and runs resumed per second when they all come due at once.
# RSS counts SQLite's page cache (up to 64 MiB) and what the allocator keeps
# after the burst, not only what parked runs hold (a parked run is a row).
# Env: N (100000), STORES ("sqlite postgres"), PEERS (../shared/peers, for
# its keep-alive poster).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
n=${N:-100000}
. "$here/lib.sh"
tmp=$(mktemp -d)
cleanup() {
  stop_rill
  if [ -d "$tmp/pg" ]; then "$root/tools/pg-sandbox.sh" stop "$tmp/pg"; fi
}
trap 'cleanup; rm -rf "$tmp"' EXIT
# CPU ticks (1/100 s) of rill, and of the Postgres server (postmaster and its children)
cpu_rill() { awk '{ print $14 + $15 }' "/proc/$rill_pid/stat"; }
cpu_pg() {
  local t=0 pm p
  [ -f "$tmp/pg/data/postmaster.pid" ] || { echo 0; return; }
  pm=$(head -1 "$tmp/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
  for p in $pm $(pgrep -P "$pm" || true); do
    t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
rss() { awk '/VmRSS/ { print $2 }' "/proc/$rill_pid/status"; }
count() { "$root/build/rill" runs count --state "$1" --store "$store" 2>/dev/null || echo 0; }
echo "# parked runs: $n runs parked by sleep_until, then all due at once; $(nproc) cores"
for s in ${STORES:-sqlite postgres}; do
  case $s in
    sqlite) store=sqlite:$tmp/rill.db ;;
    postgres) store=$("$root/tools/pg-sandbox.sh" start "$tmp/pg") ;;
  esac
  serve_rill "$here/parked-flows" --store "$store"
  before=$(rss)
  # one wake time for all, far enough for parking them all first (at 1,000/s;
  # a run woken before all are parked ends the measure with an error)
  wake=$(( $(date +%s) + n / 1000 + 20 ))
  echo "{\"wake\": $wake}" > "$tmp/body.json"
  t0=$(date +%s.%N)
  BENCH_BODY_FILE="$tmp/body.json" BENCH_SIG=x node "$peers/queue/post.js" "$rill_base/park" "$n" 64 > /dev/null
  until [ "$(count sleeping)" -ge "$n" ]; do
    [ "$(date +%s)" -lt "$wake" ] || { echo "parking took longer than the wake margin" >&2; exit 1; }
    sleep 0.5
  done
  t1=$(date +%s.%N)
  after=$(rss)
  [ "$(date +%s)" -lt "$wake" ] || { echo "parking took longer than the wake margin" >&2; exit 1; }
  while [ "$(date +%s)" -lt "$wake" ]; do sleep 0.05; done
  t2=$wake
  c0=$(cpu_rill); p0=$(cpu_pg)
  until [ "$(count succeeded)" -ge "$n" ]; do sleep 0.1; done
  t3=$(date +%s.%N)
  c1=$(cpu_rill); p1=$(cpu_pg)
  awk -v s="$s" -v n="$n" -v b="$before" -v a="$after" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" \
    -v rc=$((c1 - c0)) -v pc=$((p1 - p0)) 'BEGIN {
    printf "%-9s parked %d in %.1f s; RSS %d KiB before, %d KiB after (%.0f bytes per parked run); resumed %.0f runs/s",
      s, n, t1 - t0, b, a, (a - b) * 1024 / n, n / (t3 - t2)
    printf "; CPU per resumed run: rill %.0f us, Postgres server %.0f us\n", rc * 1e4 / n, pc * 1e4 / n }'
  cleanup
done
