-- sandbox: the environment a flow file runs in. Each flow gets its own
-- table of globals, with its own copies of the library tables, so one flow
-- can neither see nor change another's globals or libraries.
-- Allowed: the safe base library, string (no string.dump), table, math,
-- os.time/os.clock/os.date/os.difftime, and rill's modules (json, log, time,
-- env, crypto, flows, sleep, response, fail, http, signatures, step...,
-- the connectors slack, mautic, invoiceninja, docuseal, directus, email)
-- and trigger constructors.
-- Left out: load, loadstring, loadfile, dofile, require, module, setfenv,
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

-- new(modules) -> a fresh globals table. `modules` maps a global name to a
-- plain table (copied), or to a function or a read-only proxy (a table
-- with a metatable, given as is).
function sandbox.new(modules)
  local env = {}
  for _, name in ipairs(SAFE_BASE) do env[name] = _G[name] end
  env.string = copy(string, { dump = true })
  env.table = copy(table)
  env.math = copy(math)
  env.os = { time = os.time, clock = os.clock, date = os.date, difftime = os.difftime }
  for name, m in pairs(modules) do
    env[name] = (type(m) == "table" and getmetatable(m) == nil) and copy(m) or m
  end
  env.pcall, env.xpcall = sandbox.pcall, sandbox.xpcall -- the end of a run cannot be caught (above)
  env._G = env
  return env
end

return sandbox
