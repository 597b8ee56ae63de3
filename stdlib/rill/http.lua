-- http: outbound HTTP for flows, over rill.c.http_client (libcurl driven by
-- the loop: a request waits without blocking anything else).
--   http.request{method, url, headers, query, body | json | form, timeout,
--                connect_timeout, max_size, verify, ca_file, redirects, retries}
--   http.get(url[, opts])  http.post(url[, opts])  put  patch  delete
--   -> response { status, ok, headers (any case), body, json() }
-- An HTTP status is an answer, not an error: check response.ok or .status.
-- A network failure or a timeout raises "http: GET https://host/path: reason
-- (after N ms)", which the run's retry policy acts on.
-- Each request is logged in the run's log: method, URL without its query
-- string or credentials, status, duration, and the service when a
-- connector made it (request_as), and the step that made it (the run's
-- sequence diagram draws them).
-- Headers (Authorization, tokens) are never logged.
local client = require "rill.c.http_client"
local json = require "rill.json"
local log = require "rill.log"
local time = require "rill.time"
local tz = require "rill.c.tz"
local current = require "rill.run" -- the step running now
local metrics = require "rill.metrics"

local http = {}

local requests_total = metrics.counter("rill_http_client_requests_total",
  "Outbound HTTP requests from flows, by host (host:port as in the URL) and status (error: no answer).",
  { "host", "status" })
local responses_refused = metrics.counter("rill_http_client_responses_refused_total",
  "Outbound HTTP responses refused for their size, by limit (max_size: the request's; run_memory_limit:"
  .. " the memory the run had left).", { "limit" })
local request_seconds = metrics.histogram("rill_http_client_request_duration_seconds",
  "Outbound HTTP requests from flows: time to the whole response, by host.", { "host" })

-- The URL's host[:port], without credentials: the metrics' host label, in
-- one spelling ("HOST:080" is "host:80").
local function host_of(url)
  local host = (url:match("^%a+://([^/?#]*)") or ""):gsub("^.*@", ""):lower()
  return (host:gsub(":0*(%d)", ":%1"))
end

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }
local METHODS = { GET = 1, HEAD = 1, POST = 1, PUT = 1, PATCH = 1, DELETE = 1, OPTIONS = 1 }
local OPTIONS = { method = 1, url = 1, headers = 1, query = 1, body = 1, json = 1, form = 1, timeout = 1,
  connect_timeout = 1, max_size = 1, verify = 1, ca_file = 1, redirects = 1, retries = 1 }

