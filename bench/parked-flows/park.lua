-- The parked-runs benchmark's flow: each run parks until the wake time in
-- its payload, then ends.
return {
  triggers = { webhook { path = "/park", mode = "async" } },
  run = function(ctx)
    sleep_until("park", ctx.payload.wake)
    return true
  end,
}
