-- string.upper of a 16 MiB string built by `..` (which makes strings of any
-- size: only the run's memory bounds it): one C call the watchdog cannot
-- preempt, that makes a result as long as its input (upper of a 32 MiB
-- string held the loop 120 ms on a loaded machine). lower and reverse are
-- the same call.
-- Must: refuse lower and reverse (caught), then fail at upper naming
-- max_string (8 MiB by default).
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_upper_long" } },
  run = function()
    local s = "x"
    while #s < 16 * 1024 * 1024 do s = s .. s end
    for _, f in ipairs { string.lower, string.reverse } do
      local ok, err = pcall(f, s)
      assert(not ok and err:find("max_string", 1, true), "lower and reverse refused")
    end
    return #s:upper()
  end,
}
