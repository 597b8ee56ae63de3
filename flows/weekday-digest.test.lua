-- The morning digest fires on working days at 08:00 Paris time, whatever
-- the season, and not on weekends.
test("it fires at 08:00 Paris time on working days only", function(t)
  t.now("2026-03-27T09:00:00", "Europe/Paris") -- a Friday, before the clocks change
  t.eq(t.next_fire("weekday-digest"), "2026-03-30T08:00:00+02:00", "Monday, summer time")
  t.now("2026-10-23T09:00:00", "Europe/Paris")
  t.eq(t.next_fire("weekday-digest"), "2026-10-26T08:00:00+01:00", "Monday, winter time")
end)

test("a week of digests: five runs, each with its scheduled time", function(t)
  t.env { SLACK_CHANNEL = "#test" }
  t.now("2026-02-28T12:00:00", "Europe/Paris") -- a Saturday
  t.advance("7d")
  local runs = t.runs("weekday-digest")
  t.eq(#runs, 5, "runs in a week")
  t.eq(runs[1].result, { sent = false, scheduled = "2026-03-02T07:00:00Z" }, "Monday's")
  t.eq(runs[5].payload.scheduled, "2026-03-06T07:00:00Z", "Friday's")
end)
