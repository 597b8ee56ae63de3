-- pauses: which flows are paused (admin API). A paused flow's triggers start
-- no runs: its webhooks answer 503 with Retry-After, its cron ticks are
-- skipped, and its stored runs (queued, retrying, woken) stay in the store
-- until it is resumed. The set is kept in the store (flow_pauses), so a
-- pause holds across restarts and in every instance sharing the store: each
-- reads it again with every poll for due runs (queue.lua).
local store = require "rill.engine.store"

local pauses = {}

local paused = {}     -- flow name -> true
local generation = 0  -- bumped by every change made here

function pauses.is_paused(name) return paused[name] == true end

-- load(): the set from the store (in a task), at start.
function pauses.load()
  local set = {}
  for name in pairs(store.pauses()) do set[name] = true end
  paused = set
end

-- generation() and replace(set, gen): the poll's fresh read of the store
-- replaces the set, unless a change was made here since the read began
-- (the read could not have seen it).
function pauses.generation() return generation end

function pauses.replace(set, gen)
  if gen == generation then paused = set end
end

-- set(name, on): pauses (on) or resumes a flow, in the store and here. In a task.
function pauses.set(name, on)
  store.set_pause(name, on)
  generation = generation + 1
  paused[name] = on and true or nil
end

return pauses
