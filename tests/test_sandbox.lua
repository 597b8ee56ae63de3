-- The flow sandbox (stdlib/rill/sandbox.lua, flows.lua): what flow code can
-- reach, and that flows cannot see or change each other's globals.
local t = require "t"
local flows = require "rill.flows"
local runner = require "rill.runner"
require("rill.log").configure("error", "text")

local function load(name, src)
  local flow, err = flows.load_file(name, src)
  if not flow then error(err, 2) end
  return flow
end

local function run(flow, payload)
  local result
  runner.start(flow, { type = "manual" }, payload, { on_done = function(r) result = r end })
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
  local names = { "io", "load", "loadstring", "loadfile", "dofile", "require", "module", "setfenv",
                  "getfenv", "debug", "package", "coroutine", "jit", "ffi", "collectgarbage",
                  "newproxy", "gcinfo" }
  local r = run(load("probe.lua", PROBE), names)
  t.eq(r.state, "succeeded", "run")
  for _, name in ipairs(names) do t.eq(r.result[name], false, name) end
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
  return { write_refused = not ok, rill_hidden = env.RILL_LISTEN == nil, path = env.PATH ~= nil }
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

t.done()
