-- hostile: error(nil)
-- must: a failed run with a readable error
-- expect: error object: nil
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_nil" }, manual() },
  run = function(ctx)
    error(nil)
  end,
}
