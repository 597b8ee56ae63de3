-- scheduler: fires cron triggers. One timer per (flow, expression, zone),
-- kept across reloads while the trigger is unchanged, so a reload neither
-- skips nor repeats a tick. A timer waits at most a minute before checking
-- the wall clock again, which keeps ticks on time when the clock is adjusted.
-- A tick is a stored run whose idempotency key names the tick, written with
-- the trigger's schedule state (last and next fire) in one transaction: when
-- several instances share a store, each tick runs once, whichever fires it.
-- Ticks missed while no instance ran follow the trigger's `missed` policy:
-- "skip" (the default) or "run_once" (one run on start, for the last tick
-- missed, with missed = true in its payload and trigger).
local timer = require "rill.c.timer"
local cron = require "rill.cron"
local queue = require "rill.engine.queue"
local store = require "rill.engine.store"
local log = require "rill.log"
local time = require "rill.time"
local metrics = require "rill.metrics"
local pauses = require "rill.engine.pauses"

local scheduler = {}

local fires_total = metrics.counter("rill_cron_fires_total",
  "Cron ticks fired by this process (each stored as a run; with several instances one of them runs it), by flow.",
  { "flow" })
local missed_total = metrics.counter("rill_cron_missed_total",
  "Cron ticks skipped because this process fired too late (over a minute: it was stopped or starved), by flow.",
  { "flow" })
local lateness = metrics.histogram("rill_cron_lateness_seconds",
  "How long after its scheduled time a cron tick fired, by flow.", { "flow" },
  { 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60 })

local MAX_WAIT = 60
local LATE_LIMIT = 60  -- a tick later than this (the process was stopped) is skipped
local entries = {}   -- key -> {flow_name, trigger, next, handle}
local active = {}    -- the flow versions in force (from the last reload)
local running = false
local saved = {}     -- key -> stored schedule state, read at start

local function key_of(flow_name, t)
  return flow_name .. " " .. t.expr .. " " .. t.tz
end

local arm

-- tick(t, scheduled, missed) -> the trigger info, payload and idempotency
-- key of the run of cron trigger t's tick at `scheduled` (seconds).
function scheduler.tick(t, scheduled, missed)
  local ms = math.floor(scheduled * 1000 + 0.5)
  return { type = "cron", expr = t.expr, tz = t.tz, scheduled = time.iso(scheduled), missed = missed },
    { scheduled = time.iso(scheduled), fired = time.iso(time.now()), expr = t.expr, tz = t.tz, missed = missed },
    "cron " .. t.expr .. " " .. t.tz .. " " .. ms
end

-- Stores the run of one tick (at `scheduled`, seconds) and the schedule state.
local function submit_tick(flow, entry, scheduled, next_fire, missed)
  local t = entry.trigger
  local ms = math.floor(scheduled * 1000 + 0.5)
  local info, payload, key = scheduler.tick(t, scheduled, missed)
  queue.submit(flow, info, payload,
    { idem_key = key,
      extra = { store.schedule_stmt(entry.key, flow.name, ms, next_fire and math.floor(next_fire * 1000 + 0.5)) } },
    function(id, dup)
      if not id then
        log.error("a cron tick could not be stored", { flow = flow.name, expr = t.expr, error = dup })
      elseif dup then
        log.write("debug", "cron tick already taken by another instance", { flow = flow.name, expr = t.expr })
      end
    end)
end

local function fire(entry)
  local flow = active[entry.flow_name]
  if not flow then return end
  local scheduled = entry.next
  entry.next = cron.next(entry.trigger.spec, scheduled, entry.trigger.tz)
  if pauses.is_paused(flow.name) then
    -- skipped, not stored: a paused flow starts no runs, and resuming it
    -- does not replay the ticks it missed (the schedule state moves on, so
    -- a restart does not count them as missed either)
    log.info("cron tick skipped: the flow is paused", { flow = flow.name, expr = entry.trigger.expr,
      at = time.iso(scheduled) })
    local ms = math.floor(scheduled * 1000 + 0.5)
    store.batch({ store.schedule_stmt(entry.key, flow.name, ms, entry.next and math.floor(entry.next * 1000 + 0.5)) },
      function(_, err)
        if err then log.warn("a skipped cron tick could not be recorded", { flow = flow.name, error = err }) end
      end)
    return
  end
  fires_total:labels(flow.name):inc()
  lateness:labels(flow.name):observe(math.max(0, time.now() - scheduled))
  log.write("debug", "cron tick", { flow = flow.name, expr = entry.trigger.expr, at = time.iso(scheduled) })
  submit_tick(flow, entry, scheduled, entry.next)
end

-- The last tick of spec at or before `now` and strictly after `after`
-- (seconds), or nil. Searched from a window before now that grows until it
-- holds a tick, so that a per-second schedule down for a week costs a
-- minute's ticks, not a week's.
local function last_tick(spec, tz, after, now)
  local window = 60
  while true do
    local from = math.max(after, now - window)
    local x = cron.next(spec, from, tz)
    if x and x <= now then
      local last = x
      x = cron.next(spec, x, tz)
      while x and x <= now do last, x = x, cron.next(spec, x, tz) end
      return last
    end
    if from == after or not x then return nil end
    window = window * 8
  end
