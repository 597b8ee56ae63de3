-- events: named events that end the waits of parked runs (wait_for in
-- steps.lua). An event is stored first (emit(), or with the run of an async
-- webhook whose trigger says emit = NAME), then delivered: every run waiting
-- for that name whose `match` it satisfies gets it as its wait's result and
-- is due at once. An event stored by a process that stopped before
-- delivering it is delivered by the next sweep, in any instance; a wait
-- that starts after its event was stored finds it too (steps.lua looks
-- for events since the run was created).
local json = require "rill.json"
local log = require "rill.log"
local store = require "rill.store"
local task = require "rill.c.task"
local timer = require "rill.c.timer"

local events = { sweep_interval = 5 }

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
    require("rill.queue").kick()
  end
end

-- row(name, data, id) -> the stored form of a new event.
function events.row(name, data, id)
  if type(name) ~= "string" or name == "" then error("emit: the first argument is the event's name", 3) end
  local ok, encoded = pcall(json.encode, data == nil and json.null or data)
  if not ok then error("emit: the event's data is not JSON: " .. encoded, 3) end
  return { id = id or require("rill.c.crypto").id7(), name = name, data = encoded, created = store.now_ms() }
end

-- emit(name, data, id) -> the event's id: stored (once per id), then
-- delivered. In a task.
function events.emit(name, data, id)
  local e = events.row(name, data, id)
  if store.emit(e) then events.deliver(e) end
  return e.id
end

-- deliver_later(e): delivers a stored event from a task of its own (the
-- sweep catches it if this process stops first).
function events.deliver_later(e)
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
