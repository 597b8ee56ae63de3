-- env: read-only access to configured values and secrets for flows.
-- env.NAME (or env.get("NAME")) returns NAME from the env_file (a dotenv
-- file, read at start and again at each reload: SIGHUP, a change), else
-- the process environment variable NAME, else the value of NAME in the
-- config's `env` table, else nil. Variables named RILL_* configure rill
-- itself and are not visible. A value whose name looks secret (SECRET,
-- TOKEN, KEY, PASSWORD...) is masked in every log line from the moment a
-- flow reads it (an env_file's, from the moment it is read). It also keeps
-- what each flow needs set (its verifiers' secrets, the secret-looking
-- env.NAME it reads, its connectors' variables), for `rill check` and /readyz.
local os_c = require "rill.c.os"
local log = require "rill.log"

local task = require "rill.c.task"

local configured = {}
local from_file = {} -- the env_file's values in force
-- A run reads one version of the env_file: the one in force at its first
-- read (a reload between two reads must not give it one value of each).
-- task's data (a run) -> that version; weak, and never in the run's table.
local pinned = setmetatable({}, { __mode = "k" })

local function file_values()
  local cur = task.current()
  if type(cur) ~= "table" then return from_file end
  local values = pinned[cur]
  if values == nil then
    values = from_file
    pinned[cur] = values
  end
  return values
end
local isolated -- `rill test`: the test's values, and not the process environment

-- lookup(name[, file]) -> the value, without masking it. file: the env_file's
-- values to read (default: the version the current run reads; the reports
-- of what is missing give the one in force).
local function lookup(name, file)
  if name:sub(1, 5) == "RILL_" then return nil end
  local v
  if isolated then
    v = isolated[name]
  else
    v = (file or file_values())[name]
    if v == nil then v = os_c.getenv(name) end
  end
  if v == nil then v = configured[name] end
  return v
end

local function get(name)
  if type(name) ~= "string" then error("env.get: expected a variable name", 2) end
  local v = lookup(name)
  if v ~= nil and log.looks_secret(name) then log.add_secret(tostring(v)) end
  return v
end

-- proxy() -> a read-only view of the variables: each flow gets its own (a
-- write into one, by rawset or table.insert, reaches no other flow; the
-- sandbox refuses rawset on it, naming it).
-- (get is served by __index too, not a field of the proxy: a field would
-- be replaced by env.get = ..., without __newindex being asked)
local ENV_MT = {
  __index = function(_, name)
    if name == "get" then return get end
    return get(name)
  end,
  __newindex = function(_, name) error("env is read-only (tried to set " .. tostring(name) .. ")", 2) end,
  __metatable = false,
}
local function proxy()
  return setmetatable({}, ENV_MT)
end

local env = proxy()

-- configure(t): the config file's `env` table (plain values, not secrets).
local function configure(t)
  configured = {}
  for k, v in pairs(t or {}) do configured[k] = v end
end

-- isolate(t): flows read t (then the config's values) instead of the
-- process environment, for tests; isolate(nil) ends it.
local function isolate(t) isolated = t end

-- ---- env_file: a dotenv file ----
-- NAME=value lines; `export ` before the name is allowed; # starts a
-- comment line (and, after a space, ends an unquoted value); a value in
-- '...' is taken as is, one in "..." knows \n, \" and \\. No ${...}
-- expansion, no multi-line values.

-- parse(text, path) -> name -> value, or nil and "path:line: why".
local function parse(text, path)
  local out, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    line = line:gsub("\r$", "")
    if not line:match("^%s*$") and not line:match("^%s*#") then
      local name, rest = line:match("^%s*export%s+([%a_][%w_]*)%s*=(.*)$")
      if not name then name, rest = line:match("^%s*([%a_][%w_]*)%s*=(.*)$") end
      if not name then
        return nil, string.format("%s:%d: expected NAME=value (a letter or _, then letters, digits, _)", path, n)
      end
      rest = rest:gsub("^%s+", "")
      local q = rest:sub(1, 1)
      local value
      if q == "'" or q == '"' then
        local close = rest:find(q, 2, true)
        if q == '"' then
          close = 2
          while close <= #rest and rest:sub(close, close) ~= '"' do
            close = close + (rest:sub(close, close) == "\\" and 2 or 1)
          end
          if close > #rest then close = nil end
        end
        if not close then return nil, string.format("%s:%d: %s: the value's closing %s is missing", path, n, name, q) end
        local after = rest:sub(close + 1)
        if not (after:match("^%s*$") or after:match("^%s+#")) then
          return nil, string.format("%s:%d: %s: unexpected text after the quoted value", path, n, name)
        end
        value = rest:sub(2, close - 1)
        if q == '"' then
          value = value:gsub("\\(.)", function(c) return ({ n = "\n", ['"'] = '"', ["\\"] = "\\" })[c] or ("\\" .. c) end)
        end
      else
        -- a comment starts at the first " #"; then trailing spaces go. Both
        -- in one pass: the patterns "%s+#.*$" and "%s+$" backtrack over a
        -- run of spaces from each of its starts (quadratic: a 100 KB line of
        -- spaces held the loop for minutes at a SIGHUP)
        local cut = rest:find("%s#")
        local e = (cut or (#rest + 1)) - 1
        while e > 0 and rest:find("^%s", e) do e = e - 1 end
        value = rest:sub(1, e)
      end
      out[name] = value
    end
  end
  return out
end

-- load_file(path) -> the number of variables, or nil and why. The values
-- replace those of the last read; a file that does not parse leaves them.
-- RILL_* names are refused: they configure rill, read once at start.
local function load_file(path)
  local text, err = os_c.read_file(path)
  if not text then return nil, tostring(err) end
  local values, perr = parse(text, path)
  if not values then return nil, perr end
  local n = 0
  for name, v in pairs(values) do
    if name:sub(1, 5) == "RILL_" then
      return nil, path .. ": " .. name .. ": RILL_* variables configure rill: set them in its environment"
    end
    n = n + 1
    if log.looks_secret(name) then log.add_secret(v) end
  end
  from_file = values
  return n
end

-- ---- what flows need set ----
local loading -- while a flow loads: {file, needs}

-- begin_load(file) / end_load() -> the needs recorded meanwhile: a list of
-- {names = {...} (one of them set is enough), what, line}.
local function begin_load(file) loading = { file = file, needs = {} } end
local function end_load()
  local l = loading
  loading = nil
  return l and l.needs or {}
end

-- needed(names, what): the loading flow needs one of names set (a
-- verifier's secret); its line is the flow's (or module's) calling line.
local function needed(names, what)
  if not loading then return end
  local line
  for level = 3, 12 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source == "@" .. loading.file or info.source:find("/lib/", 1, true) then
      line = info.source:sub(2) .. ":" .. info.currentline
      break
    end
  end
  table.insert(loading.needs, { names = names, what = what, at = line or loading.file })
end

-- Other scanners of a source's needs, fn(source, file) -> needs: what
-- they find is added to scan's (connectors/base.lua adds its calls' needs
-- as it loads: env requires no connector).
local scanners = {}
local function add_scanner(fn) scanners[#scanners + 1] = fn end

-- scan(source, file) -> the needs of a source's env.NAME reads whose NAME
-- looks secret (a read followed by `or` has a fallback: not needed), and
-- those the scanners find (the connectors' default clients' variables).
local function scan(source, file)
  local needs, n = {}, 0
  for line in (source .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    local code = line:gsub("%-%-.*$", "")
    for name, after in code:gmatch("%f[%w_]env%.([%a_][%w_]*)(%s*%S*)") do
      if name ~= "get" and log.looks_secret(name) and not after:match("^%s*or$") then
        needs[#needs + 1] = { names = { name }, what = "env." .. name, at = file .. ":" .. n }
      end
    end
  end
  for _, fn in ipairs(scanners) do
    for _, need in ipairs(fn(source, file)) do needs[#needs + 1] = need end
  end
  return needs
end

-- missing(needs) -> the needs none of whose names is set (or set empty):
-- "file:line: NAME is not set (what)".
local function missing(needs)
  local out = {}
  for _, need in ipairs(needs or {}) do
    local set = false
    for _, name in ipairs(need.names) do
      local v = lookup(name, from_file)
      if v ~= nil and v ~= "" then set = true end
    end
    if not set then
      out[#out + 1] = string.format("%s: %s is not set (%s; env_file, the environment or the config's env)",
        need.at, table.concat(need.names, " or "), need.what)
    end
  end
  return out
end

return { env = env, proxy = proxy, get = get, configure = configure, isolate = isolate, load_file = load_file,
  parse = parse, begin_load = begin_load, end_load = end_load, needed = needed, scan = scan, add_scanner = add_scanner,
  missing = missing }
