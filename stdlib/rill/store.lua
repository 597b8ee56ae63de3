-- store: rill's durable state (runs, their log lines, cron schedule state,
-- idempotency keys) over one of two backends with the same batch primitive:
-- SQLite (rill.c.sqlite, the embedded default) and Postgres (rill.c.pg).
-- A batch is a list of statements run in one transaction; the backends run
-- the batches that arrive together in one commit (group commit).
-- This module owns the schema, its migrations and every SQL text; the
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

-- Runs waiting for their time: queued, retrying after a failure, sleeping
-- (parked by sleep_until) or waiting (parked by wait_for, until an event or
-- its timeout). The same text in the index and in the queries, so that
-- SQLite sees the index applies.
local WAITING = "state IN ('queued', 'retrying', 'sleeping', 'waiting')"

-- The schema, as numbered migrations. Each applies in one transaction that
-- also records its number, so two instances starting together cannot both
-- apply it: the second one's insert of the number fails and it re-reads.
local MIGRATIONS = {
  {
    [[CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        version TEXT,
        trigger TEXT NOT NULL,
        payload TEXT,
        request TEXT,
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL DEFAULT 1,
        run_at BIGINT NOT NULL,
        lease_until BIGINT,
        owner TEXT,
        parent TEXT,
        depth INTEGER NOT NULL DEFAULT 0,
        idem_key TEXT,
        created BIGINT NOT NULL,
        started BIGINT,
        finished BIGINT,
        result TEXT,
        error TEXT)]],
    "CREATE INDEX runs_ready ON runs (state, run_at)",
    "CREATE INDEX runs_finished ON runs (state, finished)",
    "CREATE INDEX runs_flow ON runs (flow, created)",
    [[CREATE TABLE run_logs (
        run_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        at BIGINT NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        fields TEXT,
        PRIMARY KEY (run_id, attempt, seq))]],
    [[CREATE TABLE schedules (
        key TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        last_fire BIGINT,
        next_fire BIGINT)]],
    [[CREATE TABLE idempotency (
        flow TEXT NOT NULL,
        key TEXT NOT NULL,
        run_id TEXT NOT NULL,
        created BIGINT NOT NULL,
        PRIMARY KEY (flow, key))]],
  },
  -- Partial indexes, one per question the queue asks: each holds only the
  -- runs in the states it is about, so the index of waiting runs stays
  -- small under load (a run stored already running, most of them, never
  -- enters it) instead of filling with entries of finished runs.
  {
    "DROP INDEX runs_ready",
    "DROP INDEX runs_finished",
    "CREATE INDEX runs_due ON runs (run_at) WHERE state IN ('queued', 'retrying')",
    "CREATE INDEX runs_leased ON runs (lease_until) WHERE state = 'running'",
    "CREATE INDEX runs_done ON runs (finished, state) WHERE state IN ('succeeded', 'failed')",
  },
  -- Steps: each completed step of a run, with its result, so that a run
  -- replayed (retried, recovered, woken) does not run it again.
  {
    "DROP INDEX runs_due",
    "CREATE INDEX runs_due ON runs (run_at) WHERE " .. WAITING,
    [[CREATE TABLE run_steps (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        result TEXT,
        attempts INTEGER NOT NULL,
        started BIGINT NOT NULL,
        finished BIGINT NOT NULL,
        PRIMARY KEY (run_id, seq))]],
  },
  -- Causes, versions, events and waits: each run keeps the chain of flows
  -- that led to it, the flow versions its attempts ran and the version a
  -- retry is pinned to; the source of every version that ran, so that a
  -- retry can run the one that failed; events (emit, webhooks) and the
  -- runs parked waiting for one (wait_for).
  {
    "ALTER TABLE runs ADD COLUMN chain TEXT",
    "ALTER TABLE runs ADD COLUMN versions TEXT",
    "ALTER TABLE runs ADD COLUMN pinned TEXT",
    "DROP INDEX runs_due",
    "CREATE INDEX runs_due ON runs (run_at) WHERE " .. WAITING,
    [[CREATE TABLE flow_versions (
        version TEXT PRIMARY KEY,
        flow TEXT NOT NULL,
        file TEXT,
        source TEXT NOT NULL,
        created BIGINT NOT NULL)]],
    [[CREATE TABLE events (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        data TEXT,
        created BIGINT NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0)]],
    "CREATE INDEX events_name ON events (name, created)",
    "CREATE INDEX events_undelivered ON events (created) WHERE delivered = 0",
    [[CREATE TABLE run_waits (
        run_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        event TEXT NOT NULL,
        match TEXT,
        since BIGINT NOT NULL,
        timeout_at BIGINT,
        PRIMARY KEY (run_id, seq))]],
    "CREATE INDEX run_waits_event ON run_waits (event)",
  },
  -- Paused flows (admin API): their triggers start no runs and their
  -- stored runs wait, in every instance sharing the store.
  {
    "CREATE TABLE flow_pauses (flow TEXT PRIMARY KEY, paused_at BIGINT NOT NULL)",
  },
  -- Event fan-out: the run an event started for each flow with an event
  -- trigger on it (one per event and flow: the key that makes an event
  -- emitted again start nothing again), and the run that emitted it.
  {
    [[CREATE TABLE event_runs (
        event_id TEXT NOT NULL,
        flow TEXT NOT NULL,
        run_id TEXT NOT NULL,
        event TEXT NOT NULL,
        origin TEXT,
        created BIGINT NOT NULL,
        PRIMARY KEY (event_id, flow))]],
    "CREATE INDEX event_runs_run ON event_runs (run_id)",
    "CREATE INDEX event_runs_origin ON event_runs (origin)",
  },
  -- Shared modules and settings: the modules a flow version ran (their
  -- sources, so a retry pinned to it runs them again), and the settings
  -- values a run started with (its retries and wakes use them).
  {
    "ALTER TABLE flow_versions ADD COLUMN modules TEXT",
    "ALTER TABLE runs ADD COLUMN settings TEXT",
  },
  -- The stored runs a run started (a run of a database event its write
  -- caused names it as parent), for its sequence diagram.
  {
    "CREATE INDEX runs_parent ON runs (parent) WHERE parent IS NOT NULL",
  },
}

