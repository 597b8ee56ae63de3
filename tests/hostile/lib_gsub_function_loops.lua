-- A gsub replacement function that never returns: a plain Lua call now,
-- preempted by the watchdog like any loop.
-- Must: stop at the deadline; other webhooks answer meanwhile.
-- expect: failed: deadline exceeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_gsub_function_loops" } },
  run = function()
    return (("abc"):gsub("%w", function() while true do end end))
  end,
}