local function escape(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- encode{a = 1, b = "x y"} -> "a=1&b=x%20y", keys sorted (stable for logs and tests)
local function encode(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = escape(k) .. "=" .. escape(t[k]) end
  return table.concat(parts, "&")
end
http.encode = encode

-- The URL as it may be logged: no credentials, no query string, and no path
-- segment that looks like a token (a Slack webhook's last segment, a
-- Telegram bot<id>:<token>): 16 characters or more, with a digit, or a colon.
local function loggable(url)
  local base, path = url:gsub("^(%a+://)[^/@]*@", "%1"):gsub("[?#].*$", ""):match("^(%a+://[^/]*)(.*)$")
  if not base then return "(a URL)" end
  path = path:gsub("[^/]+", function(seg)
    if seg:find(":", 1, true) or (#seg >= 16 and seg:find("%d")) then return "***" end
  end)
  return base .. path
end

local function check(opts, level)
  local function bad(fmt, ...) error("http: " .. string.format(fmt, ...), level + 1) end
  if type(opts) ~= "table" then bad("expected a table of options, got %s", type(opts)) end
  for k in pairs(opts) do
    if not OPTIONS[k] then bad("unknown option %q", tostring(k)) end
  end
  if type(opts.url) ~= "string" or not opts.url:match("^https?://[^/]") then
    bad("url must start with http:// or https://, got %s", type(opts.url) == "string"
      and loggable(opts.url) or tostring(opts.url))
  end
  for _, k in ipairs { "timeout", "connect_timeout", "max_size", "redirects", "retries" } do
    if opts[k] ~= nil and (type(opts[k]) ~= "number" or opts[k] < 0) then
      bad("%s must be a number, 0 or more, got %s", k, tostring(opts[k]))
    end
  end
  -- a response body becomes a string of the flow's: no larger than the
  -- largest string a flow may build (nor than the memory the run has left)
  local max_string = require("rill.bounded").max_string
  if opts.max_size and opts.max_size > max_string then
    bad("max_size %d is over max_string (%d bytes), the largest string a flow may hold", opts.max_size, max_string)
  end
  if opts.ca_file ~= nil and type(opts.ca_file) ~= "string" then bad("ca_file must be a file name") end
  if opts.headers ~= nil and type(opts.headers) ~= "table" then bad("headers must be a table") end
  local n = (opts.body ~= nil and 1 or 0) + (opts.json ~= nil and 1 or 0) + (opts.form ~= nil and 1 or 0)
  if n > 1 then bad("give one of body, json or form") end
  local method = (opts.method or (n > 0 and "POST" or "GET")):upper()
  if not METHODS[method] then bad("unknown method %s", method) end
  return method
end

-- The request for the C side: header lines, body, URL with its query.
local function prepare(opts, method, level)
  local headers, has = {}, {}
  for name, value in pairs(opts.headers or {}) do
    name, value = tostring(name), tostring(value)
    if name:find("[%c:]") or value:find("[\r\n]") then
      error("http: header " .. name .. " has a line break or a colon in its name", level)
    end
    headers[#headers + 1] = name .. ": " .. value
    has[name:lower()] = true
  end
  local body = opts.body
  if opts.json ~= nil then
    body = json.encode(opts.json)
    if not has["content-type"] then headers[#headers + 1] = "Content-Type: application/json" end
  elseif opts.form ~= nil then
    body = encode(opts.form)
    if not has["content-type"] then headers[#headers + 1] = "Content-Type: application/x-www-form-urlencoded" end
  end
  if body ~= nil and type(body) ~= "string" then
    error("http: body must be a string (use json = ... for a table)", level)
  end
  -- inside a step, the same key on every attempt of that step: services
  -- that honour Idempotency-Key do the request once
  local key = not has["idempotency-key"] and current.step_key()
  if key then headers[#headers + 1] = "Idempotency-Key: " .. key end
  local url = opts.url
  if opts.query and next(opts.query) then url = url .. (url:find("?", 1, true) and "&" or "?") .. encode(opts.query) end
  return { method = method, url = url, headers = headers, body = body, timeout = opts.timeout,
    connect_timeout = opts.connect_timeout, verify = opts.verify,
    -- 10 MiB, never over max_string: the body is made in one step on the loop
    max_size = opts.max_size or math.min(10 * 1024 * 1024, require("rill.bounded").max_string),
    ca_file = opts.ca_file, redirects = opts.redirects }
end

local RESPONSE = { __metatable = false } -- shared by every response: out of flows' reach
RESPONSE.__index = RESPONSE

function RESPONSE:json()
  local v, err = json.try_decode(self.body)
  if v == nil then error("http: the response of " .. self.url .. " is not JSON: " .. tostring(err), 2) end
  return v
end

-- Header lookups in any case: response.headers["Content-Type"].
local HEADERS = { __index = function(t, k) return type(k) == "string" and rawget(t, k:lower()) or nil end,
                  __metatable = false }

local function request(opts, level, service)
  local method = check(opts, level + 1)
  local req = prepare(opts, method, level + 1)
  local shown = method .. " " .. loggable(req.url)
  if req.verify == false then
    log.warn("TLS certificate verification is OFF for this request", { url = loggable(req.url) })
  end
  local retries = IDEMPOTENT[method] and (opts.retries or 0) or 0
  local started = tz.now()
  for attempt = 0, retries do
    local sent = tz.now()
    local status, headers, body = http.transport(req) -- or nil, message, code
    local now = tz.now()
    local ms = math.floor((now - started) * 1000)
    local host = host_of(req.url)
    requests_total:labels(host, status or "error"):inc()
    request_seconds:labels(host):observe(now - sent)
    if status then
      log.info("http", { method = method, url = loggable(req.url), status = status, ms = ms, service = service,
        step = current.step_name() })
      return setmetatable({ status = status, ok = status >= 200 and status < 300,
        headers = setmetatable(headers, HEADERS), body = body, url = loggable(req.url) }, RESPONSE)
    end
    if body then responses_refused:labels(body):inc() end
    log.warn("http request failed", { method = method, url = loggable(req.url), error = headers, ms = ms,
      retry = attempt < retries and not body or nil, service = service, step = current.step_name() })
    if attempt == retries or body then error("http: " .. shown .. ": " .. headers, level) end
    time.sleep(0.25 * 2 ^ attempt) -- the test clock's, in rill test
  end
end

function http.request(opts) return request(opts, 2) end

-- request_as(service, opts): a connector's request, its log line naming the service.
function http.request_as(service, opts) return request(opts, 2, tostring(service)) end

for _, m in ipairs { "get", "post", "put", "patch", "delete" } do
  http[m] = function(url, opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.url, o.method = url, m:upper()
    return request(o, 2)
  end
end

http.configure = client.configure
-- what sends a prepared request: libcurl, or recorded answers in `rill test`
http.transport = client.request

return http