local RUN_COLUMNS = "id, flow, version, trigger, payload, request, state, attempt, max_attempts, run_at, "
  .. "parent, depth, idem_key, created, started, finished, result, error, chain, versions, pinned, settings"

-- Postgres's claim, taking at most `limit` (an SQL expression) runs.
-- Several instances claim from one table: each skips the rows another one
-- is claiming at that moment instead of waiting for them. The flow is
-- compared as an expression (`flow || ''`, like SQLite's `+flow`): a plan
-- made while the table had no statistics ANDed runs_flow's bitmap, every
-- run of the flow, into each claim.
local function pg_claim(limit)
  return [[WITH due AS (SELECT id, run_at FROM runs WHERE ]] .. WAITING .. [[ AND run_at <= $3
        AND flow || '' = $4 ORDER BY run_at LIMIT $5 FOR UPDATE SKIP LOCKED),
      orphaned AS (SELECT id, run_at FROM runs WHERE state = 'running' AND lease_until < $3 AND flow || '' = $4
        LIMIT $5 FOR UPDATE SKIP LOCKED)
    UPDATE runs SET state = 'running', owner = $1, lease_until = $2, attempt = attempt + 1, started = $3
    WHERE id IN (SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM orphaned) ready
      ORDER BY run_at LIMIT ]] .. limit .. [[)
    RETURNING ]] .. RUN_COLUMNS
end

