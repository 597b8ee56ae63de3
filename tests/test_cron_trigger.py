"""Cron triggers inside a running rill: ticks start runs with their
schedule in the payload, and reloads add, keep and remove schedules."""
import time

from lib.harness import Rill, eq, main, test, wait_until

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


if __name__ == "__main__":
    main()
