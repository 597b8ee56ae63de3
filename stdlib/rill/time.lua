-- time: instants, ISO 8601 text, time zones and durations for flows.
-- An instant is a number of seconds since 1970-01-01 UTC (with a fraction).
-- time.now() goes through a replaceable clock (time.set_clock), which tests
-- use to set "now"; flows cannot replace it (flows.lua leaves it out).
-- Everything in rill that waits a length of time inside a run (a flow's
-- sleep(), a step's retry backoff, sleep_for outside a stored run) waits
-- through time.sleep, so that a test clock covers it too.
local tz = require "rill.c.tz"

local time = {}

local clock = tz.now
local floor = math.floor

local function check_number(fn, v)
  if type(v) ~= "number" then error("time." .. fn .. ": expected a time (a number), got " .. type(v), 3) end
end

-- now() -> the current instant.
function time.now() return clock() end

local function real_sleep(seconds) return require("rill.c.timer").sleep(seconds) end
local sleeper = real_sleep

-- set_clock(fn[, sleep]): fn() returns the instant time.now() reports; nil
-- restores the real clock. sleep(seconds), when given, is how time.sleep
-- waits under that clock (rill test: moves its clock on at once); without
-- it time.sleep waits in real time.
function time.set_clock(fn, sleep)
  clock = fn or tz.now
  sleeper = fn and sleep or real_sleep
end

-- sleep(seconds): the running task waits that long by the clock (real time
-- unless set_clock gave another way to wait).
function time.sleep(seconds)
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 then
    error("sleep: expected a number of seconds (0 or more), got " .. tostring(seconds), 2)
  end
  return sleeper(seconds)
end

-- iso(t[, zone]) -> "2026-11-25T10:00:00Z", or with zone's offset "…T11:00:00+01:00".
function time.iso(t, zone)
  check_number("iso", t)
  -- to the nearest millisecond: a time read from milliseconds (t = ms / 1000)
  -- prints those milliseconds, not one less through a float's error
  local total = floor(t * 1000 + 0.5)
  local ms = total % 1000
  local l = tz.to_local((total - ms) / 1000, zone or "UTC")
  local s = string.format("%04d-%02d-%02dT%02d:%02d:%02d", l.year, l.month, l.day, l.hour, l.min, l.sec)
  if ms > 0 then s = s .. string.format(".%03d", ms) end
  if not zone then return s .. "Z" end
  local off = l.offset
  local sign = off < 0 and "-" or "+"
  off = math.abs(off)
  return s .. string.format("%s%02d:%02d", sign, floor(off / 3600), floor(off % 3600 / 60))
end

local function days_in(y, m)
  local d = ({ 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 })[m]
  if m == 2 and ((y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0) then d = 29 end
  return d
end

-- Splits an ISO 8601 text into fields and an offset (nil when none given).
local function split(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$")
  if not y then return nil end
  local f = { year = tonumber(y), month = tonumber(mo), day = tonumber(d), hour = 0, min = 0, sec = 0, frac = 0 }
  local offset
  if rest ~= "" then
    local h, mi, tail = rest:match("^[Tt ](%d%d):(%d%d)(.*)$")
    if not h then return nil end
    f.hour, f.min = tonumber(h), tonumber(mi)
    local sec, tail2 = tail:match("^:(%d%d)(.*)$")
    if sec then
      f.sec, tail = tonumber(sec), tail2
      local frac, tail3 = tail:match("^[%.,](%d+)(.*)$")
      if frac then f.frac, tail = tonumber("0." .. frac), tail3 end
    end
    if tail == "Z" or tail == "z" then
      offset = 0
    elseif tail ~= "" then
      local sign, oh, om = tail:match("^([%+%-])(%d%d):?(%d?%d?)$")
      if not sign or (om ~= "" and #om ~= 2) then return nil end
      offset = (tonumber(oh) * 3600 + (tonumber(om) or 0) * 60) * (sign == "-" and -1 or 1)
      if tonumber(oh) > 23 or (tonumber(om) or 0) > 59 then return nil end
    end
  end
  if f.month < 1 or f.month > 12 or f.day < 1 or f.day > days_in(f.year, f.month)
     or f.hour > 23 or f.min > 59 or f.sec > 59 then
    return nil
  end
  return f, offset
end

local function instant(f, zone)
  local n, t1 = tz.from_local(zone, f.year, f.month, f.day, f.hour, f.min, f.sec)
  return t1 + (f.frac or 0), n
end

-- parse(s) -> instant of an ISO 8601 date-time ("Z", "+01:00", "+0100", "+01", or no
-- offset for UTC) or date (midnight UTC). Raises on anything else.
function time.parse(s)
  local f, offset = split(s)
  if not f then error(string.format("time.parse: not an ISO 8601 date-time: %q", tostring(s)), 2) end
  return instant(f, "UTC") - (offset or 0)
end

-- parse_local(s, zone) -> an offset-less date-time read as wall time in zone.
function time.parse_local(s, zone)
  local f, offset = split(s)
  if not f then error(string.format("time.parse_local: not an ISO 8601 date-time: %q", tostring(s)), 2) end
  if offset then return instant(f, "UTC") - offset end
  return (instant(f, zone))
end

-- to_local(t, zone) -> {year, month, day, hour, min, sec, wday, yday, offset, isdst, abbr}.
function time.to_local(t, zone)
  check_number("to_local", t)
  return tz.to_local(t, zone)
end

-- from_local(fields, zone) -> the instant of a wall-clock time (the earlier one
-- when it happens twice; shifted forward when it falls in a DST gap).
function time.from_local(f, zone)
  if type(f) ~= "table" then error("time.from_local: expected a table of fields", 2) end
  local n, t1 = tz.from_local(zone, f.year, f.month or 1, f.day or 1, f.hour or 0, f.min or 0, f.sec or 0)
  return t1
end

-- add_days(t, n[, zone]) -> the same wall-clock time n calendar days later in zone.
function time.add_days(t, n, zone)
  check_number("add_days", t)
  local l = tz.to_local(t, zone)
  local _, t1 = tz.from_local(zone, l.year, l.month, l.day + n, l.hour, l.min, l.sec)
  return t1 + (t - floor(t))
end

-- add(t, seconds) -> t + seconds.
function time.add(t, seconds)
  check_number("add", t)
  return t + seconds
end

local UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }

-- duration("1h30m") -> 5400; accepts ms, s, m, h, d, or a number of seconds.
function time.duration(v)
  if type(v) == "number" then return v end
  if type(v) ~= "string" or v == "" then
    error(string.format("time.duration: %q is not a duration (e.g. 500ms, 30s, 5m, 1h30m)", tostring(v)), 2)
  end
  local total, pos = 0, 1
  while pos <= #v do
    local n, unit, after = v:match("^(%d+%.?%d*)(%a+)()", pos)
    if not n or not UNITS[unit] then
      error(string.format("time.duration: %q is not a duration (e.g. 500ms, 30s, 5m, 1h30m)", v), 2)
    end
    total = total + tonumber(n) * UNITS[unit]
    pos = after
  end
  return total
end

-- weekday(t, zone) -> 1 (Monday) .. 7 (Sunday).
function time.weekday(t, zone)
  check_number("weekday", t)
  local w = tz.to_local(t, zone).wday
  return w == 0 and 7 or w
end

return time
