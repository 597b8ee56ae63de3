-- queue: durable runs and their policy. A run is stored before anyone is
-- told it was accepted; this instance then runs it at once when it has a
-- free slot (the row is written already leased to it), or a poller claims it
-- later. Every attempt ends by writing its outcome: succeeded, retrying (at a
-- later time, exponential backoff with jitter), or dead (attempts exhausted,
-- or the flow called fail()). A run whose instance died keeps its lease until
-- it expires; then any instance claims it again (at-least-once).
-- Concurrency: at most `concurrency` runs at once in this instance, and at
-- most flow.concurrency runs of one flow (in all instances together on a
-- shared store); the rest wait in the store.
local json = require "rill.json"
local crypto = require "rill.c.crypto"
local timer = require "rill.c.timer"
local tz = require "rill.c.tz"
local store = require "rill.engine.store"
local runner = require "rill.engine.runner"
local log = require "rill.log"
local metrics = require "rill.metrics"
local pauses = require "rill.engine.pauses"
local settings = require "rill.settings"

local queue = {
  concurrency = 100,     -- runs at once in this instance
  lease = 60,            -- seconds a claimed run stays ours without renewal
  poll_interval = 1,     -- seconds between looks for ready runs
  retention = 7 * 86400, -- seconds finished runs are kept
  attempts = 5,          -- default attempts of a run (1 = no retry)
  backoff = 10,          -- seconds before the first retry, doubled each time
  max_backoff = 3600,    -- cap of the backoff
  record_sync = "failed", -- sync webhook runs stored (history) after they answered: failed, all, none
  load_file = nil,       -- flows.load_file, for a run pinned to an older version (flows.lua, above the queue)
}

local instance            -- this process's owner id in the store
local running, running_by_flow = 0, {}
-- Attempts that ended here and whose outcome is not stored yet: their slot
-- is free (the run no longer executes; holding it until the outcome's
-- commit put a quarter of a busy webhook's runs through the store and a
-- claim instead of running them at once), but the run is still ours: its
-- lease is renewed, and a drain waits for the outcome.
local storing = 0
local active = {}         -- the flow versions in force (flows.lua)
local started = false
local poll_timer, renew_timer, prune_timer, first_prune
local polling, poll_again = false, false
local maybe_queued = true -- runs may wait in the store: look after each finish
local store_outcome       -- defined below
local counts = { succeeded = 0, retrying = 0, dead = 0, failed = 0, submitted = 0, duplicates = 0 }
queue.counts = counts

local submitted_total = metrics.counter("rill_queue_submitted_total",
  "Runs stored by this process (async webhooks, cron ticks, database events), by flow; duplicates not included.",
  { "flow" })
local duplicates_total = metrics.counter("rill_queue_duplicates_total",
  "Deliveries refused as duplicates of a stored run (same idempotency key), by flow.", { "flow" })
local outcomes_total = metrics.counter("rill_queue_outcomes_total",
  "Attempts of stored runs whose outcome this process stored, by flow and state: succeeded, retrying, dead, sleeping, waiting.",
  { "flow", "state" })
-- The depth gauges, the stored forms of runs, record(), pruning: queue_upkeep.lua
local upkeep = require("rill.engine.queue_upkeep")(queue, function() return started end)
local encode_or_nil, stored_lines, request_as_json = upkeep.encode_or_nil, upkeep.stored_lines, upkeep.request_as_json
local prune, every, read_depth = upkeep.prune, upkeep.every, upkeep.read_depth
metrics.gauge("rill_queue_slots_used", "Stored runs executing in this process (at most the concurrency setting).",
  nil, function(f) f:set(running) end)

function queue.configure(c)
  queue.concurrency = c.concurrency or queue.concurrency
  queue.lease = c.lease or queue.lease
  queue.poll_interval = c.poll_interval or queue.poll_interval
  queue.retention = c.retention or queue.retention
  queue.attempts = c.retry_attempts or queue.attempts
  queue.backoff = c.retry_backoff or queue.backoff
  queue.max_backoff = c.retry_max_backoff or queue.max_backoff
  if c.record_sync ~= nil then queue.record_sync = c.record_sync end
