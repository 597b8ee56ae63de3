-- hostile: one string far over max_string, built in C in one call
-- must: refused before it is built, the run fails naming max_string
-- expect: max_string
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/mem_one_huge_string" }, manual() },
  run = function(ctx)
    return #string.rep("x", 2 ^ 30)
  end,
}
