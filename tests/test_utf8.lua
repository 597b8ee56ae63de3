-- rill.c.utf8 (runtime/utf8.c): first_invalid against a byte-by-byte Lua
-- reading of RFC 3629, over hand-picked sequences and generated strings
-- (sequences cut at the end, at and across the 64-, 32- and 8-byte ASCII steps).
local t = require "t"
local first_invalid = require("rill.c.utf8").first_invalid

-- The second byte's range by lead byte; further bytes are 80-BF.
local function lead_of(c)
  if c >= 0xC2 and c <= 0xDF then return 1, 0x80, 0xBF end
  if c == 0xE0 then return 2, 0xA0, 0xBF end
  if c == 0xED then return 2, 0x80, 0x9F end
  if c >= 0xE1 and c <= 0xEF then return 2, 0x80, 0xBF end
  if c == 0xF0 then return 3, 0x90, 0xBF end
  if c == 0xF4 then return 3, 0x80, 0x8F end
  if c >= 0xF1 and c <= 0xF3 then return 3, 0x80, 0xBF end
end

local function reference(s)
  local i = 1
  while i <= #s do
    local c = s:byte(i)
    if c < 0x80 then
      i = i + 1
    else
      local more, lo, hi = lead_of(c)
      if not more then return i end
      local b = s:byte(i + 1)
      if not b or b < lo or b > hi then return i end
      for k = i + 2, i + more do
        b = s:byte(k)
        if not b or b < 0x80 or b > 0xBF then return i end
      end
      i = i + more + 1
    end
  end
end

t.test("valid text, and each kind of invalid byte at its position", function()
  t.eq(first_invalid(""), nil, "empty")
  t.eq(first_invalid('{"a":"plain ascii, longer than eight bytes"}'), nil, "ASCII")
  t.eq(first_invalid("caf\195\169 \226\130\172 \240\159\152\128"), nil, "2, 3 and 4 bytes")
  t.eq(first_invalid("12345678\255"), 9, "a byte no sequence starts with, after a word")
  t.eq(first_invalid("ab\192\128"), 3, "overlong (C0)")
  t.eq(first_invalid("ab\224\128\128"), 3, "overlong (E0 80)")
  t.eq(first_invalid("\237\160\128"), 1, "a UTF-16 surrogate")
  t.eq(first_invalid("\244\144\128\128"), 1, "past U+10FFFF")
  t.eq(first_invalid("x\226\130"), 2, "cut at the end")
  t.eq(first_invalid("x\128"), 2, "a continuation byte alone")
end)

t.test("generated strings: the same answer as the byte-by-byte reading", function()
  math.randomseed(20261204)
  local pieces = { "a", "bcdefghi", "\195\169", "\226\130\172", "\240\159\152\128", "\237\159\191",
    "\244\143\191\191", "\128", "\192", "\224\160", "\255", "\237\160\128", "\240\144" }
  for n = 1, 5000 do
    local parts = {}
    for k = 1, math.random(0, 12) do parts[k] = pieces[math.random(#pieces)] end
    local s = table.concat(parts)
    if first_invalid(s) ~= reference(s) then
      t.eq(first_invalid(s), reference(s), ("string %d: %q"):format(n, s))
    end
  end
end)

t.test("a sequence at each offset of a long ASCII run: at and across the 64-, 32- and 8-byte steps", function()
  local pieces = { "\195\169", "\226\130\172", "\240\159\152\128", "\128", "\255", "\237\160\128", "\226\130" }
  for _, piece in ipairs(pieces) do
    for at = 0, 140 do
      for _, tail in ipairs({ "", string.rep("z", 40) }) do
        local s = string.rep("a", at) .. piece .. tail
        if first_invalid(s) ~= reference(s) then
          t.eq(first_invalid(s), reference(s), ("%q at offset %d, tail %d"):format(piece, at, #tail))
        end
      end
    end
  end
end)

t.test("a body of tens of megabytes is read in one call", function()
  local s = string.rep("p", 24 * 1024 * 1024)
  t.eq(first_invalid(s), nil, "ASCII")
  t.eq(first_invalid(s .. "\195"), #s + 1, "cut at its very end")
end)

t.test("log.text: each byte that is not UTF-8 becomes U+FFFD, valid characters kept, in linear time", function()
  local text = require("rill.log").text
  local R = "\239\191\189"
  t.eq(text("plain"), "plain", "ASCII as it is")
  t.eq(text("caf\195\169 \226\130\172"), "caf\195\169 \226\130\172", "valid text as it is")
  t.eq(text("%PDF\255\254\0x"), "%PDF" .. R .. R .. "\0x", "bad bytes")
  t.eq(text("a\195\169\128\226\130b"), "a\195\169" .. R .. R .. R .. "b", "a stray continuation, a cut sequence")
  t.eq(text("\237\160\128"), R .. R .. R, "a surrogate")
  t.eq(text(42), 42, "not a string: as it is")
  local started = os.clock()
  local out = text(string.rep("\255", 4 * 1024 * 1024))
  t.eq(#out, 3 * 4 * 1024 * 1024, "4 MiB of bad bytes")
  t.eq(first_invalid(out), nil, "valid once repaired")
  assert(os.clock() - started < 10, "linear: " .. (os.clock() - started) .. " s")
end)

t.done()
