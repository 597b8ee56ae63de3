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
. "$here/lib.sh"
tmp=$(mktemp -d)
trap 'stop_rill; rm -rf "$tmp"' EXIT
RILL_RECORD_SYNC=false serve_rill "$here/http-fanout/flows" --store "sqlite:$tmp/rill.db"
url=$rill_base/target
"$root/build/rill" lua "$here/http-fanout/fanout.lua" "$url" 1000 "$conc" > /dev/null   # warm-up
node "$here/http-fanout/fanout.mjs" "$url" 1000 "$conc" > /dev/null
rill=$("$root/build/rill" lua "$here/http-fanout/fanout.lua" "$url" "$n" "$conc")
node=$(node "$here/http-fanout/fanout.mjs" "$url" "$n" "$conc")
echo "# outbound fan-out: $n GET requests, $conc in flight, $(nproc) cores, target: rill on loopback"
printf '%-12s %s\n' "node-fetch" "$node" "rill-http" "$rill"
awk -v a="$node" -v b="$rill" 'BEGIN { split(a, x, "rps="); split(b, y, "rps=");
  printf "rill / node fetch: %.2fx\n", (y[2] + 0) / (x[2] + 0) }'
