-- The flow sandbox (stdlib/rill/sandbox.lua, flows.lua): what flow code can
-- reach, and that flows cannot see or change each other's globals.
local t = require "t"
local flows = require "rill.engine.flows"
local runner = require "rill.engine.runner"
require("rill.log").configure("error", "text")

local function load(name, src)
  local flow, err = flows.load_file(name, src)
  if not flow then error(err, 2) end
  return flow
end

-- Runs a flow to its end at once: with no time slices, since this script
-- cannot run the loop that would resume a run paused at the end of one
-- (on a loaded machine, even a short run may outlast a slice).
local function run(flow, payload)
  local result
  runner.start(flow, { type = "manual" }, payload, { on_done = function(r) result = r end, preempt = false })
  return result
end

local PROBE = [[
return {
  triggers = { manual() },
  run = function(ctx)
    local seen = {}
    for _, name in ipairs(ctx.payload) do
      local v = _G[name]
      seen[name] = v ~= nil
    end
    return seen
  end,
}]]

t.test("dangerous globals are absent", function()
  local names = { "io", "load", "loadstring", "loadfile", "dofile", "module", "setfenv",
                  "getfenv", "debug", "package", "coroutine", "jit", "ffi", "collectgarbage",
                  "newproxy", "gcinfo" }
  local r = run(load("probe.lua", PROBE), names)
  t.eq(r.state, "succeeded", "run")
  for _, name in ipairs(names) do t.eq(r.result[name], false, name) end
end)

t.test("require reaches shared modules only, and only while the flow loads", function()
  local _, err = flows.load_file("r.lua", 'local os_c = require "rill.c.os"\nreturn {}')
  t.ok(err and err:find('r.lua:1: require: no module rill.c.os', 1, true), tostring(err))
  _, err = flows.load_file("r.lua", 'local x = require "lib.io"\nreturn {}', {})
  t.ok(err and err:find("no module lib.io", 1, true), tostring(err))
  local lib = { ["lib.m"] = { file = "lib/m.lua", source = "return { os = os.execute, io = io }", hash = "h" } }
  local flow = flows.load_file("r.lua", [[
local m = require "lib.m"
return { triggers = { manual() }, run = function()
  local ok, err = pcall(require, "lib.m")
  return { os_execute = m.os ~= nil, io = m.io ~= nil, in_run = err }
end }]], lib)
  local r = run(flow).result
  t.eq(r.os_execute, false, "a module's os has no execute")
  t.eq(r.io, false, "a module has no io")
  t.ok(r.in_run:find("not in run", 1, true), r.in_run)
end)

t.test("useful globals are present", function()
  local names = { "pairs", "ipairs", "pcall", "string", "table", "math", "os", "json", "log", "time",
                  "env", "crypto", "flows", "sleep", "response", "webhook", "cron" }
  local r = run(load("probe.lua", PROBE), names)
  for _, name in ipairs(names) do t.eq(r.result[name], true, name) end
end)

t.test("http gives flows requests, not rill's own settings or its transport", function()
  local flow = load("h.lua", [[
return { triggers = { manual() }, run = function()
  return { configure = http.configure ~= nil, transport = http.transport ~= nil, post = http.post ~= nil }
end }]])
  local r = run(flow).result
  t.eq(r.configure, false, "http.configure")
  t.eq(r.transport, false, "http.transport")
  t.eq(r.post, true, "http.post")
end)

t.test("os keeps only time functions and string.dump is gone", function()
  local f = load("os.lua", [[
return { triggers = { manual() }, run = function()
  return { execute = os.execute == nil, exit = os.exit == nil, getenv = os.getenv == nil,
           remove = os.remove == nil, time = type(os.time) == "function", dump = string.dump == nil }
end }]])
  local r = run(f).result
  for k, v in pairs(r) do t.eq(v, true, k) end
end)

t.test("the shared string metatable is out of reach", function()
  local f = load("meta.lua", [[
return { triggers = { manual() }, run = function()
  return getmetatable("") == false
end }]])
  t.eq(run(f).result, true, "getmetatable('')")
end)

