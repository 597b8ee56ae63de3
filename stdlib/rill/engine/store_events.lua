-- store_events: the store's events, waits, event fan-out and cron schedules.
-- Part of store.lua, split off to keep files short: store.lua calls this
-- file's function with its table once, as it loads.
local schema = require "rill.engine.store_schema"
local RUN_INSERT, typed, insert_run = schema.RUN_INSERT, schema.typed, schema.insert_run

return function(store)
local now_ms = store.now_ms

-- Both sides of a match take this lock first on Postgres (one per event
-- name, held to the end of their transaction): a wait registered while an
-- event of its name is stored sees it, or the event sees the wait.
local function event_lock(stmts, name)
  if store.shared() then -- (dialect.shared, in store.lua)
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
end