end

-- A trigger's ticks missed while rill was down (known from the stored
-- schedule state): when its policy says so, one run for the last of them,
-- the one that is due now (Monday's report, not the one of three weeks
-- ago). Its idempotency key names that tick, so instances starting together
-- store it once; the schedule state then records it as the last fire, so a
-- second restart before the next tick catches nothing up. -> true when a
-- catch-up was stored.
local function catch_up(entry, state)
  if entry.trigger.missed ~= "run_once" or not (state and state.last_fire) then return false end
  local t = entry.trigger
  local missed = last_tick(t.spec, t.tz, state.last_fire / 1000, time.now())
  if not missed then return false end
  log.info("running once for missed cron ticks", { flow = entry.flow_name, expr = t.expr,
    first_missed = time.iso(cron.next(t.spec, state.last_fire / 1000, t.tz)), running = time.iso(missed) })
  submit_tick(active[entry.flow_name], entry, missed, entry.next, true)
  return true
end

arm = function(entry)
  if not running or not entry.next then return end
  local now = time.now()
  local wait = entry.next - now
  if wait <= -LATE_LIMIT then
    log.warn("cron tick missed", { flow = entry.flow_name, expr = entry.trigger.expr, at = time.iso(entry.next) })
    missed_total:labels(entry.flow_name):inc()
    entry.next = cron.next(entry.trigger.spec, now, entry.trigger.tz)
    return arm(entry)
  elseif wait <= 0 then
    fire(entry)
    return arm(entry)
  end
  entry.handle = timer.after(math.min(wait, MAX_WAIT), function()
    entry.handle = nil
    if time.now() >= entry.next then fire(entry) end
    arm(entry)
  end)
end

local function stop_entry(entry)
  if entry.handle then entry.handle:stop() end
  entry.handle = nil
end

-- sync(active_flows): starts timers for new cron triggers, stops removed ones.
function scheduler.sync(active_flows)
  active = active_flows
  local wanted = {}
  for name, flow in pairs(active_flows) do
    for _, t in ipairs(flow.triggers) do
      if t.type == "cron" then wanted[key_of(name, t)] = { name = name, trigger = t } end
    end
  end
  for key, entry in pairs(entries) do
    if not wanted[key] then
      stop_entry(entry)
      entries[key] = nil
    end
  end
  for key, w in pairs(wanted) do
    local entry = entries[key]
    if entry then
      entry.trigger = w.trigger   -- same schedule, maybe a new version of the flow
    else
      entry = { key = key, flow_name = w.name, trigger = w.trigger,
                next = cron.next(w.trigger.spec, time.now(), w.trigger.tz) }
      entries[key] = entry
      if running then catch_up(entry, saved[key]) end
      arm(entry)
    end
  end
end

-- start(): fires triggers from now on. In a task: reads the stored schedule
-- state first, for the missed-ticks policy.
local stopped = false

-- start(): reads the schedule state (in a task), then arms every trigger.
-- A store that does not answer (locked by another process, down) delays
-- the cron triggers, not rill: the read is tried again, 1 s later, then
-- 2, 4... up to a minute, while rill serves (raised into serve's start, it
-- made rill exit 1 when the store was locked just after the port opened).
local retry_timer, retry_wait
local function retry_start(err)
  retry_wait = math.min((retry_wait or 0.5) * 2, MAX_WAIT)
  log.warn("reading the cron schedules' state failed: the cron triggers start once it can be read",
    { error = tostring(err), retry_in = retry_wait })
  retry_timer = timer.after(retry_wait, function()
    retry_timer = nil
    require("rill.c.task").spawn(scheduler.start, function(_, ok, e)
      if not ok then log.error("starting the cron schedules failed", { error = tostring(e) }) end
    end)
  end)
end

function scheduler.start()
  stopped = false
  local ok, state = pcall(store.schedules)
  if stopped then return end -- stopped while the schedule state was read
  if not ok then return retry_start(state) end
  saved, retry_wait = state, nil
  running = true
  local n, caught_up = 0, 0
  for key, entry in pairs(entries) do
    n = n + 1
    if catch_up(entry, saved[key]) then caught_up = caught_up + 1 end
    if not entry.handle then arm(entry) end
  end
  log.info("cron schedules started", { triggers = n, caught_up = caught_up })
end

function scheduler.stop()
  stopped = true
  running = false
  if retry_timer then retry_timer:stop() end
  retry_timer = nil
  for _, entry in pairs(entries) do stop_entry(entry) end
end

-- next_fires() -> {flow = ..., expr = ..., next = iso} for every trigger (ops, tests).
function scheduler.next_fires()
  local out = {}
  for _, e in pairs(entries) do
    out[#out + 1] = { flow = e.flow_name, expr = e.trigger.expr, tz = e.trigger.tz,
                      next = e.next and time.iso(e.next) or nil }
  end
  table.sort(out, function(a, b) return (a.next or "") < (b.next or "") end)
  return out
end

return scheduler
