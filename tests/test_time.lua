-- time (stdlib/rill/time.lua): ISO 8601 in and out, zones, days across DST,
-- durations, and the replaceable clock.
local t = require "t"
local time = require "rill.time"

t.test("iso formats UTC and zones, with milliseconds only when there are some", function()
  t.eq(time.iso(1795593600), "2026-11-25T08:00:00Z", "UTC")
  t.eq(time.iso(1795593600, "Europe/Paris"), "2026-11-25T09:00:00+01:00", "Paris in winter")
  t.eq(time.iso(1782892800, "Europe/Paris"), "2026-07-01T10:00:00+02:00", "Paris in summer")
  t.eq(time.iso(1795593600, "America/New_York"), "2026-11-25T03:00:00-05:00", "negative offset")
  t.eq(time.iso(1795593600, "Asia/Kolkata"), "2026-11-25T13:30:00+05:30", "half-hour offset")
  t.eq(time.iso(1795593600.25), "2026-11-25T08:00:00.250Z", "milliseconds")
  t.err(function() time.iso("now") end, "time.iso: expected a time")
end)

t.test("parse reads ISO 8601 date-times and dates", function()
  t.eq(time.parse("2026-11-25T08:00:00Z"), 1795593600, "Z")
  t.eq(time.parse("2026-11-25t08:00:00z"), 1795593600, "lower case")
  t.eq(time.parse("2026-11-25T09:00:00+01:00"), 1795593600, "+01:00")
  t.eq(time.parse("2026-11-25T09:00:00+0100"), 1795593600, "+0100")
  t.eq(time.parse("2026-11-25T09:00+01"), 1795593600, "+01, no seconds")
  t.eq(time.parse("2026-11-25 03:00:00-05:00"), 1795593600, "space separator")
  t.eq(time.parse("2026-11-25T08:00:00"), 1795593600, "no offset means UTC")
  t.eq(time.parse("2026-11-25"), 1795564800, "a date is midnight UTC")
  t.eq(time.parse("2026-11-25T08:00:00.5Z"), 1795593600.5, "fraction")
  t.eq(time.parse(time.iso(1795593600.125, "Europe/Paris")), 1795593600.125, "round trip")
end)

t.test("parse refuses what is not a real date-time", function()
  for _, bad in ipairs { "2026-02-30", "2026-13-01", "2026-11-25T24:00:00Z", "2026-11-25T10:60:00Z",
                         "25/11/2026", "2026-11-25T10:00:00+25:00", "", "2026-11-25Tnoon", "2025-02-29" } do
    t.err(function() time.parse(bad) end, "time.parse: not an ISO 8601 date-time", bad)
  end
  t.eq(time.parse("2024-02-29"), 1709164800, "a real leap day")
end)

t.test("wall-clock times in a zone", function()
  t.eq(time.parse_local("2026-11-25T09:00:00", "Europe/Paris"), 1795593600, "Paris wall time")
  t.eq(time.parse_local("2026-03-29T02:30:00", "Europe/Paris"), 1774747800, "in the gap: 03:30 CEST")
  t.eq(time.parse_local("2026-10-25T02:30:00", "Europe/Paris"), 1792888200, "twice: the first")
  local l = time.to_local(1795593600, "Europe/Paris")
  t.eq(l.hour, 9, "hour") t.eq(l.offset, 3600, "offset") t.eq(l.abbr, "CET", "abbr")
  t.eq(time.from_local({ year = 2026, month = 11, day = 25, hour = 9 }, "Europe/Paris"), 1795593600, "from_local")
  t.eq(time.from_local({ year = 2026, month = 13, day = 1 }, "Europe/Paris"), time.from_local({ year = 2027, month = 1, day = 1 }, "Europe/Paris"), "month 13 folds into the next year")
  -- month -2^31 overflowed the arithmetic (UBSan stopped the ASan build)
  t.err(function() time.from_local({ year = -2 ^ 31, month = -2 ^ 31, day = -2 ^ 31 }, "Europe/Paris") end, "out of range")
  t.eq(time.weekday(1795593600, "Europe/Paris"), 3, "Wednesday")
  t.eq(time.weekday(time.parse("2026-11-29T12:00:00Z")), 7, "Sunday is 7")
end)

t.test("add_days keeps the wall-clock time across DST", function()
  local before = time.parse_local("2026-03-28T09:00:00", "Europe/Paris")
  local after = time.add_days(before, 1, "Europe/Paris")
  t.eq(time.iso(after, "Europe/Paris"), "2026-03-29T09:00:00+02:00", "09:00 the next day")
  t.eq(after - before, 23 * 3600, "a 23-hour day")
  t.eq(time.iso(time.add_days(time.parse("2026-01-31T10:00:00Z"), 30)), "2026-03-02T10:00:00Z", "across months")
  t.eq(time.add(100, 20), 120, "add")
end)

t.test("durations", function()
  t.eq(time.duration("500ms"), 0.5, "ms") t.eq(time.duration("30s"), 30, "s")
  t.eq(time.duration("5m"), 300, "m") t.eq(time.duration("2h"), 7200, "h")
  t.eq(time.duration("3d"), 259200, "d") t.eq(time.duration("1h30m"), 5400, "compound")
  t.eq(time.duration(12), 12, "a number")
  for _, bad in ipairs { "", "5", "5 minutes", "1y", "m5", "-5s" } do
    t.err(function() time.duration(bad) end, "is not a duration", bad)
  end
end)

t.test("the clock can be set for tests and restored", function()
  time.set_clock(function() return 1795593600 end)
  t.eq(time.now(), 1795593600, "set")
  time.set_clock(nil)
  t.ok(math.abs(time.now() - os.time()) < 5, "restored")
end)

-- found by fuzz/cron.lua: a NaN or infinite instant reached a C conversion to
-- an integer (undefined behaviour), and came out as some date
t.test("an instant that is not a finite number, or is millions of years away, is refused", function()
  t.err(function() time.iso(0 / 0) end, "outside the supported range")
  t.err(function() time.to_local(1 / 0, "Europe/Paris") end, "outside the supported range")
  t.err(function() time.to_local(-1e300) end, "outside the supported range")
  t.eq(time.iso(0), "1970-01-01T00:00:00Z", "the epoch still formats")
end)

t.done()