-- What differs between the two SQL dialects.
local DIALECTS = {
  sqlite = {
    -- each side limited on its own: a limit only over their union sorted
    -- every due run (100,000 parked runs coming due at once) at each claim
    claim = [[UPDATE runs SET state = 'running', owner = $1, lease_until = $2, attempt = attempt + 1, started = $3
      WHERE id IN (SELECT id FROM (
          SELECT id, run_at FROM (SELECT id, run_at FROM runs WHERE ]] .. WAITING .. [[ AND run_at <= $3
            AND +flow = $4 ORDER BY run_at LIMIT $5)
          UNION ALL
          SELECT id, run_at FROM (SELECT id, run_at FROM runs WHERE state = 'running' AND lease_until < $3
            AND +flow = $4 LIMIT $5))
        ORDER BY run_at LIMIT $5)
      RETURNING ]] .. RUN_COLUMNS,
  },
  postgres = {
    claim = pg_claim "$5",
    -- a flow's concurrency holds across instances: its claims take turns
    -- (the lock lasts until the claim commits), and each counts the runs
    -- of the flow running anywhere, $6 at most
    claim_max = pg_claim("GREATEST(0, LEAST($5, $6 - (SELECT count(*) FROM runs "
      .. "WHERE state = 'running' AND lease_until >= $3 AND flow || '' = $4)))"),
    flow_lock = "SELECT pg_advisory_xact_lock(7224185, hashtext($1))",
    -- Around a look at the due runs in run_at order: an index scan in that
    -- order, not a bitmap scan of every due run then a sort. A plan made
    -- before the table's statistics (runs parked in the last minute, the
    -- table not analyzed yet) expects a few due runs: 17,000 parked runs
    -- come due at once cost each claim 200 ms (issue 16). Local to the
    -- transaction, set back after.
    ordered = { "SELECT set_config('enable_bitmapscan', 'off', true)" },
    unordered = { "SELECT set_config('enable_bitmapscan', 'on', true)" },
    shared = true,
    -- migrations from instances starting together take turns
    lock = { "SELECT pg_advisory_xact_lock(7224184)" },
  },
}

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

-- batch(stmts[, callback]): in a task, returns the results or raises; with a
-- callback, returns at once and calls callback(results) or callback(nil, err).
function store.batch(stmts, callback)
  if callback then
    return conn:batch(stmts, function(res, err)
      note(stmts, res, err)
      return callback(res, err)
    end)
  end
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
  if conn then conn:close() end
  conn = nil
end

function store.is_open() return conn ~= nil end

-- ---- statements: each returns a statement table for a batch ----

local RUN_INSERT = "INSERT INTO runs (id, flow, version, trigger, payload, request, state, attempt, "
  .. "max_attempts, run_at, lease_until, owner, parent, depth, idem_key, created, started, finished, result, error, "
  .. "chain, versions, settings) "
local RUN_TYPES = { "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "INTEGER", "INTEGER", "BIGINT", "BIGINT",
  "TEXT", "TEXT", "INTEGER", "TEXT", "BIGINT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT" }
local values, typed = {}, {}
for i, t in ipairs(RUN_TYPES) do
  values[i] = "$" .. i
  typed[i] = "CAST($" .. i .. " AS " .. t .. ")"
end
local INSERT_RUN = RUN_INSERT .. "VALUES (" .. table.concat(values, ", ") .. ")"
-- the same, only when the run holds the idempotency key ($2 flow, $15 key)
-- (typed: a SELECT list gives Postgres no column to infer parameter types from)
local INSERT_RUN_WITH_KEY = RUN_INSERT .. "SELECT " .. table.concat(typed, ", ")
  .. " WHERE EXISTS (SELECT 1 FROM idempotency WHERE flow = $2 AND key = $15 AND run_id = $1)"

