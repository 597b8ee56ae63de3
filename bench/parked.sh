#!/usr/bin/env bash
# Parked runs (issue: durable steps): N runs each parked by sleep_until in the
# store, on SQLite and on Postgres: rill's memory (RSS) before and after
# parking them, and runs resumed per second when they all come due at once.
# RSS counts SQLite's page cache (up to 64 MiB) and what the allocator keeps
# after the burst, not only what parked runs hold (a parked run is a row).
# CPU per resumed run is given by thread (rill's loop, its other threads: the
# SQLite worker; the Postgres server), and the KiB per resumed run written to
# storage; the resumed runs are counted with the metrics counter (over HTTP:
# a `rill runs count` process every 0.1 s cost a fifth of a core).
# Env: N (100000), STORES ("sqlite postgres"), PEERS (../shared/peers, for
# its keep-alive poster), PERF (a directory: `perf record -e cpu-clock -g` of
# rill, and of the Postgres server's processes, over the burst, into
# PERF/rill-STORE.data and PERF/pg-STORE.data), CONCURRENCY (rill's
# `concurrency`, its default unless set).
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
rss() { awk '/VmRSS/ { print $2 }' "/proc/$rill_pid/status"; }
count() { "$root/build/rill" runs count --state "$1" --store "$store" 2>/dev/null || echo 0; }
# succeeded: runs this rill stored as succeeded (its metrics counter)
succeeded() {
  curl -sf "http://$admin/metrics" | awk -v s=0 '/^rill_queue_outcomes_total\{.*state="succeeded"/ { s += $NF } END { print s }'
}
echo "# parked runs: $n runs parked by sleep_until, then all due at once; $(nproc) cores"
for s in ${STORES:-sqlite postgres}; do
  case $s in
    sqlite) store=sqlite:$tmp/rill.db ;;
    postgres) store=$("$root/tools/pg-sandbox.sh" start "$tmp/pg") ;;
  esac
  admin=127.0.0.1:$(free_port)
  if [ -n "${CONCURRENCY:-}" ]; then export RILL_CONCURRENCY=$CONCURRENCY; fi
  serve_rill "$here/parked-flows" --store "$store" --admin-listen "$admin"
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
  read -r l0 o0 < <(thread_ticks "$rill_pid"); p0=$(pg_ticks "$tmp/pg"); w0=$(written "$rill_pid" $(pg_pids "$tmp/pg"))
  perf_record "rill-$s" "$rill_pid"; perf_record_pg "pg-$s" "$tmp/pg"
  until [ "$(succeeded)" -ge "$n" ]; do sleep 0.1; done
  t3=$(date +%s.%N)
  perf_stop
  read -r l1 o1 < <(thread_ticks "$rill_pid"); p1=$(pg_ticks "$tmp/pg"); w1=$(written "$rill_pid" $(pg_pids "$tmp/pg"))
  awk -v s="$s" -v n="$n" -v b="$before" -v a="$after" -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" \
    -v hz="$(getconf CLK_TCK)" -v l=$((l1 - l0)) -v o=$((o1 - o0)) -v pc=$((p1 - p0)) -v w=$((w1 - w0)) \
    -v load="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
    printf "%-9s parked %d in %.1f s; RSS %d KiB before, %d KiB after (%.0f bytes per parked run); resumed %.0f runs/s",
      s, n, t1 - t0, b, a, (a - b) * 1024 / n, n / (t3 - t2)
    f = 1e6 / hz / n
    printf "; CPU per resumed run: rill %.0f us (loop %.1f, threads %.1f), Postgres server %.1f us; written %.1f KiB per resumed run; load %s\n",
      (l + o) * f, l * f, o * f, pc * f, w / 1024 / n, load }'
  cleanup
done
