-- cron: cron expressions and their next fire time in a time zone.
--
-- Syntax: five fields (minute hour day-of-month month day-of-week) or six
-- (second first). A field is `*`, a value, a range `a-b`, a list `a,b`, a
-- step `*/n`, `a-b/n` or `a/n`; months JAN-DEC and weekdays SUN-SAT by
-- name; day-of-week 0-7 (0 and 7 are Sunday). Macros: @yearly @annually
-- @monthly @weekly @daily @midnight @hourly. Quartz's L, W, # and ? are
-- refused. When both day fields are restricted (neither starts with `*`:
-- `*/2` is unrestricted, `1-31` restricted), a day matching either one fires
-- (Vixie cron); otherwise a day must match both.
--
-- Time zones and daylight saving time (wall-clock time in the trigger's zone):
--  * A wall time that does not exist (spring forward) fires once, shifted
--    forward by the gap: 02:30 in Paris on 2026-03-29 fires at 03:30 CEST.
--    A schedule never fires twice at one instant, even when a shifted time
--    lands on another match.
--  * A wall time that happens twice (fall back) fires once, at its first
--    occurrence; but a schedule whose hour field is `*` fires in both, so
--    that "every 15 minutes" keeps its rhythm through the repeated hour.
--  * A schedule that cannot fire (February 30) has no next time: next()
--    returns nil, and the flow loader refuses it.
local tz = require "rill.c.tz"

local cron = {}

local floor = math.floor
local YEARS_AHEAD = 50
local NEAR = 3 * 3600  -- how far from a DST change wall and real order may differ

local FIELDS = {
  { name = "second", min = 0, max = 59 },
  { name = "minute", min = 0, max = 59 },
  { name = "hour", min = 0, max = 23 },
  { name = "day-of-month", min = 1, max = 31 },
  { name = "month", min = 1, max = 12,
    names = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6, jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 } },
  { name = "day-of-week", min = 0, max = 7,
    names = { sun = 0, mon = 1, tue = 2, wed = 3, thu = 4, fri = 5, sat = 6 } },
}

local MACROS = {
  ["@yearly"] = "0 0 1 1 *", ["@annually"] = "0 0 1 1 *", ["@monthly"] = "0 0 1 * *",
  ["@weekly"] = "0 0 * * 0", ["@daily"] = "0 0 * * *", ["@midnight"] = "0 0 * * *",
  ["@hourly"] = "0 * * * *",
}

local function field_error(field, text, why)
  error(string.format("cron: field '%s' (%q): %s", field.name, text, why), 0)
end

-- A value is digits or a name: tonumber alone would take "0x3", "1e999", "-0".
-- Quartz's L and W are told apart from names by their shape (L, 5L, 15W, LW),
-- not by the letters: JUL and WED are names.
local QUARTZ = { "^L$", "^%d+L$", "^%d+W$", "^LW$" }

local function value(field, text, s)
  local v = s:match("^%d+$") and tonumber(s)
  if not v and field.names then v = field.names[s:lower()] end
  if not v then
    for _, shape in ipairs(QUARTZ) do
      if s:upper():find(shape) then field_error(field, text, "L, W, # and ? are not supported") end
    end
    field_error(field, text, string.format("%q is not a value", s))
  end
  if v < field.min or v > field.max then
    field_error(field, text, string.format("%s is out of range %d-%d", s, field.min, field.max))
  end
  return v
end

-- One field's text -> set of allowed values (a table value -> true).
local function parse_field(field, text)
  local set = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    if item == "" then field_error(field, text, "empty list item") end
    local range, step = item:match("^([^/]+)/(.+)$")
    range = range or item
    local lo, hi
    if range == "*" then
      lo, hi = field.min, field.max
      if field.name == "day-of-week" then hi = 6 end
    else
      local a, b = range:match("^([^%-]+)%-(.+)$")
      if a then
        lo, hi = value(field, text, a), value(field, text, b)
        if lo > hi then field_error(field, text, string.format("range %s is backwards", range)) end
      else
        lo = value(field, text, range)
        hi = step and (field.name == "day-of-week" and 6 or field.max) or lo
      end
    end
    local n = 1
    if step then
      n = step:match("^%d+$") and tonumber(step)
      if not n or n < 1 then field_error(field, text, string.format("step %q is not a positive whole number", step)) end
    end
    for v = lo, hi, n do set[v] = true end
  end
  if field.name == "day-of-week" and set[7] then set[0], set[7] = true, nil end
  return set
end

