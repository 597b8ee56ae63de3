-- bench/pg-statements.lua: the Postgres server's CPU per run for the
-- statements of the durable path alone, without the loop, the HTTP client
-- and the flow (issue 16; bench/issue16-pg-server.md). Each batch holds
-- what one group commit of bench/queue.sh holds: the inserts of K new runs
-- (stored running, as an async webhook's run with a free slot) and the
-- finishes of the K runs of the batch before; the CPU of the connection's
-- backend (/proc/PID/schedstat, ns) and the WAL it wrote, per run.
--   PGURL=$(tools/pg-sandbox.sh start /tmp/pgs) build/rill lua bench/pg-statements.lua
-- Env: PGURL (an empty database: the store's schema is made in it), RUNS
-- (20000), K (38: finishes per group in bench/queue.sh), FF (a fillfactor
-- for runs), MULTI (1: the K inserts as multi-row INSERTs of 16, 8, ...
-- rows; needs BATCH_MAX_PARAMS >= 16 * 23 in runtime/batch.h), WARM (1:
-- the backend touches all of shared_buffers first, as a long-lived one
-- has). The backend is read through /proc: run it on the server's machine.
local store = require "rill.engine.store"
local schema = require "rill.engine.store_schema"
local runs, K = tonumber(os.getenv("RUNS") or 20000), tonumber(os.getenv("K") or 38)
local multi = os.getenv("MULTI") == "1"
store.open(assert(os.getenv("PGURL"), "PGURL: the database to use"))
local ff = tonumber(os.getenv("FF"))
if ff then store.batch { { "ALTER TABLE runs SET (fillfactor = " .. ff .. ")" } } end
if os.getenv("WARM") == "1" then
  -- this backend touches every page of shared_buffers first (a table as
  -- large, written then dropped), as a long-lived connection has: a young
  -- backend's first touch of each buffer is a page fault
  -- (INSERT, not CREATE TABLE AS: that one writes through a small ring of buffers)
  store.batch { { "CREATE TABLE warm (x TEXT)" }, { "INSERT INTO warm SELECT repeat('x', 1000) FROM generate_series(1, "
    .. "(SELECT setting::bigint * 8 FROM pg_settings WHERE name = 'shared_buffers'))" }, { "DROP TABLE warm" } }
end
local pid = store.batch { { "SELECT pg_backend_pid() AS p" } }[1][1].p
local function cpu_ns()
  return tonumber(io.open("/proc/" .. pid .. "/schedstat"):read("*a"):match("^(%d+)"))
end

-- a row like bench/queue.sh's: a 1 KiB JSON payload, the request's headers
local payload = '{"id":"' .. string.rep("x", 20) .. '","type":"invoice.paid","data":{"text":"'
  .. string.rep("lorem ipsum ", 80) .. '"}}'
local request = '{"method":"POST","path":"/hooks/bench","headers":{"content-type":"application/json",'
  .. '"x-signature":"' .. string.rep("ab", 32) .. '","host":"127.0.0.1:1234","user-agent":"wrk",'
  .. '"content-length":"1060"},"query":{}}'
local trigger = '{"type":"webhook","method":"POST","path":"/hooks/bench","mode":"async"}'
local FINISH = "UPDATE runs SET state = $3, result = $4, error = $5, run_at = COALESCE($6, run_at), finished = $7, "
  .. "lease_until = NULL, owner = NULL, version = COALESCE($8, version), attempt = COALESCE($9, attempt), "
  .. "versions = COALESCE($10, versions) WHERE id = $1 AND owner = $2 AND state || '' = 'running'"

-- the K rows as multi-row INSERTs of 16, 8, 4, 2 rows, then one
local ncols = #schema.RUN_TYPES
local function inserts(rows, stmts)
  local first = 1
  while first <= #rows do
    local k = 16
    while k > #rows - first + 1 do k = math.floor(k / 2) end
    local tuples, st = {}, { n = k * ncols }
    for i = 0, k - 1 do
      local v, one = {}, schema.insert_run(rows[first + i])
      for j = 1, ncols do
        v[j] = "$" .. (i * ncols + j)
        st[i * ncols + j + 1] = one[j + 1]
      end
      tuples[i + 1] = "(" .. table.concat(v, ", ") .. ")"
    end
    st[1] = schema.RUN_INSERT .. "VALUES " .. table.concat(tuples, ", ")
    stmts[#stmts + 1] = st
    first = first + k
  end
end

local lsn0 = store.batch { { "SELECT pg_current_wal_insert_lsn()::text AS l" } }[1][1].l
local t0, n, prev = cpu_ns(), 0, {}
while n < runs do
  local stmts, ids, rows = {}, {}, {}
  local now = 1700000000000 + n
  for i = 1, K do
    n = n + 1
    ids[i] = string.format("0190%028d", n)
    rows[i] = { id = ids[i], flow = "bench", version = "abcdef0123456789", trigger = trigger, payload = payload,
      request = request, state = "running", attempt = 1, max_attempts = 5, run_at = now, lease_until = now + 60000,
      owner = "owner0123456789", depth = 0, created = now, started = now, chain = "bench" }
  end
  if multi then inserts(rows, stmts) else for i = 1, K do stmts[i] = schema.insert_run(rows[i]) end end
  for _, id in ipairs(prev) do
    stmts[#stmts + 1] = { FINISH, id, "owner0123456789", "succeeded", '{"id":"xxxxxxxxxxxxxxxxxxxx"}', nil, nil,
      now + 5, "abcdef0123456789", nil, "1:abcdef0123456789", n = 10 }
  end
  store.batch(stmts)
  prev = ids
end
local ns = cpu_ns() - t0
local wal = store.batch { { "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::bigint AS b", lsn0,
  n = 1 } }[1][1].b
print(string.format("warm=%s fillfactor=%s multi=%s K=%d runs=%d pg_us_per_run=%.1f wal_bytes_per_run=%.0f",
  os.getenv("WARM") or "0", os.getenv("FF") or "-", tostring(multi), K, runs, ns / 1e3 / runs, wal / runs))
