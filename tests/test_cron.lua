-- Cron expressions (stdlib/rill/cron.lua): parsing, next fire times, and the
-- edge cases: DST gaps and overlaps, ends of months, leap days, Feb 30.
local t = require "t"
local cron = require "rill.cron"
local time = require "rill.time"

-- The next n fire times after `from`, as ISO strings in UTC.
local function fires(expr, from, zone, n)
  local spec = cron.parse(expr)
  local at, out = time.parse(from), {}
  for _ = 1, n do
    at = cron.next(spec, at, zone)
    if not at then break end
    out[#out + 1] = time.iso(at)
  end
  return table.concat(out, " ")
end

t.test("parses every syntax", function()
  local s = cron.parse("*/15 8-18/2 1,15 JAN-mar MON-fri")
  t.eq(s.second[0], true, "5 fields mean second 0")
  t.ok(s.minute[0] and s.minute[45] and not s.minute[50], "step")
  t.ok(s.hour[8] and s.hour[10] and s.hour[18] and not s.hour[9], "range with step")
  t.ok(s.dom[1] and s.dom[15] and not s.dom[2], "list")
  t.ok(s.month[1] and s.month[3] and not s.month[4], "month names, any case")
  t.ok(s.dow[1] and s.dow[5] and not s.dow[6], "weekday names")
  s = cron.parse("30 5/20 * * * 7")
  t.ok(s.second[30] and s.minute[5] and s.minute[45] and not s.minute[4], "6 fields, a/n")
  t.ok(s.dow[0] and not s.dow[7], "7 is Sunday")
  t.eq(fires("@daily", "2026-11-25T10:00:00Z", "UTC", 1), "2026-11-26T00:00:00Z", "@daily")
  t.eq(fires("@hourly", "2026-11-25T10:00:00Z", "UTC", 1), "2026-11-25T11:00:00Z", "@hourly")
  t.eq(fires("@weekly", "2026-11-25T10:00:00Z", "UTC", 1), "2026-11-29T00:00:00Z", "@weekly: Sunday")
  t.eq(fires("  0   9  *  *  * ", "2026-11-25T10:00:00Z", "UTC", 1), "2026-11-26T09:00:00Z", "spaces")
end)

t.test("refuses mistakes with the field and the reason", function()
  t.err(function() cron.parse("0 25 * * *") end, "cron: field 'hour' (\"25\"): 25 is out of range 0-23")
  t.err(function() cron.parse("0 0 32 * *") end, "'day-of-month'")
  t.err(function() cron.parse("0 0 * 13 *") end, "'month'")
  t.err(function() cron.parse("0 0 * * 8") end, "'day-of-week'")
  t.err(function() cron.parse("0 0 * FOO *") end, "\"FOO\" is not a value")
  t.err(function() cron.parse("5-1 * * * *") end, "backwards")
  t.err(function() cron.parse("*/0 * * * *") end, "step")
  t.err(function() cron.parse("1,,2 * * * *") end, "empty list item")
  t.err(function() cron.parse("0 0 L * *") end, "not supported")
  t.err(function() cron.parse("0 0 * * 1#2") end, "not supported")
  t.err(function() cron.parse("* * *") end, "has 3 fields")
  t.err(function() cron.parse("@every 5m") end, "unknown macro")
end)

-- found probing fuzz/cron.lua's inputs: tonumber took hex, exponents and signs, so that
-- "0x3" meant 3, "*/1e999" a step of infinity, and "1e999" was refused as
-- "-9223372036854775808 is out of range"
t.test("a value or a step is digits or a name, and an error quotes it as written", function()
  t.err(function() cron.parse("1e999 * * * *") end, "cron: field 'minute' (\"1e999\"): \"1e999\" is not a value")
  t.err(function() cron.parse("0x3 * * * *") end, "\"0x3\" is not a value")
  t.err(function() cron.parse("-0 * * * *") end, "\"-0\" is not a value")
  t.err(function() cron.parse("1.0 * * * *") end, "\"1.0\" is not a value")
  t.err(function() cron.parse("*/1e999 * * * *") end, "step \"1e999\" is not a positive whole number")
  t.err(function() cron.parse("*/0x1 * * * *") end, "step \"0x1\"")
  t.err(function() cron.parse("0 99999999999999999999 * * *") end, "99999999999999999999 is out of range 0-23")
  t.eq(cron.parse("07 * * * *").minute[7], true, "a leading zero is still a value")
end)

t.test("plain schedules", function()
  t.eq(fires("* * * * *", "2026-11-25T10:00:30Z", "UTC", 2), "2026-11-25T10:01:00Z 2026-11-25T10:02:00Z", "every minute")
  t.eq(fires("*/20 * * * * *", "2026-11-25T10:00:30Z", "UTC", 3),
    "2026-11-25T10:00:40Z 2026-11-25T10:01:00Z 2026-11-25T10:01:20Z", "seconds field")
  t.eq(fires("0 9 * * MON-FRI", "2026-11-27T12:00:00Z", "Europe/Paris", 2),
    "2026-11-30T08:00:00Z 2026-12-01T08:00:00Z", "working days, Paris time")
  t.eq(fires("0 9 * * *", "2026-11-25T08:00:00Z", "UTC", 1), "2026-11-25T09:00:00Z", "later today")
  t.eq(fires("0 9 * * *", "2026-11-25T09:00:00Z", "UTC", 1), "2026-11-26T09:00:00Z", "strictly after")
end)

t.test("a day matches either restricted day field", function()
  t.eq(fires("0 0 1,15 * MON", "2026-11-25T12:00:00Z", "UTC", 4),
    "2026-11-30T00:00:00Z 2026-12-01T00:00:00Z 2026-12-07T00:00:00Z 2026-12-14T00:00:00Z", "OR")
  t.eq(fires("0 0 */10 * MON", "2026-11-25T12:00:00Z", "UTC", 2),
    "2026-12-21T00:00:00Z 2027-01-11T00:00:00Z", "a field starting with * means AND: Mondays on 1, 11, 21, 31")
end)

t.test("ends of months, leap days, and dates that never come", function()
  t.eq(fires("0 0 31 * *", "2026-01-01T00:00:00Z", "UTC", 4),
    "2026-01-31T00:00:00Z 2026-03-31T00:00:00Z 2026-05-31T00:00:00Z 2026-07-31T00:00:00Z", "31st")
  t.eq(fires("0 0 29 2 *", "2026-01-01T00:00:00Z", "UTC", 2), "2028-02-29T00:00:00Z 2032-02-29T00:00:00Z", "leap day")
  t.eq(fires("0 0 29 2 *", "2096-03-01T00:00:00Z", "UTC", 1), "2104-02-29T00:00:00Z", "2100 is no leap year")
  t.eq(cron.next(cron.parse("0 0 30 2 *"), time.parse("2026-01-01"), "UTC"), nil, "Feb 30")
  t.eq(cron.never_fires(cron.parse("0 0 31 4,6,9,11 *")), true, "31 in 30-day months")
  t.eq(cron.never_fires(cron.parse("0 0 30 2 MON")), false, "with a weekday it fires on Mondays")
end)

t.test("Paris spring forward: a time in the gap fires once, shifted", function()
  t.eq(fires("30 2 * * *", "2026-03-28T12:00:00Z", "Europe/Paris", 2),
    "2026-03-29T01:30:00Z 2026-03-30T00:30:00Z", "02:30 -> 03:30 CEST, once")
  t.eq(fires("*/30 * * * *", "2026-03-28T23:45:00Z", "Europe/Paris", 5),
    "2026-03-29T00:00:00Z 2026-03-29T00:30:00Z 2026-03-29T01:00:00Z 2026-03-29T01:30:00Z 2026-03-29T02:00:00Z",
    "no duplicate where shifted times meet real ones")
end)

t.test("Paris fall back: fixed hours fire once, every-hour schedules keep their rhythm", function()
  t.eq(fires("30 2 * * *", "2026-10-24T12:00:00Z", "Europe/Paris", 2),
    "2026-10-25T00:30:00Z 2026-10-26T01:30:00Z", "02:30 once, the first (CEST) time")
  t.eq(fires("0 * * * *", "2026-10-24T23:30:00Z", "Europe/Paris", 3),
    "2026-10-25T00:00:00Z 2026-10-25T01:00:00Z 2026-10-25T02:00:00Z", "02:00 CEST, 02:00 CET, 03:00 CET")
  t.eq(fires("*/15 * * * *", "2026-10-25T00:40:00Z", "Europe/Paris", 4),
    "2026-10-25T00:45:00Z 2026-10-25T01:00:00Z 2026-10-25T01:15:00Z 2026-10-25T01:30:00Z", "every 15 minutes")
end)

t.test("New York's changes likewise", function()
  t.eq(fires("30 2 * * *", "2026-03-07T12:00:00Z", "America/New_York", 2),
    "2026-03-08T07:30:00Z 2026-03-09T06:30:00Z", "spring: 02:30 -> 03:30 EDT")
  t.eq(fires("30 1 * * *", "2026-10-31T12:00:00Z", "America/New_York", 2),
    "2026-11-01T05:30:00Z 2026-11-02T06:30:00Z", "fall: 01:30 EDT only")
end)

-- issue 15: the check for Quartz's L, W, # and ? looked for the letters anywhere,
-- so that every name holding a capital L or W (JUL, WED, APR is fine) was refused
t.test("names holding L or W are names; Quartz's L, W, # and ? are still refused", function()
  local s = cron.parse("0 9 * JUL WED")
  t.ok(s.month[7] and not s.month[6], "JUL")
  t.ok(s.dow[3] and not s.dow[2], "WED")
  s = cron.parse("0 9 * jul,Apr-Jun TUE-WED")
  t.ok(s.month[7] and s.month[4] and s.month[5], "any case, in lists and ranges")
  t.ok(s.dow[2] and s.dow[3], "TUE-WED")
  t.eq(fires("0 9 * JUL WED", "2026-06-30T12:00:00Z", "UTC", 2), "2026-07-01T09:00:00Z 2026-07-08T09:00:00Z", "fires")
  for _, expr in ipairs { "0 0 L * *", "0 0 l * *", "0 0 15W * *", "0 0 LW * *", "0 0 * * 5L", "0 0 * * 1#2",
    "0 0 ? * MON", "0 0 L-3 * *" } do
    t.err(function() cron.parse(expr) end, "L, W, # and ? are not supported")
  end
  t.err(function() cron.parse("0 0 * * WEDX") end, "\"WEDX\" is not a value")
end)

-- issue 15: docs/flows.md says exactly this; a field that starts with * is unrestricted
t.test("day-of-month and day-of-week: OR when both are restricted, else AND", function()
  local function days(expr, n) return fires(expr, "2026-11-25T12:00:00Z", "UTC", n) end
  t.eq(days("0 0 1 * FRI", 3), "2026-11-27T00:00:00Z 2026-12-01T00:00:00Z 2026-12-04T00:00:00Z",
    "both restricted: the 1st or a Friday")
  t.eq(days("0 0 * * FRI", 2), "2026-11-27T00:00:00Z 2026-12-04T00:00:00Z", "day-of-month * : Fridays only")
  t.eq(days("0 0 1 * *", 2), "2026-12-01T00:00:00Z 2027-01-01T00:00:00Z", "day-of-week * : the 1st only")
  t.eq(days("0 0 1 * */2", 2), "2026-12-01T00:00:00Z 2027-04-01T00:00:00Z",
    "day-of-week */2 starts with *: AND, the 1st when it is Sun, Tue, Thu or Sat")
  t.eq(days("0 0 1-31 * FRI", 2), "2026-11-26T00:00:00Z 2026-11-27T00:00:00Z",
    "1-31 is restricted (it does not start with *): OR, so every day")
  t.eq(days("@midnight", 1), "2026-11-26T00:00:00Z", "@midnight is @daily")
end)

-- Lord Howe moves its clocks by 30 minutes (+10:30 standard, +11 summer), at 02:00
t.test("Lord Howe: @hourly through a 30-minute DST change", function()
  t.eq(fires("@hourly", "2026-10-03T13:00:00Z", "Australia/Lord_Howe", 4),
    "2026-10-03T13:30:00Z 2026-10-03T14:30:00Z 2026-10-03T15:30:00Z 2026-10-03T16:00:00Z",
    "spring: 00:00, 01:00 (+10:30); 02:00 is in the gap and fires at 02:30 (+11); 03:00 comes 30 minutes later")
  t.eq(fires("@hourly", "2026-04-04T12:30:00Z", "Australia/Lord_Howe", 4),
    "2026-04-04T13:00:00Z 2026-04-04T14:00:00Z 2026-04-04T15:30:00Z 2026-04-04T16:30:00Z",
    "fall: 01:00 (+11), then 02:00 (+10:30) 90 minutes later: no wall hour repeats")
end)

t.test("a thousand successive fire times only ever increase", function()
  for _, expr in ipairs { "*/7 * * * * *", "13 */3 * * *", "0 0 * * *" } do
    local spec, at = cron.parse(expr), time.parse("2026-03-28T00:00:00Z")
    for i = 1, 1000 do
      local nxt = cron.next(spec, at, "Europe/Paris")
      if not (nxt and nxt > at) then error(expr .. ": not increasing at step " .. i) end
      at = nxt
    end
  end
end)

t.done()
