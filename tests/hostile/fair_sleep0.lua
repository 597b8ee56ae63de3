-- hostile: sleep(0) forever
-- must: the run fails at its deadline; others answer meanwhile; RSS does not grow
-- expect: deadline exceeded
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/fair_sleep0" }, manual() },
  run = function(ctx)
    while true do sleep(0) end
  end,
}
