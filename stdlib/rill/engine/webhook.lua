-- webhook: routes HTTP requests to the flows whose webhook triggers match,
-- turns the request into the run's payload (a body of the declared type, or
-- a clear 4xx), and turns a sync run's result into the response. The route
-- table is rebuilt from the active flow versions after every reload, so a
-- request is served by the version active when it arrived.
local json = require "rill.json"
local runner = require "rill.engine.runner"
local queue = require "rill.engine.queue"
local log = require "rill.log"
local events = require "rill.engine.events"
local crypto = require "rill.c.crypto"
local pauses = require "rill.engine.pauses"
local metrics = require "rill.metrics"

local webhook = { max_header_size = 32 * 1024 } -- a sync run's response headers at most (setting max_header_size)
webhook.store_retry_after = 5 -- seconds; the store_retry_after setting
webhook.log_interval = 60 -- seconds; the http_log_interval setting

-- A store that is down refuses every event: one log line per log_interval,
-- with how many were refused since the last one (each is counted in
-- rill_store_failures_total).
local unstored = { at = -math.huge, count = 0 }
local function log_unstored(path, err)
  unstored.count = unstored.count + 1
  local now = os.time()
  if now - unstored.at < webhook.log_interval then return end
  log.error("an async webhook's run could not be stored: answered 503",
    { path = path, error = err, count = unstored.count })
  unstored.at, unstored.count = now, 0
end
-- The max_json_values setting: a JSON body takes about 25 times its size in
-- memory once decoded ("{}," is a table of its own), memory that belongs
-- to no run yet; bodies of more values than this are refused before decoding.
webhook.max_json_values = 20000
local LARGE_BODY = 65536 -- smaller bodies cannot hold that many values: not counted

local requests = metrics.counter("rill_webhook_requests_total",
  "Webhook requests answered, by method, route (the trigger's path; none when no route matched) and status.",
  { "method", "route", "status" })

local exact = {}     -- method -> path -> route
local patterns = {}  -- routes whose path has :params, in load order
local paths = {}     -- path -> {methods}, for 405 answers

local JSON = { ["content-type"] = "application/json" }
local PAUSED_RETRY_AFTER = "60" -- seconds a sender of a paused flow's webhook is asked to wait

