-- admin: the admin listener, on its own address (admin_listen, loopback by
-- default). Without a token: /healthz (the process is up), /readyz (the
-- store answers and the flows were loaded), /metrics (Prometheus text, from
-- rill.metrics when it exists). With `Authorization: Bearer $RILL_ADMIN_TOKEN`:
-- the JSON API under /api/ (flows, runs, retry, cancel, reload, pause). The
-- web console's static files (/console/) carry no data and need no token:
-- the page asks for it and sends it with each API call. With no token
-- configured, /api/ and /console/ answer 403. docs/admin.md is the reference.
local json = require "rill.json"
local task = require "rill.c.task"
local crypto = require "rill.c.crypto"
local os_c = require "rill.c.os"
local log = require "rill.log"
local time = require "rill.time"
local store = require "rill.engine.store"
local flows = require "rill.engine.flows"
local pauses = require "rill.engine.pauses"

local admin = {}

local server
local phase = "starting"  -- starting | serving | stopping (readyz answers 200 only while serving)
local token_digest      -- sha256 of the token; nil: API disabled
local reload_flows      -- main's reload(why) -> summary
local flows_dir         -- where settings.json is (PUT /api/flows/NAME/settings)
local DISABLED = "admin API disabled: set RILL_ADMIN_TOKEN"
local STATES = { queued = 1, running = 1, retrying = 1, sleeping = 1, waiting = 1, succeeded = 1, failed = 1,
                 dead = 1, cancelled = 1 }
local MAX_LIMIT = 1000
local REQUEST_LIMITS = { deadline = 10 }

-- ---- JSON with arrays and stored JSON text: admin_json.lua ----
local admin_json = require "rill.engine.admin_json"
local array, raw, encode = admin_json.array, admin_json.raw, admin_json.encode
admin.encode = encode

local function iso_ms(ms) return ms and time.iso(ms / 1000) or nil end

-- ---- answers ----

local JSON_HEADERS = { ["content-type"] = "application/json", ["cache-control"] = "no-store" }

local function reply(req, status, body, headers)
  req:respond(status, encode(body), headers or JSON_HEADERS)
end

-- (a message quoting the request's path or parameters is made UTF-8: raw
-- bytes of "GET /\xff" made an answer that was not JSON)
local function reply_error(req, status, message, headers)
  reply(req, status, { error = log.text(message) }, headers)
end

-- A handler stops with fail(status, message): the request is answered with it.
local FAIL = {}
local function fail(status, message, headers)
  error(setmetatable({ status = status, message = message, headers = headers }, FAIL), 0)
end

-- ---- flows ----

-- A trigger as JSON: its settings, without functions, the parsed cron spec or
-- the line it is declared at.
local function trigger_info(t)
  local out = {}
  for k, v in pairs(t) do
    local kind = type(v)
    if type(k) == "string" and k ~= "spec" and k ~= "line"
        and (kind == "string" or kind == "number" or kind == "boolean") then
      out[k] = v
    end
  end
  if t.verify then out.verify = true end
  if t.type == "event" and (t.match or t.match_fn) then out.match = true end -- (a table or a function)
  return out
end