t.test("flows cannot see or change each other's globals or libraries", function()
  local a = load("a.lua", [[
shared = "from a"
string.upper = function() return "hacked" end
json.encode = nil
return { triggers = { manual() }, run = function() return shared end }]])
  local b = load("b.lua", [[
return { triggers = { manual() }, run = function()
  return { shared = shared == nil, upper = ("x"):upper() == "X" and string.upper("y") == "Y",
           json = type(json.encode) == "function" }
end }]])
  t.eq(run(a).result, "from a", "a sees its own global")
  for k, v in pairs(run(b).result) do t.eq(v, true, k) end
end)

t.test("env is read-only and hides rill's own settings", function()
  local f = load("env.lua", [[
return { triggers = { manual() }, run = function()
  local ok = pcall(function() env.X = 1 end)
  local replaced = pcall(function() env.get = function() return "#attacker" end end)
  return { write_refused = not ok, rill_hidden = env.RILL_LISTEN == nil, path = env.PATH ~= nil,
           get_not_replaced = not replaced and env.get("PATH") ~= "#attacker" }
end }]])
  for k, v in pairs(run(f).result) do t.eq(v, true, k) end
end)

t.test("bytecode is refused", function()
  local _, err = flows.load_file("bc.lua", string.dump(function() return {} end))
  t.ok(err and err:find("bytecode", 1, true), tostring(err))
end)

t.test("flow code runs with the JIT off, so the watchdog can stop it", function()
  local src = [[
return { triggers = { manual() }, run = function()
  local n = 0
  for i = 1, 1e5 do n = n + i end
  return n
end }]]
  local f = load("jit.lua", src)
  local traced = {}
  local function on_trace(what, _, func) if what == "start" then traced[func] = true end end
  jit.attach(on_trace, "trace")
  local r = run(f)
  -- A control: the same code outside the sandbox is compiled.
  local chunk = loadstring(src)
  setfenv(chunk, setmetatable({ manual = function() return {} end }, { __index = _G }))
  local control = chunk()
  control.run()
  jit.attach(on_trace)
  t.eq(r.result, 5000050000, "result")
  t.eq(traced[f.run], nil, "a trace started in flow code")
  t.eq(traced[control.run], true, "the control was traced")
end)

-- pcall and xpcall as flows see them: Lua functions over LuaJIT's own,
-- which let the end of a run through (tests/test_hostile.py); otherwise
-- they behave as the originals.
t.test("pcall and xpcall keep their behaviour for a run that may go on", function()
  local f = load("calls.lua", [[
return {
  triggers = { manual() },
  run = function(ctx)
    local a = { pcall(function(x, y) return x + y, "two" end, 1, 2) }
    local b = { xpcall(function(x) error("boom " .. x, 0) end, function(e) return "handled " .. e end, 7) }
    local c = { pcall(error, { code = 1 }) }
    local d = { pcall(xpcall, error, 42) }
    local e = { pcall(pcall) }
    return { a = a, b = b, c = { c[1], c[2].code }, d = d[2], e = e[2], same = pcall ~= _G.xpcall }
  end,
}]])
  local r = run(f)
  t.eq(r.state, "succeeded", "run")
  local enc = require("rill.json").encode
  t.eq(enc(r.result.a), '[true,3,"two"]', "pcall passes arguments and results")
  t.eq(enc(r.result.b), '[false,"handled boom 7"]', "xpcall passes arguments and calls the handler")
  t.eq(enc(r.result.c), "[false,1]", "an error table comes back as is")
  t.eq(r.result.d, "bad argument #2 to 'xpcall' (function expected, got number)", "xpcall without a handler")
  t.eq(r.result.e, "bad argument #1 to 'pcall' (value expected)", "pcall of nothing")
end)

t.test("an error object of any type makes a readable failure", function()
  local cases = {
    ["error(nil)"] = "error object: nil",
    ["error(false)"] = "error object: false",
    ["error({ code = 42 })"] = 'error object: {"code":42}',
    ["error({ message = 'plain' })"] = "plain",
    ["error(setmetatable({}, { __tostring = function() error('no') end }))"] = "error object: a table with a metatable, no message",
    ["error(setmetatable({}, { __index = function() error('no') end }))"] = "error object: a table with a metatable, no message",
    ["error(tostring)"] = "error object: a function",
  }
  for code, want in pairs(cases) do
    local r = run(load("e.lua", "return { triggers = { manual() }, run = function() " .. code .. " end }"))
    t.eq(r.state, "failed", code)
    t.eq(r.error.message, want, code)
  end
end)

