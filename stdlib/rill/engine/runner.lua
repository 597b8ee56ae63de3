-- runner: starts runs and reports how they ended. A run is one execution of
-- a flow version: a task (a coroutine) that calls flow.run(ctx), with the
-- run record that log lines, results and errors attach to. A run keeps the
-- flow version it started with, whatever reloads happen meanwhile.
local task = require "rill.c.task"
local crypto = require "rill.c.crypto"
local tz = require "rill.c.tz"
local log = require "rill.log"
local metrics = require "rill.metrics"
local settings = require "rill.settings"
local current = require "rill.run"

local runner = { max_depth = 8, default_deadline = 30, memory_limit = 256 * 1024 * 1024 }

local started, finished = 0, 0

local started_total = metrics.counter("rill_runs_started_total",
  "Runs started (every attempt of a stored run counts), by flow.", { "flow" })
local finished_total = metrics.counter("rill_runs_finished_total",
  "Runs ended, by flow and state: succeeded, failed, sleeping or waiting (parked by sleep_*/wait_for).", { "flow", "state" })
local stopped_total = metrics.counter("rill_runs_stopped_total",
  "Runs ended by a limit no code can catch, by flow and limit: deadline, memory (run_memory_limit, process_memory_limit) or hold (max_hold).",
  { "flow", "limit" })
local log_dropped_total = metrics.counter("rill_run_log_lines_dropped_total",
  "Log lines of runs dropped over max_log_lines, by flow.", { "flow" })
local duration = metrics.histogram("rill_run_duration_seconds",
  "How long runs took from start to end, by flow.", { "flow" })
metrics.gauge("rill_runs_running", "Runs executing in this process now.", nil,
  function(f) f:set(started - finished) end)

metrics.counter("rill_runs_paused_total",
  "Times a run was paused at the end of its time slice (a few ms) so that other requests and runs got a turn.",
  nil, function(f) f:labels():inc(task.slices_ended()) end)

metrics.gauge("rill_lua_memory_bytes", "Lua memory in use, all runs and rill's own (process_memory_limit bounds it).",
  nil, function(f) f:set(task.memory()) end)

