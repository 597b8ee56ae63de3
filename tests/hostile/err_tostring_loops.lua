-- hostile: an error object whose __tostring loops
-- must: a failed run with a readable error, not success, not a hang
-- expect: error object
return {
  deadline = "2s",
  triggers = { webhook { path = "/hooks/err_tostring_loops" }, manual() },
  run = function(ctx)
    error(setmetatable({}, { __tostring = function() while true do end end }))
  end,
}
