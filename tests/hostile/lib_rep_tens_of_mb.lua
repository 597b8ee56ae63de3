-- One string.rep of 24 MB: one C call the watchdog cannot preempt, which
-- held the loop ~10 ms per MiB on the shared test machine (64 MiB, the old
-- max_string: ~0.7 s, bench/builder-stall.py).
-- Must: fail at once naming max_string (8 MiB by default).
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_rep_tens_of_mb" } },
  run = function() return #("x"):rep(24e6) end,
}
