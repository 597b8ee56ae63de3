-- hostile: writes log lines as fast as it can until its deadline
-- must: the run fails at its deadline; at most max_log_lines of its lines are written, then one line saying the rest are dropped
-- expect: deadline exceeded
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/log_flood" }, manual() },
  run = function(ctx)
    local i = 0
    while true do i = i + 1 log.info("line " .. i) end
  end,
}
