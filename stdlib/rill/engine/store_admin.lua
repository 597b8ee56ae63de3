-- store_admin: the runs as the CLI and the admin API read and change them
-- (list, show, retry, cancel, delete, pauses) and the pruning of old ones.
-- Part of store.lua, split off to keep files short: store.lua calls this
-- file's function with its table once, as it loads.
local schema = require "rill.engine.store_schema"
local WAITING, RUN_COLUMNS = schema.WAITING, schema.RUN_COLUMNS

return function(store)
local now_ms = store.now_ms

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
    -- a delivery id is forgotten with its run: a run kept (dead, asleep,
    -- waiting) keeps it, or a redelivery would make a second run of it
    { "DELETE FROM idempotency WHERE created < $1 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = idempotency.run_id)",
      before, n = 1 },
    -- and which run an event started, with that run: a run kept (dead,
    -- asleep) keeps it, or the event emitted again (its own row pruned)
    -- would start a second run of the flow beside the first
    { "DELETE FROM event_runs WHERE created < $1 AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.id = event_runs.run_id)",
      before, n = 1 },
    -- an event is kept while a run created before it has not ended: a wait
    -- that run starts later must find it (docs/flows.md, waiting for an
    -- event). Two reads, each of a partial index (runs_due, runs_leased):
    -- this runs with every batch of 5,000 runs pruned
    { "DELETE FROM events WHERE created < $1 AND delivered = 1 "
      .. "AND created < COALESCE((SELECT MIN(created) FROM runs WHERE " .. WAITING .. "), $1) "
      .. "AND created < COALESCE((SELECT MIN(created) FROM runs WHERE state = 'running'), $1)", before, n = 1 },
    -- waits of runs that ended otherwise (dead, deleted)
    { "DELETE FROM run_waits WHERE NOT EXISTS (SELECT 1 FROM runs WHERE id = run_waits.run_id AND state IN "
      .. "('waiting', 'running', 'queued', 'retrying'))" },
  }
  return store.batch(stmts, function(res, err)
    if callback then callback(res and res[3].changes, err) end
  end)
end
end
