-- env: read-only access to configured values and secrets for flows.
-- env.NAME (or env.get("NAME")) returns the process environment variable
-- NAME, else the value of NAME in the config's `env` table, else nil.
-- Variables named RILL_* configure rill itself and are not visible. A value
-- whose name looks secret (SECRET, TOKEN, KEY, PASSWORD...) is masked in
-- every log line from the moment a flow reads it.
local os_c = require "rill.c.os"
local log = require "rill.log"

local configured = {}
local isolated -- `rill test`: the test's values, and not the process environment

local function get(name)
  if type(name) ~= "string" then error("env.get: expected a variable name", 2) end
  if name:sub(1, 5) == "RILL_" then return nil end
  local v
  if isolated then
    v = isolated[name]
  else
    v = os_c.getenv(name)
  end
  if v == nil then v = configured[name] end
  if v ~= nil and log.looks_secret(name) then log.add_secret(tostring(v)) end
  return v
end

-- proxy() -> a read-only view of the variables: each flow gets its own (a
-- write into one, by rawset or table.insert, reaches no other flow; the
-- sandbox refuses rawset on it, naming it).
local ENV_MT = {
  __index = function(_, name) return get(name) end,
  __newindex = function(_, name) error("env is read-only (tried to set " .. tostring(name) .. ")", 2) end,
  __metatable = false,
}
local function proxy()
  local p = setmetatable({}, ENV_MT)
  rawset(p, "get", get)
  return p
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

return { env = env, proxy = proxy, get = get, configure = configure, isolate = isolate }
