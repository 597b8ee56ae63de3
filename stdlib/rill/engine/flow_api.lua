-- flow_api: the `flows` module flows see: flows.trigger(name, payload[,
-- {wait = false}]), a run of another flow, awaited or not, stored when the
-- caller is. Part of flows.lua, apart to keep it short: a function of the
-- flows table (its registry), which flows.lua calls once as it loads.
local task = require "rill.c.task"
local log = require "rill.log"
local triggers = require "rill.triggers"

return function(flows)
local flow_api = {}


-- A copy of a value passed between two flows (a payload, a result): its
-- tables become the receiver's own, without metatables, so neither flow
-- can change the other's tables or run its code through a metamethod.
-- Shared tables and cycles stay shared within the copy.
local function plain_copy(v, seen)
  if type(v) ~= "table" then return v end
  seen = seen or {}
  if seen[v] then return seen[v] end
  local c = {}
  seen[v] = c
  for k, x in next, v do c[plain_copy(k, seen)] = plain_copy(x, seen) end
  return c
end

-- flows.trigger from a stored run: the child is a stored run too, stored
-- once per call (a step: a retry of the caller finds it stored, and the
-- idempotency key of the step makes a call repeated after a crash a
-- duplicate), run by the queue with its own retries. wait: the caller
-- waits for its end, reading it from the store (another instance may run
-- it), and gets its result, or an error once it is dead. Inside a step it
-- is part of that step (a step of its own there would shift the numbers of
-- the steps after it on a replay): the n-th call of the step stores the
-- same run on each of the step's attempts.

-- The child's id, stored once under key. In a task. payload_json: the
-- payload as JSON text (checked by the caller), nil for none.
local function submit_stored(target, trigger, payload, payload_json, parent, key)
  local answer, waiter
  require("rill.engine.queue").submit(target, trigger, payload, { idem_key = "flow " .. key, parent = parent.id,
    depth = parent.depth + 1, chain = parent.chain, payload_json = payload_json }, function(rid, err)
    answer = { rid, err }
    if waiter then waiter:wake() end
  end)
  if not answer then
    waiter = task.waiter()
    waiter:wait()
  end
  if not answer[1] then error("flows.trigger: the run could not be stored: " .. tostring(answer[2]), 0) end
  return answer[1]
end

-- {result = ...} once the child succeeded, {failed = message} once it
-- ended otherwise; polls the store meanwhile. In a task.
local function end_of(target, id)
  local store, json, timer = require "rill.engine.store", require "rill.json", require "rill.c.timer"
  local delay = 0.02
  while true do
    local o = store.outcome(id)
    if not o then error("flows.trigger: run " .. id .. " of flow '" .. target.name .. "' is not in the store", 0) end
    if o.state == "succeeded" then return { result = o.result and json.decode(o.result) } end
    if o.state == "dead" or o.state == "failed" or o.state == "cancelled" then
      local e = o.error and json.try_decode(o.error)
      return { failed = type(e) == "table" and e.message or o.state }
    end
    timer.sleep(delay)
    delay = math.min(delay * 2, 1)
  end
end

-- the caller's record notes how an awaited stored run ended (diagram.lua)
local function noted_end(target, id, ended, parent)
  log.write("debug", "started run ended", { flow = target.name, run_id = id,
    state = ended.failed and "failed" or "succeeded" }, parent)
end

local function stored_trigger(target, trigger, payload, payload_json, parent, wait, noted)
  local steps, json = require "rill.engine.steps", require "rill.json"
  local id, ended
  if parent.step then
    parent.step.triggers = (parent.step.triggers or 0) + 1
    id = submit_stored(target, trigger, payload, payload_json, parent,
      steps.key() .. "-trigger-" .. parent.step.triggers)
    local shown = noted { flow = target.name, run_id = id, wait = wait }
    if not wait then return id end
    ended = end_of(target, id)
    if shown then noted_end(target, id, ended, parent) end
  else
    id = steps.step("trigger " .. target.name, function()
      return submit_stored(target, trigger, payload, payload_json, parent, steps.key())
    end)
    local shown = noted { flow = target.name, run_id = id, wait = wait }
    if not wait then return id end
    ended = steps.step("end of " .. target.name, function() return end_of(target, id) end)
    if shown then noted_end(target, id, ended, parent) end
  end
  if ended.failed then
    error(string.format("flows.trigger: flow '%s' failed (run %s): %s", target.name, id, ended.failed), 3)
  end
  if ended.result == json.null then return nil end
  return ended.result
