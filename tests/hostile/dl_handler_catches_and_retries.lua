-- hostile: a message handler that calls pcall and loops again once the deadline error reaches it
-- must: the run fails at its deadline
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_handler_catches_and_retries" }, manual() },
  run = function(ctx)
    local function h(e) while true do pcall(function() while true do end end) end end
    while true do xpcall(function() while true do end end, h) end
  end,
}
