-- hostile: pcall around string.gsub whose replacement function loops
-- must: the run fails at its deadline
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_gsub_callback_loop" }, manual() },
  run = function(ctx)
    while true do pcall(string.gsub, "aaa", "a", function() while true do end end) end
  end,
}
