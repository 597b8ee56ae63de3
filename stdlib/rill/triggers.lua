-- triggers: the constructors a flow file declares its triggers with, and
-- their validation. Each constructor checks its arguments at once and raises
-- with error level 2, so that a mistake is reported at the flow's own
-- file:line (e.g. "flows/quote.lua:4: cron: field 'hour' ...").
--   webhook { path = "/hooks/x", method = "POST", mode = "sync"|"async", body = "json"|"text"|"form",
--             idempotency = "header:X-Delivery-Id" | "body:event.id",
--             verify = function(request) return <genuine?> [, delivery id | why not] end }
--             (stdlib/rill/signatures.lua makes them: verify = signatures.github { secret = "NAME" })
--   cron "0 9 * * MON-FRI"   or   cron { "0 9 * * *", tz = "Europe/Paris", missed = "skip"|"run_once" }
--   event { name = "quote.signed", match = { amount = 12000 } | function(data, event) return <start?> end }
--                            or event "quote.signed": every event of that name (emit, a webhook's
--                            emit) starts a stored run of the flow (events.lua: the fan-out)
--   manual()                 run by hand only (rill run)
--   from_flow()              started by other flows through flows.trigger
local cron = require "rill.cron"
local tz = require "rill.c.tz"

local triggers = {}

local MARK = {} -- marks tables made by the constructors
triggers.MARK = MARK -- (kept by flows.lua's plain copy of a flow's table)
local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local MODES = { sync = true, async = true }
local BODIES = { json = true, text = true, form = true }

-- fail(level, ...): level is error()'s: 4 from a maker called by a constructor
-- names the flow file's line (1 fail, 2 maker, 3 constructor, 4 flow chunk).
local function fail(level, fmt, ...)
  error(string.format(fmt, ...), level)
end

-- The source text of the flow file being loaded (set by flows.load_file), so
-- that a mistake inside a table is reported at its own line.
triggers.loading_source = nil

