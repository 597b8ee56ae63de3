#!/usr/bin/env bash
# directus-snapshot.sh: writes directus/snapshot.json, the company's collections
# as Directus 11 sees them, from db/schema.postgres.sql (the one schema): a
# throwaway Postgres gets the SQL, Directus bootstraps on it and adopts the
# tables, directus/meta.py gives them their metadata (icons, dropdowns,
# read-only columns), and Directus writes the snapshot. Run it after changing
# the SQL (tests/test_directus.py fails until the two agree). Needs
# `make directus-deps`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d directus/node_modules ] || { echo "directus-snapshot: run make directus-deps first" >&2; exit 1; }
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; tools/pg-sandbox.sh stop "$dir/pg"; rm -rf "$dir"; }
trap cleanup EXIT
url=$(tools/pg-sandbox.sh start "$dir/pg")
psql -X -q -v ON_ERROR_STOP=1 "$url" -f db/schema.postgres.sql 2>/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token=snapshot-$RANDOM$RANDOM
export DB_CLIENT=pg DB_CONNECTION_STRING="$url" KEY=snapshot SECRET=snapshot-$RANDOM$RANDOM \
  ADMIN_EMAIL=admin@example.com ADMIN_PASSWORD=snapshot-$RANDOM ADMIN_TOKEN=$token \
  HOST=127.0.0.1 PORT=$port PUBLIC_URL=http://127.0.0.1:$port TELEMETRY=false LOG_LEVEL=warn \
  EXTENSIONS_PATH="$dir/extensions" STORAGE_LOCAL_ROOT="$dir/uploads" \
  DB_EXCLUDE_TABLES=spatial_ref_sys,sysdiagrams,rill_events
mkdir -p "$dir/extensions" "$dir/uploads"
node directus/cli.mjs bootstrap >"$dir/bootstrap.log" 2>&1 || { cat "$dir/bootstrap.log" >&2; exit 1; }
node directus/cli.mjs start >"$dir/directus.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/server/health" >/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/directus.log" >&2; exit 1; }
  sleep 0.1
done
python3 directus/meta.py "http://127.0.0.1:$port" "$token"
node directus/cli.mjs schema snapshot --yes --format json "$dir/snapshot.json" >/dev/null
# one line per value: a change to the schema reads as a change of a few lines
python3 -c 'import json, sys; v = json.dumps(json.load(open(sys.argv[1])), indent=1)
with open(sys.argv[2], "w") as f: f.write(v + "\n")' "$dir/snapshot.json" directus/snapshot.json
echo "directus-snapshot: wrote directus/snapshot.json"
