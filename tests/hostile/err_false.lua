-- hostile: error(false)
-- must: a failed run with a readable error
-- expect: error object: false
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_false" }, manual() },
  run = function(ctx)
    error(false)
  end,
}