-- ---- Isolation (issue 14): what one flow can reach, no other flow sees changed ----

t.test("rawset on env changes nothing another flow reads, and is refused naming env", function()
  require("rill.env").configure { SLACK_CHANNEL = "#general" }
  local a = load("a.lua", [[
return { triggers = { manual() }, run = function()
  local ok, err = pcall(rawset, env, "SLACK_CHANNEL", "#attacker")
  local iok, ierr = pcall(table.insert, env, "x")
  return { refused = not ok, err = tostring(err), insert_refused = not iok, ierr = tostring(ierr) }
end }]])
  local b = load("b.lua", [[
return { triggers = { manual() }, run = function()
  return { channel = env.SLACK_CHANNEL, get = env.get("SLACK_CHANNEL"), slot = rawget(env, 1) == nil }
end }]])
  local ra = run(a).result
  t.eq(ra.refused, true, "rawset(env, ...) refused")
  t.ok(ra.err:find("env", 1, true) and ra.err:find("read-only", 1, true), ra.err)
  t.eq(ra.insert_refused, true, "table.insert(env, ...) refused")
  t.ok(ra.ierr:find("env is read-only (table.insert)", 1, true), ra.ierr)
  local rb = run(b).result
  t.eq(rb.channel, "#general", "env.SLACK_CHANNEL in b")
  t.eq(rb.get, "#general", "env.get in b")
  t.eq(rb.slot, true, "a's table.insert(env) not seen by b")
  require("rill.env").configure {}
end)

t.test("the runs of a flow that declares no settings share a ctx.settings no run can write", function()
  local f = load("a.lua", [[
return { triggers = { manual() }, run = function(ctx)
  local out = {}
  for name, write in pairs {
    assign = function() ctx.settings.channel = "#attacker" end,
    rawset = function() rawset(ctx.settings, "channel", "#attacker") end,
    insert = function() table.insert(ctx.settings, "x") end,
    remove = function() table.remove(ctx.settings) end,
  } do
    local ok, err = pcall(write)
    out[name] = ok and "written" or tostring(err)
  end
  out.left = next(ctx.settings) == nil
  local ok, err = pcall(function() return ctx.settings.channel end)
  out.read = ok and "read" or tostring(err)
  return out
end }]])
  for _ = 1, 2 do -- the second run finds nothing the first one tried to leave
    local r = run(f)
    t.eq(r.state, "succeeded", "run")
    t.ok(r.result.assign:find("ctx.settings is read-only: a declares no settings (setting 'channel')", 1, true),
      r.result.assign)
    t.ok(r.result.rawset:find("ctx.settings is read-only (rawset of channel)", 1, true), r.result.rawset)
    t.ok(r.result.insert:find("ctx.settings is read-only (table.insert)", 1, true), r.result.insert)
    t.ok(r.result.remove:find("ctx.settings is read-only (table.remove)", 1, true), r.result.remove)
    t.eq(r.result.left, true, "ctx.settings stays empty")
    t.ok(r.result.read:find("a declares no setting 'channel' (it declares no settings)", 1, true), r.result.read)
  end
end)

t.test("a connector client gives no way to the shared settings or methods", function()
  local f = load("a.lua", [[
return { triggers = { manual() }, run = function()
  local out = {}
  for _, name in ipairs { "slack", "mautic", "invoiceninja", "docuseal", "directus", "email" } do
    local c = _G[name].with {}
    out[name] = type(getmetatable(c)) ~= "table" and rawget(c, "spec") == nil and rawget(c, "given") == nil
  end
  return out
end }]])
  local r = run(f)
  t.eq(r.state, "succeeded", "run")
  for k, v in pairs(r.result) do t.eq(v, true, k) end
end)

t.test("shared metatables and sentinels are out of reach", function()
  local f = load("mt.lua", [[
return { triggers = { manual() }, run = function()
  local _, failure = pcall(fail, "x")
  return { fail_mt = type(getmetatable(failure)) ~= "table",
           string_mt = getmetatable("") == false, index = ("").__index == nil, dump = ("").dump == nil,
           rep_bounded = not pcall(string.rep, "x", 1e10), method_rep_bounded = not pcall(("x").rep, "x", 1e10) }
end }]])
  for k, v in pairs(run(f).result) do t.eq(v, true, k) end
end)

