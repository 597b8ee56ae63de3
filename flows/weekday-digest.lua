-- Every working day at 08:00 (Paris time), write a digest line to the log;
-- the reports flows of the company build on this shape.
return {
  description = "Morning digest, Monday to Friday",
  triggers = {
    cron { "0 8 * * MON-FRI", tz = "Europe/Paris" },
    manual(),
  },
  run = function(ctx)
    local when = ctx.payload and ctx.payload.scheduled or time.iso(time.now(), "Europe/Paris")
    log.info("morning digest", { scheduled = when, channel = env.SLACK_CHANNEL })
    return { sent = false, scheduled = when }
  end,
}
