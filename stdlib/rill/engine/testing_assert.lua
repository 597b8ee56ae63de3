-- testing_assert: the assertions of a flow test's t (t.eq, t.ok,
-- t.contains). Part of testing.lua, apart to keep it short: a function of
-- its table of t's functions, which testing.lua calls once as it loads.
local json = require "rill.json"

return function(T)
local function show(v)
  local ok, s = pcall(json.encode, v)
  return ok and s or tostring(v)
end

-- Raw reads: a database row raises on a column it lacks (db.lua), which
-- is a difference here.
local function same(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not same(v, rawget(b, k)) then return false end
  end
  for k in pairs(b) do
    if rawget(a, k) == nil then return false end
  end
  return true
end

function T.eq(t, actual, expected, what)
  if not same(actual, expected) then
    error(string.format("%sexpected %s, got %s", what and (what .. ": ") or "", show(expected), show(actual)), 2)
  end
end

function T.ok(t, v, what)
  if not v then error((what or "expected a true value") .. ", got " .. show(v), 2) end
  return v
end

function T.contains(t, s, part, what)
  if type(s) ~= "string" or not s:find(part, 1, true) then
    error(string.format("%sexpected text containing %q, got %s", what and (what .. ": ") or "", part, show(s)), 2)
  end
end
end
