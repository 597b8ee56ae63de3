-- listener: the policy around the HTTP listeners' limits. The C server
-- counts what each limit refused (server:stats()); this module exports the
-- counts to /metrics (rill_http_refused_total, rill_http_connections) and
-- logs one line per reason when a limit bites, at most once per
-- http_log_interval, so that a flood is visible without flooding the log.
local metrics = require "rill.metrics"
local log = require "rill.log"
local timer = require "rill.c.timer"

local listener = {}

local watched = {} -- name -> { server, last = {reason = count}, logged = {reason = time} }
local order = {}

-- What each reason means, for the log line; the setting that bites is named.
local WHY = {
  max_connections = "at max_connections: the longest idle connection closed to make room, or 503 when none is idle",
  descriptors = "out of file descriptors: accepting paused, resumed shortly (raise the limit, ulimit -n, or lower max_connections)",
  max_header_size = "request headers over max_header_size answered 431",
  max_headers = "requests with more header lines than max_headers answered 431",
  max_url = "URLs longer than max_url answered 414",
  max_body = "bodies over max_body answered 413",
  max_bodies_in_flight = "request bodies past the listener's max_bodies_in_flight answered 503 with Retry-After "
    .. "(or a connection's pipelined requests not read until its own are handled)",
  write_backlog = "clients not reading their answers: reading paused past max_write_backlog (write backlog)",
  max_write_backlog_total = "clients not reading their answers: reading paused while the listener's queued "
    .. "answers are past max_write_backlog_total",
  request_timeout = "requests not received or answered within request_timeout (408/504)",
  bad_request = "malformed requests answered 400",
}
-- keepalive_timeout and max_requests close connections as they should: counted only

metrics.counter("rill_http_refused_total",
  "Requests or connections an HTTP listener's limit refused, cut or held back, by listener and reason (the setting).",
  { "listener", "reason" }, function(f)
    for _, name in ipairs(order) do
      local refused = watched[name].server:stats().refused
      for reason, n in pairs(refused) do f:labels(name, reason):inc(n) end
    end
  end)
metrics.counter("rill_http_reads_deferred_total",
  "Requests an HTTP listener served on the next loop turn because that turn's reads had had their "
    .. "time (2 ms): many clients' requests landing at once are served over several turns.",
  { "listener" }, function(f)
    for _, name in ipairs(order) do f:labels(name):inc(watched[name].server:stats().deferred) end
  end)
metrics.gauge("rill_http_connections", "Open connections of each HTTP listener.", { "listener" }, function(f)
  for _, name in ipairs(order) do f:labels(name):set(watched[name].server:stats().connections) end
end)

metrics.gauge("rill_http_bodies_in_flight_bytes",
  "Request bytes each HTTP listener holds against max_bodies_in_flight: bodies being received "
    .. "(what has arrived of them) and requests buffered behind one in flight.", { "listener" },
  function(f) for _, name in ipairs(order) do f:labels(name):set(watched[name].server:stats().bodies_in_flight) end end)
metrics.gauge("rill_http_write_queue_bytes",
  "Answer bytes each HTTP listener holds for clients slower to read them than the socket takes.", { "listener" },
  function(f) for _, name in ipairs(order) do f:labels(name):set(watched[name].server:stats().queued) end end)
metrics.gauge("rill_http_write_queue_peak_bytes",
  "The most answer bytes each HTTP listener has held at once for slow readers since the start.", { "listener" },
  function(f) for _, name in ipairs(order) do f:labels(name):set(watched[name].server:stats().queued_peak) end end)

local function check(interval)
  local now = os.time()
  for _, name in ipairs(order) do
    local w = watched[name]
    local stats = w.server:stats()
    for reason, n in pairs(stats.refused) do
      local seen = w.last[reason] or 0
      if n > seen and WHY[reason] and now - (w.logged[reason] or -math.huge) >= interval then
        log.warn("http " .. name .. ": " .. reason .. ": " .. WHY[reason],
          { listener = name, reason = reason, count = n - (w.reported[reason] or 0) })
        w.logged[reason], w.reported[reason] = now, n
      end
      w.last[reason] = n
    end
  end
end

local ticking
-- watch(name, server, interval): server's limits are counted in /metrics
-- under listener=name and logged at most once per interval (seconds) per reason.
function listener.watch(name, server, interval)
  if not watched[name] then order[#order + 1] = name end
  watched[name] = { server = server, last = {}, logged = {}, reported = {} }
  if ticking then return end
  ticking = true
  local function tick()
    local ok, err = pcall(check, interval)
    if not ok then log.error("checking the HTTP listeners' limits failed", { error = tostring(err) }) end
    local t = timer.after(1, tick)
    if t and t.unref then t:unref() end
  end
  tick()
end

-- connections(c, nofile): max_connections as configured, or derived from
-- the descriptor limit ("auto"): what is left once the store, the
-- databases' pools, outbound HTTP, files and the admin listener have theirs.
function listener.max_connections(c, nofile)
  if c.max_connections ~= "auto" then return c.max_connections end
  local pools = 0
  for _ in pairs(c.databases or {}) do pools = pools + c.db_pool end
  local reserve = 64 + pools + c.http_max_per_host * 4 + (c.admin_max_connections or 0)
  return math.max(8, math.floor(nofile - reserve))
end

-- options(c): the C listener's limits from the settings (max_connections
-- as derived by listener.max_connections).
function listener.options(c)
  return { max_body = c.max_body, max_bodies_in_flight = c.max_bodies_in_flight, max_url = c.max_url, max_header_size = c.max_header_size,
    max_headers = c.max_headers, max_write_backlog = c.max_write_backlog,
    max_write_backlog_total = c.max_write_backlog_total, max_pipeline = c.max_pipeline,
    max_requests = c.max_requests, keepalive_timeout = c.keepalive_timeout,
    request_timeout = c.request_timeout,
    max_connections = listener.max_connections(c, require("rill.c.http_server").descriptor_limit()) }
end

return listener