-- field_line(source, key[, from]) -> the first line from `from` on where
-- `key = ` is written as a table field (at a line's start or after { , ;),
-- or nil. A name in a comment or a string may match: a hint, not a parse.
function triggers.field_line(source, key, from)
  if type(source) ~= "string" or type(key) ~= "string" or not key:match("^[%a_][%w_]*$") then return nil end
  from = from or 1
  local n = 0
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if n >= from and (line:match("^%s*" .. key .. "%s*=[^=]") or line:match("[{,;]%s*" .. key .. "%s*=[^=]")
        or line:match("^%s*" .. key .. "%s*=$") or line:match("[{,;]%s*" .. key .. "%s*=$")) then
      return n
    end
  end
end

-- Edit distance (insert, delete, substitute, swap two neighbours) of a and b.
local function distance(a, b)
  local d = {}
  for i = 0, #a do d[i] = { [0] = i } end
  for j = 0, #b do d[0][j] = j end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        d[i][j] = math.min(d[i][j], d[i - 2][j - 2] + 1)
      end
    end
  end
  return d[#a][#b]
end

-- closest(key, names) -> the name key is most likely a typo of (at most 2
-- edits, fewer than half its length; key compared in lower case), or nil.
function triggers.closest(key, names)
  local best, best_d
  if type(key) == "string" and #key <= 64 then -- a longer name is no typo, and costly to compare
    for _, name in ipairs(names) do
      local dist = distance(key:lower(), name)
      if dist <= 2 and dist < #key / 2 and (not best_d or dist < best_d) then best, best_d = name, dist end
    end
  end
  return best
end

-- unknown(kind, key, names) -> "unknown option 'pathh' (did you mean 'path'?)",
-- or the list of names when none is close. A long key is shown cut.
function triggers.unknown(kind, key, names)
  local best = triggers.closest(key, names)
  local shown = type(key) == "string" and ("'" .. key:sub(1, 64) .. (#key > 64 and "...'" or "'"))
    or ("[" .. tostring(key):sub(1, 64) .. "]")
  if best then return string.format("unknown %s %s (did you mean '%s'?)", kind, shown, best) end
  return string.format("unknown %s %s (%ss: %s)", kind, shown, kind, table.concat(names, ", "))
end

-- check_keys: every key of t is in allowed (names: the ones a flow writes).
-- At a flow's load (level > 1), the error names the option's own line.
local function check_keys(t, allowed, names, what, level)
  for k in pairs(t) do
    if not allowed[k] then
      local msg = what .. ": " .. triggers.unknown("option", k, names)
      local info = level > 1 and debug.getinfo(level, "Sl")
      if info and info.source:sub(1, 1) == "@" and info.currentline > 0 then
        local line = triggers.field_line(triggers.loading_source, k, info.currentline) or info.currentline
        error(string.format("%s:%d: %s", info.source:sub(2), line, msg), 0)
      end
      fail(level + 1, "%s", msg)
    end
  end
end

local function make_webhook(spec, level)
  if type(spec) ~= "table" then fail(level, "webhook: expected a table, like webhook { path = \"/hooks/x\" }") end
  check_keys(spec, { path = 1, method = 1, mode = 1, body = 1, idempotency = 1, verify = 1, emit = 1, [MARK] = 1,
    type = 1 }, { "path", "method", "mode", "body", "idempotency", "verify", "emit" }, "webhook", level)
  local path = spec.path
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    fail(level, "webhook: path must be a string starting with '/', got %s", tostring(path))
  end
  if path:find("[%s?#]") then fail(level, "webhook: path %q must not contain spaces, '?' or '#'", path) end
  local method = (spec.method or "POST"):upper()
  if not METHODS[method] then fail(level, "webhook: method %q is not GET, POST, PUT, PATCH or DELETE", method) end
  local mode = spec.mode or "sync"
  if not MODES[mode] then fail(level, "webhook: mode %q is not \"sync\" or \"async\"", tostring(mode)) end
  local body = spec.body or "json"
  if not BODIES[body] then fail(level, "webhook: body %q is not \"json\", \"text\" or \"form\"", tostring(body)) end
  local params = {}
  for seg in path:gmatch("/:([%w_]+)") do params[#params + 1] = seg end
  local idem = spec.idempotency
  if idem ~= nil then
    if mode ~= "async" then fail(level, "webhook: idempotency applies to mode = \"async\" webhooks (stored runs)") end
    if not (type(idem) == "string" and (idem:match("^header:[%w%-_]+$") or idem:match("^body:[%w_%.%-]+$"))) then
      fail(level, "webhook: idempotency must be \"header:<name>\" or \"body:<field.path>\", got %s", tostring(idem))
    end
  end
  if spec.verify ~= nil and type(spec.verify) ~= "function" then
    fail(level, "webhook: verify must be a function(request) returning true for a genuine request")
  end
  if spec.emit ~= nil then
    if type(spec.emit) ~= "string" or spec.emit == "" then fail(level, "webhook: emit must be an event name") end
    if mode ~= "async" then
      fail(level, "webhook: emit applies to mode = \"async\" webhooks (the event is stored with the request)")
    end
  end
  return { [MARK] = true, type = "webhook", path = path, method = method, mode = mode, body = body,
           params = #params > 0 and params or nil, idempotency = idem, verify = spec.verify, emit = spec.emit }
end

local function make_cron(spec, level)
  if type(spec) == "string" then spec = { spec } end
  if type(spec) ~= "table" or type(spec[1]) ~= "string" then
    fail(level, "cron: expected an expression, like cron \"0 9 * * *\" or cron { \"0 9 * * *\", tz = \"Europe/Paris\" }")
  end
  check_keys(spec, { [1] = 1, tz = 1, missed = 1, [MARK] = 1, type = 1, expr = 1, spec = 1 }, { "tz", "missed" },
    "cron", level)
  local missed = spec.missed or "skip"
  if missed ~= "skip" and missed ~= "run_once" then
    fail(level, "cron: missed = %q is not \"skip\" or \"run_once\"", tostring(missed))
  end
  local zone = spec.tz or triggers.default_timezone
  local ok, why = tz.valid(zone)
  if not ok then fail(level, "cron: %s", why or ("unknown time zone " .. tostring(zone))) end
  local parsed_ok, parsed = pcall(cron.parse, spec[1])
  if not parsed_ok then fail(level, "%s", (tostring(parsed):gsub("^.-:%d+: ", ""))) end
  if cron.never_fires(parsed) then
    fail(level, "cron: %q never fires (no such date, like February 30)", spec[1])
  end
  return { [MARK] = true, type = "cron", expr = spec[1], tz = zone, spec = parsed, [1] = spec[1], missed = missed }
end

-- db_event { table = "quotes", on = "insert" | { "insert", "update", "delete" },
--            database = "main" }: a row changed in a Postgres table that
-- `rill db install-events` equipped.
local OPS = { insert = true, update = true, delete = true }
local function make_db_event(spec, level)
  if type(spec) ~= "table" then fail(level, "db_event: expected { table = \"name\", on = ... }") end
  check_keys(spec, { table = 1, on = 1, database = 1, ops = 1, ignore_own_writes = 1, emit = 1, [MARK] = 1, type = 1 },
    { "table", "on", "database", "ignore_own_writes", "emit" }, "db_event", level)
  if spec.emit ~= nil and (type(spec.emit) ~= "string" or spec.emit == "") then
    fail(level, "db_event: emit must be an event name")
  end
  if spec.ignore_own_writes ~= nil and type(spec.ignore_own_writes) ~= "boolean" then
    fail(level, "db_event: ignore_own_writes must be true or false")
  end
  if type(spec.table) ~= "string" or not spec.table:match("^[%a_][%w_]*$") then
    fail(level, "db_event: table must be a table name, got %s", tostring(spec.table))
  end
  local on = spec.on or spec.ops or { "insert", "update", "delete" }
  if type(on) == "string" then on = { on } end
  local ops = {}
  for _, op in ipairs(on) do
    if not OPS[op] then fail(level, "db_event: on = %q is not insert, update or delete", tostring(op)) end
    ops[op] = true
  end
  -- a flow's own writes do not trigger it again unless it says so (a loop)
  return { [MARK] = true, type = "db_event", table = spec.table, ops = ops, database = spec.database or "main",
           ignore_own_writes = spec.ignore_own_writes ~= false, emit = spec.emit }
end

-- event { name = "quote.signed", match = ... }: an event emitted by any
-- flow (emit(), a webhook's emit = NAME) starts a stored run of this flow.
-- match: a table of fields the event's data must have (compared when the
-- event is emitted: no run for an event that differs), or a function
-- (called in the flow's own run, which ends at once as skipped when it
-- returns false or nil).
local function make_event(spec, level)
  if type(spec) == "string" then spec = { name = spec } end
  if type(spec) ~= "table" then
    fail(level, "event: expected a name, like event \"quote.signed\" or event { name = \"quote.signed\", match = {...} }")
  end
  check_keys(spec, { name = 1, match = 1, [MARK] = 1, type = 1 }, { "name", "match" }, "event", level)
  if type(spec.name) ~= "string" or not spec.name:match("^[%w_][%w_%.%-:]*$") then
    fail(level, "event: name must be an event name (letters, digits, . - _ :), got %s", tostring(spec.name))
  end
  local match, match_fn = spec.match, nil
  if type(match) == "function" then match, match_fn = nil, match end
  if match ~= nil and type(match) ~= "table" then
    fail(level, "event: match must be a table of fields the event's data has, or a function(data, event)")
  end
  if match ~= nil and not pcall(require("rill.json").encode, match) then
    fail(level, "event: match must hold plain values (strings, numbers, booleans, tables of them)")
  end
  return { [MARK] = true, type = "event", name = spec.name, match = match, match_fn = match_fn }
end

local function make_simple(kind)
  return function(spec, level)
    if spec ~= nil and type(spec) ~= "table" then fail(level, "%s: takes no arguments", kind) end
    return { [MARK] = true, type = kind }
  end
end

local makers = {
  webhook = make_webhook, cron = make_cron, db_event = make_db_event, event = make_event,
  manual = make_simple("manual"), from_flow = make_simple("from_flow"),
}

triggers.default_timezone = "UTC"

-- The constructors as flows see them. No tail calls: they would drop the
-- frame that the error levels count on. Each trigger keeps the line it was
-- declared at, for the messages that name it (two flows on one route).
triggers.constructors = {}
for name, maker in pairs(makers) do
  triggers.constructors[name] = function(spec)
    local t = maker(spec, 4)
    local info = debug.getinfo(2, "l")
    t.line = info and info.currentline > 0 and info.currentline or nil
    return t
  end
end

-- check(t) -> trigger: validates a trigger table written by hand ({type = "cron", ...})
-- or returns one made by a constructor as is. Raises a plain message.
function triggers.check(t)
  if type(t) ~= "table" then error("a trigger must be made with webhook{}, cron(), db_event{}, event{}, manual() or from_flow()", 0) end
  if t[MARK] then return t end
  local maker = makers[t.type]
  if not maker then
    error(string.format("unknown trigger type %q (webhook, cron, db_event, event, manual or from_flow)", tostring(t.type)), 0)
  end
  local copy = {}
  for k, v in pairs(t) do if k ~= "type" then copy[k] = v end end
  local ok, res = pcall(maker, copy, 1)
  if not ok then error(tostring(res):gsub("^[^:]*:%d+: ", ""), 0) end
  return res
end

return triggers
