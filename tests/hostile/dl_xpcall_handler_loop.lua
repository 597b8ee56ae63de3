-- hostile: xpcall whose message handler loops, called again and again
-- must: the run fails at its deadline; the handler cannot swallow it
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_xpcall_handler_loop" }, manual() },
  run = function(ctx)
    while true do xpcall(error, function() while true do end end) end
  end,
}
