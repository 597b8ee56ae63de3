-- events: named events that end the waits of parked runs (wait_for in
-- steps.lua). An event is stored first (emit(), or with the run of an async
-- webhook whose trigger says emit = NAME), then delivered: every run waiting
-- for that name whose `match` it satisfies gets it as its wait's result and
-- is due at once. An event stored by a process that stopped before
-- delivering it is delivered by the next sweep, in any instance; a wait
-- that starts after its event was stored finds it too (steps.lua looks
-- for events since the run was created). An event also starts a stored run
-- of every flow with an `event` trigger on its name (the fan-out), stored
-- in the event's own transaction, once per event and flow (event_runs).
local json = require "rill.json"
local log = require "rill.log"
local store = require "rill.engine.store"
local task = require "rill.c.task"
local timer = require "rill.c.timer"
local utf8_error = require("rill.c.utf8").first_invalid

-- max_size: max_event_size; max_emits: the setting of that name
local events = { sweep_interval = 5, max_size = 1024 * 1024, max_emits = 1000 }

-- The queue and the flows are above events (docs/architecture.md, "Layout"):
-- they hand it, as they load, what it needs of them.
events.kick = function() end -- the queue looks for due runs at once (queue.lua: its kick)
events.default_attempts = nil -- () -> a run's attempts when its flow sets none (queue.lua)
events.active_flows = function() return {} end -- () -> the flows in force, by name (flows.lua)

local runs_total = require("rill.metrics").counter("rill_event_runs_total",
  "Runs started by events (event triggers), by event name and flow; an event emitted again starts none.",
  { "event", "flow" })

local refused_total = require("rill.metrics").counter("rill_events_refused_total",
  "Events a flow's emit() could not store: its data over max_event_size, or its run past max_emits.", { "reason" })

-- matches(match, data): every field of match equals data's (tables are
-- compared field by field, so match names a part of the event).
local function matches(match, data)
  if type(match) ~= "table" then return match == data end
  if type(data) ~= "table" then return false end
  for k, v in pairs(match) do
    if not matches(v, data[k]) then return false end
  end
  return true
end
events.matches = matches

-- The result a wait's step records for event e (stored form).
local function result_of(e, data)
  return json.encode { name = e.name, id = e.id, data = data, at = require("rill.time").iso(e.created / 1000) }
end
events.result_of = result_of

