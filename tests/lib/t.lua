-- t.lua: the Lua tests' harness, run by `rill lua tests/test_x.lua`.
-- t.test(name, fn) runs fn; a raised error or a failed check fails that test.
-- t.done() prints the closing line "N passed, N failed" and exits non-zero
-- when anything failed.
local t = { passed = 0, failed = 0 }

local function fail(msg, level)
  error(msg, (level or 1) + 2)
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function t.eq(actual, expected, what)
  if actual ~= expected then
    fail(string.format("%s: got %s, expected %s", what or "value", show(actual), show(expected)))
  end
end

function t.ok(v, what)
  if not v then fail((what or "condition") .. " is false") end
  return v
end

-- t.err(fn, pattern): fn must raise an error whose message contains pattern
-- (a plain substring).
function t.err(fn, pattern, what)
  local ok, e = pcall(fn)
  if ok then fail((what or "call") .. " raised no error") end
  if pattern and not string.find(tostring(e), pattern, 1, true) then
    fail(string.format("%s: error %s does not contain %s", what or "call", show(tostring(e)), show(pattern)))
  end
  return e
end

function t.test(name, fn)
  local ok, e = xpcall(fn, debug.traceback)
  if ok then
    t.passed = t.passed + 1
  else
    t.failed = t.failed + 1
    io.stderr:write("FAIL ", name, ": ", tostring(e), "\n")
  end
end

function t.done()
  print(string.format("%d passed, %d failed", t.passed, t.failed))
  -- rill.c.os.exit, not os.exit: rill winds down and closes the Lua state
  -- before the process ends (os.exit ended it with the state open, which an
  -- ASan rill's LeakSanitizer reported as a leak and exited 1 for)
  require("rill.c.os").exit(t.failed == 0 and 0 or 1)
end

return t
