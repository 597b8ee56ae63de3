-- hostile: strings of 32 MiB each (under max_string), built in C and kept, under pcall
-- must: the run fails naming the memory limit, which pcall cannot catch
-- expect: memory limit
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/mem_big_strings_under_pcall" }, manual() },
  run = function(ctx)
    local kept = {}
    while true do
      pcall(function() kept[#kept + 1] = string.rep("x", 2 ^ 25 + #kept) end)
    end
  end,
}
