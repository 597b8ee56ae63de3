-- store: rill's durable state (runs, their log lines, cron schedule state,
-- idempotency keys) over one of two backends with the same batch primitive:
-- SQLite (rill.c.sqlite, the embedded default) and Postgres (rill.c.pg).
-- A batch is a list of statements run in one transaction; the backends run
-- the batches that arrive together in one commit (group commit).
-- This module and its parts (store_schema.lua, store_admin.lua,
-- store_events.lua, store_claims.lua) own the schema, its migrations and every SQL text; the
-- policy (when to retry, what is dead) lives in queue.lua.
-- Times are integer milliseconds since the epoch; payloads, results and
-- errors are JSON text.
local json = require "rill.json"

local store = {}

local conn, dialect

-- now through rill.time's clock: a test that sets "now" moves the queue too
local clock = require("rill.time").now
local function now_ms()
  return math.floor(clock() * 1000)
end
store.now_ms = now_ms

local schema = require "rill.engine.store_schema" -- the schema, dialects, the run insert
local WAITING, MIGRATIONS, DIALECTS = schema.WAITING, schema.MIGRATIONS, schema.DIALECTS
local INSERT_RUN_WITH_KEY, insert_run = schema.INSERT_RUN_WITH_KEY, schema.insert_run

-- json_list(names) -> names as a JSON array text, the parameter of a
-- dialect's list() ("[]" for none: cjson writes an empty table as {}).
local function json_list(names)
  return #names > 0 and json.encode(names) or "[]"
end
store.json_list = json_list

local function check(res, err)
  if not res then error(err, 0) end
  return res
end

-- Why the store could not take the last write, while no write since has
-- succeeded, and when (store.write_failure_at, tz.now()): /readyz reports
-- it for 30 s (an idle instance, which writes nothing, is not held "not
-- ready" by an old failure). Only the store's own failures count (down,
-- stalled, full, locked), not a statement's.
store.write_failure, store.write_failure_at = nil, 0
local STORE_FAILURE = { "unreachable", "connection lost", "timeout", "did not take", "full", "locked",
  "interrupted", "busy", "cannot connect", "timed out" }

local function writes(stmts)
  for _, s in ipairs(stmts) do
    if not s[1]:match("^%s*[Ss][Ee][Ll][Ee][Cc][Tt]") then return true end
  end
  return false
end

local failures_total = require("rill.metrics").counter("rill_store_failures_total",
  "Batches of rill's own statements that the store could not take: down, stalled (store_timeout, "
    .. "store_statement_timeout), full, locked.", { "kind" })

local function note(stmts, res, err)
  if res then
    if store.write_failure and writes(stmts) then store.write_failure = nil end
    return
  end
  local e = tostring(err):lower()
  for _, word in ipairs(STORE_FAILURE) do
    if e:find(word, 1, true) then
      failures_total:labels(store.kind):inc()
      if writes(stmts) then
        store.write_failure, store.write_failure_at = tostring(err), require("rill.c.tz").now()
      end
      return
    end
  end
end

