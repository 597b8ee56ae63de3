-- store_schema: the store's schema (numbered migrations), the SQL that differs
-- between SQLite and Postgres, and the statement that inserts a run: texts
-- store.lua and its parts (store_admin.lua, store_events.lua) build on.
local S = {}

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

-- A claim: the runs that `filter` keeps (SQL on the column `flow`, compared
-- as an expression, `+flow` on SQLite and `flow || ''` on Postgres: a plan
-- on runs_flow's index visited, or on Postgres ANDed into a bitmap, every
-- run of the flow), at most `limit` (an SQL expression) due longest first;
-- $1 owner, $2 lease end, $3 now. On Postgres `cap`, when given, limits the
-- update only. On SQLite each side of the union is limited on its own: a
-- limit only over their union sorted every due run (100,000 parked runs
-- coming due at once) at each claim. On Postgres several instances claim
-- from one table: each skips the rows another one is claiming at that
-- moment instead of waiting for them.
local CLAIM_SET = "UPDATE runs SET state = 'running', owner = $1, lease_until = $2, attempt = attempt + 1, started = $3 "
local function sqlite_claim(filter, limit)
  return CLAIM_SET .. [[WHERE id IN (SELECT id FROM (
      SELECT id, run_at FROM (SELECT id, run_at FROM runs WHERE ]] .. WAITING .. [[ AND run_at <= $3 ]] .. filter
    .. [[ ORDER BY run_at LIMIT ]] .. limit .. [[)
      UNION ALL
      SELECT id, run_at FROM (SELECT id, run_at FROM runs WHERE state = 'running' AND lease_until < $3 ]] .. filter
    .. [[ LIMIT ]] .. limit .. [[))
    ORDER BY run_at LIMIT ]] .. limit .. [[) RETURNING ]] .. RUN_COLUMNS
end
local function pg_claim(filter, limit, cap)
  return [[WITH due AS (SELECT id, run_at FROM runs WHERE ]] .. WAITING .. [[ AND run_at <= $3 ]] .. filter
    .. [[ ORDER BY run_at LIMIT ]] .. limit .. [[ FOR UPDATE SKIP LOCKED),
      orphaned AS (SELECT id, run_at FROM runs WHERE state = 'running' AND lease_until < $3 ]] .. filter
    .. [[ LIMIT ]] .. limit .. [[ FOR UPDATE SKIP LOCKED) ]] .. CLAIM_SET
    .. [[WHERE id IN (SELECT id FROM (SELECT * FROM due UNION ALL SELECT * FROM orphaned) ready
      ORDER BY run_at LIMIT ]] .. (cap or limit) .. [[) RETURNING ]] .. RUN_COLUMNS
end

-- A list of names (flows a claim passes over, runs given back) as one
-- parameter, a JSON array: any number of them (a statement takes at most
-- 64 parameters, and 70 paused flows stopped every other flow's claims).
local function sqlite_list(param)
  return "(SELECT value FROM json_each(" .. param .. "))"
end
local function pg_list(param)
  return "(SELECT json_array_elements_text(CAST(" .. param .. " AS json)))"
end

-- The claim of every flow's runs but those of the paused flows (read by
-- the statement itself: a pause stored before the claim holds) and of the
-- flows listed in $5 (held back by their concurrency), at most $4.
local function claim_due(make, list, flow)
  return make("AND " .. flow .. " NOT IN (SELECT flow FROM flow_pauses) AND " .. flow .. " NOT IN " .. list("$5"), "$4")
end

-- What differs between the two SQL dialects.
local DIALECTS = {
  sqlite = {
    claim = sqlite_claim("AND +flow = $4", "$5"),
    claim_due = claim_due(sqlite_claim, sqlite_list, "+flow"),
    list = sqlite_list,
  },
  postgres = {
    claim = pg_claim("AND flow || '' = $4", "$5"),
    claim_due = claim_due(pg_claim, pg_list, "flow || ''"),
    list = pg_list,
    -- a flow's concurrency holds across instances: its claims take turns
    -- (the lock lasts until the claim commits), and each counts the runs
    -- of the flow running anywhere, $6 at most
    claim_max = pg_claim("AND flow || '' = $4", "$5", "GREATEST(0, LEAST($5, $6 - (SELECT count(*) FROM runs "
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

S.WAITING, S.MIGRATIONS, S.RUN_COLUMNS, S.DIALECTS = WAITING, MIGRATIONS, RUN_COLUMNS, DIALECTS
S.PAUSED = { "SELECT flow FROM flow_pauses" } -- the paused flows (a claim's batch, a look's)
S.RUN_INSERT, S.RUN_TYPES, S.typed, S.INSERT_RUN_WITH_KEY, S.insert_run =
  RUN_INSERT, RUN_TYPES, typed, INSERT_RUN_WITH_KEY, insert_run

return S
