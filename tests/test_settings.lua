-- test_settings.lua: a run's ctx.settings (rill.settings.for_run).
local t = require "t"
local settings = require "rill.settings"
local jutil = require "jit.util"

-- The JIT's trace aborts in functions of `file` while fn runs: each is
-- "file:line" of the function that could not be compiled.
local function aborts_in(file, fn)
  local seen = {}
  local function on_trace(what, _, func)
    if what == "abort" and func then
      local info = jutil.funcinfo(func)
      if info.source and info.source:find(file, 1, true) then seen[#seen + 1] = info.loc end
    end
  end
  jit.flush()
  jit.attach(on_trace, "trace")
  local ok, err = pcall(fn)
  jit.attach(on_trace)
  assert(ok, err)
  return seen
end

t.test("a run's settings of a flow that declares none are made by code the JIT compiles", function()
  -- every sync webhook request comes here: code the JIT gives up on (a NYI
  -- bytecode) keeps each run's start in the interpreter
  local flow = { name = "plain" }
  local aborts = aborts_in("settings.lua", function()
    for _ = 1, 2000 do settings.for_run(flow) end
  end)
  t.eq(#aborts, 0, "trace aborts in settings.lua: " .. table.concat(aborts, ", "))
end)

t.test("a run's settings still say which name is a typo", function()
  local flow = { name = "typo", settings = { limit = { type = "number", default = 3 } } }
  local s = settings.for_run(flow)
  t.eq(s.limit, 3)
  local ok, err = pcall(function() return s.limt end)
  t.ok(not ok, "reading an undeclared setting fails")
  t.ok(tostring(err):find("typo declares no setting 'limt'", 1, true), tostring(err))
end)

t.done()
