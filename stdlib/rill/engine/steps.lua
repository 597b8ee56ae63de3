-- steps: durable steps and sleeps inside stored runs (async webhooks, cron
-- ticks, database events).
--   step(name, fn [, {retries = n, backoff = seconds, retry = false}]) -> fn's result
--   sleep_until(name, time)   sleep_for(name, duration)
--   wait_for(name, {event, match, timeout}) -> the event, or {timed_out = true}
--   emit(name, data [, {id = ...}]) -> the event's id
-- A completed step's result is written to the store before the run goes
-- on. A run that runs again (a retry, a recovery after its process died, a
-- wake-up) replays the flow from the top: steps already completed return
-- their recorded result without running, and execution resumes at the first
-- step not completed. So flow code between steps must do the same thing on
-- every attempt (read time, random values and ids inside steps), and a step
-- must keep its name and place: a step found where another was recorded
-- fails the run as dead, naming both. A step inside a step is part of the
-- enclosing one (not recorded apart); a sleep or a wait cannot be in a step.
-- A sleep is a step recording the wake time; until then the run is parked
-- in the store (no coroutine, no memory) and is picked up when due, by any
-- instance. A wait is a step whose result is the event that ended it (or
-- its timeout); the run is parked in the store meanwhile (events.lua ends
-- it). Outside stored runs (a sync webhook, `rill run`) steps just run,
-- sleeps wait in the process, and waits are refused.
local json = require "rill.json"
local log = require "rill.log"
local task = require "rill.c.task"
local timer = require "rill.c.timer"
local tz = require "rill.c.tz"
local time = require "rill.time"
local runner = require "rill.engine.runner"
local current = require "rill.run"
local utf8_error = require("rill.c.utf8").first_invalid

local steps = {}

-- Raised to end an attempt that parks the run (queue.lua sees run.park).
local PARK = setmetatable({}, { __tostring = function() return "the run sleeps (parked in the store)" end,
                                __metatable = false }) -- shared by every run: out of flows' reach
steps.PARK = PARK

local store_now = require("rill.engine.store").now_ms
local function now_ms() return store_now() end

-- The run's recorded steps, read once per attempt (unless its claim read
-- them already: run.recorded, by seq).
local function recorded(run)
  if run.step_seq == nil then
    run.step_seq = 0
    if run.recorded then return run.recorded end
    run.recorded = {}
    if run.durable then
      for _, r in ipairs(require("rill.engine.store").steps(run.id)) do run.recorded[r.seq] = r end
    end
  end
  return run.recorded
end

local function decode(result)
  if result == nil then return nil end
  local v = json.decode(result)
  if v == json.null then return nil end
  return v
end

