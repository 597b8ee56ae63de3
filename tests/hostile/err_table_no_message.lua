-- hostile: an error table without a message field
-- must: a failed run whose error shows the table
-- expect: code
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_table_no_message" }, manual() },
  run = function(ctx)
    error({ code = 42 })
  end,
}
