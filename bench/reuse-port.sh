#!/usr/bin/env bash
# Two instances on one port and one store (issue 16): the sync-webhook load
# of webhook.sh (the peers' bench.sh: wrk -t2, a signed 1 KiB JSON body, the
# HMAC checked, JSON answered; bench/flows/bench.lua) against one rill, then
# against two rills sharing the port with reuse_port (SO_REUSEPORT), all on
# one throwaway Postgres store with record_sync = "all" (every sync run
# written to the store after its answer). Prints req/s, p99 and the ratio of
# two to one, and the CPU per request of each rill (its loop thread, its
# other threads) and of the Postgres server, with the load average.
# Env: DURATION (10 s), CONNS (64), ROUNDS (1: one then two, alternated),
# RECORD_SYNC (all), PERF (a directory: `perf record -e cpu-clock -g` of the
# rills and of the Postgres server over each measured run, into
# PERF/{one,two}-{rill,rill2,pg}.data), PEERS (../shared/peers).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
[ -x "$peers/webhook/bench.sh" ] || { echo "bench: no peers at $peers" >&2; exit 1; }
export BENCH_SECRET=${BENCH_SECRET:-bench-secret}
dur=${DURATION:-10}; conns=${CONNS:-64}
. "$here/lib.sh"
tmp=$(mktemp -d)
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_all
  if [ -d "$tmp/pg" ]; then "$root/tools/pg-sandbox.sh" stop "$tmp/pg"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# pg_stats: "commits WAL-bytes" of the server so far
pg_stats() {
  psql -h 127.0.0.1 -p "$(cat "$tmp/pg/port")" -U rill -d rill -Atc \
    "SELECT xact_commit, pg_current_wal_lsn() - '0/0' FROM pg_stat_database WHERE datname = 'rill'" | tr '|' ' '
}
# busy: the machine's busy and total ticks (every core, from /proc/stat)
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }

# start_rill PORT: one rill on the store, sharing PORT; its pid appended to pids
start_rill() {
  RILL_LOG_LEVEL=warn RILL_REUSE_PORT=true RILL_RECORD_SYNC=${RECORD_SYNC:-all} \
    "${RILL_BIN:-$root/build/rill}" serve --flows "$here/flows" --listen "127.0.0.1:$1" \
    --admin-listen "127.0.0.1:$(free_port)" --store "$store" 2>> "$tmp/rill.log" &
  pids+=($!)
}
wait_ready() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.1; done
  echo "reuse-port: rill on port $1 did not come up" >&2; cat "$tmp/rill.log" >&2; exit 1
}

# measure NAME COUNT: COUNT rills on one port, a warm-up then the measured run
measure() {
  local name=$1 count=$2 port i line p t0=() t1=() pg0 pg1 b0 b1 load s0 s1
  port=$(free_port)
  for i in $(seq "$count"); do start_rill "$port"; done
  wait_ready "$port"
  sleep 1 # the second one listening too
  WARMUP=0 "$peers/webhook/bench.sh" "http://127.0.0.1:$port/hooks/bench" 3 "$conns" > /dev/null 2>&1
  i=0
  for p in "${pids[@]}"; do
    i=$((i + 1))
    perf_record "$name-rill$([ $i = 1 ] || echo $i)" "$p"
  done
  perf_record_pg "$name-pg" "$tmp/pg"
  for p in "${pids[@]}"; do t0+=("$(thread_ticks "$p")"); done
  pg0=$(pg_ticks "$tmp/pg"); b0=$(busy); s0=$(pg_stats)
  # the client's CPU (wrk, and the preflight's curl): the subshell's children's times
  # (a run the peers' bench.sh fails, e.g. wrk's socket errors or timeouts on
  # a loaded machine, is reported with its reason and the rounds go on)
  if ! (WARMUP=0 "$peers/webhook/bench.sh" "http://127.0.0.1:$port/hooks/bench" "$dur" "$conns" 2> "$tmp/bench.err" \
    > "$tmp/line"; rc=$?; times > "$tmp/times"; exit $rc); then
    echo "$name failed: $(grep -h 'FAIL\|error' "$tmp/bench.err" | tail -n2 | tr '\n' ' ')" >> "$tmp/results"
    perf_stop
    stop_all
    return
  fi
  line=$(tail -n1 "$tmp/line")
  for p in "${pids[@]}"; do t1+=("$(thread_ticks "$p")"); done
  pg1=$(pg_ticks "$tmp/pg"); b1=$(busy); s1=$(pg_stats)
  load=$(cut -d' ' -f1 /proc/loadavg)
  perf_stop
  stop_all
  # line: req/s=R p99_ms=P non2xx=0
  wrk=$(awk 'NR == 2 { n = split($0, t, /[ms]+/); print t[1] * 60 + t[2] + t[3] * 60 + t[4] }' "$tmp/times")
  awk -v name="$name" -v line="$line" -v wrk="$wrk" -v dur="$dur" -v hz="$(getconf CLK_TCK)" -v pg=$((pg1 - pg0)) \
    -v t0="${t0[*]}" -v t1="${t1[*]}" -v b0="$b0" -v b1="$b1" -v load="$load" -v s0="$s0" -v s1="$s1" 'BEGIN {
    split(line, f, /[ =]/); rps = f[2]; p99 = f[4]; reqs = rps * dur; us = 1e6 / hz / reqs
    n = split(t0, a, " "); split(t1, b, " "); cpu = ""; total = 0
    for (i = 1; i <= n; i += 2) {
      l = (b[i] - a[i]) * us; o = (b[i + 1] - a[i + 1]) * us; total += l + o
      cpu = cpu sprintf("rill%d=%.1f/%.1f ", (i + 1) / 2, l, o)
    }
    split(b0, x, " "); split(b1, y, " "); split(s0, c, " "); split(s1, d, " ")
    printf "%-4s %10.1f %8.2f  %srills=%.1f pg=%.1f wrk=%.1f requests_per_commit=%.1f wal_bytes=%.0f machine_busy=%.0f%% load=%s\n",
      name, rps, p99, cpu, total, pg * us, wrk * 1e6 / reqs, reqs / (d[1] - c[1]), (d[2] - c[2]) / reqs, 100 * (y[1] - x[1]) / (y[2] - x[2]), load }' \
    >> "$tmp/results"
}

store=$("$root/tools/pg-sandbox.sh" start "$tmp/pg")
: > "$tmp/results"
for r in $(seq "${ROUNDS:-1}"); do
  measure one 1
  measure two 2
done
echo "# sync webhook on one Postgres store, record_sync=${RECORD_SYNC:-all}: wrk -t2 -c$conns -d${dur}s, $(nproc) cores;"
echo "# CPU in µs per request: each rill's loop/other threads, the rills together, the Postgres server, the client (wrk);"
echo "# the server's commits (requests per commit: the group commits' size) and WAL bytes per request;"
echo "# machine_busy: every process of the machine (wrk, other users' work) over the run"
printf "%-4s %10s %8s  %s\n" "inst" "req/s" "p99_ms" "cpu_us_per_request"
cat "$tmp/results"
awk '$1 == "one" && $2 != "failed:" { o[++no] = $2 } $1 == "two" && $2 != "failed:" { t[++nt] = $2 }
  END { for (i = 1; i <= nt; i++) printf "ratio two/one (round %d): %.2f\n", i, t[i] / o[i] }' "$tmp/results"
