-- Health check for the services that call rill: answers at once with the
-- time, so a monitor can tell rill is up and serving flows.
return {
  description = "Answer GET /hooks/ping with pong and the time",
  triggers = {
    webhook { method = "GET", path = "/hooks/ping" },
    manual(),
  },
  run = function(ctx)
    return { pong = true, at = time.iso(time.now()) }
  end,
}
