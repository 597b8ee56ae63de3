-- hostile: catches the out-of-memory error with pcall and goes on
-- must: the run fails naming the memory limit
-- expect: memory limit
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/mem_pcall_swallows_oom" }, manual() },
  run = function(ctx)
    local keep = {}
    while true do
      pcall(function() for i = 1, 1e9 do keep[#keep + 1] = ("y"):rep(100) .. i end end)
    end
  end,
}
