-- hostile: keeps distinct strings until memory runs out
-- must: the run fails naming the memory limit; its memory is given back
-- expect: memory limit
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/mem_distinct_strings" }, manual() },
  run = function(ctx)
    local t, i = {}, 0
    while true do i = i + 1 t[i] = ("x"):rep(200) .. i end
  end,
}