t.test("a flow's string and table functions are the bounded ones, methods included", function()
  local f = load("b.lua", [[
return { triggers = { manual() }, run = function()
  local long = ("a"):rep(2e5)
  local ok1, e1 = pcall(string.find, long, ".-.-.-.-.-b")
  local ok2, e2 = pcall(function() return long:find(".-.-.-.-.-b") end)
  local t = { 3, 1, 2 }
  table.sort(t, function(x, y) return x < y end)
  return { e1 = not ok1 and e1, e2 = not ok2 and e2, sorted = table.concat(t, ",") }
end }]])
  -- a low step limit keeps the test short
  require("rill.bounded").configure { pattern_max_steps = 100000 }
  local r = run(f)
  require("rill.bounded").configure { pattern_max_steps = 10000000 }
  t.ok(r, "the run ended")
  t.eq(r.state, "succeeded", "run")
  t.ok(tostring(r.result.e1):find("pattern too complex", 1, true), tostring(r.result.e1))
  t.ok(tostring(r.result.e2):find("pattern too complex", 1, true), tostring(r.result.e2))
  t.eq(r.result.sorted, "1,2,3", "sorted")
end)

t.test("a payload passed to another flow, and its result, are copies", function()
  local callee = load("callee.lua", [[
return { name = "callee", triggers = { from_flow() }, run = function(ctx)
  ctx.payload.list[1] = "changed by callee"
  return { probe = ctx.payload.probe, mt = getmetatable(ctx.payload) == nil, shared = RESULT_KEPT }
end }]])
  local caller = load("caller.lua", [[
return { triggers = { manual() }, run = function()
  local calls = 0
  local payload = setmetatable({ list = { "mine" } }, { __index = function() calls = calls + 1 return "from caller" end })
  local r = flows.trigger("callee", payload)
  r.mt = "changed by caller"
  return { kept = payload.list[1], calls = calls, probe = r.probe, mt = r.mt }
end }]])
  flows.active.callee = callee
  local r = run(caller)
  flows.active.callee = nil
  t.eq(r.state, "succeeded", "run: " .. tostring(r.error and r.error.message))
  t.eq(r.result.kept, "mine", "the caller's table after the callee changed its payload")
  t.eq(r.result.calls, 0, "the caller's metamethod ran in the callee")
  t.eq(r.result.probe, nil, "the callee read through the caller's metatable")
end)


t.test("a run cannot change how another run's ctx.settings answers a name it lacks", function()
  -- the metatable of ctx.settings is one per flow version, shared by its runs
  local f = load("s.lua", [[
return { settings = { limit = { type = "number", default = 5 } }, triggers = { manual() }, run = function(ctx)
  local mt = getmetatable(ctx.settings)
  if type(mt) == "table" then mt.__index = function() return "planted" end end
  local replaced = pcall(setmetatable, ctx.settings, { __index = function() return "planted" end })
  local ok, v = pcall(function() return ctx.settings.limt end)
  return { mt = tostring(mt), replaced = replaced, ok = ok, v = tostring(v), limit = ctx.settings.limit }
end }]])
  for i = 1, 2 do
    local r = run(f)
    t.eq(r.state, "succeeded", "run " .. i .. ": " .. tostring(r.error and r.error.message))
    t.eq(r.result.mt, "false", "run " .. i .. " reached the metatable")
    t.eq(r.result.replaced, false, "run " .. i .. " replaced the metatable")
    t.eq(r.result.ok, false, "run " .. i .. " read a setting its flow does not declare")
    t.ok(r.result.v:find("declares no setting 'limt' (did you mean 'limit'?)", 1, true), r.result.v)
    t.eq(r.result.limit, 5, "run " .. i .. "'s limit")
  end
end)

t.test("a flow version whose runs read ctx.settings can still be collected", function()
  local alive = setmetatable({}, { __mode = "k" })
  do
    local f = load("c.lua", [[
return { settings = { limit = { type = "number", default = 5 } }, triggers = { manual() },
  run = function(ctx) return ctx.settings.limit end }]])
    t.eq(run(f).result, 5, "the run's result")
    alive[f] = true
  end
  collectgarbage("collect")
  collectgarbage("collect")
  t.eq(next(alive), nil, "the flow version after its runs ended")
end)

t.done()