-- parse(expr) -> spec, or raises a message naming the field and the problem.
function cron.parse(expr)
  if type(expr) ~= "string" then error("cron: expected an expression string", 0) end
  local text = expr:match("^%s*(.-)%s*$")
  if text:sub(1, 1) == "@" then
    local macro = MACROS[text:lower()]
    if not macro then
      error(string.format("cron: unknown macro %q (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)", text), 0)
    end
    text = macro
  end
  local parts = {}
  for p in text:gmatch("%S+") do parts[#parts + 1] = p end
  if #parts == 5 then table.insert(parts, 1, "0") end
  if #parts ~= 6 then
    error(string.format("cron: %q has %d fields; expected 5 (minute hour day month weekday) or 6 (seconds first)", expr, #parts), 0)
  end
  for i, p in ipairs(parts) do
    if p:find("[#%?]") then
      field_error(FIELDS[i], p, "L, W, # and ? are not supported")
    end
  end
  local spec = { expr = expr }
  spec.second = parse_field(FIELDS[1], parts[1])
  spec.minute = parse_field(FIELDS[2], parts[2])
  spec.hour = parse_field(FIELDS[3], parts[3])
  spec.dom = parse_field(FIELDS[4], parts[4])
  spec.month = parse_field(FIELDS[5], parts[5])
  spec.dow = parse_field(FIELDS[6], parts[6])
  spec.dom_star = parts[4]:sub(1, 1) == "*"
  spec.dow_star = parts[6]:sub(1, 1) == "*"
  spec.hour_star = parts[3] == "*"
  return spec
end

local function days_in(y, m)
  local d = ({ 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 })[m]
  if m == 2 and ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) then d = 29 end
  return d
end

-- Day of the week of a date, 0 = Sunday (Zeller-free: Sakamoto's method).
local function weekday(y, m, d)
  local t = { 0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4 }
  if m < 3 then y = y - 1 end
  return (y + floor(y / 4) - floor(y / 100) + floor(y / 400) + t[m] + d) % 7
end

local function day_matches(spec, y, m, d)
  local dom, dow = spec.dom[d], spec.dow[weekday(y, m, d)]
  if spec.dom_star or spec.dow_star then return dom and dow end
  return dom or dow
end

-- The first matching wall time at or after f (a fields table, changed in
-- place), or nil past `limit_year`. Jumps field by field.
local function next_wall(spec, f, limit_year)
  while f.year <= limit_year do
    if not spec.month[f.month] then
      f.month, f.day, f.hour, f.min, f.sec = f.month + 1, 1, 0, 0, 0
      if f.month > 12 then f.year, f.month = f.year + 1, 1 end
    elseif f.day > days_in(f.year, f.month) then
      f.month, f.day, f.hour, f.min, f.sec = f.month + 1, 1, 0, 0, 0
      if f.month > 12 then f.year, f.month = f.year + 1, 1 end
    elseif not day_matches(spec, f.year, f.month, f.day) then
      f.day, f.hour, f.min, f.sec = f.day + 1, 0, 0, 0
    elseif f.hour > 23 then
      f.day, f.hour, f.min, f.sec = f.day + 1, 0, 0, 0
    elseif not spec.hour[f.hour] then
      f.hour, f.min, f.sec = f.hour + 1, 0, 0
    elseif f.min > 59 then
      f.hour, f.min, f.sec = f.hour + 1, 0, 0
    elseif not spec.minute[f.min] then
      f.min, f.sec = f.min + 1, 0
    elseif f.sec > 59 then
      f.min, f.sec = f.min + 1, 0
    elseif not spec.second[f.sec] then
      f.sec = f.sec + 1
    else
      return f
    end
  end
  return nil
end

-- Naive seconds of a wall time (as if it were UTC), for ordering wall times.
local function wall_seconds(f)
  local _, t = tz.from_local("UTC", f.year, f.month, f.day, f.hour, f.min, f.sec)
  return t
end

local function offset_at(t, zone)
  return tz.to_local(t, zone).offset
end

local function near_change(t, zone)
  return offset_at(t - NEAR, zone) ~= offset_at(t + NEAR, zone)
end

-- next(spec, after, zone) -> the first fire instant strictly after `after`, or nil.
function cron.next(spec, after, zone)
  zone = zone or "UTC"
  local t0 = floor(after) + 1
  -- Near a DST change wall order and real order differ: start the walk
  -- earlier so that no match whose instant comes after t0 is skipped.
  local start = near_change(t0, zone) and t0 - NEAR or t0
  local f = tz.to_local(start, zone)
  local limit_year = f.year + YEARS_AHEAD
  local best, best_wall
  while true do
    if not next_wall(spec, f, limit_year) then return best end
    local wall = wall_seconds(f)
    if best and wall > best_wall + NEAR then return best end
    local n, a, b = tz.from_local(zone, f.year, f.month, f.day, f.hour, f.min, f.sec)
    if a >= t0 and (not best or a < best) then best = a end
    if n == 2 and spec.hour_star and b >= t0 and (not best or b < best) then best = b end
    if best and not best_wall then
      if not near_change(best, zone) then return best end
      best_wall = best + offset_at(best, zone)
    end
    f.sec = f.sec + 1
  end
end

-- never_fires(spec) -> true when the expression has no fire time ahead.
function cron.never_fires(spec)
  return cron.next(spec, os.time(), "UTC") == nil
end

return cron
