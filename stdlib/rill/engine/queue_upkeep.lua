-- queue_upkeep: the queue's records and upkeep, apart to keep queue.lua
-- short: the stored forms of a run's request and log lines, a sync
-- webhook's run recorded, finished runs pruned, and the queue's depth read
-- for /metrics. Part of queue.lua: a function of its table (and of
-- is_started(), whether the queue runs), which queue.lua calls once as it
-- loads, returning the helpers queue.lua uses.
local json = require "rill.json"
local timer = require "rill.c.timer"
local store = require "rill.engine.store"
local log = require "rill.log"
local metrics = require "rill.metrics"

return function(queue, is_started)
-- The queue as the store holds it (all instances' runs), read every
-- poll_interval by a running queue and shown at scrape time: a scrape
-- never waits on the store, and the oldest due run's age is exact.
local depth = {}  -- by_state (state -> n), oldest (run_at in ms of the oldest due run), reading
metrics.gauge("rill_queue_runs", "Runs in the store waiting (queued, retrying, sleeping, waiting) or running, by state; "
  .. "read from the store every poll_interval.", { "state" }, function(f)
    if not depth.by_state then error("the store has not been read yet", 0) end
    for state, n in pairs(depth.by_state) do f:labels(state):set(n) end
  end)
metrics.gauge("rill_queue_oldest_due_age_seconds",
  "How long the oldest run that is due has waited for an instance to claim it (0 when none waits).", nil,
  function(f)
    if not depth.by_state then error("the store has not been read yet", 0) end
    f:set(depth.oldest and math.max(0, store.now_ms() - depth.oldest) / 1000 or 0)
  end)

local function encode_or_nil(v)
  if v == nil then return nil end
  local ok, s = pcall(json.encode, v)
  return ok and s or nil
end

-- The run's log lines as the store keeps them (nil for none: most runs log
-- nothing, and their outcome is on the hot path).
local function stored_lines(run)
  if not run.logs or #run.logs == 0 then return nil end
  local lines = {}
  for i, l in ipairs(run.logs or {}) do
    lines[i] = { at = math.floor(l.at * 1000), level = l.level, message = l.msg, fields = encode_or_nil(l.fields) }
  end
  return lines
end

-- A request's headers or query with its secrets masked (a shared-secret
-- webhook's, read by its verifier through env): the stored run is shown by
-- `runs show` and the admin API. A copy when a value is masked (the run
-- reads the real request), else t itself: no copy for every run.
local function masked(t)
  if not t then return nil end
  local out
  for k, v in pairs(t) do
    local m = v
    if type(v) == "table" then m = masked(v) elseif type(v) == "string" then m = log.mask(v) end
    if m ~= v then
      if not out then
        out = {}
        for k2, v2 in pairs(t) do out[k2] = v2 end
      end
      out[k] = m
    end
  end
  return out or t
end

-- The request a run keeps (ctx.request of its later attempts), as JSON, its
-- secrets masked. One table refilled for each: every async webhook's run
-- makes this. A webhook's request makes its query table at its first read
-- (webhook.lua): rawget does not, and a request without one is stored with
-- an empty one, as ever.
local REQUEST, NO_QUERY = {}, {}
local function request_as_json(r, payload_json)
  REQUEST.method, REQUEST.path, REQUEST.params = r.method, r.path, r.params
  REQUEST.query, REQUEST.headers = masked(rawget(r, "query")) or NO_QUERY, masked(r.headers)
  REQUEST.body = not payload_json and r.body or nil
  local s = json.encode(REQUEST)
  REQUEST.query, REQUEST.headers, REQUEST.params, REQUEST.body = nil, nil, nil, nil
  return s
end

-- record(run): stores a run that already ended and was not queued (a sync
-- webhook's run: its caller got the answer and retries by itself).
function queue.record(run, trigger, payload_json)
  -- a success is in the metrics and the log; storing each one would cost a
  -- third of a sync webhook's throughput
  if queue.record_sync == "none" or (queue.record_sync == "failed" and run.state == "succeeded") then return end
  local lines = stored_lines(run)
  local ok = run.state == "succeeded"
  store.record({
    id = run.id, flow = run.flow, version = run.version, trigger = trigger, payload = payload_json,
    state = ok and "succeeded" or "failed", attempt = 1, max_attempts = 1,
    run_at = math.floor(run.started * 1000), created = math.floor(run.started * 1000),
    started = math.floor(run.started * 1000), finished = math.floor(run.finished * 1000),
    result = ok and encode_or_nil(run.result) or nil,
    error = not ok and log.text(encode_or_nil { message = run.error.message, traceback = run.error.traceback }) or nil,
  }, lines)
end

local function prune()
  local before = store.now_ms() - math.floor(queue.retention * 1000)
  store.prune(before, 5000, function(n, err)
    if err then
      log.warn("pruning old runs failed", { error = err })
    elseif n and n > 0 then
      log.info("pruned finished runs", { count = n })
      if n == 5000 and is_started() then timer.after(0.1, prune) end
    end
  end)
end

local function every(seconds, fn)
  local handle
  local function tick()
    fn()
    handle.t = timer.after(seconds, tick)
  end
  handle = { t = timer.after(seconds, tick) }
  return handle
end

-- read_depth(): depth from the store, one read at a time.
local function read_depth()
  if depth.reading then return end
  depth.reading = true
  require("rill.c.task").spawn(store.depth, function(_, ok, by_state, oldest)
    depth.reading = false
    if ok then
      depth.by_state, depth.oldest = by_state, oldest
    else
      log.warn("reading the queue's depth failed", { error = tostring(by_state) })
    end
  end, nil, nil, store.now_ms())
end

return { encode_or_nil = encode_or_nil, stored_lines = stored_lines, request_as_json = request_as_json, prune = prune,
         every = every, read_depth = read_depth }
end