-- record(run, s) -> whether the run is still ours, its completed step s
-- stored. A store that cannot take it now (down, locked, stalled) is tried
-- again, 0.2 s doubling to 5 s, for as long as a lease (the run's deadline
-- may end it first): failing the attempt would do the step's work again at
-- the retry. The run is still ours meanwhile (its lease is renewed).
local function record(run, s)
  local store, queue = require("rill.engine.store"), require("rill.engine.queue")
  local delay, give_up = 0.2, tz.now() + queue.lease -- the real clock: a test's clock jumps by days
  while true do
    local ok, ours = pcall(store.step, run.id, queue.instance, s)
    if ok then return ours end
    -- (the store's errors are text; anything else ends the attempt)
    if type(ours) ~= "string" or tz.now() + delay >= give_up then error(ours, 0) end
    if delay == 0.2 then
      log.write("warn", "the step's record could not be stored; trying again", { step = s.name, error = tostring(ours) }, run)
    end
    timer.sleep(delay)
    delay = math.min(delay * 2, 5)
  end
end

local function check_args(name, fn, opts, what)
  if type(name) ~= "string" or name == "" then error(what .. ": the first argument is the step's name", 3) end
  if fn ~= nil and type(fn) ~= "function" then error(what .. ": the second argument is a function", 3) end
  if opts ~= nil and type(opts) ~= "table" then error(what .. ": options must be a table", 3) end
end

-- next_step(run, name) -> the step's number, and its recorded row if it
-- completed in an earlier attempt (a step found where another one was
-- recorded fails the run: replaying it would be wrong).
local function next_step(run, name)
  local rec = recorded(run)
  run.step_seq = run.step_seq + 1
  local seq = run.step_seq
  local done = rec[seq]
  if done and done.name ~= name then
    runner.fail(string.format("the flow's steps changed since this run's earlier attempt: step %d was %q, is now %q",
      seq, done.name, name), 3)
  end
  return seq, done
end

-- step(name, fn, opts) -> fn's result, recorded (or replayed).
function steps.step(name, fn, opts)
  check_args(name, fn, opts, "step")
  opts = opts or {}
  local run = task.current()
  if not run then error("step: only inside a run", 2) end
  -- A step inside a step is part of the enclosing one, as an emit or a
  -- flows.trigger inside a step is: it runs (with its own retries) but is
  -- not recorded apart, and runs again when the enclosing step does. Given
  -- a number of its own, it was recorded after the enclosing step's number,
  -- which a replay skips: the next step found it "changed" and a retry
  -- made the run dead; and it ended the enclosing step's Idempotency-Key.
  local outer = run.step
  local seq, done
  if not outer then
    seq, done = next_step(run, name)
    if done then return decode(done.result) end
  end
  local attempts = opts.retries and opts.retries + 1 or 1
  local backoff = opts.backoff or 1
  local started = now_ms()
  local err
  for attempt = 1, attempts do
    -- (an inner step marked retry = false marks the enclosing one while it
    -- runs: a deadline then makes the run dead, as for the enclosing step's)
    local kept = outer and outer.no_retry
    if outer then
      outer.no_retry = kept or opts.retry == false
    else
      run.step = { seq = seq, name = name, no_retry = opts.retry == false }
    end
    local r = { pcall(fn) }
    if outer then outer.no_retry = kept else run.step = nil end
    if r[1] and outer then return r[2] end
    if r[1] then
      local ok, encoded = pcall(json.encode, r[2] == nil and json.null or r[2])
      if not ok then runner.fail("step " .. name .. " returned a value that is not JSON: " .. encoded, 2) end
      -- cjson copies a string's bytes as they are; JSON is UTF-8, and the
      -- store keeps the result as text: Postgres refuses the row, so the
      -- step's work, done, was not recorded and each retry did it again
      -- (SQLite kept bytes that made `rill runs show --json` invalid). A run
      -- not stored (a sync webhook) records nothing: its result is not checked
      local bad = run.durable and utf8_error(encoded)
      if bad then
        runner.fail(string.format("step %s returned a value that is not JSON: byte %d of it as JSON is not UTF-8",
          name, bad), 2)
      end
      if run.durable then
        local ours = record(run, { seq = seq, name = name, result = encoded, attempts = attempt, started = started,
          finished = now_ms() })
        if not ours then error("the run's lease was taken over by another instance; this attempt stops", 0) end
      end
      log.write("info", "step done", { step = name, attempt = attempt, ms = now_ms() - started }, run)
      return r[2]
    end
    err = r[2]
    if err == PARK or type(err) == "table" and getmetatable(err) ~= nil then break end -- fail() or a park
    log.write("warn", "step failed", { step = name, attempt = attempt, of = attempts, error = tostring(err) }, run)
    if attempt < attempts then time.sleep(backoff * 2 ^ (attempt - 1)) end -- the test clock's, in rill test
  end
  -- retry = false: a step whose outcome is unknown when it fails (a payment
  -- that may have gone through) must not run again: the run is dead and a
  -- person looks
  if opts.retry == false and not (err == PARK or type(err) == "table" and getmetatable(err) ~= nil) then
    runner.fail(string.format("step %q failed and is marked retry = false: %s", name, tostring(err)), 0)
  end
  error(err, 0)
end

-- key() and name(), of the step running now, are the flow API's (rill/run.lua)
steps.key, steps.name = current.step_key, current.step_name

-- A park inside a step (stored runs) fails the run as dead (no retry fixes
-- the flow): the step is not recorded when the run parks, so its work before
-- the park would run again at the wake, and a sleep in it (not recorded
-- apart, as no step inside a step is) would start over at each wake.
-- Level 3: the flow's line (sleep_for and sleep_until tail-call park_until).
local function not_in_step(run, what)
  if run.durable and run.step then
    runner.fail(string.format("%s cannot be inside a step (step %q): the step would run again from its start "
      .. "when the run wakes; call it between steps", what, run.step.name), 3)
  end
end

local function park_until(name, wake_ms)
  local run = task.current()
  if not run then error("sleep_until: only inside a run", 3) end
  not_in_step(run, "sleep_for and sleep_until")
  local wake = steps.step(name, function() return wake_ms end)
  local left = wake - now_ms()
  if left <= 0 then return end
  log.write("info", "run sleeps", { step = name, seconds = left / 1000,
    ["until"] = require("rill.time").iso(wake / 1000) }, run)
  if not run.durable then return time.sleep(left / 1000) end
  run.park = wake
  error(PARK, 0)
end

-- sleep_until(name, time): time is an ISO date-time or seconds since the epoch.
function steps.sleep_until(name, when)
  check_args(name, nil, nil, "sleep_until")
  local t = when
  if type(when) == "string" then t = require("rill.time").parse(when) end
  if type(t) ~= "number" then error("sleep_until: expected a time (ISO string or epoch seconds)", 2) end
  return park_until(name, math.floor(t * 1000))
end

-- sleep_for(name, duration): duration in seconds, or "90s", "2h", "3d".
function steps.sleep_for(name, duration)
  check_args(name, nil, nil, "sleep_for")
  local seconds = type(duration) == "number" and duration or require("rill.time").duration(duration)
  -- the wake time is fixed at the first attempt (recorded), not at each replay
  return park_until(name, now_ms() + math.floor(seconds * 1000))
end

-- wait_for(name, {event = NAME, match = {...}, timeout = duration}) -> the
-- event {name, id, data, at} whose data has every field of match, or
-- {timed_out = true} once the timeout passed (no timeout: no end).
function steps.wait_for(name, opts)
  check_args(name, nil, opts, "wait_for")
  if type(opts) ~= "table" or type(opts.event) ~= "string" then
    error("wait_for: expected wait_for(name, { event = \"name\", match = {...}, timeout = \"3d\" })", 2)
  end
  if opts.match ~= nil and type(opts.match) ~= "table" then error("wait_for: match must be a table of fields", 2) end
  local run = task.current()
  if not run then error("wait_for: only inside a run", 2) end
  not_in_step(run, "wait_for")
  -- the events earlier waits of this run took: a later wait does not take them again
  run.consumed = run.consumed or {}
  local function took(v)
    if type(v) == "table" and v.id then run.consumed[v.id] = true end
    return v
  end
  local seq, done = next_step(run, name)
  if done then return took(decode(done.result)) end
  if not run.durable then
    error("wait_for: only in a stored run (an async webhook, a cron tick, a database event); "
      .. "this run is not stored, so it cannot be parked", 2)
  end
  local events = require "rill.engine.events"
  local store = require "rill.engine.store"
  local timeout = opts.timeout and require("rill.time").duration(opts.timeout)
  local found, timeout_at = store.wait {
    run_id = run.id, seq = seq, name = name, event = opts.event, match = opts.match and json.encode(opts.match),
    since = run.created or now_ms(), timeout_at = timeout and now_ms() + math.floor(timeout * 1000) or nil }
  local result
  for _, e in ipairs(found) do
    local data = e.data and json.try_decode(e.data)
    if not run.consumed[e.id] and (opts.match == nil or events.matches(opts.match, data)) then
      result = events.result_of(e, data)
      break
    end
  end
  if not result and timeout_at and timeout_at <= now_ms() then result = json.encode { timed_out = true } end
  if result then
    local v = took(decode(store.end_wait(run.id, seq, name, result)))
    log.write("info", v.timed_out and "wait timed out" or "wait ended by an event", { step = name, event = opts.event }, run)
    return v
  end
  run.park, run.wait_seq = timeout_at or 2 ^ 53, seq
  log.write("info", "run waits for an event", { step = name, event = opts.event,
    since = require("rill.time").iso(now_ms() / 1000),
    timeout = timeout_at and require("rill.time").iso(timeout_at / 1000) or nil }, run)
  error(PARK, 0)
end

-- emit(name, data) -> the event's id: stores an event that ends the waits
-- it matches and starts the flows with an event trigger on it. In a stored
-- run it is a step (replays do not emit again), whose id is the run's and
-- the step's: emitted again after a crash between storing the event and
-- recording the step, it is the same event, and starts nothing again.
-- Inside a step, it is part of that step: the n-th emit of the step has the
-- same id on each of the step's attempts.
-- With opts.id, the event's id is "NAME ID" whoever emits it: one event
-- (and one run of each flow it starts) however many runs emit it.
function steps.emit(name, data, opts)
  local events = require "rill.engine.events"
  if require("rill.triggers").loading_source then
    error("emit: a flow file's top-level code cannot emit events (it runs at each load and in rill check): "
      .. "emit in run", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then error("emit: options must be a table, like { id = \"...\" }", 2) end
  local id = opts and opts.id
  if id ~= nil then
    if not ((type(id) == "string" and id ~= "" and #id <= 200) or (type(id) == "number" and id % 1 == 0)) then
      error("emit: id must be a string of 1 to 200 characters or a whole number", 2)
    end
    id = tostring(name) .. " " .. (type(id) == "number" and string.format("%d", id) or id)
  end
  local run = task.current()
  if not (type(run) == "table" and run.id and run.flow) then
    -- a verify function's task: its request is not accepted yet, and may be
    -- refused (an unsigned request stored events that started runs)
    error("emit: only a run emits events (not a verify function, nor code outside a run)", 2)
  end
  events.count_emit(run)
  if not run.durable then return events.emit(name, data, id, run) end
  if run.step then
    run.step.emits = (run.step.emits or 0) + 1
    return events.emit(name, data, id or (steps.key() .. "-" .. run.step.emits), run)
  end
  return steps.step("emit " .. tostring(name), function()
    return events.emit(name, data, id or steps.key(), run)
  end)
end

return steps