end

-- delay(attempt, base, max) -> seconds before the next attempt: the
-- exponential delay base * 2^(attempt-1), capped, of which the second half
-- is random ("equal jitter": never sooner than half, spread to avoid herds).
function queue.delay(attempt, base, max)
  local d = math.min(max, base * 2 ^ (attempt - 1))
  return d / 2 + math.random() * d / 2
end

local function retry_policy(flow)
  local r = flow.retries or {}
  return r.attempts or queue.attempts, r.backoff or queue.backoff, r.max_backoff or queue.max_backoff
end

local function free_slots(flow)
  local free = queue.concurrency - running
  if flow.concurrency then free = math.min(free, flow.concurrency - (running_by_flow[flow.name] or 0)) end
  return free
end

-- hold(name, n): n more slots taken by runs of flow `name` (n < 0 frees).
local function hold(name, n)
  running = running + n
  running_by_flow[name] = (running_by_flow[name] or 0) + n
end

local poll

-- kick(): look for ready runs soon (coalesced: one poll at a time).
local function kick()
  if not started then return end
  if polling then
    poll_again = true
    return
  end
  polling = true
  timer.after(0, poll)
end
queue.kick = kick

-- wake_at(ms): look for ready runs at that time. One timer for the
-- earliest time asked, not one per waiting run: a run parked for a week
-- holds nothing here (and the poll every poll_interval finds due runs
-- anyway; this only makes a short wait exact).
local wake_timer, wake_ms
local function wake_at(ms)
  if wake_timer and wake_ms <= ms then return end
  if wake_timer then wake_timer:stop() end
  wake_ms = ms
  wake_timer = timer.after(math.max(0, ms - store.now_ms()) / 1000 + 0.01, function()
    wake_timer, wake_ms = nil, nil
    kick()
  end)
end

-- ---- running an attempt ----

local finished

-- An attempt's options, in one table refilled for each start (as a sync
-- webhook's): runner.start reads all of it before the run's first
-- instruction and keeps none of it.
local EXEC_OPTS = { durable = true }
local function execute(flow, trigger, payload, row, request)
  local o = EXEC_OPTS
  o.id, o.attempt, o.request, o.on_done, o.caller, o.steps = row.id, row.attempt, request, finished, row, row.steps
  o.parent_id, o.depth, o.chain, o.created = row.parent, row.depth, row.chain, row.created
  o.settings = row.settings and json.try_decode(row.settings)
  runner.start(flow, trigger, payload, o)
  o.request, o.caller, o.steps, o.settings = nil, nil, nil, nil -- (not kept alive until the next start)
end

