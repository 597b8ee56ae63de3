#!/usr/bin/env bash
# Outbound HTTP fan-out (issue: HTTP client and database): N GET requests,
# CONC in flight, from rill's http module (libcurl on the loop) and from
# Node's built-in fetch, one after the other in one invocation, against the
# same local target (a rill serving bench/http-fanout/flows/target.lua, with
# record_sync off). Prints requests per second and the ratio.
# Env: N (10000), CONC (256), RUNS (1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=${N:-10000}; conc=${CONC:-256}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
RILL_LOG_LEVEL=warn RILL_RECORD_SYNC=false "$root/build/rill" serve --flows "$here/http-fanout/flows" \
  --listen "127.0.0.1:$port" --store "sqlite:$tmp/rill.db" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
url=http://127.0.0.1:$port/target
for _ in $(seq 50); do curl -s -o /dev/null "$url" && break; sleep 0.1; done
"$root/build/rill" lua "$here/http-fanout/fanout.lua" "$url" 1000 "$conc" > /dev/null   # warm-up
node "$here/http-fanout/fanout.mjs" "$url" 1000 "$conc" > /dev/null
rill=$("$root/build/rill" lua "$here/http-fanout/fanout.lua" "$url" "$n" "$conc")
node=$(node "$here/http-fanout/fanout.mjs" "$url" "$n" "$conc")
echo "# outbound fan-out: $n GET requests, $conc in flight, $(nproc) cores, target: rill on loopback"
printf '%-12s %s\n' "node-fetch" "$node" "rill-http" "$rill"
awk -v a="$node" -v b="$rill" 'BEGIN { split(a, x, "rps="); split(b, y, "rps=");
  printf "rill / node fetch: %.2fx\n", (y[2] + 0) / (x[2] + 0) }'