-- The callback of a batch sent with one: e = {stmts, callback, arg}. (A
-- table per batch rather than a closure: one block, not three, on every
-- durable run's path.)
local function noted(res, err, e)
  note(e[1], res, err)
  return e[2](res, err, e[3])
end

-- batch(stmts[, callback[, arg]]): in a task, returns the results or raises;
-- with a callback, returns at once and calls callback(results, nil, arg)
-- or callback(nil, err, arg).
function store.batch(stmts, callback, arg)
  if callback then return conn:batch(stmts, noted, { stmts, callback, arg }) end
  local res, err = conn:batch(stmts)
  note(stmts, res, err)
  return check(res, err)
end

local function migrate()
  local function locked(stmts)
    if dialect.lock then table.insert(stmts, 1, dialect.lock) end
    return stmts
  end
  -- An up-to-date store is only read: `rill runs ...` beside a busy server
  -- does not wait for the write lock.
  local res = conn:batch { { "SELECT max(version) AS v FROM rill_migrations" } }
  if res and res[1][1] and res[1][1].v == #MIGRATIONS then return #MIGRATIONS end
  store.batch(locked { { "CREATE TABLE IF NOT EXISTS rill_migrations "
    .. "(version INTEGER PRIMARY KEY, applied BIGINT NOT NULL)" } })
  while true do
    local rows = store.batch { { "SELECT max(version) AS v FROM rill_migrations" } }[1]
    local current = rows[1] and rows[1].v or 0
    if current >= #MIGRATIONS then return current end
    local version = current + 1
    local stmts = { { "INSERT INTO rill_migrations (version, applied) VALUES ($1, $2)", version, now_ms(), n = 2 } }
    for _, sql in ipairs(MIGRATIONS[version]) do stmts[#stmts + 1] = { sql } end
    local ok, err = conn:batch(locked(stmts))
    if not ok and not tostring(err):lower():find("unique", 1, true) then
      error("store: migration " .. version .. " failed: " .. tostring(err), 0)
    end
  end
end

-- open(url, opts): "sqlite:PATH" (or a plain path) or "postgres://..." (a
-- libpq URL); applies migrations. In a task. opts.sync (SQLite): "normal" |
-- "full"; opts.timeout: seconds a batch may wait on the store before it
-- fails; opts.statement_timeout, opts.reconnect_max (Postgres): seconds.
-- store.url is the URL without its password, for logs.
function store.open(url, opts)
  opts = opts or {}
  if url:match("^postgres") then
    conn = check(require("rill.c.pg").open(url, { timeout = opts.timeout,
      statement_timeout = opts.statement_timeout, reconnect_max = opts.reconnect_max }))
    dialect = DIALECTS.postgres
    store.kind, store.url = "postgres", url:gsub("^(%a+://[^:/@]+):[^@]*@", "%1:***@")
    return migrate()
  end
  local path = url:gsub("^sqlite:", "")
  local dir = path:match("^(.*)/[^/]+$")
  if dir then require("rill.c.os").mkdir_p(dir) end
  conn = check(require("rill.c.sqlite").open(path, { synchronous = opts.sync or "normal", timeout = opts.timeout }))
  dialect = DIALECTS.sqlite
  store.kind, store.url = "sqlite", path
  return migrate()
end

function store.close()
  store.flush_finishes() -- on the connection they were asked of, before it closes
  if conn then conn:close() end
  conn = nil
end

function store.is_open() return conn ~= nil end

-- ---- statements: each returns a statement table for a batch ----

-- enqueue(r, callback[, extra[, arg]]): stores a new run row r (all
-- columns as strings and numbers), and the statements in `extra` in the
-- same transaction. With r.idem_key, a second row with the same flow and
-- key is not stored: callback(id, duplicate, arg) gets the first run's id
-- and whether this was such a duplicate; callback(nil, err, arg) on failure.
local function enqueued(res, err, e) -- e = {r, callback, arg}
  local r = e[1]
  if not res then return e[2](nil, err, e[3]) end
  local first = r.idem_key and res[2][1].run_id or r.id
  e[2](first, first ~= r.id, e[3])
end
function store.enqueue(r, callback, extra, arg)
  local stmts
  if r.idem_key then
    stmts = {
      { "INSERT INTO idempotency (flow, key, run_id, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        r.flow, r.idem_key, r.id, r.created, n = 4 },
      { "SELECT run_id FROM idempotency WHERE flow = $1 AND key = $2", r.flow, r.idem_key, n = 2 },
      insert_run(r, INSERT_RUN_WITH_KEY),
    }
  else
    stmts = { insert_run(r) }
  end
  if extra then
    for _, s in ipairs(extra) do stmts[#stmts + 1] = s end
  end
  store.batch(stmts, enqueued, { r, callback, arg })
end

-- Runs ready to claim: queued ones that are due, and running ones whose lease
-- expired (their process died). Two index range scans (runs_due and
-- runs_leased), not an OR. `+flow` and grouping by `flow || ''` keep SQLite
-- off the runs_flow index, which would visit every run of the flow.
local DUE = WAITING .. " AND run_at <= $1"
local ORPHANED = "state = 'running' AND lease_until < $1"
local PAUSED = schema.PAUSED

-- ready(now, limit[, skip]) -> {flow, n} for each flow with runs ready to
-- claim, counted among the `limit` due longest (counting every due run would
-- make each poll scan them all when many come due at once), and the set of
-- paused flows (read in the same batch: a pause made by another instance
-- holds here from the next poll on). skip: names of flows that cannot take
-- a run now (paused, at their concurrency), left out of the count: a
-- backlog of theirs longer than `limit` would hide every other flow's runs.
function store.ready(now, limit, skip)
  limit = limit or 1000
  local not_in, skipped = "", nil
  if skip and #skip > 0 then
    not_in, skipped = " AND flow NOT IN " .. dialect.list("$3"), json_list(skip)
  end
  local function counted(where, order)
    return { "SELECT flow || '' AS flow, count(*) AS n FROM (SELECT flow FROM runs WHERE " .. where .. not_in
      .. order .. " LIMIT $2) ready GROUP BY 1", now, limit, skipped, n = skipped and 3 or 2 }
  end
  local stmts = { counted(DUE, " ORDER BY run_at"), counted(ORPHANED, ""), PAUSED }
  if dialect.ordered then
    table.insert(stmts, 1, dialect.ordered)
    table.insert(stmts, 3, dialect.unordered)
  end
  local res = store.batch(stmts)
  if dialect.ordered then
    table.remove(res, 3)
    table.remove(res, 1)
  end
  local paused = {}
  for _, r in ipairs(table.remove(res)) do paused[r.flow] = true end
  local by_flow, out = {}, {}
  for _, rows in ipairs(res) do
    for _, r in ipairs(rows) do
      if by_flow[r.flow] then
        by_flow[r.flow].n = by_flow[r.flow].n + r.n
      else
        by_flow[r.flow] = r
        out[#out + 1] = r
      end
    end
  end
  return out, paused
end

-- depth(now) -> {state = n} for the runs waiting (queued, retrying,
-- sleeping, waiting) and running, and the run_at (ms) of the oldest run due and not
-- yet claimed (nil when none): what /metrics shows of the queue. In a task.
-- Each count walks one partial index, the oldest is its first entry.
function store.depth(now)
  local res = store.batch {
    { "SELECT state || '' AS state, count(*) AS n FROM runs WHERE " .. WAITING .. " GROUP BY 1" },
    { "SELECT count(*) AS n FROM runs WHERE state = 'running'" },
    { "SELECT min(run_at) AS oldest FROM runs WHERE " .. DUE, now, n = 1 },
  }
  local by_state = { queued = 0, retrying = 0, sleeping = 0, waiting = 0, running = res[2][1].n }
  for _, r in ipairs(res[1]) do by_state[r.state] = r.n end
  return by_state, res[3][1] and res[3][1].oldest or nil
end

-- next_due(now) -> the earliest time (ms) after now a waiting run is due, or nil.
function store.next_due(now)
  return store.batch { { "SELECT min(run_at) AS t FROM runs WHERE " .. WAITING .. " AND run_at > $1", now, n = 1 } }[1][1].t
end

-- Is the store shared by several instances (Postgres)? Then a flow's
-- concurrency is enforced in the store (store.claim's `max`).
function store.shared() return dialect.shared == true end

-- renew(owner, lease_ms): extends the lease of every run this owner runs.
function store.renew(owner, lease_ms, callback)
  return store.batch({ { "UPDATE runs SET lease_until = $1 WHERE owner = $2 AND state = 'running'",
    now_ms() + lease_ms, owner, n = 2 } }, callback)
end

-- release(owner, callback): ends the leases of every run this owner runs.
function store.release(owner, callback)
  return store.batch({ { "UPDATE runs SET lease_until = $1 WHERE owner = $2 AND state = 'running'",
    now_ms(), owner, n = 2 } }, callback)
end

-- Lines numbered after those the attempt has already (an attempt that
-- slept writes its lines in two parts: before parking, after waking).
local LOG_INSERT = "INSERT INTO run_logs (run_id, attempt, seq, at, level, message, fields) "
  .. "VALUES ($1, $2, (SELECT COALESCE(max(seq), 0) + 1 FROM run_logs WHERE run_id = $1 AND attempt = $2), "
  .. "$3, $4, $5, $6)"

local function log_rows(stmts, id, attempt, lines)
  if not lines then return end
  for _, l in ipairs(lines) do
    stmts[#stmts + 1] = { LOG_INSERT, id, attempt, l.at, l.level, l.message, l.fields, n = 6 }
  end
end

-- "Run $1, held by owner $n": found by id. The state is compared as an
-- expression so that Postgres cannot answer it from runs_leased (the index
-- of every running run): a plan made while the table was young and had no
-- statistics scanned that index and fetched ~40 rows per finish, and a
-- prepared statement keeps its plan for the connection's life.
local function held_by(owner_param)
  return "id = $1 AND owner = " .. owner_param .. " AND state || '' = 'running'"
end

local FINISH = "UPDATE runs SET state = $3, result = $4, error = $5, run_at = COALESCE($6, run_at), finished = $7, "
  .. "lease_until = NULL, owner = NULL, version = COALESCE($8, version), attempt = COALESCE($9, attempt), "
  .. "versions = COALESCE($10, versions) WHERE " .. held_by "$2"

local function finish_stmt(id, owner, f)
  return { FINISH, id, owner, f.state, f.result, f.error, f.run_at, f.finished, f.version, f.attempt, f.versions, n = 10 }
end

-- The finishes asked for in this turn of the loop, written together in one
-- batch at the next, on the connection they were asked of: one batch per
-- group commit instead of one per run (each costs the loop its copy, its
-- results and its callback). One statement per run still: one UPDATE of
-- them all (the values as a JSON array, json_to_recordset) cost the
-- Postgres server no less per run, and SQLite more (bench/issue16-profile.md).
local finishing, finishing_conn, flush_timer = {}, nil, nil
local timer = require "rill.c.timer"

local function batch_on(c, stmts, callback)
  return c:batch(stmts, noted, { stmts, callback })
end

-- The statements of one finish: its update, the wake of a wait already
-- met, its log lines.
local function finish_stmts(id, owner, attempt, f, lines)
  local stmts = { finish_stmt(id, owner, f) }
  if f.state == "waiting" then
    -- an event that matched while this attempt was parking recorded the
    -- wait's step already: the run is due now, not at its timeout
    stmts[2] = { "UPDATE runs SET run_at = $2 WHERE id = $1 AND state = 'waiting' AND EXISTS "
      .. "(SELECT 1 FROM run_steps WHERE run_id = $1 AND seq = $3)", id, f.finished, f.wait_seq, n = 3 }
  end
  log_rows(stmts, id, attempt, lines)
  return stmts
end

-- e: {id, owner, attempt, f, lines, callback, arg}
local function finish_alone(c, e)
  batch_on(c, finish_stmts(e[1], e[2], e[3], e[4], e[5]), function(res, err)
    if not res then return e[6](nil, err, e[7]) end
    e[6](res[1].changes > 0, nil, e[7])
  end)
end

local function flush_finishes()
  if flush_timer then flush_timer:stop() end
  flush_timer = nil
  local these, c = finishing, finishing_conn
  finishing, finishing_conn = {}, nil
  if not c then
    for _, e in ipairs(these) do e[6](nil, "store: not open", e[7]) end
    return
  end
  if #these == 1 then return finish_alone(c, these[1]) end
  local stmts = {}
  for i, e in ipairs(these) do stmts[i] = finish_stmt(e[1], e[2], e[4]) end
  for _, e in ipairs(these) do log_rows(stmts, e[1], e[3], e[5]) end
  batch_on(c, stmts, function(res, err)
    if not res then
      -- one finish the store refuses (a value it cannot take) must not
      -- fail the others: each is written again on its own
      for _, e in ipairs(these) do finish_alone(c, e) end
      return
    end
    for i, e in ipairs(these) do e[6](res[i].changes > 0, nil, e[7]) end
  end)
end
-- flush_finishes(): sends the finishes waiting for the next turn now.
function store.flush_finishes()
  if #finishing > 0 then flush_finishes() end
end

-- finish(id, owner, attempt, fields, lines, callback[, arg]): records the end of an
-- attempt of a run this owner holds: fields.state ('succeeded', 'retrying',
-- 'dead', 'failed', 'sleeping', 'waiting'), result, error, run_at, finished;
-- and its log lines. callback(true) once stored, callback(false) when the run
-- was no longer ours (its lease had expired and another instance took it),
-- callback(nil, err) when the store could not take it; arg, when given, is
-- passed last (a caller's own state, instead of a closure per run). The
-- finishes of one turn of the loop go to the store in one batch.
function store.finish(id, owner, attempt, f, lines, callback, arg)
  local e = { id, owner, attempt, f, lines, callback, arg }
  if f.state == "waiting" then return finish_alone(conn, e) end
  if finishing_conn ~= conn then store.flush_finishes() end
  finishing[#finishing + 1], finishing_conn = e, conn
  if not flush_timer then flush_timer = timer.after(0, flush_finishes) end
end

-- steps(run_id) -> the run's completed steps, in order: {seq, name, result}.
function store.steps(run_id)
  return store.batch { { "SELECT seq, name, result FROM run_steps WHERE run_id = $1 ORDER BY seq", run_id, n = 1 } }[1]
end

-- step(run_id, owner, s): records a completed step of a run this owner
-- holds (s: seq, name, result as JSON, attempts, started, finished), in a
-- task; false when the run is no longer ours (its lease was taken over).
function store.step(run_id, owner, s)
  local res = store.batch {
    { "INSERT INTO run_steps (run_id, seq, name, result, attempts, started, finished) "
      .. "SELECT CAST($1 AS TEXT), CAST($2 AS INTEGER), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS INTEGER), "
      .. "CAST($6 AS BIGINT), CAST($7 AS BIGINT) WHERE EXISTS (SELECT 1 FROM runs WHERE " .. held_by "$8" .. ")",
      run_id, s.seq, s.name, s.result, s.attempts, s.started, s.finished, owner, n = 8 } }
  return res[1].changes > 0
end

-- record(r, lines, callback): stores a run that already ended (a sync
-- webhook's run, whose caller got the answer), with its log lines.
function store.record(r, lines, callback)
  local stmts = { insert_run(r) }
  log_rows(stmts, r.id, r.attempt or 1, lines)
  store.batch(stmts, callback or function(_, err)
    if err then require("rill.log").warn("a run could not be recorded", { run_id = r.id, error = err }) end
  end)
end


-- ---- flow versions ----

-- version_stmt(flow): the statement that keeps a loaded version's source
-- and its modules' (once per version), for retries pinned to it.
function store.version_stmt(flow)
  local modules = flow.module_sources and next(flow.module_sources) and require("rill.json").encode(flow.module_sources)
  return { "INSERT INTO flow_versions (version, flow, file, source, created, modules) VALUES ($1, $2, $3, $4, $5, $6) "
    .. "ON CONFLICT DO NOTHING", flow.version, flow.name, flow.file, flow.source, now_ms(), modules or nil, n = 6 }
end

-- version(v) -> {version, flow, file, source, modules} or nil; modules:
-- name -> {file, source, hash}, decoded. In a task.
function store.version(v)
  local row = store.batch { { "SELECT version, flow, file, source, modules FROM flow_versions WHERE version = $1", v,
    n = 1 } }[1][1]
  if row then row.modules = row.modules and require("rill.json").try_decode(row.modules) or {} end
  return row
end

-- The parts of the store in files of their own (each a function of this table):
-- the CLI's and admin's reads and changes of runs; events, waits and schedules.
require("rill.engine.store_admin")(store)
require("rill.engine.store_events")(store)
require("rill.engine.store_claims")(store, function() return dialect end)

store.encode = json.encode

return store