end

-- The runs one run's record names one by one (flows.trigger); diagram.lua
-- draws as many (max_children).
local MAX_NOTED = 20

function flow_api.trigger(name, payload, opts)
  if triggers.loading_source then
    error("flows.trigger: a flow file's top-level code cannot start runs (it runs at each load and in rill check): "
      .. "call it in run", 2)
  end
  if type(name) ~= "string" then error("flows.trigger: expected a flow name", 2) end
  local runner = require "rill.engine.runner"
  local target = flows.active[name]
  if not target then error("flows.trigger: no flow named '" .. name .. "'", 2) end
  if not target.accepts.from_flow then
    error("flows.trigger: flow '" .. name .. "' has no from_flow() trigger", 2)
  end
  local parent = task.current()
  if parent and parent.depth + 1 >= runner.max_depth then
    -- a loop, most likely: retrying would loop again, so no retry
    runner.fail("flows.trigger: " .. runner.too_deep(runner.chain_of(parent, name)), 2)
  end
  payload = plain_copy(payload)
  local wait = not (type(opts) == "table" and opts.wait == false)
  local trigger = { type = "flow", parent_flow = parent and parent.flow }
  -- the caller's record names the runs it starts, and how each ended when
  -- awaited (its sequence diagram shows them; such a run is not stored):
  -- debug lines, kept with the run but not printed at the default level,
  -- written as rill's lines about the run (outside the flow's own
  -- max_log_lines), for its first MAX_NOTED runs, then one line for the
  -- rest, so that a fan-out does not crowd the flow's lines out of its record
  local function noted(fields)
    if not parent then return false end
    local n = (parent.started_noted or 0) + 1
    parent.started_noted = n
    if n <= MAX_NOTED then
      log.write("debug", "started a run", fields, parent)
      return true
    end
    if n == MAX_NOTED + 1 then log.write("debug", "started more runs", { shown = MAX_NOTED }, parent) end
    return false
  end
  if parent and parent.durable then
    -- the child's payload is stored as JSON text: a value that is not (a
    -- function, bytes that are not UTF-8) fails the caller as dead, as a
    -- step's result does (Postgres refused the row: each retry stored again)
    local encoded, why = require("rill.json").stored_text(payload)
    if not encoded then runner.fail("flows.trigger: the payload is not JSON: " .. why, 2) end
    -- (the text checked is the text stored: no payload is stored as none, not as "null")
    local payload_json = payload ~= nil and encoded or nil
    -- (no tail call: error levels count it)
    local result = stored_trigger(target, trigger, payload, payload_json, parent, wait, noted)
    return result
  end
  if not wait then
    local id = runner.start(target, trigger, payload, { parent = parent }).id
    noted { flow = name, run_id = id, wait = false }
    return id
  end
  local waiter
  local done_run
  local child = runner.start(target, trigger, payload, {
    parent = parent,
    on_done = function(run)
      done_run = run
      if waiter then waiter:wake() end
    end,
  })
  local shown = noted { flow = name, run_id = child.id, wait = true }
  if not done_run then
    waiter = task.waiter()
    waiter:wait()
  end
  if shown then
    log.write("debug", "started run ended", { flow = name, run_id = child.id, state = done_run.state }, parent)
  end
  if done_run.state == "succeeded" then return plain_copy(done_run.result) end
  error(string.format("flows.trigger: flow '%s' failed (run %s): %s", name, done_run.id,
    done_run.error.message), 2)
end

return flow_api
end
