-- hostile: an error table whose __index raises (reading .message fails)
-- must: a failed run with a readable error
-- expect: error object
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_index_raises" }, manual() },
  run = function(ctx)
    error(setmetatable({}, { __index = function() error("no") end }))
  end,
}
