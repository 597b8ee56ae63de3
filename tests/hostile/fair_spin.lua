-- hostile: a plain endless loop
-- must: the run fails at its deadline; other webhooks answer meanwhile
-- expect: deadline exceeded
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/fair_spin" }, manual() },
  run = function(ctx)
    local n = 0
    while true do n = n + 1 end
  end,
}
