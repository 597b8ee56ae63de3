#!/usr/bin/env bash
# Durable async webhook benchmark (issue: the durable queue): rill serving
# bench/queue-flows/bench.lua (signature checked, run stored before the 202,
# the run checks the HMAC and parses the event) on each store, beside
# BullMQ on Redis doing the same, in one invocation: the peers' own
# shared/peers/queue/compare.sh measures BullMQ, then their bench.sh (the
# same poster, warmup and done-count polling) each store of rill.
# The done-count is rill's own counter of stored successes read over HTTP
# (/metrics, rill_queue_outcomes_total), a curl as cheap as BullMQ's
# redis-cli; DONE=cli counts with `rill runs count` (a process that opens
# the store, ~20 ms of CPU each poll). Each store's line also gives the CPU
# per run by thread over the measured run: rill's loop thread, its other
# threads (the store's worker, the watchdog), the Postgres server's
# processes, in microseconds; and the bytes per run they caused to be
# written to storage (write_bytes in /proc/PID/io: WAL, database files).
# Env: N (20000), WARMUP_N (2000), CONC, BENCH_SECRET; STORES ("sqlite
# postgres"): sqlite is a fresh file, postgres a throwaway server
# (tools/pg-sandbox.sh), or give postgres:// URLs; PEERS (../shared/peers);
# RILL (build/rill: the binary to measure); BULLMQ (1; 0 skips it, and the
# ratios are then to the first line); PERF (a directory: `perf record -e
# cpu-clock -g` of rill, and of the Postgres server's processes, over the
# measured run, into PERF/rill-STORE.data and PERF/pg.data).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
rill=${RILL:-$root/build/rill}
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

if [ "${BULLMQ:-1}" = 1 ]; then
  "$peers/queue/compare.sh" 2> "$tmp/compare.err" > /dev/null || { cat "$tmp/compare.err" >&2; exit 1; }
  grep '^bullmq events=' "$tmp/compare.err" | sed 's/$/ cpu=-/' > "$tmp/results"
fi
for s in ${STORES:-sqlite postgres}; do
  case $s in
    sqlite) store=sqlite:$tmp/rill.db; name=sqlite ;;
    postgres) store=$("$root/tools/pg-sandbox.sh" start "$tmp/pg"); name=postgres ;;
    *) store=$s; name=postgres ;;
  esac
  admin=127.0.0.1:$(free_port)
  RILL_BIN=$rill serve_rill "$here/queue-flows" --store "$store" --admin-listen "$admin"
  url=$rill_base/hooks/bench
  if [ "${DONE:-metrics}" = cli ]; then
    done_cmd="$rill runs count --state succeeded --store '$store'"
  else
    done_cmd="curl -sf http://$admin/metrics | awk -v s=0 '/^rill_queue_outcomes_total\\{.*state=\"succeeded\"/ { s += \$NF } END { print s }'"
  fi
  "$peers/queue/bench.sh" --done-cmd "$done_cmd" "$url" "${WARMUP_N:-2000}" > /dev/null
  read -r l0 o0 < <(thread_ticks "$rill_pid"); p0=$(pg_ticks "$tmp/pg")
  w0=$(written "$rill_pid" $(pg_pids "$tmp/pg"))
  perf_record "rill-$name" "$rill_pid"; perf_record_pg pg "$tmp/pg"
  line=$("$peers/queue/bench.sh" --done-cmd "$done_cmd" "$url" "$n" | tail -n1)
  perf_stop
  read -r l1 o1 < <(thread_ticks "$rill_pid"); p1=$(pg_ticks "$tmp/pg")
  w1=$(written "$rill_pid" $(pg_pids "$tmp/pg"))
  runs=${line#events=}; runs=${runs%% *}
  hz=$(getconf CLK_TCK)
  cpu=$(awk -v r="$runs" -v hz="$hz" -v l=$((l1 - l0)) -v o=$((o1 - o0)) -v p=$((p1 - p0)) -v w=$((w1 - w0)) \
    'BEGIN { f = 1e6 / hz / r; printf "loop=%.1f,threads=%.1f,pg=%.1f,written_kb=%.1f", l * f, o * f, p * f, w / 1024 / r }')
  echo "rill-$name $line cpu=$cpu" >> "$tmp/results"
  stop_rill
  if [ -d "$tmp/pg" ]; then "$root/tools/pg-sandbox.sh" stop "$tmp/pg"; fi
done

echo "# durable async webhook: $n events, $(nproc) cores, 1 KiB body, ${CONC:-64} in flight;" \
  "CPU per run in µs by thread (rill's loop, its other threads, the Postgres server);" \
  "KiB per run written to storage (rill and the Postgres server)"
awk '{ split($3,s,"="); split($4,r,"="); name[NR]=$1; sec[NR]=s[2]; rps[NR]=r[2]; cpu[NR]=substr($5, 5) }
  END { printf "%-14s %10s %12s %10s  %s\n", "peer", "seconds", "runs/s", "vs_bullmq", "cpu_us_per_run"
        for (i = 1; i <= NR; i++) printf "%-14s %10.3f %12.1f %10.2f  %s\n", name[i], sec[i], rps[i], rps[i] / rps[1], cpu[i] }' \
  "$tmp/results"
