-- The bounded matcher (runtime/pattern.c, stdlib/rill/bounded.lua) against
-- the real string library: same results, same errors (without the
-- "file:line:" prefix), over hand-picked and generated patterns; then its
-- limits.
local t = require "t"
local bounded = require "rill.bounded"
local task = require "rill.c.task"

local real = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub }

-- Everything a call returns, or its error without the position prefix, as text.
local function outcome(f, ...)
  local r = { pcall(f, ...) }
  if not r[1] then
    return "error: " .. tostring(r[2]):gsub("^[^:]*:%d+: ", ""):gsub("to '[^']*'", "to 'F'")
  end
  local parts = {}
  for i = 2, #r do parts[#parts + 1] = type(r[i]) .. ":" .. tostring(r[i]) end
  return table.concat(parts, ",") .. "#" .. (#r - 1)
end

local function collect(gm)
  return function(s, p)
    local out = {}
    for a, b, c in gm(s, p) do out[#out + 1] = tostring(a) .. "|" .. tostring(b) .. "|" .. tostring(c) end
    return table.concat(out, ";"), #out
  end
end

local REPL_TABLE = { a = "A", ab = 1, [""] = "E", x = false, [1] = "P1", [2] = 22 }
local function repl_fn(a, b) if a == "b" then return nil end return "<" .. tostring(a) .. tostring(b) .. ">" end

local checked, mismatches = 0, {}
local function same(what, a, b, ...)
  local x, y = outcome(a, ...), outcome(b, ...)
  checked = checked + 1
  if x ~= y and #mismatches < 20 then
    local args = {}
    for i = 1, select("#", ...) do args[i] = string.format("%q", tostring((select(i, ...)))) end
    mismatches[#mismatches + 1] = string.format("%s(%s): string: %q, bounded: %q", what,
      table.concat(args, ", "), x, y)
  end
end

local function compare(s, p)
  same("find", real.find, bounded.find, s, p)
  same("find@2", real.find, bounded.find, s, p, 2)
  same("find@-3", real.find, bounded.find, s, p, -3)
  same("find@99", real.find, bounded.find, s, p, 99)
  same("find plain", real.find, bounded.find, s, p, 1, true)
  same("match", real.match, bounded.match, s, p)
  same("match@3", real.match, bounded.match, s, p, 3)
  same("gmatch", collect(real.gmatch), collect(bounded.gmatch), s, p)
  same("gsub str", real.gsub, bounded.gsub, s, p, "[%0|%1]")
  same("gsub %", real.gsub, bounded.gsub, s, p, "x%%y%")
  same("gsub %2", real.gsub, bounded.gsub, s, p, "%2")
  same("gsub n", real.gsub, bounded.gsub, s, p, "-", 2)
  same("gsub fn", real.gsub, bounded.gsub, s, p, repl_fn)
  same("gsub table", real.gsub, bounded.gsub, s, p, REPL_TABLE)
end

local SUBJECTS = { "", "a", "abc", "aaa", "hello world", "  x = 42;  y=7 ", "THE (quick) [brown] fox!",
                   "a,b,,c", "x\0y\0", "\200\255é", "f(a(b)c)d", "abcabcabc", "key=val&k2=v2",
                   "2026-12-04T11:25:40Z", "\t\n line\r\n" }
local PATTERNS = {
  "", "a", "b", ".", "..", "a*", "a+", "a-", "a?", ".-", ".*", "^a", "^", "$", "a$", "^$", "^.-$",
  "%a+", "%d+", "%l", "%u+", "%s*", "%w+", "%x+", "%p", "%c", "%z", "%A", "%D+", "%S+", "%W",
  "[abc]", "[^abc]+", "[a-c]+", "[%a_][%w_]*", "[]]", "[^]]", "[a-]", "[-a]", "[%]]", "[%-]", "[.]",
  "(a)", "(a)(b)", "()", "()a()", "(a*)", "((a)(b))", "(.-)=(.-)&", "(%w+)=(%w+)", "%((.-)%)",
  "%b()", "%b[]", "%bab", "%f[%a]%a+", "%f[%w]", "%f[%z]", "%f[^%z]", "(a)%1", "(.)%1", "(%w+) %1",
  "^(%s*)(.-)(%s*)$", "a.-c", "x\0y", "\0", "[\0-\31]", "%.", "%%", "%-", "a-b", "a?b?c?",
  -- malformed: the errors must match too
  "%", "[a", "[^", "[%", "(", ")", "a)", "%b", "%ba", "%f", "%fa", "%1", "(%1)", "(()", "%g", "[a-%d]",
  "[%w%-_]+", "[^%s]+", "[%d.]+$", "[%]a]*", "[a-%%]+", "[\128-\255]+", "[^%W_]+", "[%S]-=", "[^^]+",
  "[x-a]+", "[%a-z]+",
  ("(a)"):rep(33), "((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))",
}

t.test("hand-picked patterns and subjects give what the string library gives", function()
  for _, s in ipairs(SUBJECTS) do
    for _, p in ipairs(PATTERNS) do compare(s, p) end
  end
  t.eq(#mismatches, 0, "mismatches:\n" .. table.concat(mismatches, "\n"))
end)

-- Random patterns from pieces that are valid or not, on random subjects.
local ITEMS = { "a", "b", ".", "%a", "%d", "%s", "[ab]", "[^a]", "[a-c]", "%w", "%p", "%%", "(", ")", "()",
                "%b()", "%f[%a]", "%g", "%G", "%1", "%2", "^", "$", "[", "]", "-", "%" }
local QUANT = { "", "", "", "*", "+", "-", "?" }
local CHARS = { "a", "b", "c", "1", " ", "(", ")", "-", "%", ".", "\0" }

t.test("generated patterns give what the string library gives", function()
  mismatches = {}
  math.randomseed(14)
  for _ = 1, 3000 do
    local p = {}
    for i = 1, math.random(0, 6) do p[i] = ITEMS[math.random(#ITEMS)] .. QUANT[math.random(#QUANT)] end
    local s = {}
    for i = 1, math.random(0, 10) do s[i] = CHARS[math.random(#CHARS)] end
    compare(table.concat(s), table.concat(p))
  end
  t.eq(#mismatches, 0, "mismatches:\n" .. table.concat(mismatches, "\n"))
  t.ok(checked > 40000, "comparisons made: " .. checked)
end)

t.test("a gsub with a replacement string over a long subject, made in slices, gives what the string library gives", function()
  mismatches = {}
  -- 64 KiB slices (bounded.lua): subjects of several, and matches that
  -- straddle a slice's end
  local long = { ("ab"):rep(100000), ("x"):rep(65535) .. "yyy" .. ("x"):rep(70000), ("a b  "):rep(40000),
                 ("é,"):rep(50000) .. "end" }
  local pats = { "a", "b", "ab", "", "x*", "y+", "%s+", ".", "(a)(b)", "^a", "^x*", "[^,]*", "b?", "end$", "zz" }
  for _, s in ipairs(long) do
    for _, p in ipairs(pats) do
      same("long gsub str", real.gsub, bounded.gsub, s, p, "[%0|%1]")
      same("long gsub n", real.gsub, bounded.gsub, s, p, "-", 70000)
      same("long gsub empty", real.gsub, bounded.gsub, s, p, "")
    end
  end
  t.eq(#mismatches, 0, "mismatches:\n" .. table.concat(mismatches, "\n"))
end)

t.test("a gsub slice stops at its size in result bytes as well as subject bytes", function()
  -- each "x" becomes 100 bytes: 64 KiB of subject was 6.4 MB of result in
  -- one C call, which held the loop where the watchdog could not pause it
  local gsub_string = require("rill.c.pattern").gsub_string
  local s, repl = ("x"):rep(1e6), ("y"):rep(100)
  local out, n, at = gsub_string(s, "x", repl, math.huge, 1, 65536)
  t.ok(at ~= nil, "it stops before the end of the subject")
  t.ok(#out <= 65536 + 100, "its result is one slice and one replacement: " .. #out)
  t.eq(n, #out / 100, "the matches it made")
  t.eq(at, n + 1, "it goes on from the first match it did not make")
  t.eq(#bounded.gsub(("x"):rep(50000), "x", repl), 5000000, "the whole gsub, in pieces")
end)

-- Subjects longer than the 8 bytes span() passes at a time on ASCII text,
-- with a high byte (or a digit run) at every offset.
t.test("long subjects with a byte to find at every offset give what the string library gives", function()
  mismatches = {}
  local pats = { "[\128-\255]", "[\128-\255]+", "[\192-\255][\128-\191]", "[^\0-\127]", "[%d.][eE]",
                 "%d%d%d", "[%d]+x", "a+b", "[ab]c", ".-\200", "\200" }
  for len = 0, 40, 3 do
    for at = 1, len do
      local base = ("abc1 e.E"):rep(6):sub(1, len)
      for _, piece in ipairs({ "\200", "\233\169", "12e5", "999x", "ab" }) do
        local s = base:sub(1, at - 1) .. piece .. base:sub(at)
        for _, p in ipairs(pats) do
          same("find", real.find, bounded.find, s, p)
          same("find@5", real.find, bounded.find, s, p, 5)
          same("match", real.match, bounded.match, s, p)
        end
      end
    end
  end
  t.eq(#mismatches, 0, "mismatches:\n" .. table.concat(mismatches, "\n"))
end)

t.test("ASCII passed 8 bytes at a time still counts its steps", function()
  local s = ("x"):rep(20000) .. "\200"
  t.eq(bounded.find(s, "[\128-\255]"), 20001, "found past 20,000 ASCII bytes")
  bounded.configure { pattern_max_steps = 1000 }
  local ok, e = pcall(bounded.find, s, "[\128-\255]")
  bounded.configure { pattern_max_steps = 10000000 }
  t.eq(ok, false, "a 1000-step limit stops a 20,000-byte scan")
  t.ok(tostring(e):find("pattern_max_steps", 1, true), e)
end)

t.test("argument errors name the function", function()
  t.eq(outcome(bounded.find, nil, "a"), outcome(real.find, nil, "a"), "find(nil)")
  t.eq(outcome(bounded.match, "a", {}), outcome(real.match, "a", {}), "match(s, {})")
  t.eq(outcome(bounded.gsub, "a", "a", true), outcome(real.gsub, "a", "a", true), "gsub(s, p, true)")
  t.eq(outcome(bounded.gsub, 123, 2, 9), outcome(real.gsub, 123, 2, 9), "gsub on numbers")
  t.eq(outcome(bounded.find, 12345, 34), outcome(real.find, 12345, 34), "find on numbers")
  t.eq(outcome(bounded.gsub, "abc", "%w", function() return {} end),
       outcome(real.gsub, "abc", "%w", function() return {} end), "a table as replacement value")
end)

t.test("a backtracking pattern gives up at the step limit, naming it", function()
  local s = ("a"):rep(2e5)
  local e = t.err(function() return bounded.find(s, ".-.-.-.-.-b") end, "pattern too complex")
  t.ok(e:find("pattern_max_steps", 1, true), e)
  t.err(function() return bounded.match(s, "(.-)(.-)(.-)b") end, "pattern too complex")
  t.err(function() return bounded.gsub(s, ".-.-.-b", "") end, "pattern too complex")
  t.err(function() for _ in bounded.gmatch(s, ".-.-.-b") do end end, "pattern too complex")
  -- and the limit is a setting
  bounded.configure { pattern_max_steps = 1000 }
  local ok = pcall(bounded.find, ("a"):rep(5000), "a-b")
  bounded.configure { pattern_max_steps = 10000000 }
  t.eq(ok, false, "a 1000-step limit stops a 5000-character scan")
  t.eq(bounded.find(("a"):rep(5000) .. "b", "a-b"), 1, "the default allows it")
end)

t.test("deep nesting is refused as the string library refuses it, not a C stack overflow", function()
  for _, n in ipairs { 150, 199, 200, 201, 5000 } do
    local s, p = ("a"):rep(n), ("a?"):rep(n)
    t.eq(outcome(bounded.find, s, p), outcome(real.find, s, p), "a?" .. n)
    p = "(a)" .. ("a?"):rep(n)
    t.eq(outcome(bounded.find, s, p), outcome(real.find, s, p), "(a)a?" .. n)
  end
  t.err(function() return bounded.find(("a"):rep(1e5), ("a?"):rep(1e5)) end, "pattern too complex")
end)

t.test("a search stops at its run's deadline", function()
  bounded.configure { pattern_max_steps = 1e12 }
  local result
  task.spawn(function()
    return bounded.find(("a"):rep(2e5), ".-.-.-.-.-b")
  end, function(_, ok, err) result = { ok = ok, err = err } end, { deadline = 0.2, preempt = false }, nil)
  bounded.configure { pattern_max_steps = 10000000 }
  t.ok(result, "the task ended")
  t.eq(result.ok, false, "ok")
  t.ok(tostring(result.err):find("deadline exceeded", 1, true), tostring(result.err))
end)

t.test("builders refuse results over max_string, naming it", function()
  bounded.configure { max_string = 1000 }
  local e = t.err(function() return bounded.rep("ab", 1e9) end, "max_string")
  t.err(function() return bounded.rep("", 10, ("x"):rep(200)) end, "max_string")
  t.err(function() return bounded.gsub(("x"):rep(500), "x", "yyy") end, "max_string")
  t.err(function() return bounded.format(("%s"):rep(3), ("x"):rep(400), ("x"):rep(400), ("x"):rep(400)) end, "max_string")
  local big = ("x"):rep(100)
  t.err(function() return bounded.concat({ big, big, big, big, big, big, big, big, big, big, big }) end, "max_string")
  t.eq(bounded.rep("ab", 3, ","), "ab,ab,ab", "rep with sep")
  t.eq(bounded.concat({ "a", "b", 3 }, "-"), "a-b-3", "concat")
  t.eq(bounded.format("%d-%s", 4, "x"), "4-x", "format")
  bounded.configure { max_string = 64 * 1024 * 1024 }
  t.ok(e:find("string.rep", 1, true), e)
end)

t.test("sort sorts as table.sort does and refuses an invalid order", function()
  math.randomseed(7)
  for n = 0, 60 do
    local a, b = {}, {}
    for i = 1, n do a[i] = math.random(1, 20); b[i] = a[i] end
    bounded.sort(a)
    table.sort(b)
    t.eq(table.concat(a, ","), table.concat(b, ","), "n = " .. n)
    bounded.sort(a, function(x, y) return x > y end)
    table.sort(b, function(x, y) return x > y end)
    t.eq(table.concat(a, ","), table.concat(b, ","), "descending, n = " .. n)
  end
  local words = { "pear", "apple", "fig", "kiwi" }
  bounded.sort(words)
  t.eq(table.concat(words, " "), "apple fig kiwi pear", "strings")
  t.eq(outcome(bounded.sort, { 1, "x", 3 }), outcome(table.sort, { 1, "x", 3 }), "mixed types")
  t.eq(outcome(bounded.sort, 5), outcome(table.sort, 5), "not a table")
  local big = {}
  for i = 1, 100 do big[i] = i % 7 end
  t.err(function() bounded.sort(big, function() return true end) end, "invalid order function for sorting")
end)

t.done()
