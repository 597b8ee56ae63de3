-- hostile: an error table whose message is a table
-- must: a failed run with a readable error
-- expect: error object
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_message_not_string" }, manual() },
  run = function(ctx)
    error({ message = { nested = true } })
  end,
}