local function flow_list()
  local next_fires = {}
  for _, f in ipairs(require("rill.engine.scheduler").next_fires()) do
    next_fires[f.flow] = next_fires[f.flow] or array()
    table.insert(next_fires[f.flow], { expr = f.expr, tz = f.tz, next = f.next })
  end
  local paused_at = store.pauses()
  local files = {}
  for file in pairs(flows.by_file) do files[file] = true end
  for file in pairs(flows.errors) do files[file] = true end
  local list = {}
  for file in pairs(files) do
    local v = flows.by_file[file]
    local item = { file = file, load_error = flows.errors[file] }
    if v then
      local triggers = array()
      for i, t in ipairs(v.triggers) do triggers[i] = trigger_info(t) end
      item.name, item.version, item.description = v.name, v.version, v.description
      item.loaded_at = time.iso(v.loaded_at)
      item.triggers = triggers
      item.concurrency = v.concurrency
      if next(v.modules or {}) then item.modules = v.modules end
      if next(v.settings or {}) then item.settings = array(require("rill.settings").list(v)) end
      item.paused = pauses.is_paused(v.name)
      item.paused_at = iso_ms(paused_at[v.name])
      item.next_fires = next_fires[v.name]
      item.status = item.paused and "paused" or (item.load_error and "error" or "active")
    else
      item.status = "error"  -- the file never loaded: no version serves it
      item.paused = false
    end
    list[#list + 1] = item
  end
  table.sort(list, function(a, b) return a.file < b.file end)
  return { flows = array(list), reloads = flows.reloads }
end

-- ---- runs ----

local function run_row(r)
  return {
    id = r.id, flow = r.flow, state = r.state, attempt = r.attempt, max_attempts = r.max_attempts,
    created = iso_ms(r.created), started = iso_ms(r.started), finished = iso_ms(r.finished),
    next_try = (r.state == "queued" or r.state == "retrying" or r.state == "sleeping"
      or (r.state == "waiting" and r.run_at < 2 ^ 52)) and iso_ms(r.run_at) or nil,
    error = raw(log.mask(r.error)),
  }
end

-- A time bound of the runs query: ISO 8601 or milliseconds since the epoch.
local function time_param(q, name)
  local v = q[name]
  if v == nil or v == "" then return nil end
  if v:match("^%d+$") then return tonumber(v) end
  local ok, t = pcall(time.parse, v)
  if not ok then fail(400, name .. ": expected an ISO 8601 time or milliseconds since the epoch, got " .. v) end
  return math.floor(t * 1000 + 0.5)
end

local function runs_query(q)
  local known = { flow = 1, state = 1, since = 1, ["until"] = 1, limit = 1 }
  for k in pairs(q) do
    if not known[k] then fail(400, "unknown parameter " .. k .. " (flow, state, since, until, limit)") end
  end
  if q.state and q.state ~= "" and not STATES[q.state] then
    fail(400, "state: " .. q.state .. " is not a run state (queued, running, retrying, sleeping, waiting, "
      .. "succeeded, failed, dead, cancelled)")
  end
  local limit = 50
  if q.limit and q.limit ~= "" then
    limit = tonumber(q.limit:match("^%d+$") or "")
    if not limit or limit < 1 or limit > MAX_LIMIT then fail(400, "limit: expected 1 to " .. MAX_LIMIT) end
  end
  local rows = store.list { flow = q.flow ~= "" and q.flow or nil, state = q.state ~= "" and q.state or nil,
    limit = limit, since = time_param(q, "since"), ["until"] = time_param(q, "until") }
  local out = array()
  for i, r in ipairs(rows) do out[i] = run_row(r) end
  return { runs = out, limit = limit }
end

-- The run's sequence for the console to draw (diagram.lua): participants
-- and messages, each message's text complete (its call's duration, the id
-- of the run it started).
local function sequence(r)
  local diagram = require "rill.engine.diagram"
  local m = diagram.model(r, store.children(r.id, diagram.max_children + 1))
  local messages = array()
  for i, msg in ipairs(m.messages) do
    messages[i] = { from = msg.from, to = msg.to, kind = msg.kind, text = diagram.label(msg) }
  end
  local participants = array()
  for i, p in ipairs(m.participants) do participants[i] = p end
  return { participants = participants, messages = messages, mermaid = diagram.mermaid(m) }
end

