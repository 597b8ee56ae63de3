-- hostile: an __index metamethod that loops, under pcall, in a loop
-- must: the run fails at its deadline
-- expect: deadline exceeded
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/dl_metamethod_loop" }, manual() },
  run = function(ctx)
    local t = setmetatable({}, { __index = function() while true do end end })
    while true do pcall(function() return t.x end) end
  end,
}
