#!/usr/bin/env bash
# A/B of two rill binaries on the sync signed webhook (bench/flows/bench.lua,
# the load of bench/webhook.sh: the peers' 1 KiB body, HMAC header, wrk -t2),
# for issue 14's "within 5% of today's throughput". Both serve at once (each
# in its own scratch directory, admin off); the rounds alternate which one is
# loaded first, so that the machine's noise falls on both alike.
# Usage: sandbox-ab.sh OLD_RILL [NEW_RILL (default build/rill)]
# Env:   ROUNDS (6), DURATION (5 s per binary per round), CONNS (64),
#        WARMUP (3 s per binary, once), BENCH_SECRET; PEERS (../shared/peers)
# Prints per round and binary: req/s, p99 and the rill process's CPU time
# (utime+stime from /proc/PID/stat) per request served; then the medians and
# the median of the per-round ratios new/old. CPU per request is far less
# sensitive than req/s to other load on a shared machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
old=$(realpath "${1:?usage: sandbox-ab.sh OLD_RILL [NEW_RILL]}")
new=$(realpath "${2:-$root/build/rill}")
rounds=${ROUNDS:-6}; dur=${DURATION:-5}; conns=${CONNS:-64}; warmup=${WARMUP:-3}
export BENCH_SECRET=${BENCH_SECRET:-bench-secret}
command -v wrk > /dev/null && [ -x "$peers/gen-body.sh" ] ||
  { echo "sandbox-ab: wrk or the peers are missing: run $peers/setup.sh" >&2; exit 1; }
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

"$peers/gen-body.sh" > "$tmp/body.json"
sig=$(openssl dgst -sha256 -hmac "$BENCH_SECRET" -r < "$tmp/body.json" | cut -d' ' -f1)
export BENCH_BODY_FILE="$tmp/body.json" BENCH_SIG="$sig"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME BINARY: serves bench/flows from $tmp/NAME; sets port_NAME, pid_NAME.
start() {
  local port dir=$tmp/$1
  mkdir -p "$dir"
  port=$(free_port)
  (cd "$dir" && RILL_LOG_LEVEL=warn exec "$2" serve --flows "$here/flows" \
    --listen "127.0.0.1:$port" --admin-listen off) &
  pids+=($!)
  printf -v "pid_$1" %s "$!"
  printf -v "port_$1" %s "$port"
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
  local code
  code=$(curl -s -o "$dir/resp" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    -H "X-Signature: $sig" --data-binary @"$tmp/body.json" "http://127.0.0.1:$port/hooks/bench")
  [[ $code == 2?? ]] && grep -q '"ok": *true' "$dir/resp" ||
    { echo "sandbox-ab: $1 ($2) answered HTTP $code: $(head -c 200 "$dir/resp")" >&2; exit 1; }
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# load NAME SECONDS: one wrk run; prints "req/s p99_ms cpu_us_per_req requests".
load() {
  local port pid t0 t1 out
  eval "port=\$port_$1 pid=\$pid_$1"
  t0=$(cpu_ticks "$pid")
  out=$(wrk -t2 -c"$conns" -d"$2s" -s "$peers/webhook/wrk-post.lua" \
    "http://127.0.0.1:$port/hooks/bench" | grep '^WRK ')
  t1=$(cpu_ticks "$pid")
  awk -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" -v name="$1" '{
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (v["status_err"] + v["sock_err"] > 0) {
      printf "sandbox-ab: %s: %d non-2xx, %d socket errors\n", name, v["status_err"], v["sock_err"] > "/dev/stderr"
      exit 1
    }
    printf "%.1f %.2f %.2f %d\n", v["requests"] / (v["duration_us"] / 1e6), v["p99_us"] / 1000,
      (t1 - t0) / hz * 1e6 / v["requests"], v["requests"] }' <<< "$out"
}

start old "$old"
start new "$new"
echo "# old: $old (pid $pid_old)"
echo "# new: $new (pid $pid_new)"
echo "# wrk -t2 -c$conns, $rounds rounds of ${dur}s per binary, warm-up ${warmup}s each, $(nproc) cores"
load old "$warmup" > /dev/null
load new "$warmup" > /dev/null
printf "%-5s %-4s %10s %8s %12s\n" round bin "req/s" p99_ms cpu_us/req
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for b in $order; do
    read -r rps p99 cpu _ < <(load "$b" "$dur")
    printf "%-5s %-4s %10s %8s %12s\n" "$r" "$b" "$rps" "$p99" "$cpu"
    echo "$r $b $rps $p99 $cpu" >> "$tmp/results"
  done
done
python3 - "$tmp/results" <<'EOF'
import statistics as st, sys
rows = [l.split() for l in open(sys.argv[1])]
by = {"old": {}, "new": {}}
for r, b, rps, p99, cpu in rows:
    by[b][int(r)] = (float(rps), float(p99), float(cpu))
med = lambda b, i: st.median(v[i] for v in by[b].values())
ratio = lambda i: st.median(by["new"][r][i] / by["old"][r][i] for r in by["old"])
print("# medians        req/s   p99_ms  cpu_us/req")
for b in ("old", "new"):
    print("%-12s %9.1f %8.2f %11.2f" % (b, med(b, 0), med(b, 1), med(b, 2)))
print("new/old       %9.3f %8.3f %11.3f   (median of per-round ratios)" % (ratio(0), ratio(1), ratio(2)))
print("new/old       %9.3f %8.3f %11.3f   (ratio of medians)" %
      tuple(med("new", i) / med("old", i) for i in range(3)))
EOF
