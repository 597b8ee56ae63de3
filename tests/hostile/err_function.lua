-- hostile: error(a function)
-- must: a failed run with a readable error
-- expect: error object
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_function" }, manual() },
  run = function(ctx)
    error(print)
  end,
}