local function insert_run(r, sql)
  return { sql or INSERT_RUN,
    r.id, r.flow, r.version, r.trigger, r.payload, r.request, r.state, r.attempt or 0, r.max_attempts or 1,
    r.run_at, r.lease_until, r.owner, r.parent, r.depth or 0, r.idem_key, r.created, r.started, r.finished,
    r.result, r.error, r.chain, r.versions, r.settings, n = #RUN_TYPES }
end

-- enqueue(r, callback[, extra]): stores a new run row r (all columns as
-- strings and numbers), and the statements in `extra` in the same
-- transaction. With r.idem_key, a second row with the same flow and key is
-- not stored: callback(id, duplicate) gets the first run's id and whether
-- this was such a duplicate; callback(nil, err) on failure.
function store.enqueue(r, callback, extra)
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
  for _, s in ipairs(extra or {}) do stmts[#stmts + 1] = s end
  store.batch(stmts, function(res, err)
    if not res then return callback(nil, err) end
    local first = r.idem_key and res[2][1].run_id or r.id
    callback(first, first ~= r.id)
  end)
end

-- Runs ready to claim: queued ones that are due, and running ones whose lease
-- expired (their process died). Two index range scans (runs_due and
-- runs_leased), not an OR. `+flow` and grouping by `flow || ''` keep SQLite
-- off the runs_flow index, which would visit every run of the flow.
local DUE = WAITING .. " AND run_at <= $1"
local ORPHANED = "state = 'running' AND lease_until < $1"

-- ready(now, limit[, skip]) -> {flow, n} for each flow with runs ready to
-- claim, counted among the `limit` due longest (counting every due run would
-- make each poll scan them all when many come due at once), and the set of
-- paused flows (read in the same batch: a pause made by another instance
-- holds here from the next poll on). skip: names of flows that cannot take
-- a run now (paused, at their concurrency), left out of the count: a
-- backlog of theirs longer than `limit` would hide every other flow's runs.
function store.ready(now, limit, skip)
  limit = limit or 1000
  local not_in = ""
  if skip and #skip > 0 then
    local params = {}
    for i = 1, #skip do params[i] = "$" .. (i + 2) end
    not_in = " AND flow NOT IN (" .. table.concat(params, ", ") .. ")"
  end
  local function counted(where, order)
    local st = { "SELECT flow || '' AS flow, count(*) AS n FROM (SELECT flow FROM runs WHERE " .. where .. not_in
      .. order .. " LIMIT $2) ready GROUP BY 1", now, limit, n = 2 + #(skip or {}) }
    for i, name in ipairs(skip or {}) do st[i + 3] = name end
    return st
  end
  local stmts = { counted(DUE, " ORDER BY run_at"), counted(ORPHANED, ""), { "SELECT flow FROM flow_pauses" } }
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

-- The completed steps of the runs a claim just took (same transaction: the
-- runs this owner holds with the lease the claim gave them), so that a
-- resumed run replays its steps without a read of its own.
local CLAIMED_STEPS = "SELECT run_id, seq, name, result FROM run_steps WHERE run_id IN (SELECT id FROM runs "
  .. "WHERE state = 'running' AND lease_until = $2 AND owner = $1)"

-- claim(owner, claims, lease_ms) -> rows of the runs now running here, at
-- most claims[i].limit of flow claims[i].flow, oldest due first; with
-- claims[i].max on a shared store, also no more than max runs of the flow
-- running in all instances together. Each row's `steps` are its completed
-- steps by seq ({seq, name, result}). In a task.
function store.claim(owner, claims, lease_ms)
  local now = now_ms()
  local stmts, claiming = { dialect.ordered }, {}
  for _, c in ipairs(claims) do
    if c.max and dialect.shared then
      stmts[#stmts + 1] = { dialect.flow_lock, c.flow, n = 1 }
      stmts[#stmts + 1] = { dialect.claim_max, owner, now + lease_ms, now, c.flow, c.limit, c.max, n = 6 }
    else
      stmts[#stmts + 1] = { dialect.claim, owner, now + lease_ms, now, c.flow, c.limit, n = 5 }
    end
    claiming[#claiming + 1] = #stmts
  end
  stmts[#stmts + 1] = dialect.unordered
  stmts[#stmts + 1] = { CLAIMED_STEPS, owner, now + lease_ms, n = 2 }
  local res = store.batch(stmts)
  local rows, by_id = {}, {}
  for _, i in ipairs(claiming) do
    for _, row in ipairs(res[i]) do
      rows[#rows + 1] = row
      row.steps, by_id[row.id] = {}, row
    end
  end
  for _, s in ipairs(res[#stmts]) do
    local row = by_id[s.run_id]
    if row then row.steps[s.seq] = s end
  end
  return rows
end

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

-- finish(id, owner, fields, lines, callback): records the end of an attempt
-- of a run this owner holds: fields.state ('succeeded', 'retrying', 'dead',
-- 'failed'), result, error, run_at (retrying), finished; and its log lines.
-- callback(true) or callback(false) when the run was no longer ours (its
-- lease had expired and another instance took it).
function store.finish(id, owner, attempt, f, lines, callback)
  local stmts = {
    { "UPDATE runs SET state = $3, result = $4, error = $5, run_at = COALESCE($6, run_at), finished = $7, "
      .. "lease_until = NULL, owner = NULL, version = COALESCE($8, version), attempt = COALESCE($9, attempt), "
      .. "versions = COALESCE($10, versions) WHERE " .. held_by "$2",
      id, owner, f.state, f.result, f.error, f.run_at, f.finished, f.version, f.attempt, f.versions, n = 10 },
  }
  if f.state == "waiting" then
    -- an event that matched while this attempt was parking recorded the
    -- wait's step already: the run is due now, not at its timeout
    stmts[2] = { "UPDATE runs SET run_at = $2 WHERE id = $1 AND state = 'waiting' AND EXISTS "
      .. "(SELECT 1 FROM run_steps WHERE run_id = $1 AND seq = $3)", id, f.finished, f.wait_seq, n = 3 }
  end
  log_rows(stmts, id, attempt, lines)
  store.batch(stmts, function(res, err)
    if not res then return callback(nil, err) end
    callback(res[1].changes > 0)
  end)
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

-- ---- reading (CLI, admin) ----

-- list{flow, state, limit, since, until} -> rows, newest first; since and
-- until (ms) bound the creation time (since <= created < until).
function store.list(q)
  q = q or {}
  local res = store.batch { { "SELECT id, flow, state, attempt, max_attempts, created, started, finished, run_at, error "
    .. "FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR flow = $1) AND (CAST($2 AS TEXT) IS NULL OR state = $2) "
    .. "AND (CAST($4 AS BIGINT) IS NULL OR created >= $4) AND (CAST($5 AS BIGINT) IS NULL OR created < $5) "
    .. "ORDER BY created DESC, id DESC LIMIT $3", q.flow, q.state, q.limit or 50, q.since, q["until"], n = 5 } }
  return res[1]
end

-- get(id) -> the run row (id may be a unique prefix) and its log lines, or nil.
function store.get(id)
  local res = store.batch {
    { "SELECT " .. RUN_COLUMNS .. ", owner, lease_until FROM runs WHERE id = $1", id, n = 1 },
    { "SELECT attempt, seq, at, level, message, fields FROM run_logs WHERE run_id = $1 ORDER BY attempt, seq", id, n = 1 },
    { "SELECT seq, name, result, attempts, started, finished FROM run_steps WHERE run_id = $1 ORDER BY seq", id, n = 1 },
    -- the event that started it, and the runs the events it emitted started
    { "SELECT event_id, event, origin FROM event_runs WHERE run_id = $1", id, n = 1 },
    { "SELECT event_id, event, flow, run_id, created FROM event_runs WHERE origin = $1 ORDER BY created, flow",
      id, n = 1 },
  }
  local run = res[1][1]
  if run then
    run.logs, run.steps, run.event_runs = res[2], res[3], res[5]
    local by = res[4][1]
    if by then run.started_by = { event = by.event, event_id = by.event_id, emitted_by = by.origin } end
  end
  return run
end

-- outcome(id) -> {state, result, error} of a run, or nil. In a task.
function store.outcome(id)
  return store.batch { { "SELECT state, result, error FROM runs WHERE id = $1", id, n = 1 } }[1][1]
end

-- children(id[, limit]) -> the stored runs that name run id as their
-- parent, oldest first, at most limit (20): {id, flow, state}.
function store.children(id, limit)
  return store.batch { { "SELECT id, flow, state FROM runs WHERE parent = $1 ORDER BY created, id LIMIT $2",
    id, limit or 20, n = 2 } }[1]
end

-- count(state) -> the number of runs in that state (all runs without one).
-- Finished runs are counted from the runs_done index alone (they are most
-- runs, and a count of them is what a watcher polls).
function store.count(state)
  local sql = "SELECT count(*) AS n FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR state = $1)"
  if state == "succeeded" or state == "failed" then
    sql = "SELECT count(*) AS n FROM runs WHERE state IN ('succeeded', 'failed') AND state = $1"
  end
  return store.batch { { sql, state, n = 1 } }[1][1].n
end

-- requeue(id[, pin]) -> true, or false and why: a dead, failed or retrying
-- run goes back to the queue, ready now, with one more attempt; with pin
-- (true), that attempt runs the version the last one ran, else the flow's
-- current version.
function store.requeue(id, pin)
  local res = store.batch { { "UPDATE runs SET state = 'queued', run_at = $2, max_attempts = attempt + 1, "
    .. "finished = NULL, pinned = CASE WHEN $3 = 1 THEN version END "
    .. "WHERE id = $1 AND state IN ('dead', 'failed', 'retrying')", id, now_ms(), pin and 1 or 0, n = 3 },
    { "SELECT state FROM runs WHERE id = $1", id, n = 1 } }
  if res[1].changes > 0 then return true end
  local row = res[2][1]
  if not row then return false, "no run " .. id end
  return false, "run " .. id .. " is " .. row.state .. ": only a dead, failed or retrying run can be retried"
end

-- cancel(id) -> true, or false and why: a run waiting for its time
-- (queued, retrying, sleeping, waiting) ends as cancelled, never to run again.
function store.cancel(id)
  local res = store.batch { { "UPDATE runs SET state = 'cancelled', finished = $2, lease_until = NULL, "
    .. "owner = NULL WHERE id = $1 AND " .. WAITING, id, now_ms(), n = 2 },
    { "SELECT state FROM runs WHERE id = $1", id, n = 1 } }
  if res[1].changes > 0 then return true end
  local row = res[2][1]
  if not row then return false, "no run " .. id end
  return false, "run " .. id .. " is " .. row.state .. ": only a queued, retrying, sleeping or waiting run can be cancelled"
end

-- pauses() -> flow -> paused_at (ms); set_pause(flow, paused): records it.
function store.pauses()
  local out = {}
  for _, r in ipairs(store.batch { { "SELECT flow, paused_at FROM flow_pauses" } }[1]) do
    out[r.flow] = r.paused_at
  end
  return out
end

function store.set_pause(flow, paused)
  if paused then
    store.batch { { "INSERT INTO flow_pauses (flow, paused_at) VALUES ($1, $2) ON CONFLICT (flow) DO NOTHING",
      flow, now_ms(), n = 2 } }
  else
    store.batch { { "DELETE FROM flow_pauses WHERE flow = $1", flow, n = 1 } }
  end
end

-- delete(id) -> true, or false and why: a run that is not queued or running
-- is deleted with its log lines.
function store.delete(id)
  local res = store.batch {
    { "DELETE FROM run_logs WHERE run_id = $1 AND EXISTS (SELECT 1 FROM runs WHERE id = $1 "
      .. "AND state NOT IN ('queued', 'running', 'retrying', 'sleeping', 'waiting'))", id, n = 1 },
    { "DELETE FROM run_steps WHERE run_id = $1 AND EXISTS (SELECT 1 FROM runs WHERE id = $1 "
      .. "AND state NOT IN ('queued', 'running', 'retrying', 'sleeping', 'waiting'))", id, n = 1 },
    { "DELETE FROM runs WHERE id = $1 AND state NOT IN ('queued', 'running', 'retrying', 'sleeping', 'waiting')", id, n = 1 },
    { "SELECT state FROM runs WHERE id = $1", id, n = 1 } }
  if res[3].changes > 0 then return true end
  local row = res[4][1]
  if not row then return false, "no run " .. id end
  return false, "run " .. id .. " is " .. row.state .. ": only a finished or dead run can be deleted"
end

-- prune(before_ms, limit) -> how many finished runs were deleted (oldest
-- first, at most limit), with their log lines; dead runs are kept.
function store.prune(before, limit, callback)
  local stmts = {
    { "DELETE FROM run_logs WHERE run_id IN (SELECT id FROM runs WHERE state IN ('succeeded', 'failed') "
      .. "AND finished < $1 ORDER BY finished LIMIT $2)", before, limit, n = 2 },
    { "DELETE FROM run_steps WHERE run_id IN (SELECT id FROM runs WHERE state IN ('succeeded', 'failed') "
      .. "AND finished < $1 ORDER BY finished LIMIT $2)", before, limit, n = 2 },
    { "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE state IN ('succeeded', 'failed') "
      .. "AND finished < $1 ORDER BY finished LIMIT $2)", before, limit, n = 2 },
    { "DELETE FROM idempotency WHERE created < $1", before, n = 1 },
    { "DELETE FROM event_runs WHERE created < $1", before, n = 1 },
    { "DELETE FROM events WHERE created < $1 AND delivered = 1", before, n = 1 },
    -- waits of runs that ended otherwise (dead, deleted)
    { "DELETE FROM run_waits WHERE NOT EXISTS (SELECT 1 FROM runs WHERE id = run_waits.run_id AND state IN "
      .. "('waiting', 'running', 'queued', 'retrying'))" },
  }
  return store.batch(stmts, function(res, err)
    if callback then callback(res and res[3].changes, err) end
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

-- ---- events and waits ----

-- Both sides of a match take this lock first on Postgres (one per event
-- name, held to the end of their transaction): a wait registered while an
-- event of its name is stored sees it, or the event sees the wait.
local function event_lock(stmts, name)
  if dialect.shared then
    stmts[#stmts + 1] = { "SELECT pg_advisory_xact_lock(7224187, hashtext($1))", name, n = 1 }
  end
  return stmts
end

-- emit_stmts(e) -> the statements that store event e {id, name, data
-- (JSON), created}, once per id (for a batch of its own or a run's).
function store.emit_stmts(e)
  local stmts = event_lock({}, e.name)
  stmts[#stmts + 1] = { "INSERT INTO events (id, name, data, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    e.id, e.name, e.data, e.created, n = 4 }
  return stmts
end

-- emit(e[, extra]) -> whether e is new (an id seen before is not stored
-- again), with the statements of `extra` (its fan-out) in the same
-- transaction. In a task.
function store.emit(e, extra)
  local stmts = store.emit_stmts(e)
  local insert = #stmts
  for _, st in ipairs(extra or {}) do stmts[#stmts + 1] = st end
  local res = store.batch(stmts)
  return res[insert].changes > 0
end

-- ---- event fan-out ----

-- A run row stored only when its event_runs row is the one just written
-- ($1 run id, $2 flow): an event emitted again starts no second run.
local INSERT_RUN_FOR_EVENT = RUN_INSERT .. "SELECT " .. table.concat(typed, ", ")
  .. " WHERE EXISTS (SELECT 1 FROM event_runs WHERE run_id = $1 AND flow = $2)"

-- event_run_stmts(r, e, origin) -> the statements that store run row r,
-- started by event e {id, name}, which run `origin` emitted (or nil): once
-- per event and flow.
function store.event_run_stmts(r, e, origin)
  return {
    { "INSERT INTO event_runs (event_id, flow, run_id, event, origin, created) VALUES ($1, $2, $3, $4, $5, $6) "
      .. "ON CONFLICT DO NOTHING", e.id, r.flow, r.id, e.name, origin, r.created, n = 6 },
    insert_run(r, INSERT_RUN_FOR_EVENT),
  }
end

-- event_runs_of(event_id) -> the runs the event started: {flow, run_id}, by flow. In a task.
function store.event_runs_of(event_id)
  return store.batch { { "SELECT flow, run_id FROM event_runs WHERE event_id = $1 ORDER BY flow", event_id, n = 1 } }[1]
end

-- events_named(name) -> the stored events of that name, oldest first:
-- {id, name, data (JSON), created}. In a task.
function store.events_named(name)
  return store.batch { { "SELECT id, name, data, created FROM events WHERE name = $1 ORDER BY created, id",
    name, n = 1 } }[1]
end

-- waits(event) -> the waits on that event name: {run_id, seq, name, match, since}. In a task.
function store.waits(event)
  return store.batch { { "SELECT run_id, seq, name, match, since FROM run_waits WHERE event = $1", event, n = 1 } }[1]
end

-- deliver(e, waits): the event ends each wait in `waits` still there: its
-- step records the event, and the run is due now. Then the event is marked
-- delivered. In a task.
function store.deliver(e, waits)
  local now = now_ms()
  local stmts = {}
  for _, w in ipairs(waits) do
    stmts[#stmts + 1] = { "INSERT INTO run_steps (run_id, seq, name, result, attempts, started, finished) "
      .. "SELECT CAST($1 AS TEXT), CAST($2 AS INTEGER), CAST($3 AS TEXT), CAST($4 AS TEXT), 1, "
      .. "CAST($5 AS BIGINT), CAST($5 AS BIGINT) WHERE EXISTS (SELECT 1 FROM run_waits WHERE run_id = $1 "
      .. "AND seq = $2) ON CONFLICT DO NOTHING", w.run_id, w.seq, w.name, w.result, now, n = 5 }
    stmts[#stmts + 1] = { "DELETE FROM run_waits WHERE run_id = $1 AND seq = $2", w.run_id, w.seq, n = 2 }
    -- also while 'running' (its attempt may be parking now): the row lock
    -- orders this with finish(), which then sees the step recorded here (a
    -- run that committed 'waiting' after this statement looked but before
    -- this commit would wait until its timeout, READ COMMITTED)
    stmts[#stmts + 1] = { "UPDATE runs SET run_at = $2 WHERE id = $1 AND state IN ('waiting', 'running')",
      w.run_id, now, n = 2 }
  end
  stmts[#stmts + 1] = { "UPDATE events SET delivered = 1 WHERE id = $1", e.id, n = 1 }
  store.batch(stmts)
end

-- undelivered(before) -> events stored before that time and not delivered
-- (their process stopped between storing and delivering). In a task.
function store.undelivered(before)
  return store.batch { { "SELECT id, name, data, created FROM events WHERE delivered = 0 AND created < $1 "
    .. "ORDER BY created LIMIT 100", before, n = 1 } }[1]
end

-- wait(w) -> the events of w.event stored since w.since, oldest first, and
-- the wait's timeout (the one first registered), after registering wait w {run_id, seq, name, event, match (JSON), since,
-- timeout_at} (kept if it was registered before). In a task.
function store.wait(w)
  local stmts = event_lock({}, w.event)
  local first = #stmts + 1
  stmts[first] = { "INSERT INTO run_waits (run_id, seq, name, event, match, since, timeout_at) "
    .. "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    w.run_id, w.seq, w.name, w.event, w.match, w.since, w.timeout_at, n = 7 }
  stmts[first + 1] = { "SELECT id, name, data, created FROM events WHERE name = $1 AND created >= $2 "
    .. "ORDER BY created, id", w.event, w.since, n = 2 }
  stmts[first + 2] = { "SELECT timeout_at FROM run_waits WHERE run_id = $1 AND seq = $2", w.run_id, w.seq, n = 2 }
  local res = store.batch(stmts)
  local row = res[first + 2][1]
  return res[first + 1], row and row.timeout_at
end

-- end_wait(run_id, seq, name, result) -> the step's recorded result: the
-- wait ends with `result` (the matching event, or the timeout) unless an
-- event ended it first. In a task.
function store.end_wait(run_id, seq, name, result)
  local now = now_ms()
  local res = store.batch {
    { "INSERT INTO run_steps (run_id, seq, name, result, attempts, started, finished) "
      .. "VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT DO NOTHING", run_id, seq, name, result, now, n = 5 },
    { "DELETE FROM run_waits WHERE run_id = $1 AND seq = $2", run_id, seq, n = 2 },
    { "SELECT result FROM run_steps WHERE run_id = $1 AND seq = $2", run_id, seq, n = 2 },
  }
  return res[3][1].result
end

-- schedules() -> key -> {last_fire, next_fire}
function store.schedules()
  local out = {}
  for _, row in ipairs(store.batch { { "SELECT key, last_fire, next_fire FROM schedules" } }[1]) do
    out[row.key] = row
  end
  return out
end

-- schedule_stmt(key, flow, last, next): the statement that records a fire.
function store.schedule_stmt(key, flow, last, next_fire)
  return { "INSERT INTO schedules (key, flow, last_fire, next_fire) VALUES ($1, $2, $3, $4) "
    .. "ON CONFLICT (key) DO UPDATE SET last_fire = excluded.last_fire, next_fire = excluded.next_fire",
    key, flow, last, next_fire, n = 4 }
end

store.encode = json.encode

return store
