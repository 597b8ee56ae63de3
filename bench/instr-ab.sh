#!/usr/bin/env bash
# Exact CPU cost per request of two rill binaries on the sync signed webhook
# (bench/flows/bench.lua, the load of bench/webhook.sh: the peers' 1 KiB body,
# HMAC header), in user-space instructions counted by callgrind: deterministic,
# so it holds on a loaded machine where bench/sandbox-ab.sh's CPU time does not.
# Each binary serves under `valgrind --tool=callgrind` twice, once for LOW and
# once for HIGH requests sent on one keep-alive connection; per request is
# (instructions(HIGH) - instructions(LOW)) / (HIGH - LOW), which takes away
# start, load and stop. LuaJIT's trace compiler moves up to ~2k instructions
# per request between runs of one binary (which traces it makes, and when):
# run it more than once to compare differences of 1-2%.
# With CACHE=1 callgrind also simulates the data caches (a 1 MiB last level,
# as this VM's L2: its L3 is shared with other machines) and prints, per
# request, first-level and last-level read misses besides instructions: CPU
# time that instructions do not explain is often there, and the simulation
# is as deterministic as the count.
# Usage: instr-ab.sh OLD_RILL [NEW_RILL (default build/rill)]
# Env:   LOW (500), HIGH (2500), CACHE (0), BENCH_SECRET; PEERS (../shared/peers)
# Prints instructions (and misses) per request for each binary and the ratios new/old.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
peers=${PEERS:-$root/../shared/peers}
old=$(realpath "${1:?usage: instr-ab.sh OLD_RILL [NEW_RILL]}")
new=$(realpath "${2:-$root/build/rill}")
low=${LOW:-500}; high=${HIGH:-2500}
sim=(); [ "${CACHE:-0}" = 1 ] && sim=(--cache-sim=yes --LL=1048576,16,64)
export BENCH_SECRET=${BENCH_SECRET:-bench-secret}
command -v valgrind > /dev/null && [ -x "$peers/gen-body.sh" ] ||
  { echo "instr-ab: valgrind or the peers are missing" >&2; exit 1; }
tmp=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

"$peers/gen-body.sh" > "$tmp/body.json"
sig=$(openssl dgst -sha256 -hmac "$BENCH_SECRET" -r < "$tmp/body.json" | cut -d' ' -f1)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# measure BINARY N: serves under callgrind, sends N requests on one keep-alive
# connection, stops rill; prints its totals: "instructions D1-misses LL-misses"
# (the misses 0 unless CACHE=1).
measure() {
  local port dir out
  dir=$(mktemp -d -p "$tmp")
  out=$dir/callgrind.out
  port=$(free_port)
  (cd "$dir" && RILL_LOG_LEVEL=warn exec valgrind -q --tool=callgrind "${sim[@]}" --callgrind-out-file="$out" \
    "$1" serve --flows "$here/flows" --listen "127.0.0.1:$port" --admin-listen off) &
  pid=$!
  python3 - "$port" "$2" "$tmp/body.json" "$sig" <<'EOF' || { kill "$pid"; wait "$pid"; echo "instr-ab: $1 did not serve $2 requests" >&2; exit 1; }
import http.client, sys, time
port, n, body, sig = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read(), sys.argv[4]
deadline = time.monotonic() + 120
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.connect()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("instr-ab: rill did not listen within 120 s")
        time.sleep(0.2)
hdr = {"Content-Type": "application/json", "X-Signature": sig}
for i in range(n):
    c.request("POST", "/hooks/bench", body, hdr)
    r = c.getresponse()
    got = r.read()
    if r.status != 200 or b'"ok"' not in got:
        sys.exit("instr-ab: request %d answered %d: %r" % (i, r.status, got[:200]))
c.close()
EOF
  kill -TERM "$pid"
  wait "$pid" || { echo "instr-ab: $1 exited with $? under callgrind" >&2; exit 1; }
  pid=
  # the events line names the columns: Ir, and with CACHE=1 D1mr and DLmr too
  awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
       /^(summary|totals):/ { printf "%s %s %s\n", $(col["Ir"]), (col["D1mr"] ? $(col["D1mr"]) : 0), (col["DLmr"] ? $(col["DLmr"]) : 0); exit }' "$out"
}

# per_request BINARY: "Ir D1mr DLmr" per request
per_request() {
  local a b
  a=$(measure "$1" "$low") || exit 1
  b=$(measure "$1" "$high") || exit 1
  awk -v a="$a" -v b="$b" -v n=$((high - low)) 'BEGIN {
    split(a, x); split(b, y); printf "%.0f %.1f %.1f\n", (y[1] - x[1]) / n, (y[2] - x[2]) / n, (y[3] - x[3]) / n }'
}

echo "# old: $old"
echo "# new: $new"
echo "# callgrind, one keep-alive connection, ($high - $low requests) / $((high - low))${sim:+, caches simulated}"
read -r oi od ol < <(per_request "$old") || exit 1
read -r ni nd nl < <(per_request "$new") || exit 1
if [ ${#sim[@]} -gt 0 ]; then
  printf "%-7s %12s %10s %10s\n" bin instr/req D1miss/req LLmiss/req old "$oi" "$od" "$ol" new "$ni" "$nd" "$nl"
  awk -v oi="$oi" -v od="$od" -v ol="$ol" -v ni="$ni" -v nd="$nd" -v nl="$nl" \
    'BEGIN { printf "new/old %12.4f %10.3f %10.3f\n", ni / oi, nd / od, (ol > 0 ? nl / ol : 0) }'
else
  printf "%-4s %12s\n" bin instr/req old "$oi" new "$ni"
  awk -v o="$oi" -v n="$ni" 'BEGIN { printf "new/old %9.4f\n", n / o }'
fi