local accept, start, verified
local task = require "rill.c.task"
-- (memory: run_memory_limit; on rill's own meter a verify kept 60 MiB a request)
local VERIFY_LIMITS = { deadline = 1, memory = 0 }

-- Every answer goes through here, counted by its route (a route table, or
-- the method alone when none matched).
local function answer(req, route, status, body, headers)
  if type(route) == "table" then
    requests:labels(route.trigger.method, route.trigger.path, status):inc()
  else
    requests:labels(route, "none", status):inc()
  end
  return req:respond(status, body, headers)
end

local function reply_error(req, route, status, message, extra, headers)
  local body = { error = message }
  if extra then for k, v in pairs(extra) do body[k] = v end end
  answer(req, route, status, json.encode(body), headers or (extra and extra.allow and { allow = extra.allow } or nil))
end

-- "%41" -> "A", in either case: gsub looks the escape up, a function
-- call per escape made a 1 MB form body of escapes take 0.75 s
local ESCAPED = {}
for i = 0, 255 do
  local lower, upper = string.format("%02x", i), string.format("%02X", i)
  ESCAPED[lower], ESCAPED[upper] = string.char(i), string.char(i)
  ESCAPED[lower:sub(1, 1) .. upper:sub(2)], ESCAPED[upper:sub(1, 1) .. lower:sub(2)] = string.char(i), string.char(i)
end
local function unescape(s)
  s = s:gsub("+", " ")
  return (s:gsub("%%(%x%x)", ESCAPED))
end

-- The position of the first byte of s that is not valid UTF-8, or nil (one
-- pass in C: a body may be max_body long, past what a pattern search may take).
-- (the decoder copies string bytes as they are: invalid ones would reach the flow.)
local utf8_error = require("rill.c.utf8").first_invalid

-- Whether s (a path, a query string, a form body) is not UTF-8 once
-- percent-decoded: its values would reach the flow as such bytes, and
-- json.encode copies them into the answer as they are (invalid JSON).
-- Refused like a JSON body that is not UTF-8. Most have no escape: a plain
-- search and the C check (a pattern tried at every byte cost ~2,300 instr.).
local function not_utf8(s)
  if not string.find(s, "%", 1, true) then return utf8_error(s) ~= nil end
  return utf8_error(unescape(s)) ~= nil
end

-- "a=1&b=x+y" -> {a = "1", b = "x y"}; a repeated key keeps its last value.
local function parse_form(s)
  local t = {}
  if not s then return t end
  for pair in s:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    if k and k ~= "" then t[unescape(k)] = unescape(v) end
  end
  return t
end
webhook.parse_form = parse_form

local function compile(path)
  local names = {}
  local pat = "^" .. path:gsub("[%-%.%+%[%]%(%)%$%^%%%?%*]", "%%%0"):gsub("/:([%w_]+)", function(n)
    names[#names + 1] = n
    return "/([^/]+)"
  end) .. "$"
  return pat, names
end

-- rebuild(active): the routes of every active flow's webhook triggers.
function webhook.rebuild(active)
  exact, patterns, paths = { GET = {}, POST = {}, PUT = {}, PATCH = {}, DELETE = {} }, {}, {}
  local names = {}
  for name in pairs(active) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    local flow = active[name]
    for _, t in ipairs(flow.triggers) do
      if t.type == "webhook" then
        -- what ctx.trigger of each run of this route holds (runner.start copies it per run)
        local info = { type = "webhook", method = t.method, path = t.path }
        local route = { flow = flow, trigger = t, info = info, info_json = json.encode(info) }
        if t.params then
          route.pattern, route.names = compile(t.path)
          patterns[#patterns + 1] = route
        else
          exact[t.method][t.path] = route
        end
        local key = t.params and route.pattern or t.path
        paths[key] = paths[key] or {}
        table.insert(paths[key], t.method)
      end
    end
  end
end

local function match(method, path)
  for _, r in ipairs(patterns) do
    if r.trigger.method == method then
      local caps = { path:match(r.pattern) }
      if caps[1] then
        local params = {}
        for i, n in ipairs(r.names) do params[n] = unescape(caps[i]) end
        return r, params
      end
    end
  end
end

local function allowed(path)
  if paths[path] then return paths[path] end
  for _, r in ipairs(patterns) do
    if path:match(r.pattern) then return paths[r.pattern] end
  end
end

-- How many numbers decodes have read as infinite: 1e400 (or 400 digits)
-- reads as infinity, which no JSON can carry back (a sync run's result, an
-- event). Counted in C as the decoder reads each number (runtime/cjson_buf.c).
local decoded_infinities = require("rill.c.cjson_buf").infinities

-- The payload a trigger declares, from the raw request; or nil, status, reason.
local function payload_of(trigger, method, query, headers, body)
  if body == "" then
    if method == "GET" or method == "DELETE" then return parse_form(query) end
    if trigger.body == "json" then return nil, 400, "empty body: this webhook expects a JSON body" end
  end
  if trigger.body == "json" then
    local ctype = headers["content-type"]
    -- (the usual value first: a string comparison, where the pattern search
    -- cost a sync request ~800 instructions, bench/instr-ab.sh)
    if ctype and ctype ~= "application/json" and not ctype:find("[Jj][Ss][Oo][Nn]") then
      return nil, 415, "this webhook expects Content-Type application/json, got " .. ctype
    end
    local bad = utf8_error(body)
    if bad then return nil, 400, "malformed JSON body: byte " .. bad .. " is not UTF-8" end
    if #body > LARGE_BODY then
      local _, values = string.gsub(body, "[,%[{]", "")
      if values > webhook.max_json_values then
        return nil, 413, string.format("JSON body with more than %d values (max_json_values)", webhook.max_json_values)
      end
    end
    local infinities = decoded_infinities()
    local v, err = json.try_decode(body)
    if v == nil then return nil, 400, "malformed JSON body: " .. tostring(err) end
    if decoded_infinities() ~= infinities then
      return nil, 400, "malformed JSON body: a number is out of range"
    end
    return v
  elseif trigger.body == "form" then
    -- parsed in Lua on the loop: a 1 MB body of 200,000 fields held it 0.6 s
    if #body > LARGE_BODY then
      local _, fields = string.gsub(body, "&", "")
      if fields >= webhook.max_json_values then
        return nil, 413, string.format("form body with more than %d fields (max_json_values)", webhook.max_json_values)
      end
    end
    if not_utf8(body) then return nil, 400, "malformed form body: it is not UTF-8 once percent-decoded" end
    return parse_form(body)
  end
  -- text: the flow reads it as text, and an async run's is stored as such
  -- (Postgres refuses bytes that are not UTF-8: the sender got 503 for ever)
  local bad = utf8_error(body)
  if bad then return nil, 400, "malformed text body: byte " .. bad .. " is not UTF-8" end
  return body
end
webhook.payload_of = payload_of -- for tests and fuzz/webhook_json.lua

-- headers_of(h) -> name = value table, or nil and what is wrong: the shapes
-- the HTTP client takes (name = value pairs), and "Name: value" strings.
-- A key or value of a flow's table, named without calling its metamethods:
-- this runs after the run, outside its deadline (a __tostring that loops
-- held the loop for good).
local function plain(v)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  return "a " .. t
end

-- Read after the run, outside its deadline and slices: the headers are
-- weighed as they are read, and the loop stops past max_header_size (a run
-- that answered with a million headers held the loop 2 s here, and the
-- listener wrote them all).
local function headers_of(h)
  if h == nil then return nil end
  if type(h) ~= "table" then return nil, "headers must be a table" end
  local out, size, limit = {}, 0, webhook.max_header_size
  for k, v in next, h do
    local name, value
    if type(k) == "number" and type(v) == "string" then
      -- weighed before it is matched: the matcher's step budget raised on a
      -- 12 MB header, here in the answer, and the request went unanswered
      if size + #v > limit then
        return nil, string.format("the headers take more than %d bytes (max_header_size)", limit)
      end
      name, value = v:match("^([^:]*):[ \t]*(.*)$")
      if not name then return nil, string.format("header %q is not \"Name: value\"", v) end
    elseif type(k) == "string" and (type(v) == "string" or type(v) == "number") then
      name, value = k, type(v) == "number" and tostring(v) or v
    else
      return nil, string.format("header %s = %s: headers are name = value strings or \"Name: value\" strings",
        plain(k), plain(v))
    end
    size = size + #name + #value + 4
    if size > limit then
      return nil, string.format("the headers take more than %d bytes (max_header_size)", limit)
    end
    -- a NUL too: the listener refuses it (it raised there, after the run,
    -- and the request waited for request_timeout)
    if name == "" or name:find("[%c%s:]") or value:find("[%z\r\n]") then
      return nil, string.format("header %q has a line break, a NUL, a space or a colon in its name", name)
    end
    out[name] = value
  end
  return out
end

-- Answers a sync webhook's request (run.caller) with the run's outcome.
-- response()'s metatable, looked up once: require on every answer interned
-- its two names again (C strings) on each request.
local response_mt
local function respond(run)
  local req, route = run.caller.req, run.caller.route
  if run.state ~= "succeeded" then
    local timeout = run.error.message:find("deadline exceeded", 1, true)
    local why = timeout and "run exceeded its deadline"
      or run.error.limit == "memory" and "run exceeded its memory limit"
      or run.error.limit == "hold" and "run held the loop too long (max_hold)" or "run failed"
    return reply_error(req, route, timeout and 504 or 500, why, { run_id = run.id })
  end
  local r = run.result
  if r == nil then return answer(req, route, 204, "") end
  local status, body, headers = 200, r, JSON
  -- the result is read raw, after its run and outside its deadline: only
  -- response()'s own metatable makes it a response (a flow's table can say
  -- __metatable = "response", with an __index that loops), and no
  -- metamethod of the flow's runs here
  response_mt = response_mt or require("rill.engine.flows").response_mt -- (flows requires this module)
  if rawequal(debug.getmetatable(r), response_mt) then
    local herr
    status, body = rawget(r, "status"), rawget(r, "body")
    if type(status) ~= "number" or status < 200 or status > 599 or status % 1 ~= 0 then
      log.write("error", "the run's response has a bad status: " .. plain(status), nil, run)
      return reply_error(req, route, 500, "run response has a bad status", { run_id = run.id })
    end
    headers, herr = headers_of(rawget(r, "headers"))
    if herr then
      log.write("error", "the run's response has a bad header: " .. herr, nil, run)
      return reply_error(req, route, 500, "run response has a bad header", { run_id = run.id })
    end
    if type(body) == "string" then
      if not (headers and (headers["content-type"] or headers["Content-Type"])) then
        local h = { ["content-type"] = "text/plain; charset=utf-8" }
        for k, v in pairs(headers or {}) do h[k] = v end
        headers = h
      end
      return answer(req, route, status, body, headers)
    elseif body == nil then
      return answer(req, route, status, "", headers)
    end
  end
  local encoded, err = json.stored_text(body)
  if not encoded then
    -- a failed run, not a success: the history keeps it (record_sync); a
    -- string that is not UTF-8 made an answer that was not JSON
    run.state, run.error = "failed", { message = "the run's result is not JSON: " .. err }
    log.write("error", run.error.message, nil, run)
    return reply_error(req, route, 500, "run result is not JSON", { run_id = run.id })
  end
  answer(req, route, status, encoded, headers)
end

-- A sync run's end: the answer first, then the run joins the store's history.
local function respond_with(run)
  -- whatever fails in the answer, the request is answered and the run kept (an
  -- error here left the client waiting for request_timeout, the run unrecorded)
  local ok, err = pcall(respond, run)
  if not ok then
    run.state, run.error = "failed", { message = "answering the run failed: " .. tostring(err) }
    log.write("error", run.error.message, nil, run)
    pcall(reply_error, run.caller.req, run.caller.route, 500, "run could not be answered", { run_id = run.id })
  end
  local c = run.caller
  queue.record(run, c.route.info_json, c.route.trigger.body == "json" and c.body ~= "" and c.body or nil)
end

-- The delivery id an async webhook declares (idempotency = "header:X" or
-- "body:a.b"), as a string, or nil when the request carries none.
local function delivery_id(spec, headers, payload)
  local kind, name = spec:match("^(%a+):(.+)$")
  local v
  if kind == "header" then
    v = headers[name:lower()]
  elseif type(payload) == "table" then
    v = payload
    for part in name:gmatch("[^%.]+") do
      v = type(v) == "table" and v[part] or nil
    end
  end
  if type(v) == "string" or type(v) == "number" then return tostring(v) end
end

-- The answer to an async webhook once its run is stored (or not); a =
-- {req, route, request}.
local function accepted(id, dup, a)
  local req, route = a[1], a[2]
  if not id then
    -- Nothing was acknowledged: the sender keeps the event and sends it
    -- again (its delivery id makes a stored one a duplicate, not a second run).
    log_unstored(a[3].path, dup)
    return reply_error(req, route, 503, "the event could not be stored; retry later", nil,
      { ["retry-after"] = string.format("%d", math.ceil(webhook.store_retry_after)) })
  end
  if dup then return answer(req, route, 200, '{"run_id":"' .. id .. '","duplicate":true}', JSON) end
  answer(req, route, 202, '{"run_id":"' .. id .. '"}', JSON)
end

-- An async webhook's options for queue.submit, one table refilled for each
-- (submit keeps none of it).
local ACCEPT_OPTS = {}

local MAX_DELIVERY_ID = 200 -- kept as it is (as an event's id by hand); a longer one as its SHA-256

-- An async webhook: the run is stored, then the sender gets 202 and its id
-- (or 200 and the first run's id for a delivery seen before). The delivery
-- id is where the trigger's idempotency says, else the one its verify
-- function vouched for (a signed webhook-id, X-GitHub-Delivery).
accept = function(req, route, payload, request, verified_id)
  local trigger = route.trigger
  local idem = verified_id
  if trigger.idempotency then idem = delivery_id(trigger.idempotency, request.headers, payload) end
  if idem and #idem > MAX_DELIVERY_ID then
    -- (Postgres refuses an index entry past 8 KB: it was "503 retry later" for ever)
    idem = "sha256:" .. crypto.hex(crypto.digest("sha256", idem))
  end
  if trigger.idempotency and not idem then
    -- Stored all the same: an event is never refused for lack of an id.
    log.warn("webhook without its delivery id: stored without a duplicate check",
      { path = request.path, idempotency = trigger.idempotency })
  end
  local opts = ACCEPT_OPTS
  opts.request, opts.idem_key, opts.trigger_json = request, idem, route.info_json
  opts.payload_json = trigger.body == "json" and request.body ~= "" and request.body or nil
  opts.id, opts.event = nil, nil
  if trigger.emit then
    -- the event is stored with the run; a redelivery stores neither again
    opts.id = crypto.id7()
    local ok, row = pcall(events.row, trigger.emit, payload, idem and ("webhook " .. route.flow.name .. " " .. idem) or opts.id)
    if not ok then
      -- within max_body, a body may be over max_event_size as JSON (cjson
      -- writes "/" as "\/", a control byte as 6): the sender's error
      opts.request, opts.payload_json = nil, nil
      return reply_error(req, route, 413, tostring(row):match("emit: (.*)$") or tostring(row))
    end
    opts.event = row
  end
  queue.submit(route.flow, route.info, payload, opts, accepted, { req, route, request })
  opts.request, opts.payload_json, opts.event = nil, nil, nil -- (not kept alive until the next request)
end

-- A sync run's options, in one table refilled for each start: runner.start
-- reads all of it before the run's first instruction and keeps none of it
-- (a table and its hash part per request, bench/instr-ab.sh: ~8 last-level
-- cache misses per request of the GC's, with the settings' table).
local SYNC_OPTS = {}
start = function(req, route, payload, request, verified_id)
  if route.trigger.mode == "async" then return accept(req, route, payload, request, verified_id) end
  SYNC_OPTS.request, SYNC_OPTS.on_done = request, respond_with
  SYNC_OPTS.caller = { req = req, route = route, body = request.body }
  runner.start(route.flow, route.info, payload, SYNC_OPTS)
  SYNC_OPTS.request, SYNC_OPTS.caller = nil, nil -- (not kept alive until the next request)
end

-- The end of a trigger's verify(request), run as a task under a short
-- deadline before anything is stored or run. verify returns true [, the
-- delivery id], or false [, why]: a request it does not accept gets 401 and
-- goes no further; why goes to the log only, never to the sender.
verified = function(d, ok, genuine, detail)
  local req, route = d[1], d[2]
  if not ok then
    local why = tostring(genuine)
    log.error("a webhook's verify function failed", { path = route.trigger.path, error = why })
    if why:find("process_memory_limit", 1, true) then
      -- rill's whole memory, not this request's fault: asked to come back
      -- (a 401 is an answer many senders never retry: the event is lost)
      return reply_error(req, route, 503, "the request could not be verified now; retry later", nil,
        { ["retry-after"] = "30" })
    end
    return reply_error(req, route, 401, "the request could not be verified")
  end
  local t = type(detail)
  detail = (t == "string" and detail ~= "" or t == "number") and tostring(detail) or nil
  if not genuine then
    log.warn("webhook refused: signature check failed",
      { flow = route.flow.name, path = d[4].path, reason = detail or "verify returned false" })
    return reply_error(req, route, 401, "signature check failed")
  end
  start(req, route, d[3], d[4], detail)
end

-- ctx.request.query of a request without a query string: an empty table
-- made at its first read (most requests carry none, and few runs look),
-- each run's own, so that what one run writes in it no other run sees. The
-- metatable is shared: __metatable keeps it out of the runs' reach.
local REQUEST_MT = { __metatable = false, __index = function(request, k)
  if k ~= "query" then return nil end
  local q = {}
  rawset(request, "query", q)
  return q
end }

-- dispatch(req, method, path, query, headers, body): called by the HTTP
-- server for every complete request.
function webhook.dispatch(req, method, path, query, headers, body)
  if not_utf8(path) then
    return reply_error(req, method, 400, "malformed path: it is not UTF-8 once percent-decoded")
  end
  local by_path = exact[method]
  local route, params = by_path and by_path[path], nil
  if not route then
    route, params = match(method, path)
    if not route then
      local methods = allowed(path)
      if methods then
        return reply_error(req, method, 405, method .. " is not allowed here", { allow = table.concat(methods, ", ") })
      end
      return reply_error(req, method, 404, "no webhook at " .. method .. " " .. path)
    end
  end
  if pauses.is_paused(route.flow.name) then
    -- the sender keeps the event and tries again later
    return answer(req, route, 503, json.encode { error = "flow " .. route.flow.name .. " is paused; retry later" },
      { ["content-type"] = "application/json", ["retry-after"] = PAUSED_RETRY_AFTER })
  end
  local trigger = route.trigger
  if query and not_utf8(query) then
    return reply_error(req, route, 400, "malformed query string: it is not UTF-8 once percent-decoded")
  end
  local payload, status, reason = payload_of(trigger, method, query, headers, body)
  if status then return reply_error(req, route, status, reason) end
  local request = setmetatable({ method = method, path = path, query = query and parse_form(query) or nil,
                    headers = headers, body = body, params = params }, REQUEST_MT)
  if trigger.verify then
    request.peer = req.peer and req:peer() -- for an allow-list (signatures.shared_secret's allow_from)
    VERIFY_LIMITS.memory = runner.memory_limit
    return task.spawn(trigger.verify, verified, VERIFY_LIMITS, { req, route, payload, request }, request)
  end
  return start(req, route, payload, request)
end

return webhook
