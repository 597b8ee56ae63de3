-- hostile: a message handler that loops (called by error, from C), with a long deadline
-- must: ended after max_hold (1 s), long before its 20 s deadline
-- expect: max_hold
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/hold_xpcall_handler" }, manual() },
  run = function(ctx)
    while true do xpcall(error, function() while true do end end) end
  end,
}
