-- sandbox: the environment a flow file runs in. Each flow gets its own
-- table of globals, with its own copies of the library tables, so one flow
-- can neither see nor change another's globals or libraries.
-- Allowed: the safe base library, string (no string.dump), table, math,
-- os.time/os.clock/os.date/os.difftime, and rill's modules (json, log, time,
-- env, crypto, flows, sleep, response, fail, http, signatures, step...,
-- the connectors slack, mautic, invoiceninja, docuseal, directus, email)
-- and trigger constructors; flows.lua adds a `require` of the shared
-- modules (flows/lib) only.
-- Left out: load, loadstring, loadfile, dofile, module, setfenv,
-- getfenv, io, the rest of os, debug, package, coroutine, jit, ffi,
-- collectgarbage, newproxy, gcinfo (docs/flows.md lists why).
local sandbox = {}

local SAFE_BASE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select", "tonumber",
  "tostring", "type", "unpack", "rawequal", "rawget", "rawset", "setmetatable", "getmetatable",
  "_VERSION",
}

local function copy(t, except)
  local c = {}
  for k, v in pairs(t) do
    if not (except and except[k]) then c[k] = v end
  end
  return c
end

-- The string metatable is shared by every string in the process: hide it, so
-- that getmetatable("").__index cannot reach the real string table.
getmetatable("").__metatable = false

-- ---- pcall and xpcall that cannot catch the end of a run ----
-- A run past its deadline or over its memory limit is ended (task.c): the
-- error raised for it must reach the top, whatever tries to catch it on the
-- way. These look at the run's state, not at the error object, so that any
-- error raised once the run is ended (by C code, a message handler, a
-- metamethod, an allocation) passes through them too; a message handler is
-- not even called then. (The watchdog's can_yield still sees the real
-- pcall/xpcall under these Lua functions.)
local killed = require("rill.c.task").killed
local raw_pcall, raw_xpcall, raw_error = pcall, xpcall, error

local function pass(...)
  local why = killed()
  if why then raw_error(why, 0) end
  return ...
end

function sandbox.pcall(...)
  if select("#", ...) == 0 then raw_error("bad argument #1 to 'pcall' (value expected)", 2) end
  return pass(raw_pcall(...))
end

function sandbox.xpcall(f, handler, ...)
  if type(handler) ~= "function" then
    raw_error("bad argument #2 to 'xpcall' (function expected, got " .. type(handler) .. ")", 2)
  end
  return pass(raw_xpcall(f, function(e)
    if killed() then return e end
    return handler(e)
  end, ...))
end
-- ---- end of pcall and xpcall ----

-- ---- Bounded C work (issue 14: pattern matching, sort, string builders) ----
-- Flows get rill.bounded's find/match/gmatch/gsub/rep/format/sub/upper/
-- lower/reverse and its table.sort/concat. Method calls (s:find(...)) go
-- through the string metatable, shared by every string in the process: its __index becomes a
-- table holding the bounded functions too, for flows and stdlib alike
-- (docs/architecture.md gives the cost). That table is never handed out.
local bounded = require "rill.bounded"
local BOUNDED_STRING = { "find", "match", "gmatch", "gsub", "rep", "format", "sub", "upper", "lower", "reverse" }
local BOUNDED_TABLE = { "sort", "concat" }
do
  local methods = {}
  for k, v in pairs(string) do methods[k] = v end
  for _, name in ipairs(BOUNDED_STRING) do methods[name] = bounded[name] end
  methods.dump = nil
  debug.getmetatable("").__index = methods
end
local function bound(env)
  for _, name in ipairs(BOUNDED_STRING) do env.string[name] = bounded[name] end
  for _, name in ipairs(BOUNDED_TABLE) do env.table[name] = bounded[name] end
end
-- ---- end of bounded C work ----

-- ---- Isolation (issue 14: what one flow reaches, no other flow sees changed) ----
-- Plain module tables are copied per flow (below). A module given as a
-- proxy (env) is made per flow by its module and is read-only: __newindex
-- refuses a write, and the flow's rawset refuses one too, naming it (a write
-- would only change that flow's own proxy, but silently). Shared metatables
-- (http responses, fail(), connectors, the string metatable) carry
-- __metatable = false so getmetatable() cannot reach them.
local read_only = setmetatable({}, { __mode = "k" }) -- proxy -> the name flows know it by
local raw_set = rawset
local function guarded_rawset(t, k, v)
  local name = type(t) == "table" and read_only[t]
  if name then error(name .. " is read-only (rawset of " .. tostring(k) .. ")", 2) end
  return raw_set(t, k, v)
end
-- table.insert and table.remove write without metamethods, as rawset does
local function guarded(fn, what)
  return function(t, ...)
    local name = type(t) == "table" and read_only[t]
    if name then error(name .. " is read-only (" .. what .. ")", 2) end
    return fn(t, ...)
  end
end
-- table.insert(t, pos, v) shifts t's items from #t down to pos in C, where
-- no hook runs: LuaJIT takes NaN, 2^31 or 1e10 for INT_MIN, and 2^31 shifts
-- held the loop 19 s. pos must be in 1 .. #t + 1 (as Lua 5.3 asks).
local raw_insert = table.insert
local function bounded_insert(t, ...)
  if select("#", ...) >= 2 and type(t) == "table" then
    local pos = tonumber((...))
    if pos and not (pos >= 1 and pos <= #t + 1) then
      error("bad argument #2 to 'insert' (position out of bounds)", 2)
    end
  end
  return raw_insert(t, ...)
end
local guarded_insert, guarded_remove = guarded(bounded_insert, "table.insert"), guarded(table.remove, "table.remove")

-- read_only(t, name): t is shared with runs that must not change it; a
-- flow's rawset, table.insert or table.remove of it raises, naming it
-- (its own writes are refused by its metatable's __newindex).
function sandbox.read_only(t, name)
  read_only[t] = name
end
-- ---- end of isolation ----

-- new(modules) -> a fresh globals table. `modules` maps a global name to a
-- plain table (copied), or to a function or a read-only proxy (a table
-- with a metatable, given as is).
function sandbox.new(modules)
  local env = {}
  for _, name in ipairs(SAFE_BASE) do env[name] = _G[name] end
  env.string = copy(string, { dump = true })
  env.table = copy(table)
  env.table.insert, env.table.remove = guarded_insert, guarded_remove
  env.math = copy(math)
  -- one generator for the process: a flow reseeding it made every other
  -- flow's math.random (and rill's retry jitter) predictable
  env.math.randomseed = function()
    error("math.randomseed is not available to flows: every flow shares the one generator", 2)
  end
  env.os = { time = os.time, clock = os.clock, date = bounded.date, difftime = os.difftime }
  bound(env)
  for name, m in pairs(modules) do
    env[name] = (type(m) == "table" and getmetatable(m) == nil) and copy(m) or m
    if type(m) == "table" and getmetatable(m) ~= nil then read_only[m] = name end
  end
  env.pcall, env.xpcall = sandbox.pcall, sandbox.xpcall -- the end of a run cannot be caught (above)
  env.rawset = guarded_rawset
  env._G = env
  return env
end

return sandbox
