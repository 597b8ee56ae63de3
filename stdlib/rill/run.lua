-- run: the run executing now, as the flow API's modules (http, db,
-- connectors) see it: fail() ends it, at_end() cleans up after it, and the
-- step it is in names outbound requests. The engine starts runs and steps
-- (engine/runner.lua, engine/steps.lua); these are what the flow API needs
-- of them, so that it requires nothing of the engine.
local task = require "rill.c.task"

local run_api = {}

-- fail(message[, level]): what a flow calls to fail its run with no retry.
-- Like error(), the message starts with the caller's file:line (level 1
-- the caller, 0 no position).
local FAIL_MT = { __metatable = false } -- out of flows' reach: shared by every fail()
function run_api.fail(message, level)
  level = level or 1
  local info = level > 0 and debug.getinfo(level + 1, "Sl")
  local where = info and info.currentline > 0 and (info.short_src .. ":" .. info.currentline .. ": ") or ""
  error(setmetatable({ message = where .. tostring(message) }, FAIL_MT))
end
run_api.FAIL_MT = FAIL_MT -- runner.lua tells a fail() from another error by it

-- at_end(run, fn): fn() is called when the run ends, however it ends.
function run_api.at_end(run, fn)
  run.cleanup = run.cleanup or {}
  run.cleanup[#run.cleanup + 1] = fn
end

-- The idempotency key of the step running now, for outbound requests: the
-- same on every attempt of the step, different for every step and run.
function run_api.step_key()
  local run = task.current()
  return run and run.step and (run.id .. "-" .. run.step.seq) or nil
end

-- step_name() -> the name of the step running now, or nil (outside a step or a run).
function run_api.step_name()
  local run = task.current()
  return run and run.step and run.step.name or nil
end

return run_api
