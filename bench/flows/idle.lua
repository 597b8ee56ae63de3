-- A run that parks: what bench/runs.lua starts by the thousand to measure
-- the memory of an idle, suspended run.
return {
  triggers = { from_flow(), manual() },
  run = function(ctx)
    if ctx.payload.wait > 0 then sleep(ctx.payload.wait) end
    return ctx.payload.n
  end,
}
