"""Cron triggers inside a running rill: ticks start runs with their
schedule in the payload, reloads add, keep and remove schedules, and a
weekly tick missed while rill was down is caught up once across restarts
(the clock moved with clock_offset)."""
import datetime
import json
import time
import zoneinfo

from lib.harness import Rill, eq, main, temp_dir, test, wait_until

EVERY_SECOND = """
return {
  triggers = { cron { "* * * * * *", tz = "Europe/Paris" } },
  run = function(ctx)
    log.info("tick", { scheduled = ctx.payload.scheduled, tz = ctx.payload.tz, kind = ctx.trigger.type })
  end,
}"""


@test
def a_cron_trigger_starts_runs_on_schedule():
    with Rill({"tick.lua": EVERY_SECOND}) as r:
        wait_until(lambda: len(r.log_lines(msg="tick")) >= 2, 10, "two ticks")
        ticks = r.log_lines(msg="tick")
        eq(ticks[0]["kind"], "cron", "trigger type")
        eq(ticks[0]["tz"], "Europe/Paris", "zone")
        scheduled = [t["scheduled"] for t in ticks]
        eq(len(set(scheduled)), len(scheduled), "each tick once")
        assert all(s.endswith("Z") for s in scheduled), scheduled


@test
def removing_the_trigger_stops_the_ticks():
    with Rill({"tick.lua": EVERY_SECOND}) as r:
        wait_until(lambda: r.log_lines(msg="tick"), 10, "a tick")
        n = r.reloads()
        r.write_flow("tick.lua", EVERY_SECOND.replace('cron { "* * * * * *", tz = "Europe/Paris" }', "manual()"))
        r.wait_reload(n)
        count = len(r.log_lines(msg="tick"))
        time.sleep(2.5)  # two seconds of ticks would have come by now
        eq(len(r.log_lines(msg="tick")), count, "ticks after the trigger was removed")


@test
def an_unchanged_schedule_survives_a_reload_of_its_flow():
    with Rill({"tick.lua": EVERY_SECOND}) as r:
        wait_until(lambda: r.log_lines(msg="tick"), 10, "a tick")
        n = r.reloads()
        r.write_flow("tick.lua", EVERY_SECOND.replace('log.info("tick"', 'log.info("tock"'))
        r.wait_reload(n)
        wait_until(lambda: len(r.log_lines(msg="tock")) >= 2, 10, "ticks from the new version")
        scheduled = [t["scheduled"] for t in r.log_lines(msg="tick") + r.log_lines(msg="tock")]
        eq(len(set(scheduled)), len(scheduled), "no tick repeated across the reload")


WEEKLY = """
return {
  triggers = { cron { "0 8 * * MON", tz = "Europe/Paris", missed = "run_once" } },
  run = function(ctx)
    return { scheduled = ctx.payload.scheduled, missed = ctx.payload.missed or false }
  end,
}"""


def weekly_runs(r):
    out = []
    for x in r.runs("list", "--flow", "weekly", "--limit", "1000"):
        run = r.runs("show", x["id"])
        out.append({"state": run["state"], "trigger": json.loads(run["trigger"]),
                    "result": json.loads(run["result"]) if run.get("result") else None})
    return sorted(out, key=lambda x: (x["result"] or {}).get("scheduled", ""))


def at(instant):
    """The environment that makes rill's clock read `instant` (an aware
    datetime) now: clock_offset from the real clock, in whole seconds."""
    # retention kept long: the clock jumps weeks, and the runs before it are looked at
    return {"RILL_CLOCK_OFFSET": "%ds" % round(instant.timestamp() - time.time()), "RILL_RETENTION": "3650d"}


@test
def a_weekly_tick_missed_while_rill_was_down_runs_once_at_start_and_not_again():
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    day = datetime.datetime.now(paris).date() + datetime.timedelta(days=14)
    day += datetime.timedelta(days=(7 - day.weekday()) % 7)  # a Monday two weeks ahead or more
    monday = datetime.datetime(day.year, day.month, day.day, 8, 0, tzinfo=paris)
    iso = lambda d: d.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    d = temp_dir()
    # 1. rill runs over a Monday 08:00: the report runs, the schedule records it (rill starts 10 s
    #    before, on the moved clock: a start slower than that would miss the tick and fail here)
    with Rill({"weekly.lua": WEEKLY}, env=at(monday - datetime.timedelta(seconds=10)), dir=d) as r:
        wait_until(lambda: [x for x in weekly_runs(r) if x["state"] == "succeeded"], 30, "the Monday tick")
        eq([x["result"] for x in weekly_runs(r)], [{"scheduled": iso(monday), "missed": False}], "the tick on time")
    # 2. down for three Mondays; started again on the Tuesday after the third
    third = monday + datetime.timedelta(weeks=3)
    with Rill({"weekly.lua": WEEKLY}, env=at(third + datetime.timedelta(days=1, hours=2)), dir=d) as r:
        wait_until(lambda: len([x for x in weekly_runs(r) if x["state"] == "succeeded"]) >= 2, 30, "the catch-up")
        r.wait_log(msg_has="running once for missed cron ticks")
        runs = weekly_runs(r)
        eq(len(runs), 2, "one catch-up run for three Mondays missed: %r" % runs)
        eq(runs[1]["result"], {"scheduled": iso(third), "missed": True}, "the last Monday missed, not the first")
        eq((runs[1]["trigger"].get("scheduled"), runs[1]["trigger"].get("missed")), (iso(third), True),
           "the missed fire time in the run's trigger")
    # 3. started again before the next Monday: that Monday was caught up, nothing more
    with Rill({"weekly.lua": WEEKLY}, env=at(third + datetime.timedelta(days=2)), dir=d) as r:
        started = r.wait_log(msg="cron schedules started")  # logged after any catch-up
        eq(started.get("caught_up"), 0, "catch-ups at start")
        eq(len(weekly_runs(r)), 2, "no second catch-up")
        eq(r.log_lines(msg_has="running once for missed cron ticks"), [], "no catch-up logged")


if __name__ == "__main__":
    main()
