-- One table.concat of 24 MB (a thousand 24 KB pieces): one C call the
-- watchdog cannot preempt (bench/builder-stall.py).
-- Must: fail at once naming max_string (8 MiB by default).
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_concat_tens_of_mb" } },
  run = function()
    local piece, t = ("z"):rep(24000), {}
    for i = 1, 1000 do t[i] = piece end
    return #table.concat(t)
  end,
}
