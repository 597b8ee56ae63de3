#!/usr/bin/env bash
# db.query round trips per second (issue: HTTP client and database): the
# flows' db module on a pool of 8 against a local Postgres, beside pgbench's
# select-only run (8 clients, prepared statements: this machine's limit for
# that query) on the same server, in one invocation.
# Env: SECONDS_EACH (10), CONC (64 rill tasks), SCALE (pgbench -s, 10).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
secs=${SECONDS_EACH:-10}
tmp=$(mktemp -d)
trap '"$root/tools/pg-sandbox.sh" stop "$tmp/pg"; rm -rf "$tmp"' EXIT
url=$("$root/tools/pg-sandbox.sh" start "$tmp/pg")
pgbench -q -i -s "${SCALE:-10}" "$url" > /dev/null 2>&1
pg=$(pgbench -S -M prepared -c 8 -j 2 -T "$secs" "$url" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
rill=$("$root/build/rill" lua "$here/db/query.lua" "$url" "$secs" "${CONC:-64}" 8)
echo "# select by primary key: 8 connections, $(nproc) cores, ${secs} s each, local Postgres"
printf '%-10s qps=%s\n' pgbench "$pg"
printf '%-10s %s\n' rill-db "$rill"
awk -v a="$pg" -v b="$rill" 'BEGIN { split(b, y, "qps="); printf "rill / pgbench: %.2fx\n", (y[2] + 0) / a }'