local function clean_traceback(tb)
  local lines = {}
  for line in tb:gmatch("[^\n]+") do
    if not line:find("[C]:", 1, true) and not line:find("stdlib/rill/", 1, true)
       and not line:find("[builtin#", 1, true)
       and not line:find("^stack traceback:") then
      lines[#lines + 1] = line:gsub("^%s+", "  ")
    end
  end
  return table.concat(lines, "\n")
end

-- fail() and FAIL_MT, the error it raises, are the flow API's (rill/run.lua)
local FAIL_MT = current.FAIL_MT
runner.fail = current.fail

local MAX_MESSAGE = 4000

-- describe(e) -> a readable message for an error object of any type. It
-- never calls the object's metamethods (__tostring, __index may loop or
-- raise: a flow's error must not be able to hang or break its own report).
local function describe(e)
  local t = type(e)
  if t == "string" then return #e > MAX_MESSAGE and e:sub(1, MAX_MESSAGE) .. "..." or e end
  if t == "number" or t == "boolean" or t == "nil" then return "error object: " .. tostring(e) end
  if t == "table" then
    local m = rawget(e, "message")
    if type(m) == "string" then return describe(m) end
    local ok, s = pcall(require("rill.json").encode, e)
    if ok and type(s) == "string" and s ~= "{}" and s ~= "[]" then return "error object: " .. describe(s) end
    return "error object: a table" .. (debug.getmetatable(e) ~= nil and " with a metatable" or "") .. ", no message"
  end
  return "error object: a " .. t
end
runner.describe_error = describe

local function on_error(e)
  local why = task.killed()
  if why then return { message = why, traceback = "" } end -- ended: no handler work
  local no_retry = type(e) == "table" and rawequal(debug.getmetatable(e), FAIL_MT) or nil
  return { message = describe(e), traceback = clean_traceback(debug.traceback("", 2)), no_retry = no_retry }
end

-- The body of every run's coroutine.
local function body(run_fn, ctx)
  return xpcall(run_fn, on_error, ctx)
end

local function finish(run, task_ok, ok, value)
  run.finished = tz.now()
  run.duration = run.finished - run.started
  finished = finished + 1
  if run.park then
    -- parked by sleep_until or wait_for (steps.lua): not an outcome
    run.state = run.wait_seq and "waiting" or "sleeping"
  elseif task_ok and ok then
    run.state, run.result = "succeeded", value
    if log.enabled("debug") then
      log.write("debug", "run succeeded", { ms = math.floor(run.duration * 1000 + 0.5) }, run)
    end
  else
    run.state = "failed"
    -- value is on_error's table, or, when on_error itself failed or the run
    -- was ended (task.c), whatever came instead: a message is made of it
    if not task_ok then
      -- ended from outside its code (task.c): a limit, or a kill
      run.error = { message = describe(ok) }
      local m = run.error.message
      run.error.limit = m:find("^deadline exceeded") and "deadline" or m:find("^memory limit exceeded") and "memory"
        or m:find("^held the loop longer than max_hold") and "hold" or nil
      if run.error.limit then stopped_total:labels(run.flow, run.error.limit):inc() end
    elseif type(value) == "table" and type(rawget(value, "message")) == "string" then
      run.error = value
    else
      run.error = { message = describe(value) }
    end
    if not task_ok and run.step and run.step.no_retry then
      -- stopped (its deadline) inside a step marked retry = false: the
      -- step's outcome is unknown, as when it fails, so no retry either
      run.error.message = string.format("step %q failed and is marked retry = false: %s", run.step.name,
        run.error.message)
      run.error.no_retry = true
    end
    log.write("error", "run failed: " .. run.error.message,
      { ms = math.floor(run.duration * 1000 + 0.5), traceback = run.error.traceback ~= "" and run.error.traceback or nil }, run)
  end
  if run.log_count and run.log_count > log.max_run_lines then
    log_dropped_total:labels(run.flow):inc(run.log_count - log.max_run_lines)
    log.write("warn", string.format("this run's log lines over max_log_lines (%d) were dropped", log.max_run_lines),
      { dropped = run.log_count - log.max_run_lines }, run)
  end
  -- what the run left open (a database transaction, when it was killed
  -- inside one) is closed now, however the run ended
  finished_total:labels(run.flow, run.state):inc()
  duration:labels(run.flow):observe(run.duration)
  if run.cleanup then
    for _, fn in ipairs(run.cleanup) do
      local cok, cerr = pcall(fn)
      if not cok then log.write("warn", "cleaning up after the run failed", { error = tostring(cerr) }, run) end
    end
  end
  if run.on_done then run.on_done(run) end
end

-- chain_of(parent, flow) -> the chain of flows that leads to a new run of
-- flow: "a > b > flow" (the run's cause, kept with it and named when a
-- chain grows past max_depth).
function runner.chain_of(parent, flow)
  if parent and parent.chain then return parent.chain .. " > " .. flow end
  return parent and (parent.flow .. " > " .. flow) or flow
end

-- too_deep(chain) -> the error of a run refused for being max_depth deep.
function runner.too_deep(chain)
  return string.format("a chain of runs deeper than %d (max_depth), a loop? %s", runner.max_depth, chain)
end

runner.at_end = current.at_end -- the flow API's (rill/run.lua)

-- start(flow, trigger, payload, opts) -> run
-- flow: a loaded flow version (flows.lua); trigger: {type = ..., ...};
-- opts: on_done(run), caller (kept as run.caller for on_done: the HTTP
-- request of a sync webhook), request (webhook details for ctx.request),
-- parent (run), deadline (seconds, overriding the flow's), on_log(line),
-- id (a run id chosen beforehand, e.g. already sent in a 202), attempt
-- (of a durable run, from 1), scheduled (of a durable run: when it was due),
-- preempt (false: no time slices, the run goes on to its end or its deadline
-- in one go; for tests that cannot run the loop that would resume it),
-- settings (the values recorded with a stored run: its ctx.settings).
-- opts.on_done may be called before start returns (a run that never waits).
-- A copy of a trigger's plain data for one run's ctx.trigger: the table
-- passed in is shared (a route's, a cron or database trigger's spec, which
-- the scheduler reads too), and a run that changes its ctx.trigger must
-- change no other run's.
-- The copy is made at its final size (filled key by key, an empty table
-- grows its hash part 1, 2, 4 entries: three allocations for a webhook's
-- three fields, on every sync request).
local new_table = require "table.new"
local function own_copy(v, depth)
  if type(v) ~= "table" or depth > 4 then return v end
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  local c = new_table(0, n)
  for k, x in pairs(v) do c[k] = own_copy(x, depth + 1) end
  return c
end

-- The limits every run is spawned with, in one table filled anew for each
-- spawn: task.spawn reads all of it before the run's first instruction (a
-- run started from inside another refills it only after that), and a table
-- and a label string made per run cost a sync webhook ~2% of its
-- throughput. The label, "flow F run ID", is put together in C from the
-- flow's part (made once per flow version) and the run's id.
local LIMITS = {}
local label_of = setmetatable({}, { __mode = "k" }) -- flow version -> "flow NAME run "

function runner.start(flow, trigger, payload, opts)
  opts = opts or {}
  local parent = opts.parent
  local run = {
    id = opts.id or crypto.id7(), flow = flow.name, version = flow.version, file = flow.file,
    trigger = trigger.type, parent = opts.parent_id or (parent and parent.id or nil),
    depth = opts.depth or (parent and parent.depth + 1 or 0), attempt = opts.attempt or 1,
    chain = opts.chain or runner.chain_of(parent, flow.name), created = opts.created,
    started = tz.now(), state = "running", durable = opts.durable,
    on_done = opts.on_done, caller = opts.caller, on_log = opts.on_log,
  }
  -- (set apart: a 17th key in the constructor doubled the table's hash
  -- part, 16 to 32 slots, +384 bytes on every run; a sync webhook's has none)
  if opts.steps then run.recorded = opts.steps end -- its completed steps by seq (steps.lua)
  started = started + 1
  started_total:labels(run.flow):inc()
  local ctx = {
    payload = payload, trigger = own_copy(trigger, 1), run_id = run.id, flow = flow.name,
    request = opts.request, parent_run_id = run.parent, attempt = run.attempt,
    settings = settings.for_run(flow, opts.settings),
  }
  if log.enabled("debug") then log.write("debug", "run started", { trigger = trigger.type }, run) end
  local deadline = opts.deadline or flow.deadline or runner.default_deadline
  local label = label_of[flow]
  if not label then
    label = "flow " .. flow.name .. " run "
    label_of[flow] = label
  end
  LIMITS.deadline, LIMITS.memory, LIMITS.preempt = deadline, runner.memory_limit, opts.preempt
  LIMITS.label, LIMITS.label_id = label, run.id
  task.spawn(body, finish, LIMITS, run, flow.run, ctx)
  return run
end

-- current() -> the run executing now, or nil.
runner.current = task.current

function runner.stats()
  return { started = started, finished = finished, running = started - finished }
end

return runner