-- deliver(e): ends the waits event e (a stored event row) matches. In a task.
function events.deliver(e)
  local data = e.data and json.try_decode(e.data)
  local matched, result = {}, nil
  for _, w in ipairs(store.waits(e.name)) do
    local match = w.match and json.try_decode(w.match)
    -- an event older than the waiting run (one the sweep delivers late) is not its
    if e.created >= w.since and (match == nil or matches(match, data)) then
      result = result or result_of(e, data) -- the same for every wait it ends
      matched[#matched + 1] = { run_id = w.run_id, seq = w.seq, name = w.name, result = result }
    end
  end
  store.deliver(e, matched)
  if #matched > 0 then
    log.debug("event delivered", { event = e.name, id = e.id, runs = #matched })
    events.kick()
  end
end

-- ---- fan-out: event triggers ----

-- The flows an event starts: every active flow with an `event` trigger on
-- its name whose `match` table the data satisfies (a `match` function is
-- asked in the flow's own run: see skip). One run per flow, whatever the
-- number of its triggers on the name.
local function subscribers(name, data)
  local out = {}
  for _, flow in pairs(events.active_flows()) do
    for _, t in ipairs(flow.triggers) do
      if t.type == "event" and t.name == name and (t.match == nil or matches(t.match, data)) then
        out[#out + 1] = flow
        break
      end
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- fanout_stmts(e, cause) -> the statements that store one run of each flow
-- the event (stored form) starts, for the event's own batch: the runs exist
-- exactly when the event does. cause: the emitting run {id, depth, chain},
-- or nil. Each run is queued (a poller claims it: the emitter's batch is
-- not the place to start runs) and, past max_depth, stored dead.
function events.fanout_stmts(e, cause)
  local flows = subscribers(e.name, e.data and json.try_decode(e.data))
  local stmts = {}
  if #flows == 0 then return stmts end
  local runner, crypto = require "rill.engine.runner", require "rill.c.crypto"
  local now = store.now_ms()
  local depth = cause and (cause.depth or 0) + 1 or 0
  local trigger = json.encode { type = "event", event = e.name, event_id = e.id, emitted_by = cause and cause.id }
  local names = {}
  for i, flow in ipairs(flows) do names[i] = flow.name end
  e.starts = names -- for started() once the batch is committed
  for _, flow in ipairs(flows) do
    local chain = cause and cause.chain and (cause.chain .. " > " .. flow.name) or flow.name
    local r = { id = crypto.id7(), flow = flow.name, version = flow.version, trigger = trigger, payload = e.data,
      state = "queued", attempt = 0, max_attempts = flow.retries and flow.retries.attempts or events.default_attempts(),
      run_at = now, parent = cause and cause.id, depth = depth, created = now, chain = chain,
      settings = require("rill.settings").record(flow) } -- as for any stored run (queue.submit)
    if depth >= runner.max_depth then
      r.state, r.finished = "dead", now
      r.error = json.encode { message = "refused: " .. runner.too_deep(chain) }
      log.error("run refused: " .. runner.too_deep(chain), { flow = flow.name, run_id = r.id, event = e.name })
    end
    for _, st in ipairs(store.event_run_stmts(r, e, cause and cause.id)) do stmts[#stmts + 1] = st end
  end
  return stmts
end

-- started(e): the event's fan-out is committed (and the event was new):
-- counted, logged, and the queue looks for the runs at once.
local function started(e)
  if not e.starts or #e.starts == 0 then return end
  for _, name in ipairs(e.starts) do runs_total:labels(e.name, name):inc() end
  log.info("event starts runs", { event = e.name, id = e.id, flows = table.concat(e.starts, ", ") })
  events.kick()
end

-- stmts(e, cause) -> the statements that store event e and its fan-out,
-- for a run's batch (an async webhook's emit).
function events.stmts(e, cause)
  local stmts = store.emit_stmts(e)
  for _, st in ipairs(events.fanout_stmts(e, cause)) do stmts[#stmts + 1] = st end
  return stmts
end

-- skip(triggers, ctx) -> why a run started by an event does not go on: the
-- flow's `match` function, asked in the run itself, said no. nil: go on.
function events.skip(triggers, ctx)
  if type(ctx.trigger) ~= "table" or ctx.trigger.type ~= "event" then return nil end
  local asked = false
  for _, t in ipairs(triggers) do
    if t.type == "event" and t.name == ctx.trigger.event then
      if not t.match_fn then return nil end
      asked = true
      if t.match_fn(ctx.payload, ctx.trigger) then return nil end
    end
  end
  return asked and "the event did not match" or nil
end

-- count_emit(run): one more emit by run (the running task's data), refused
-- past max_emits: each stores an event and a run of every flow it starts,
-- and max_depth bounds only chains of runs, not how many one run starts.
-- Logged once per run (the first refusal), counted each time.
function events.count_emit(run)
  if not run then return end
  local n = (run.emitted or 0) + 1
  if n > events.max_emits then
    refused_total:labels("max_emits"):inc()
    if n == events.max_emits + 1 then
      log.warn("emit refused: the run emitted max_emits events", { max_emits = events.max_emits })
    end
    run.emitted = n
    error(string.format("emit: this run has emitted %d events, the limit max_emits", events.max_emits), 3)
  end
  run.emitted = n
end

-- row(name, data, id) -> the stored form of a new event.
function events.row(name, data, id)
  if type(name) ~= "string" or name == "" or #name > 200 then
    error("emit: the first argument is the event's name, a string of 1 to 200 characters", 3)
  end
  local ok, encoded = pcall(json.encode, data == nil and json.null or data)
  if not ok then error("emit: the event's data is not JSON: " .. encoded, 3) end
  -- cjson copies a string's bytes as they are: checked as by_hand checks an
  -- operator's event (Postgres refused the event; SQLite stored it, and its
  -- runs' payloads, as bytes that made the admin API's JSON invalid)
  for _, part in ipairs { { "name", name }, { "id", id }, { "data as JSON", encoded } } do
    local bad = type(part[2]) == "string" and utf8_error(part[2])
    if bad then error(string.format("emit: the event's %s is not UTF-8 (byte %d)", part[1], bad), 3) end
  end
  if #encoded > events.max_size then
    -- stored with the event, and again with each run it starts: bounded
    refused_total:labels("max_event_size"):inc()
    error(string.format("emit: the data of event %s is %d bytes as JSON, over max_event_size (%d KiB)",
      name, #encoded, math.floor(events.max_size / 1024)), 3)
  end
  return { id = id or require("rill.c.crypto").id7(), name = name, data = encoded, created = store.now_ms() }
end

-- publish(name, data, id, cause) -> the event (stored form; e.starts: the
-- flows it starts) and whether it is new: stored (once per id) with the
-- runs of the flows it starts (cause: the emitting run, or nil), then
-- delivered to waits. An id seen before stores and starts nothing. In a task.
function events.publish(name, data, id, cause)
  local e = events.row(name, data, id)
  local fanout = events.fanout_stmts(e, cause)
  local new = store.emit(e, fanout)
  if new then
    started(e)
    events.deliver(e)
  end
  return e, new
end

-- by_hand(name, body, id) -> the event (e.starts: the flows it starts) and
-- whether it is new, or nil, an HTTP status and why: an event emitted by
-- hand (the admin API's POST /api/events/NAME, which `rill emit` sends),
-- its data the JSON text body (none: null), published as a flow's emit()
-- outside a run is. Its name, id and data are checked here (4xx, the
-- request's fault); a store that cannot take the event is 503 (the
-- request was fine: the operator tries again). In a task.
function events.by_hand(name, body, id)
  for _, part in ipairs { { "an event's name", name }, { "id", id } } do
    local what, s = part[1], part[2]
    if s ~= nil and (s == "" or #s > 200) then return nil, 400, what .. " is 1 to 200 characters" end
    -- cjson copies bytes as they are: stored and answered as they came, they
    -- would make the admin API's JSON (and the runs' payloads) invalid
    local bad = s and (utf8_error(s) or s:find("%c"))
    if bad then return nil, 400, what .. " must be printable UTF-8: byte " .. bad .. " is not" end
  end
  local data = json.null
  if body and body:find("%S") then
    local bad = utf8_error(body)
    if bad then return nil, 400, "the event's data is not JSON: byte " .. bad .. " is not UTF-8" end
    local derr
    data, derr = json.try_decode(body)
    if data == nil then return nil, 400, "the event's data is not JSON: " .. json.where(body, derr) end
  end
  local ok, e = pcall(events.row, name, data, id)
  if not ok then
    local msg = tostring(e):gsub("^[^:]*:%d+: ", "")
    return nil, msg:find("max_event_size", 1, true) and 413 or 400, msg
  end
  local stored, new = pcall(store.emit, e, events.fanout_stmts(e))
  if not stored then
    log.error("an event emitted from the admin API could not be stored: answered 503",
      { event = name, id = e.id, error = tostring(new) })
    return nil, 503, "the event could not be stored (" .. tostring(new) .. "); retry later"
  end
  if new then
    started(e)
    -- stored: a delivery that fails now is the sweep's (an error here would
    -- tell the operator to send again an event that is stored)
    local delivered, err = pcall(events.deliver, e)
    if not delivered then
      log.warn("delivering an event failed; the sweep tries again", { event = name, error = tostring(err) })
    end
  end
  return e, new
end

-- emit(name, data, id, cause) -> the event's id (publish, for flows).
function events.emit(name, data, id, cause)
  return (events.publish(name, data, id, cause)).id
end

-- deliver_later(e): delivers a stored event (new: stored with a run that
-- was not a duplicate) from a task of its own (the sweep catches it if this
-- process stops first).
function events.deliver_later(e)
  started(e)
  task.spawn(events.deliver, function(_, ok, err)
    if not ok then log.warn("delivering an event failed; the sweep tries again", { event = e.name, error = tostring(err) }) end
  end, 30, nil, e)
end

local sweep_timer, sweeping

local function sweep()
  task.spawn(function()
    for _, e in ipairs(store.undelivered(store.now_ms() - events.sweep_interval * 1000)) do events.deliver(e) end
  end, function(_, ok, err)
    if not ok then log.warn("delivering stored events failed", { error = tostring(err) }) end
    if sweeping then sweep_timer = timer.after(events.sweep_interval, sweep) end
  end, 60)
end

function events.start()
  if sweeping then return end
  sweeping = true
  sweep_timer = timer.after(events.sweep_interval, sweep)
end

function events.stop()
  sweeping = false
  if sweep_timer then sweep_timer:stop() end
end

return events
