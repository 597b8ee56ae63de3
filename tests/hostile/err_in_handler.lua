-- hostile: the run's error comes out of a failing message handler
-- must: a failed run with a readable error
-- expect: error
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_in_handler" }, manual() },
  run = function(ctx)
    local ok, e = xpcall(function() error("first") end, function() error({}) end)
    error(e)
  end,
}
