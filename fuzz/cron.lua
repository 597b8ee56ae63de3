-- fuzz/cron.lua: cron expressions (stdlib/rill/cron.lua), the way a flow's
-- cron trigger uses them. Input: the expression, then optionally a line
-- "zone" and a line "offset" (seconds from 2026-01-01, the "after" of next).
-- parse must return a schedule or raise a clean "cron: ..." message; next
-- must terminate (the driver's instruction budget) and return nil or a whole
-- instant strictly after `after` whose wall time matches the expression
-- (away from DST changes), and next from that instant a later one.
local cron = require "rill.cron"
local tz = require "rill.c.tz"

local BASE = 1767225600 -- 2026-01-01T00:00:00Z
local ZONES = { "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
  "Pacific/Apia", "America/Santiago", "Europe/London" }

local function fail(fmt, ...) error("FUZZ: " .. string.format(fmt, ...), 0) end

return function(data)
  local expr, zone, offset = data:match("^([^\n]*)\n?([^\n]*)\n?(.*)$")
  local ok, spec = pcall(cron.parse, expr)
  if not ok then
    if type(spec) ~= "string" or not spec:match("^cron: ") then
      fail("parse(%q) raised an internal error: %s", expr, tostring(spec))
    end
    return
  end
  if type(spec) ~= "table" then fail("parse(%q) returned a %s", expr, type(spec)) end
  -- the zone: a known one by number, or any name tz.valid accepts
  local n = tonumber(zone)
  if n and n == math.floor(n) then
    zone = ZONES[n % #ZONES + 1]
  elseif zone == "" then
    zone = "UTC"
  else
    local vok, valid = pcall(tz.valid, zone)
    if not vok then fail("tz.valid(%q) raised: %s", zone, tostring(valid)) end
    if not valid then return end
  end
  local o = tonumber(offset) or 0
  if o ~= o or math.abs(o) > 1e12 then o = 0 end -- next() takes a real instant
  local after = BASE + (o % (200 * 365 * 86400)) - 100 * 365 * 86400
  local nok, t1 = pcall(cron.next, spec, after, zone)
  if not nok then fail("next(%q, %s, %s) raised: %s", expr, after, zone, tostring(t1)) end
  if t1 == nil then return end
  if type(t1) ~= "number" or t1 ~= math.floor(t1) or t1 <= after then
    fail("next(%q, %s, %s) returned %s", expr, after, zone, tostring(t1))
  end
  -- away from a DST change, the instant's wall time matches every field
  local l = tz.to_local(t1, zone)
  if tz.to_local(t1 - 3 * 3600, zone).offset == tz.to_local(t1 + 3 * 3600, zone).offset then
    local wd = l.wday -- 0 is Sunday
    local dom, dow = spec.dom[l.day], spec.dow[wd]
    local day_ok
    if spec.dom_star or spec.dow_star then day_ok = dom and dow else day_ok = dom or dow end
    if not (spec.second[l.sec] and spec.minute[l.min] and spec.hour[l.hour] and spec.month[l.month] and day_ok) then
      fail("next(%q, %s, %s) = %s, %04d-%02d-%02d %02d:%02d:%02d (wday %d), which the expression does not match",
        expr, after, zone, t1, l.year, l.month, l.day, l.hour, l.min, l.sec, wd)
    end
  end
  local ok2, t2 = pcall(cron.next, spec, t1, zone)
  if not ok2 then fail("next(%q, %s, %s) raised: %s", expr, t1, zone, tostring(t2)) end
  if t2 ~= nil and (type(t2) ~= "number" or t2 <= t1) then
    fail("next(%q, %s, %s) after %s returned %s", expr, t1, zone, tostring(t1), tostring(t2))
  end
end
