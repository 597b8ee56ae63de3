-- log: leveled, structured log lines. A line written during a run carries
-- the run's id and flow, and is kept with the run (run.logs) so that
-- `rill run` and, later, the store can show a run's own log. Values of
-- secrets read through env, and fields whose name looks secret, are masked.
local os_c = require "rill.c.os"
local out = require "rill.c.log" -- stderr, written without blocking (runtime/log.c)
local task = require "rill.c.task"
local tz = require "rill.c.tz"

local log = { max_run_lines = 1000 } -- max_log_lines: lines one run may write

local LEVELS = { debug = 10, info = 20, warn = 30, error = 40 }
local threshold = LEVELS.info
local as_json = false
local MAX_RUN_LINES = 1000
local secrets = {}      -- value -> true, filled by env.lua
local secret_count = 0
local encode            -- json.encode, required lazily (json needs nothing from log)

-- Names (of env variables, of log fields) whose values are treated as secret.
local SECRET_NAME = { "secret", "token", "key", "password", "passwd", "pass", "private", "credential", "auth" }

-- Masks a value that must never reach a log line.
function log.add_secret(value)
  if type(value) == "string" and #value >= 6 and not secrets[value] then
    secrets[value] = true
    secret_count = secret_count + 1
  end
end

-- add_flow_secret(value): a secret a flow's code chose (the key it signs
-- with), masked like the others while there are fewer than MAX_FLOW_SECRETS
-- of them: every line is searched for every secret, and a flow that signed
-- with 200,000 made each line take 17 ms. The secrets of the environment,
-- the connectors and the admin token are never refused for room.
local MAX_FLOW_SECRETS = 4096
local flow_secrets = 0
function log.add_flow_secret(value)
  if type(value) ~= "string" or #value < 6 or secrets[value] then return end
  if flow_secrets >= MAX_FLOW_SECRETS then return end
  flow_secrets = flow_secrets + 1
  log.add_secret(value)
end

local function looks_secret(name)
  name = tostring(name):lower()
  for _, s in ipairs(SECRET_NAME) do
    if name:find(s, 1, true) then return true end
  end
  return false
end
log.looks_secret = looks_secret