-- One run with its timeline: attempts (from their log lines), steps, log
-- lines, and the outbound HTTP calls its lines record.
local function run_detail(id)
  local r = store.get(id)
  if not r then fail(404, "no run " .. id) end
  log.mask_all(r)
  local out = run_row(r)
  out.version, out.parent, out.depth = r.version, r.parent, r.depth
  out.trigger, out.payload, out.result, out.request = raw(r.trigger), raw(r.payload), raw(r.result), raw(r.request)
  out.settings = raw(r.settings) -- the flow's settings as the run was created: its attempts read these
  local logs, attempts, outbound, by_attempt = array(), array(), array(), {}
  for i, l in ipairs(r.logs) do
    logs[i] = { attempt = l.attempt, seq = l.seq, at = iso_ms(l.at), level = l.level, message = l.message,
                fields = raw(l.fields) }
    local a = by_attempt[l.attempt]
    if not a then
      a = { attempt = l.attempt, first_at = iso_ms(l.at), lines = 0, errors = 0 }
      by_attempt[l.attempt] = a
      attempts[#attempts + 1] = a
    end
    a.last_at, a.lines = iso_ms(l.at), a.lines + 1
    if l.level == "error" then a.errors = a.errors + 1 end
    if l.message == "http" or l.message == "http request failed" then
      local f = l.fields and json.try_decode(l.fields) or {}
      outbound[#outbound + 1] = { attempt = l.attempt, at = iso_ms(l.at), method = f.method, url = f.url,
                                  status = f.status, ms = f.ms, error = f.error }
    end
  end
  local steps = array()
  for i, s in ipairs(r.steps) do
    steps[i] = { seq = s.seq, name = s.name, result = raw(s.result), attempts = s.attempts,
                 started = iso_ms(s.started), finished = iso_ms(s.finished) }
  end
  out.logs, out.attempts, out.steps, out.outbound = logs, attempts, steps, outbound
  -- the event that started the run, and the runs the events it emitted started
  out.started_by = r.started_by
  local event_runs = array()
  for i, e in ipairs(r.event_runs) do
    event_runs[i] = { event = e.event, event_id = e.event_id, flow = e.flow, run_id = e.run_id, at = iso_ms(e.created) }
  end
  out.event_runs = event_runs
  out.sequence = sequence(r)
  return out
end

-- ---- routes ----

local API = {}  -- { method, pattern, handler(params, query) -> status, body }

local function route(method, pattern, fn)
  API[#API + 1] = { method = method, pattern = "^" .. pattern .. "$", fn = fn }
end

local ID = "([%w%-_]+)"

route("GET", "/api/flows", function() return 200, flow_list() end)

route("GET", "/api/runs", function(_, q) return 200, runs_query(q) end)

route("GET", "/api/runs/" .. ID, function(p) return 200, run_detail(p[1]) end)

route("POST", "/api/runs/" .. ID .. "/retry", function(p)
  local ok, why = store.requeue(p[1])
  if not ok then fail(why:match("^no run") and 404 or 409, why) end
  log.info("run retried from the admin API", { run_id = p[1] })
  require("rill.engine.queue").kick()
  return 200, { id = p[1], state = "queued" }
end)

route("POST", "/api/runs/" .. ID .. "/cancel", function(p)
  local ok, why = store.cancel(p[1])
  if not ok then fail(why:match("^no run") and 404 or 409, why) end
  log.info("run cancelled from the admin API", { run_id = p[1] })
  return 200, { id = p[1], state = "cancelled" }
end)

route("POST", "/api/reload", function()
  if not reload_flows then fail(409, "this rill does not serve flows") end
  local summary = reload_flows("admin API")
  local failed = {}
  for file, msg in pairs(summary.failed) do failed[#failed + 1] = { file = file, error = msg } end
  table.sort(failed, function(a, b) return a.file < b.file end)
  return 200, { loaded = array(summary.loaded), removed = array(summary.removed), failed = array(failed) }
end)

local function pause_route(action)
  route("POST", "/api/flows/" .. ID .. "/" .. action, function(p)
    local name = p[1]
    local on = action == "pause"
    if not flows.active[name] and not (not on and pauses.is_paused(name)) then
      fail(404, "no flow named " .. name)
    end
    local was = pauses.is_paused(name)
    pauses.set(name, on)
    if was ~= on then log.info(on and "flow paused from the admin API" or "flow resumed from the admin API",
      { flow = name }) end
    if not on then require("rill.engine.queue").kick() end
    return 200, { flow = name, paused = on, changed = was ~= on }
  end)
end
pause_route("pause")
pause_route("resume")

-- POST /api/events/NAME[?id=ID], body: its data: an event by hand (events.by_hand):
-- 202 with the flows it starts, 200 for an id already stored. NAME is percent-decoded.
route("POST", "/api/events/([^/]+)", function(p, q, body)
  local name = p[1]:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
  local e, new, why = require("rill.engine.events").by_hand(name, body, q.id)
  if new == 503 then -- the store could not take it: as an async webhook's event
    fail(503, why, { ["content-type"] = "application/json", ["cache-control"] = "no-store",
      ["retry-after"] = string.format("%d", math.ceil(require("rill.engine.webhook").store_retry_after)) })
  end
  if not e then fail(new, why) end
  if new then log.info("event emitted from the admin API", { event = name, id = e.id }) end
  return new and 202 or 200, { event = name, id = e.id, new = new, starts = array(new and e.starts or {}) }
end)

-- PUT /api/flows/NAME/settings {"setting": value, ...}: validated against the
-- flow's declarations, written to FLOWS_DIR/settings.json, applied by a
-- reload; null puts a setting back to its default. Runs already created
-- keep the values they were created with.
route("PUT", "/api/flows/" .. ID .. "/settings", function(p, _, body)
  local settings = require "rill.settings"
  if not reload_flows then fail(409, "this rill does not serve flows") end
  local flow = flows.active[p[1]]
  if not flow then fail(404, settings.no_flow(p[1], flows.active)) end
  -- cjson copies a string's bytes as they are: the file, GET /api/flows and
  -- the runs' recorded settings would not be UTF-8
  local bad = body and require("rill.c.utf8").first_invalid(body)
  if bad then fail(400, "the settings are not JSON: byte " .. bad .. " is not UTF-8") end
  local changes = json.try_decode(body or "")
  if type(changes) ~= "table" then fail(400, 'expected a JSON object of settings, e.g. {"threshold": 20000}') end
  local ok, why, what = settings.change(flows_dir, flow, changes)
  -- a bad value is the caller's (400); a settings.json whose text is broken
  -- is a conflict with the stored state, to fix by hand (409); a file that
  -- cannot be read or written is the server's (500)
  if not ok then fail(({ invalid = 400, broken = 409 })[what] or 500, why) end
  log.info("flow settings changed from the admin API", { flow = flow.name, settings = json.encode(changes) })
  local summary = reload_flows("admin API: settings of " .. flow.name)
  local err = summary.failed[flow.file]
  if err then fail(409, err) end
  return 200, { flow = flow.name, settings = array(settings.list(flows.active[flow.name] or flow)) }
end)

local function authorized(headers)
  local given = (headers.authorization or ""):match("^[Bb]earer%s+(%S+)%s*$")
  -- digests of equal length, compared in constant time: nothing about the
  -- token leaks through the time a wrong guess takes
  return given ~= nil and crypto.equals(crypto.digest("sha256", given), token_digest)
end

local function api(req, method, path, query, headers, body)
  if not token_digest then return reply_error(req, 403, DISABLED) end
  if not authorized(headers) then
    return reply_error(req, 401, "missing or wrong bearer token (Authorization: Bearer $RILL_ADMIN_TOKEN)",
      { ["content-type"] = "application/json", ["www-authenticate"] = 'Bearer realm="rill admin"' })
  end
  local allowed = {}
  for _, r in ipairs(API) do
    local caps = { path:match(r.pattern) }
    if caps[1] or path:match(r.pattern) then
      if r.method == method then
        local q = require("rill.engine.webhook").parse_form(query)
        return task.spawn(function()
          local ok, status, rbody = pcall(r.fn, caps, q, body)
          if ok then return status, rbody end
          if getmetatable(status) == FAIL then return status.status, { error = status.message }, status.headers end
          error(status, 0)
        end, function(_, ok, status, body, headers)
          if ok then return reply(req, status, body, headers) end
          log.error("admin API request failed", { method = method, path = path, error = tostring(status) })
          reply_error(req, 500, "internal error: " .. tostring(status))
        end, REQUEST_LIMITS, nil)
      end
      allowed[#allowed + 1] = r.method
    end
  end
  if #allowed > 0 then
    return reply_error(req, 405, method .. " is not allowed here",
      { ["content-type"] = "application/json", allow = table.concat(allowed, ", ") })
  end
  reply_error(req, 404, "no admin API endpoint " .. method .. " " .. path)
end

-- ---- health and metrics ----

local function readyz(req)
  task.spawn(function()
    if phase == "starting" then return "starting" end
    if phase == "stopping" then return "stopping: running runs are draining" end
    if not store.is_open() then return "the store is not open" end
    store.batch { { "SELECT 1 AS ok" } }
    -- it answers, but may not take writes (a full disk, a lock held)
    if store.write_failure and require("rill.c.tz").now() - store.write_failure_at < 30 then
      return "the store cannot take writes: " .. store.write_failure
    end
    if flows.reloads == 0 then return "the flows are not loaded yet" end
    return nil
  end, function(_, ok, why)
    if ok and not why then
      -- a flow missing a variable fails its own runs (a webhook's 401): named
      -- here, without making the instance unready for the other flows
      local n, missing = 0, array()
      local env = require "rill.env"
      for name, v in pairs(flows.active) do
        n = n + 1
        for _, m in ipairs(env.missing(v.env_needs)) do missing[#missing + 1] = "flow " .. name .. ": " .. m end
      end
      local rejected = array() -- files refused at the last reload: their previous versions (if any) serve
      for _, msg in pairs(flows.errors or {}) do rejected[#rejected + 1] = msg end
      for _, list in ipairs { missing, rejected } do table.sort(list) end
      return reply(req, 200, { status = "ready", flows = n, missing_env = #missing > 0 and missing or nil,
        rejected = #rejected > 0 and rejected or nil })
    end
    reply(req, 503, { status = "not ready", reason = ok and why or ("store unreachable: " .. tostring(why)) })
  end, { deadline = 2 }, nil)
end

local function metrics(req)
  local ok, m = pcall(require, "rill.metrics")
  if not ok or type(m) ~= "table" or type(m.render) ~= "function" then
    return reply_error(req, 404, "metrics are not available in this build")
  end
  local rok, text = pcall(m.render)
  if not rok then
    log.error("rendering metrics failed", { error = tostring(text) })
    return reply_error(req, 500, "rendering metrics failed")
  end
  req:respond(200, text, { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8" })
end

-- ---- console ----

local function console(req, method, path)
  if not token_digest then return reply_error(req, 403, DISABLED) end
  if method ~= "GET" and method ~= "HEAD" then
    return reply_error(req, 405, method .. " is not allowed here",
      { ["content-type"] = "application/json", allow = "GET" })
  end
  local files = require "rill.engine.console"
  local name = path:match("^/console/(.*)$")
  local file = files[name == "" and "index.html" or name]
  if not file then return reply_error(req, 404, "no console file " .. path) end
  req:respond(200, file.body, {
    ["content-type"] = file.type, ["cache-control"] = "no-cache",
    ["content-security-policy"] = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    ["x-content-type-options"] = "nosniff", ["referrer-policy"] = "no-referrer",
  })
end

-- dispatch(req, method, path, query, headers, body): every admin request.
function admin.dispatch(req, method, path, query, headers, body)
  if path == "/healthz" or path == "/readyz" or path == "/metrics" then
    if method ~= "GET" and method ~= "HEAD" then
      return reply_error(req, 405, method .. " is not allowed here",
        { ["content-type"] = "application/json", allow = "GET" })
    end
    if path == "/healthz" then return reply(req, 200, { status = "ok" }) end
    if path == "/readyz" then return readyz(req) end
    return metrics(req)
  end
  if path:sub(1, 5) == "/api/" then return api(req, method, path, query, headers, body) end
  if path == "/" or path == "/console" then
    return req:respond(302, "", { ["content-type"] = "text/plain", location = "/console/" })
  end
  if path:sub(1, 9) == "/console/" then return console(req, method, path) end
  reply_error(req, 404, "nothing at " .. path .. " (try /console/, /api/flows, /healthz)")
end

-- start(c, opts): listens on c.admin_host:c.admin_port unless admin_listen
-- is "off"; opts.reload(why) reloads the flows (POST /api/reload). The
-- token comes from the environment only. A listener that cannot start is
-- logged as an error; the webhooks are served all the same.
function admin.start(c, opts)
  reload_flows = opts and opts.reload
  flows_dir = c.flows_dir
  local token = os_c.getenv("RILL_ADMIN_TOKEN")
  if token and token ~= "" then
    token_digest = crypto.digest("sha256", token)
    log.add_secret(token)
  else
    token_digest = nil
  end
  if not c.admin_host then
    log.info("admin listener off (admin_listen = \"off\")")
    return nil
  end
  local err
  -- its own connection budget (admin_max_connections), kept out of the
  -- webhooks' max_connections: probes are answered whatever the webhooks get
  local limits = require("rill.engine.listener").options(c)
  limits.max_body, limits.max_connections = 64 * 1024, c.admin_max_connections
  -- descriptors held for it: when the process runs out, it still accepts
  limits.reserve_descriptors = c.admin_max_connections
  limits.on_error = function(msg) log.error("error in the admin dispatch", { error = msg }) end
  server, err = require("rill.c.http_server").listen(c.admin_host, c.admin_port, admin.dispatch, limits)
  if not server then
    log.error("the admin listener could not start: " .. tostring(err), { admin_listen = c.admin_listen })
    return nil
  end
  require("rill.engine.listener").watch("admin", server, c.http_log_interval)
  local where = c.admin_host .. ":" .. server:port()
  if token_digest then
    log.info("admin API and console listening", { admin = "http://" .. where .. "/console/" })
  else
    log.warn("ADMIN API DISABLED: RILL_ADMIN_TOKEN is not set; /api/ and /console/ answer 403 "
      .. "(/healthz, /readyz and /metrics are served)", { admin = where })
  end
  return server
end

-- set_phase("serving" | "stopping"): what /readyz says. The listener stays
-- open while runs drain at shutdown, so that probes see "stopping".
function admin.set_phase(p) phase = p end

return admin
