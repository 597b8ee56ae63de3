-- hostile: grows a string by concatenation, each step in C
-- must: the run fails naming the memory limit
-- expect: memory limit
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/mem_table_concat" }, manual() },
  run = function(ctx)
    local parts = { ("z"):rep(1e6) }
    while true do parts[#parts + 1] = table.concat(parts) end
  end,
}
