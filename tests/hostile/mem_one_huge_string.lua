-- hostile: one string far over the limit, built in C, under pcall
-- must: the run fails naming the memory limit
-- expect: memory limit
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/mem_one_huge_string" }, manual() },
  run = function(ctx)
    while true do pcall(string.rep, "x", 2 ^ 30) end
  end,
}
