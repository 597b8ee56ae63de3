-- bounded: string and table functions that no single call can turn into
-- unbounded work or memory. The string library's own ones backtrack in C
-- with no limit (string.find), build results of any size (string.rep,
-- gsub, table.concat, string.format) or call back into Lua from C where the
-- watchdog cannot preempt (table.sort, gsub's replacement function).
--   find, match, gmatch: rill.c.pattern, Lua 5.1 patterns with a step budget
--     (setting pattern_max_steps) that also stop at the run's deadline.
--   gsub: a Lua loop over pattern.exec; the replacement function is a plain
--     Lua call and the result is built in a table, capped at max_string.
--   rep, format, concat, sub, upper, lower, reverse, and os.date and
--     crypto's encoders (for flows): refuse a result over max_string
--     before building it.
--   sort: a Lua quicksort, so the comparator can be preempted.
-- sandbox.lua gives them to flows, and points the string metatable (shared
-- by every string in the process) at a table holding them.
local pattern = require "rill.c.pattern"

local bounded = { max_string = 8 * 1024 * 1024 }

local exec, gsub_string = pattern.exec, pattern.gsub_string
local type, tostring, select, error, rawget, rawset = type, tostring, select, error, rawget, rawset
local sub, byte, find = string.sub, string.byte, string.find
local concat, floor = table.concat, math.floor
local string_rep, string_format = string.rep, string.format

bounded.find, bounded.match, bounded.gmatch = pattern.find, pattern.match, pattern.gmatch

local refused = 0 -- results refused over max_string since start (gsub's are counted in C)

-- Each limit is visible in /metrics: how many calls it stopped.
require("rill.metrics").gauge("rill_limit_refusals", "Calls stopped by a per-call limit since start "
  .. "(pattern_max_steps: a pattern gave up; max_string: a result too large).", { "limit" }, function(f)
  local steps, gsub_refused = pattern.gave_up()
  f:labels("pattern_max_steps"):set(steps)
  f:labels("max_string"):set(refused + gsub_refused)
end)

-- configure{pattern_max_steps = n, max_string = bytes}
function bounded.configure(c)
  if c.pattern_max_steps then pattern.set_max_steps(c.pattern_max_steps) end
  if c.max_string then
    bounded.max_string = c.max_string
    pattern.set_max_string(c.max_string)
  end
end

-- warn(message, fields): log.warn, which log.lua sets as it loads: log is
-- above bounded (log -> json -> bounded), docs/architecture.md, "Layout".
bounded.warn = function() end

-- refusal(what, n): one result of n bytes refused over max_string, by the
-- call what (here, or json.encode): counted, and a line in the run's log
-- even when the flow catches the error.
function bounded.refusal(what, n)
  refused = refused + 1
  bounded.warn("a string over max_string refused", { call = what, bytes = n,
    max_string = bounded.max_string })
end

local function too_big(what, n, level)
  bounded.refusal(what, n)
  error(string_format("%s: a result of %.0f bytes is over the limit max_string (%d bytes)", what, n,
    bounded.max_string), level + 1)
end

-- The argument as a string, as luaL_checklstring would (numbers convert).
local function checkstring(v, n, fname, level)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  error(string_format("bad argument #%d to '%s' (string expected, got %s)", n, fname,
    v == nil and "no value" or t), level + 1)
end

-- ---- gsub ----

-- A replacement string, parsed once: literal pieces and capture numbers
-- (0 for the whole match). As in Lua 5.1, '%' before a non-digit is that
-- character.
local function parse_template(repl)
  if not find(repl, "%", 1, true) then return nil end
  local parts, lit, i, n = {}, {}, 1, #repl
  while i <= n do
    local c = sub(repl, i, i)
    if c == "%" then
      i = i + 1
      local d = byte(repl, i)
      if d and d >= 48 and d <= 57 then
        if #lit > 0 then parts[#parts + 1] = concat(lit); lit = {} end
        parts[#parts + 1] = d - 48
      else
        lit[#lit + 1] = d and sub(repl, i, i) or "\0"
      end
    else
      lit[#lit + 1] = c
    end
    i = i + 1
  end
  if #lit > 0 then parts[#parts + 1] = concat(lit) end
  return parts
end

-- A capture as text; false is one left unfinished (exec's marker).
local function capture_text(v, level)
  if v == false then error("unfinished capture", level + 1) end
  return type(v) == "number" and tostring(v) or v
end

local function check_finished(level, ...)
  for i = 1, select("#", ...) do
    if select(i, ...) == false then error("unfinished capture", level + 1) end
  end
end

-- The text that replaces one match: s[st..e], with captures `...`.
local function replacement(s, repl, kind, tmpl, st, e, ...)
  local ncap = select("#", ...)
  if kind == "string" then
    if not tmpl then return repl end
    local out = {}
    for i = 1, #tmpl do
      local part = tmpl[i]
      if type(part) == "string" then
        out[i] = part
      elseif part == 0 or (part == 1 and ncap == 0) then
        out[i] = sub(s, st, e)
      elseif part <= ncap then
        out[i] = capture_text((select(part, ...)), 4)
      else
        error("invalid capture index", 4)
      end
    end
    return concat(out)
  end
  local v
  if kind == "function" then
    check_finished(4, ...)
    if ncap == 0 then v = repl(sub(s, st, e)) else v = repl(...) end
  else -- a table: indexed by the first capture only
    local key = ...
    if ncap == 0 then key = sub(s, st, e) elseif key == false then error("unfinished capture", 4) end
    v = repl[key]
  end
  if not v then return sub(s, st, e) end
  local tv = type(v)
  if tv == "string" then return v end
  if tv == "number" then return tostring(v) end
  error("invalid replacement value (a " .. tv .. ")", 4)
end

local function one(s, repl, kind, tmpl, st, e, ...)
  if not st then return nil end
  return st, e, replacement(s, repl, kind, tmpl, st, e, ...)
end

-- Subject bytes a gsub with a replacement string scans in one C call (~2 ms)
local GSUB_SLICE = 64 * 1024

-- gsub(s, pattern, repl[, n]): string.gsub.
function bounded.gsub(s, p, repl, max_n)
  s = checkstring(s, 1, "gsub", 2)
  p = checkstring(p, 2, "gsub", 2)
  local kind = type(repl)
  if kind == "number" then repl, kind = tostring(repl), "string" end
  if kind ~= "string" and kind ~= "function" and kind ~= "table" then
    error("bad argument #3 to 'gsub' (string/function/table expected)", 2)
  end
  if max_n == nil then
    max_n = 1 / 0
  else
    local n = tonumber(max_n)
    if not n then
      error(string_format("bad argument #4 to 'gsub' (number expected, got %s)", type(max_n)), 2)
    end
    max_n = n
  end
  if kind == "string" then -- not a tail call: errors name the flow's line, two levels up
    local out, n, at = gsub_string(s, p, repl, max_n, 1, GSUB_SLICE)
    if not at then return out, n end
    -- a long subject, in slices: the watchdog may pause the run between two
    -- (8 MB in one call held the loop 290 ms)
    local pieces, np, size, limit = { out }, 1, #out, bounded.max_string
    while at do
      local count = n
      out, n, at = gsub_string(s, p, repl, max_n - count, at, GSUB_SLICE)
      np = np + 1
      pieces[np] = out
      size = size + #out
      n = count + n
      if size > limit then too_big("gsub", size, 2) end
    end
    return concat(pieces, "", 1, np), n
  end
  local tmpl = nil
  local len, anchored = #s, byte(p, 1) == 94
  local limit = bounded.max_string
  local out, nout, size = {}, 0, 0
  local src, count = 1, 0
  while count < max_n do
    local st, e, text = one(s, repl, kind, tmpl, exec(s, p, src))
    if not st then break end
    count = count + 1
    if st > src then
      nout = nout + 1
      out[nout] = sub(s, src, st - 1)
      size = size + (st - src)
    end
    nout = nout + 1
    out[nout] = text
    size = size + #text
    if e >= st then
      src = e + 1
    else -- an empty match: keep the next character and go past it
      if st <= len then
        nout = nout + 1
        out[nout] = sub(s, st, st)
        size = size + 1
      end
      src = st + 1
    end
    if size > limit then too_big("gsub", size, 2) end
    if anchored or src > len + 1 then break end
  end
  if count == 0 then return s, 0 end
  if src <= len then
    nout = nout + 1
    out[nout] = sub(s, src)
    size = size + (len - src + 1)
    if size > limit then too_big("gsub", size, 2) end
  end
  return concat(out, "", 1, nout), count
end

-- ---- Builders with a size limit ----

-- rep(s, n[, sep]): string.rep, refused over max_string.
function bounded.rep(s, n, sep)
  s = checkstring(s, 1, "rep", 2)
  local count = tonumber(n)
  if count == nil then
    error(string_format("bad argument #2 to 'rep' (number expected, got %s)", n == nil and "no value" or type(n)), 2)
  end
  if count >= 1 then
    local size = #s * count + (sep ~= nil and #checkstring(sep, 3, "rep", 2) * (count - 1) or 0)
    if size > bounded.max_string then too_big("string.rep", size, 2) end
  end
  if sep == nil then return string_rep(s, n) end
  return string_rep(s, n, sep)
end

-- upper, lower, reverse: string's, refused for an input over max_string;
-- sub, refused when its piece would be over it. Each makes its result in
-- one C call the watchdog cannot preempt, and its input may be far over
-- max_string: `..` builds strings of any size (only the run's memory bounds
-- it), and so may a database value. upper of a 32 MiB string held the loop
-- 120 ms, sub(2) of it 145 ms, on a loaded machine.
local function same_size(what, f)
  return function(s, ...)
    if type(s) == "string" and #s > bounded.max_string then too_big(what, #s, 2) end
    return f(s, ...)
  end
end
bounded.upper = same_size("string.upper", string.upper)
bounded.lower = same_size("string.lower", string.lower)
bounded.reverse = same_size("string.reverse", string.reverse)

function bounded.sub(s, i, j)
  if type(s) == "string" and #s > bounded.max_string then
    -- the piece's length, as string.sub finds it (bad arguments: its own error below)
    local len, a, b = #s, tonumber(i), j == nil and -1 or tonumber(j)
    if a and b then
      a, b = floor(a), floor(b)
      if a < 0 then a = len + a + 1 end
      if b < 0 then b = len + b + 1 end
      if a < 1 then a = 1 end
      if b > len then b = len end
      if b - a + 1 > bounded.max_string then too_big("string.sub", b - a + 1, 2) end
    end
  end
  return sub(s, i, j)
end

-- format(fmt, ...): string.format, refused when its arguments alone would
-- make a result over max_string (each %s can repeat a long string). A
-- value with a __tostring is turned into its string here, once, and
-- weighed as one: "%s" would call it from C, and one 8 MB string given
-- fifteen times made 120 MB in one call.
-- "%q" writes a control character as an escape of up to four bytes ("\1"
-- before a digit is "\0011"): with one in the format, every string counts
-- four times its length.
local getmetatable_raw = debug.getmetatable
local function format_checked(fmt, n, ...)
  local size = type(fmt) == "string" and #fmt or 0
  local per_byte = size > 0 and find(fmt, "%q", 1, true) and 4 or 1
  local args
  for i = 1, n do
    local v = select(i, ...)
    local tv = type(v)
    if tv == "string" then
      size = size + #v * per_byte
    else
      local mt = tv ~= "number" and getmetatable_raw(v)
      if mt and rawget(mt, "__tostring") ~= nil then
        args = args or { ... }
        v = tostring(v)
        args[i] = v
        size = size + (type(v) == "string" and #v * per_byte or 128)
      else
        size = size + 128
      end
    end
  end
  if size > bounded.max_string then too_big("string.format", size, 2) end
  if args then return string_format(fmt, unpack(args, 1, n)) end
  return string_format(fmt, ...)
end
function bounded.format(fmt, ...)
  -- tail calls, here and to string.format: its errors name the flow's call
  -- as string.format's own did, and level 2 of too_big is the flow
  return format_checked(fmt, select("#", ...), ...)
end

-- concat(t[, sep[, i[, j]]]): table.concat, refused over max_string (a
-- table can hold the same long string a million times).
function bounded.concat(t, sep, i, j)
  if type(t) ~= "table" then
    error(string_format("bad argument #1 to 'concat' (table expected, got %s)", t == nil and "no value" or type(t)), 2)
  end
  local first, last = tonumber(i) or 1, tonumber(j) or #t
  local size, seplen = 0, type(sep) == "string" and #sep or 0
  local limit = bounded.max_string
  for k = first, last do
    local v = rawget(t, k)
    if type(v) == "string" then size = size + #v + seplen else size = size + 24 + seplen end
    if size > limit then too_big("table.concat", size, 2) end
  end
  return concat(t, sep, i, j)
end

-- date([format[, time]]): os.date, refused when its format could make a
-- result over max_string: strftime writes each conversion in C, and "%c"
-- (2 bytes) makes 24, so an 8 MB format made 96 MB in one call. Each
-- conversion is counted at DATE_CONVERSION bytes, far above the longest one.
local DATE_CONVERSION = 64
local os_date, string_gsub = os.date, string.gsub
function bounded.date(format, t)
  if type(format) == "string" and #format > 2 then
    local _, conversions = string_gsub(format, "%%", "") -- "%%" counts twice: more, not less
    local size = #format + conversions * DATE_CONVERSION
    if size > bounded.max_string then too_big("os.date", size, 2) end
  end
  if t == nil then return os_date(format) end
  return os_date(format, t)
end

-- encoder(what, f, factor): f (crypto.hex, base64...), refused when its
-- result, about factor times its input, would be over max_string.
function bounded.encoder(what, f, factor)
  return function(s, ...)
    if type(s) == "string" and #s * factor > bounded.max_string then too_big(what, #s * factor, 2) end
    return f(s, ...)
  end
end

-- decoder(what, f): f (crypto.unhex, unbase64...), refused for an input
-- over max_string: it makes less than it reads, but reads it all in one C
-- call, and `..` makes strings of any size.
function bounded.decoder(what, f)
  return function(s, ...)
    if type(s) == "string" and #s > bounded.max_string then
      bounded.refusal(what, #s)
      error(string_format("%s: an input of %d bytes is over the limit max_string (%d bytes)", what, #s,
        bounded.max_string), 2)
    end
    return f(s, ...)
  end
end

-- ---- sort ----

local function lt_default(a, b) return a < b end

local function bad_order() error("invalid order function for sorting", 3) end

-- Quicksort with a median of three, sorting the smaller part first (so the
-- recursion stays O(log n) deep); a comparator that is not a strict order
-- runs an index off the range, which raises as Lua's table.sort does.
local function quicksort(t, lo, hi, lt)
  while lo < hi do
    if lt(rawget(t, hi), rawget(t, lo)) then
      local x = rawget(t, lo); rawset(t, lo, rawget(t, hi)); rawset(t, hi, x)
    end
    if hi - lo == 1 then return end
    local mid = floor((lo + hi) / 2)
    local a, m = rawget(t, lo), rawget(t, mid)
    if lt(m, a) then
      rawset(t, mid, a); rawset(t, lo, m)
    else
      local z = rawget(t, hi)
      if lt(z, m) then rawset(t, mid, z); rawset(t, hi, m) end
    end
    if hi - lo == 2 then return end
    local pivot = rawget(t, mid)
    rawset(t, mid, rawget(t, hi - 1)); rawset(t, hi - 1, pivot)
    local i, j = lo, hi - 1
    while true do
      i = i + 1
      while lt(rawget(t, i), pivot) do
        if i >= hi then bad_order() end
        i = i + 1
      end
      j = j - 1
      while lt(pivot, rawget(t, j)) do
        if j <= lo then bad_order() end
        j = j - 1
      end
      if j < i then break end
      local x = rawget(t, i); rawset(t, i, rawget(t, j)); rawset(t, j, x)
    end
    rawset(t, hi - 1, rawget(t, i)); rawset(t, i, pivot)
    if i - lo < hi - i then
      quicksort(t, lo, i - 1, lt)
      lo = i + 1
    else
      quicksort(t, i + 1, hi, lt)
      hi = i - 1
    end
  end
end

-- sort(t[, comp]): table.sort, in Lua so that the watchdog can stop a
-- comparator that loops (a C sort calling back into Lua cannot yield).
function bounded.sort(t, comp)
  if type(t) ~= "table" then
    error(string_format("bad argument #1 to 'sort' (table expected, got %s)", t == nil and "no value" or type(t)), 2)
  end
  if comp ~= nil and type(comp) ~= "function" then
    error(string_format("bad argument #2 to 'sort' (function expected, got %s)", type(comp)), 2)
  end
  quicksort(t, 1, #t, comp or lt_default)
end
jit.off(bounded.sort, true)
jit.off(quicksort, true)

return bounded
