-- hostile: an error object whose __tostring raises
-- must: a failed run with a readable error
-- expect: error object
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_tostring_errors" }, manual() },
  run = function(ctx)
    error(setmetatable({}, { __tostring = function() error("no") end }))
  end,
}
