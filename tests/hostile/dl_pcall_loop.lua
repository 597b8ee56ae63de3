-- hostile: pcall around an endless loop, in an endless loop
-- must: the run fails at its deadline
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_pcall_loop" }, manual() },
  run = function(ctx)
    while true do pcall(function() while true do end end) end
  end,
}