-- (string's own find and sub: the methods strings have are the flows'
-- bounded ones, and a line of any length must be logged, masked)
local str_find, str_sub = string.find, string.sub
local function mask(s)
  if secret_count == 0 or type(s) ~= "string" then return s end
  for value in pairs(secrets) do
    local i = str_find(s, value, 1, true)
    if i then
      -- the pieces between the occurrences, joined once: replacing each in
      -- place copied the whole text at each one (quadratic in a long text)
      local parts, from = {}, 1
      while i do
        parts[#parts + 1] = str_sub(s, from, i - 1)
        from = i + #value
        i = str_find(s, value, from, true)
      end
      parts[#parts + 1] = str_sub(s, from)
      s = table.concat(parts, "***")
    end
  end
  return s
end
log.mask = mask

-- text(s) -> s with each byte that is not UTF-8 replaced by U+FFFD. A line
-- (a field holding a response's bytes, an error quoting them) is written as
-- JSON and kept with its run in the store, as text: Postgres refused the
-- whole outcome of a run that logged such bytes, and the run, succeeded,
-- ran again at each lease's end until it was dead. Linear: each run of
-- bytes over 127 is checked character by character only when it is bad.
local utf8_error = require("rill.c.utf8").first_invalid
local str_gsub, str_byte, concat = string.gsub, string.byte, table.concat
local REPLACEMENT = "\239\191\189"
local function repair(r)
  if not utf8_error(r) then return nil end
  local parts, i, n = {}, 1, #r
  while i <= n do
    local b = str_byte(r, i)
    local len = b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 1
    local ch = str_sub(r, i, i + len - 1)
    if len > 1 and #ch == len and not utf8_error(ch) then
      parts[#parts + 1], i = ch, i + len
    else
      parts[#parts + 1], i = REPLACEMENT, i + 1
    end
  end
  return concat(parts)
end
function log.text(s)
  if type(s) ~= "string" or not utf8_error(s) then return s end
  return (str_gsub(s, "[\128-\255]+", repair))
end

-- mask_all(t): masks every string of a record read back from the store (a
-- run, its log lines and steps: a value stored before its secret was known,
-- a result holding one), in place, two tables deep; returns t.
function log.mask_all(t, depth)
  depth = depth or 0
  for k, v in pairs(t) do
    if type(v) == "string" then
      t[k] = mask(v)
    elseif type(v) == "table" and depth < 2 then
      log.mask_all(v, depth + 1)
    end
  end
  return t
end

-- configure(level, format[, buffer]): buffer, the most bytes of lines held
-- while stderr does not take them (log_buffer); more are dropped and counted.
function log.configure(level, format, buffer)
  threshold = LEVELS[level] or LEVELS.info
  if format == "auto" then
    as_json = not os_c.isatty(2)
  else
    as_json = format == "json"
  end
  out.configure { json = as_json, buffer = buffer }
end

-- Lines dropped since the start because stderr did not take them in time.
log.dropped = out.dropped

function log.enabled(level)
  return LEVELS[level] >= threshold
end

local function timestamp(t)
  local l = tz.to_local(t, "UTC")
  return string.format("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", l.year, l.month, l.day, l.hour, l.min,
    l.sec, math.floor((t % 1) * 1000))
end

-- A line's text (its message and its fields' strings together) is bounded:
-- max_log_lines bounded a run's lines but not their size, and a run that
-- logged a 1 MB string a thousand times had rill copy 1 GB into its record
-- on the loop (for seconds) and the store. Masked first, then cut, so that
-- a secret is never cut in two and half of it written.
log.max_line_bytes = 16384
local function bounded_text(v, budget)
  local s = mask(v)
  local room = budget.left > 0 and budget.left or 0 -- (a negative end would count from the end)
  if #s > room then
    s = str_sub(s, 1, room) .. "... (" .. (#s - room) .. " bytes more: max_line_bytes)"
    budget.left = 0
  else
    budget.left = budget.left - #s
  end
  return log.text(s)
end

local function clean_fields(fields, budget, depth)
  if type(fields) ~= "table" then return nil end
  local out = {}
  for k, v in pairs(fields) do
    if budget.left <= 0 or depth > 8 then
      out["..."] = "more fields than a log line holds (max_line_bytes)"
      break
    end
    budget.left = budget.left - 16 -- a field's name and its punctuation, roughly
    if looks_secret(k) then
      out[k] = "***"
    elseif type(v) == "string" then
      out[k] = bounded_text(v, budget)
    elseif type(v) == "table" then
      out[k] = clean_fields(v, budget, depth + 1)
    elseif type(v) == "number" or type(v) == "boolean" then
      out[k] = v
    else
      out[k] = bounded_text(tostring(v), budget)
    end
  end
  return out
end

local function format_text(line)
  local parts = { line.ts, " ", line.level:upper(), string.rep(" ", 6 - #line.level) }
  if line.flow then
    parts[#parts + 1] = "[" .. line.flow .. (line.run and (" " .. line.run:sub(-12)) or "") .. "] "
  end
  parts[#parts + 1] = line.msg
  if line.fields then
    local keys = {}
    for k in pairs(line.fields) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local v = line.fields[k]
      if type(v) == "table" then
        encode = encode or require("rill.json").encode
        local ok, s = pcall(encode, v)
        v = ok and s or "<table>"
      end
      parts[#parts + 1] = " " .. k .. "=" .. tostring(v)
    end
  end
  return table.concat(parts) .. "\n"
end

local function format_json(line)
  encode = encode or require("rill.json").encode
  local obj = { ts = line.ts, level = line.level, msg = line.msg, flow = line.flow, run = line.run }
  if line.fields then
    for k, v in pairs(line.fields) do
      if obj[k] == nil then obj[k] = v end
    end
  end
  local ok, s = pcall(encode, obj)
  return (ok and s or encode { ts = line.ts, level = line.level, msg = line.msg }) .. "\n"
end

-- write(level, msg, fields[, run]): the one place a log line is made.
-- run defaults to the run executing now, if any.
function log.write(level, msg, fields, run)
  local implicit = run == nil -- a line written by the run's code (rill's lines about a run name it)
  run = run or task.current()
  local now = tz.now()
  local budget = { left = log.max_line_bytes }
  local line = {
    at = now, ts = timestamp(now), level = level, msg = bounded_text(tostring(msg), budget),
    fields = clean_fields(fields, budget, 0),
    flow = type(run) == "table" and run.flow or nil,
    run = type(run) == "table" and run.id or nil,
  }
  if type(run) == "table" and run.id then
    -- a run's volume is bounded: past max_run_lines its lines are counted
    -- and dropped, with one line saying so (and the count when it ends)
    if implicit then
      local n = (run.log_count or 0) + 1
      run.log_count = n
      if n > log.max_run_lines then
        if n == log.max_run_lines + 1 then
          log.write("warn", string.format("this run wrote max_log_lines (%d) log lines: its next ones are dropped",
            log.max_run_lines), nil, run)
        end
        return
      end
    end
    local logs = run.logs
    if not logs then
      logs = {}
      run.logs = logs
    end
    if #logs < MAX_RUN_LINES then logs[#logs + 1] = line end
    if run.on_log then run.on_log(line) end
  end
  if LEVELS[level] >= threshold then
    out.write(as_json and format_json(line) or format_text(line))
  end
end

for name in pairs(LEVELS) do
  log[name] = function(msg, fields) log.write(name, msg, fields) end
end

log.format_text = format_text

-- bounded is below log (log -> json -> bounded): its refusals reach the log through this
require("rill.bounded").warn = log.warn

return log