-- The versions a run's attempts ran, "attempt:version ...", with this one's.
local function versions_with(row, run)
  local entry = run.attempt .. ":" .. tostring(run.version)
  local v = row.versions
  if v == nil or v == "" then return entry end
  if v == entry or v:sub(-#entry - 1) == " " .. entry then return v end
  return v .. " " .. entry
end

finished = function(run)
  local row = run.caller
  local flow = active[row.flow]
  local f = { finished = store.now_ms(), version = run.version, versions = versions_with(row, run) }
  if run.park then
    -- parked by sleep_until or wait_for: back in the store until its wake
    -- time (or an event); the attempt does not count (it is taken again
    -- when the run wakes)
    f.state, f.run_at, f.attempt, f.wait_seq = run.state, run.park, run.attempt - 1, run.wait_seq
  elseif run.state == "succeeded" then
    f.state = "succeeded"
    if run.result ~= nil then
      -- JSON is UTF-8 text (Postgres refused a result of bytes: the outcome, never stored, ran again)
      local s, why = json.stored_text(run.result)
      if s then
        f.result = s
      else
        f.state, run.error = "dead", { message = "the run's result is not JSON: " .. why, no_retry = true }
      end
    end
  end
  if not (f.state == "succeeded" or run.park) then
    f.error = log.text(encode_or_nil { message = run.error.message, traceback = run.error.traceback })
    local attempts, base, max = retry_policy(flow or {})
    attempts = math.min(attempts, row.max_attempts or attempts)
    if run.error.no_retry or run.attempt >= attempts then
      f.state = "dead"
      log.write("error", "run is dead after " .. run.attempt .. " attempt(s)", { error = run.error.message }, run)
    else
      local delay = queue.delay(run.attempt, base, max)
      f.state, f.run_at = "retrying", f.finished + math.floor(delay * 1000)
      log.write("warn", "run will be retried", { attempt = run.attempt, of = attempts,
        in_s = math.floor(delay * 10 + 0.5) / 10 }, run)
    end
  end
  local lines = stored_lines(run)
  hold(row.flow, -1)
  storing = storing + 1
  store_outcome { row = row, run = run, f = f, lines = lines, tries = 0, delay = 0.2,
    give_up = tz.now() + queue.lease } -- the real clock: a test's clock jumps by days
end

-- An outcome stored (ours: true), dropped (false: the run was no longer
-- ours) or given up on (nil, after tries for as long as a lease).
local function outcome_stored(o, ours, err)
  local row, run, f, tries = o.row, o.run, o.f, o.tries
  storing = storing - 1
  counts[f.state] = (counts[f.state] or 0) + 1
  outcomes_total:labels(row.flow, f.state):inc()
  if ours == nil then
    log.write("error", "the run's outcome could not be stored; it will run again when its lease expires",
      { error = err, tries = tries }, run)
  elseif not ours and tries > 1 then
    log.write("info", "the run's outcome was stored by an earlier try, or another instance took the run", nil, run)
  elseif not ours then
    log.write("warn", "the run's lease had expired and another instance took it; this outcome is dropped", nil, run)
  elseif tries > 1 then
    log.write("info", "the run's outcome is stored", { tries = tries }, run)
  end
  if f.state == "retrying" or f.state == "sleeping" or f.state == "waiting" then
    wake_at(f.run_at)
  end
  if maybe_queued then kick() end
end

-- Stores a run's outcome (o: row, run, f, lines, tries, delay, give_up);
-- when the store cannot take it (down, stalled), tries again, 0.2 s
-- doubling to 5 s, for as long as a lease: the run is still ours meanwhile
-- (renewals go on), and running it again because one write failed would
-- repeat what it did. No closure per run: this is every durable run's
-- path, and a closure is a trace the JIT gives up on (and ~4 blocks).
local function outcome_tried(ours, err, o)
  if ours == nil and tz.now() + o.delay < o.give_up then
    if o.tries == 1 then
      log.write("warn", "the run's outcome could not be stored; trying again", { error = err }, o.run)
    end
    timer.after(o.delay, function() store_outcome(o) end)
    o.delay = math.min(o.delay * 2, 5)
    return
  end
  outcome_stored(o, ours, err)
end
store_outcome = function(o)
  o.tries = o.tries + 1
  store.finish(o.row.id, instance, o.run.attempt, o.f, o.lines, outcome_tried, o)
end

-- The version a run pinned to the one that failed (`rill runs retry
-- --same-version`) runs: the active one, or its source kept in the store,
-- loaded again (once per process). nil and why when it cannot be had.
local pinned_versions = {}
local function pinned_flow(row)
  local flow = active[row.flow]
  if flow and flow.version == row.pinned then return flow end
  if pinned_versions[row.pinned] then return pinned_versions[row.pinned] end
  local v = store.version(row.pinned)
  if not v then return nil, "version " .. row.pinned .. " of flow '" .. row.flow .. "' is not in the store" end
  local loaded, err = queue.load_file(v.file or row.flow, v.source, v.modules)
  if not loaded then return nil, "version " .. row.pinned .. " no longer loads: " .. tostring(err) end
  pinned_versions[row.pinned] = loaded
  return loaded
end

-- Starts a claimed row (a table from the store).
local function start_row(row)
  local flow, pin_err = active[row.flow], nil
  if row.pinned then flow, pin_err = pinned_flow(row) end
  local payload = row.payload and json.try_decode(row.payload)
  local trigger = json.try_decode(row.trigger) or { type = "unknown" }
  local request = row.request and json.try_decode(row.request)
  if request and request.body == nil then request.body = row.payload end
  -- A run that cannot start still runs as an attempt that fails at once, so
  -- that its outcome and its slot follow the one path of every attempt.
  local why
  if row.attempt > row.max_attempts then
    why = "its last attempt never finished: the process running it stopped (lease expired)"
  elseif pin_err then
    why = pin_err
  elseif not flow then
    why = "flow '" .. row.flow .. "' is not loaded in this instance"
  end
  if why then
    flow = { name = row.flow, version = row.version, run = function() runner.fail(why, 0) end }
  end
  execute(flow, trigger, payload, row, request)
end

-- ---- submitting ----

-- The completed steps of a run stored just now: none, one table shared by
-- every such run (steps.lua only reads a run's recorded steps; a write,
-- which would reach them all, raises).
local NO_STEPS = setmetatable({}, { __newindex = function() error("NO_STEPS is shared by runs: not to be written", 2) end })

-- The end of a submit's insert; s: submit's arguments and its row, whose
-- state says what it decided (running: here at once; dead: refused).
local function submitted(id, dup, s)
  local flow, row, callback, arg = s.flow, s.row, s.callback, s.arg
  local here = row.state == "running"
  if not id then
    if here then hold(flow.name, -1) end
    return callback(nil, dup, arg)
  end
  if dup then
    counts.duplicates = counts.duplicates + 1
    duplicates_total:labels(flow.name):inc()
    if here then hold(flow.name, -1) end
    return callback(id, true, arg)
  end
  submitted_total:labels(flow.name):inc()
  callback(id, false, arg)
  if s.event then require("rill.engine.events").deliver_later(s.event) end
  if here then
    row.steps = NO_STEPS -- a run stored just now has no completed step: none to read
    execute(flow, s.trigger, s.payload, row, s.request)
  elseif row.state == "dead" then
    return
  elseif row.run_at <= row.created then
    maybe_queued = true
    kick()
  else
    wake_at(row.run_at)
  end
end

-- submit(flow, trigger, payload, opts, callback[, arg]): stores a new run of
-- a flow version and calls callback(run_id, duplicate, arg) once it is
-- committed, or callback(nil, err, arg). opts: payload_json (the payload as
-- JSON text already, e.g. a webhook's raw body), request (ctx.request), idem_key, run_at (ms),
-- parent (id), depth, chain (of the parent: "a > b"), trigger_json (the
-- trigger as JSON already: a route's, made once), extra (statements
-- for the same transaction), event (a stored-form event stored with the
-- run, with the runs it starts (events.stmts), and delivered once it is
-- committed). A run deeper than runner.max_depth is stored
-- dead, its error naming the chain, and never runs. opts is read before
-- submit returns and not kept: a caller may refill one table.
function queue.submit(flow, trigger, payload, opts, callback, arg)
  local now = store.now_ms()
  local run_at = opts.run_at or now
  local depth = opts.depth or 0
  local chain = opts.chain and (opts.chain .. " > " .. flow.name) or flow.name
  local refused = depth >= runner.max_depth
  -- Run here at once when a slot is free, unless the flow's concurrency is
  -- counted across instances (a shared store): then the run waits for a
  -- claim, which counts them.
  local here = started and not refused and run_at <= now and free_slots(flow) > 0
    and not (flow.concurrency and store.shared()) and not pauses.is_paused(flow.name)
  local request_json = opts.request and request_as_json(opts.request, opts.payload_json)
  local row = {
    id = opts.id or crypto.id7(), flow = flow.name, version = flow.version, trigger = opts.trigger_json or json.encode(trigger),
    payload = opts.payload_json or encode_or_nil(payload), request = request_json,
    state = here and "running" or "queued", attempt = here and 1 or 0,
    max_attempts = (retry_policy(flow)), run_at = run_at,
    lease_until = here and now + queue.lease * 1000 or nil, owner = here and instance or nil,
    parent = opts.parent, depth = depth, idem_key = opts.idem_key, created = now,
    started = here and now or nil, chain = chain,
    -- the values its attempts read, whatever changes meanwhile (docs/flows.md#settings)
    settings = settings.record(flow),
  }
  if refused then
    local message = "refused: " .. runner.too_deep(chain)
    row.state, row.finished = "dead", now
    row.error = json.encode { message = message }
    log.error("run refused: " .. message, { flow = flow.name, run_id = row.id })
  end
  if here then hold(flow.name, 1) end -- held from now, so concurrent submits see it
  counts.submitted = counts.submitted + 1
  local extra = opts.extra
  if opts.event then
    extra = {}
    for _, st in ipairs(opts.extra or {}) do extra[#extra + 1] = st end
    -- the event, and the runs of the flows it starts, with this run
    local cause = { id = row.id, depth = depth, chain = chain }
    for _, st in ipairs(require("rill.engine.events").stmts(opts.event, cause)) do extra[#extra + 1] = st end
  end
  store.enqueue(row, submitted, extra, { flow = flow, trigger = trigger, payload = payload, row = row,
    callback = callback, arg = arg, request = opts.request, event = opts.event })
end

-- ---- claiming ----

local claim_and_start = require("rill.engine.queue_claim")(queue, {
  running = function() return running end,
  free = free_slots,
  hold = hold,
  reserve = function(n) running = running + n end,
  active = function() return active end,
  is_started = function() return started end,
  instance = function() return instance end,
  start = start_row,
  maybe_queued = function() return maybe_queued end,
})

poll = function()
  require("rill.c.task").spawn(function()
    local rows
    rows, maybe_queued = claim_and_start()
    if #rows > 0 then poll_again = true end
  end, function(_, ok, err)
    polling = false
    if not ok then log.error("claiming queued runs failed", { error = tostring(err) }) end
    if poll_again and ok then
      poll_again = false
      kick()
    end
  end)
end

-- sync(active_flows, summary): the flow versions new runs and claims use;
-- the sources of those just loaded are kept in the store (for retries of
-- a run on the version it failed with).
function queue.sync(active_flows, summary)
  active = active_flows
  local stmts = {}
  for _, flow in pairs(active_flows) do
    for _, file in ipairs(summary and summary.loaded or {}) do
      if flow.file == file and flow.source then stmts[#stmts + 1] = store.version_stmt(flow) end
    end
  end
  if #stmts > 0 and store.is_open() then
    store.batch(stmts, function(_, err)
      if err then log.warn("flow versions could not be kept in the store", { error = err }) end
    end)
  end
  kick()
end

-- start(): claims and runs queued runs from now on.
function queue.start()
  instance = instance or crypto.id7()
  queue.instance = instance
  started = true
  poll_timer = every(queue.poll_interval, function()
    kick()
    read_depth()
  end)
  renew_timer = every(queue.lease / 3, function()
    if running + storing > 0 then
      store.renew(instance, math.floor(queue.lease * 1000), function(_, err)
        if err then log.warn("renewing run leases failed", { error = err }) end
      end)
    end
  end)
  -- hourly, or more often when runs are kept less than two hours
  prune_timer = every(math.max(1, math.min(3600, queue.retention / 2)), prune)
  first_prune = { t = timer.after(1, prune) }
  require("rill.engine.events").start()
  kick()
  read_depth()
end

-- stop(): no new claims; runs in progress finish (or their leases expire).
function queue.stop()
  started = false
  require("rill.engine.events").stop()
  for _, h in ipairs { poll_timer, renew_timer, prune_timer, first_prune } do
    if h then h.t:stop() end
  end
end

-- running() -> the runs executing here, and those that ended here whose
-- outcome is not stored yet (a drain waits for both).
function queue.running() return running + storing end

-- busy() -> whether a look for ready runs is in flight (rill test waits for
-- it before it swaps the store).
function queue.busy() return polling end

-- release(callback): the runs executing here go back to the queue at once
-- (their leases end now), for another instance or the next start; for a
-- shutdown that cannot wait for them. callback() once stored.
function queue.release(callback)
  store.release(instance, function(_, err)
    if err then log.error("runs could not be released; they run again when their leases expire",
      { error = err }) end
    callback()
  end)
end

-- events is below the queue (docs/architecture.md, "Layout"): what it needs of the queue
local events = require "rill.engine.events"
events.kick = kick
events.default_attempts = function() return queue.attempts end

return queue
