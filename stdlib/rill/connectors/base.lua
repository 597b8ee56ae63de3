-- connectors/base: what every connector shares. A connector's settings come
-- from a table given to NAME.with{...} or else from the environment (read
-- through env, at each call, so a changed variable is seen without a
-- reload); a setting that is a credential is added to the log's secrets
-- the moment it is read. A call to the service is one http request: a
-- non-2xx answer raises "<service>: <operation>: <status> <reason>: <the
-- service's own message>", at the flow's line, with every known secret
-- masked, so that the run's stored error can be shown as is.
local env = require "rill.env"
local http = require "rill.http"
local json = require "rill.json"
local log = require "rill.log"

local base = {}

local REASONS = {
  [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
  [405] = "Method Not Allowed", [408] = "Request Timeout", [409] = "Conflict", [410] = "Gone",
  [413] = "Payload Too Large", [415] = "Unsupported Media Type", [422] = "Unprocessable",
  [429] = "Too Many Requests", [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}
base.REASONS = REASONS

-- The flow's file:line that called the connector: the first frame outside
-- the stdlib, embedded or on disk with RILL_STDLIB (connectors call each
-- other and helpers, so a fixed level would point inside them). A flow that
-- ends with `return connector.op(...)` makes a tail call: its frame is gone
-- and the error has no position.
local function where()
  for level = 3, 40 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    local src = info.source
    local stdlib = src:find("^@stdlib/rill/") or src:find("/rill/[%w_]+%.lua$") or src:find("/rill/connectors/[%w_]+%.lua$")
    if info.what ~= "C" and info.currentline > 0 and not stdlib then
      return info.short_src .. ":" .. info.currentline .. ": "
    end
  end
  return ""
end

-- raise(message): the connector's error, at the flow's line, secrets masked.
function base.raise(message)
  error(where() .. log.mask(message), 0)
end

-- from_env(service, spec, names[, owner]) -> the settings of one tenant's
-- account, read from the environment variables `names` gives (setting ->
-- variable name; nil, "" or db.null: that setting's default), for
-- NAME.with_env. A variable named but not set ends the run as dead (no
-- retry: a setting to fix), naming it and the owner (say "company 2
-- (Nordwind)"), so that a tenant's calls never go to the default account.
-- A name that is not one is not shown: it may be a secret pasted there.
function base.from_env(service, spec, names, owner)
  owner = owner or service
  local fail = require("rill.run").fail
  local given = {}
  for key, name in pairs(names or {}) do
    if not spec[key] then base.raise(service .. ".with_env: unknown setting " .. tostring(key)) end
    if type(name) == "string" and name ~= "" then
      if not name:match("^[%a_][%w_]*$") then
        fail(string.format("%s%s: the variable named for %s's %s is not an environment variable name", where(),
          owner, service, key), 0)
      end
      local value = env.get(name)
      if value == nil or value == "" then
        fail(string.format("%s%s: %s is not set (named for %s's %s)", where(), owner, name, service, key), 0)
      end
      given[key] = value
    end
  end
  return given
end

local CLIENT = { __metatable = false } -- shared by every client: out of flows' reach
CLIENT.__index = CLIENT

-- client(service, spec, given) -> a client. spec maps each setting to
-- { env = "VAR", secret = true, default = v }; given is the table passed to
-- with{} (nil: the environment only). Unknown keys in given are refused.
function base.client(service, spec, given)
  if given ~= nil then
    if type(given) ~= "table" then
      base.raise(service .. ".with: expected a table of settings, got " .. type(given))
    end
    for k in pairs(given) do
      if not spec[k] then
        local known = {}
        for name in pairs(spec) do known[#known + 1] = name end
        table.sort(known)
        base.raise(string.format("%s.with: unknown setting %q (known: %s)", service, tostring(k),
          table.concat(known, ", ")))
      end
    end
  end
  return setmetatable({ service = service, spec = spec, given = given or {} }, CLIENT)
end

-- setting(key[, optional]) -> its value; raises when it is missing.
function CLIENT:setting(key, optional)
  local s = self.spec[key]
  local v = self.given[key]
  if v == nil and s.env then v = env.get(s.env) end
  if v == nil then v = s.default end
  if v == "" then v = nil end
  if v == nil then
    if optional then return nil end
    base.raise(string.format("%s: %s is not set (give %s = ... to %s.with{...})", self.service,
      s.env or key, key, self.service))
  end
  if s.secret then
    v = tostring(v)
    log.add_secret(v)
    -- a secret URL (a Slack webhook): its path is the secret part
    local path = v:match("^%a+://[^/]+(/.+)$")
    if path then log.add_secret(path) end
  end
  return v
end

-- A base URL with no trailing slash.
function CLIENT:base_url(key)
  local url = self:setting(key)
  return (url:gsub("/+$", ""))
end

-- The service's own message in an error answer: message_of(decoded JSON
-- or nil, raw body) from the connector, else the body's first 200 bytes.
local function service_message(self, res)
  local decoded = json.try_decode(res.body)
  local msg = self.message_of and decoded ~= nil and self.message_of(decoded, res.body)
  if not msg or msg == "" then
    msg = res.body:gsub("%s+", " "):gsub("^ ", ""):sub(1, 200)
  end
  return msg
end

-- fail(operation, res[, detail]): raises the error for an answer.
function CLIENT:fail(operation, res, detail)
  local msg = detail or service_message(self, res)
  local status = tostring(res.status) .. (REASONS[res.status] and (" " .. REASONS[res.status]) or "")
  local retry = res.headers["retry-after"]
  if retry then status = status .. " (retry after " .. retry .. " s)" end
  base.raise(string.format("%s: %s: %s%s", self.service, operation, status,
    msg ~= "" and (": " .. msg) or ""))
end

-- request(operation, opts) -> the response (2xx), raising otherwise.
-- opts are http.request's; a network failure is raised with the service
-- and operation in front of http's reason.
function CLIENT:request(operation, opts)
  local ok, res = pcall(http.request_as, self.service, opts)
  if not ok then
    base.raise(string.format("%s: %s: %s", self.service, operation, tostring(res):gsub("^[^:]*:%d+: ", "")))
  end
  if not res.ok then self:fail(operation, res) end
  return res
end

-- call(operation, opts) -> the decoded JSON body of a 2xx answer (nil when
-- it is empty).
function CLIENT:call(operation, opts)
  local res = self:request(operation, opts)
  if res.body == "" then return nil end
  local v, err = json.try_decode(res.body)
  if v == nil then
    base.raise(string.format("%s: %s: %d but the answer is not JSON: %s", self.service, operation,
      res.status, tostring(err)))
  end
  return v
end

-- check(cond, message): an argument error at the flow's line.
function base.check(cond, service, fmt, ...)
  if not cond then base.raise(service .. ": " .. string.format(fmt, ...)) end
end

-- A path segment from an id given by a flow (a number or a string).
function base.id(service, what, v)
  base.check((type(v) == "number" and v == math.floor(v)) or (type(v) == "string" and v ~= ""), service,
    "%s must be an id (a whole number or a non-empty string), got %s", what, tostring(v))
  return http.encode({ x = v }):sub(3)
end

-- ---- what a flow's calls need set (rill check, serve's warnings, /readyz) ----

local declared = {} -- service -> { spec, ops = { [operation or "*"] = { {setting, ...}, ... } } }

-- needs(service, spec, ops): the settings each operation of the default
-- client (the environment's) needs, for scan. ops maps an operation (or
-- "*": any other) to a list of requirements, each a list of settings one
-- of which must be set (their spec's env names are the variables).
function base.needs(service, spec, ops)
  declared[service] = { spec = spec, ops = ops }
end

-- scan(source, file) -> env needs ({names, what, at}) of the calls source
-- makes on connectors' default clients (`slack.post(`, `mautic.find_contact {`),
-- once per variable and file. A file that makes a client of its own
-- (SERVICE.with, SERVICE.with_env) gives its settings itself: not scanned
-- for that service. Comments are skipped; a name in a string is no call.
function base.scan(source, file)
  local needs, seen = {}, {}
  local n = 0
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local code = line:gsub("%-%-.*$", "")
    for service, op in code:gmatch("%f[%w_]([%a_][%w_]*)%.([%a_][%w_]*)%s*[%({]") do
      local d = declared[service]
      local reqs = d and op ~= "with" and op ~= "with_env" and (d.ops[op] or d.ops["*"])
      if reqs and not source:find("%f[%w_]" .. service .. "%.with") then
        for _, req in ipairs(reqs) do
          local names = {}
          for i, key in ipairs(req) do names[i] = d.spec[key].env end
          local id = table.concat(names, " ")
          if not seen[id] then
            seen[id] = true
            needs[#needs + 1] = { names = names, at = file .. ":" .. n,
              what = string.format("%s.%s: the %s connector's %s", service, op, service, table.concat(req, " or ")) }
          end
        end
      end
    end
  end
  return needs
end
env.add_scanner(base.scan) -- rill check, serve's warnings and /readyz ask env what a flow needs

return base
