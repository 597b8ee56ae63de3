-- One string.format of 24 MB (24 times a 1 MiB string): one C call the
-- watchdog cannot preempt (bench/builder-stall.py).
-- Must: fail at once naming max_string (8 MiB by default).
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_format_tens_of_mb" } },
  run = function()
    local one, args = ("y"):rep(2 ^ 20), {}
    for i = 1, 24 do args[i] = one end
    return #string.format(("%s"):rep(24), unpack(args))
  end,
}
