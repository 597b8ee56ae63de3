-- Keeps five 40 MB response bodies: libcurl's buffer was outside the run's
-- memory limit, and the body's Lua string was charged to rill's own code
-- (the response is pushed from the loop, not from the run): a run limited
-- to 64 MiB held 200 MB, never stopped (tests/test_hostile_rv.py gives
-- BIG_URL, a local server's 40 MB answer).
-- Must: fail naming run_memory_limit; the other webhooks go on.
-- expect: failed: run_memory_limit
return {
  deadline = "30s",
  triggers = { manual(), webhook { path = "/hooks/rv_http_bodies_outside_memory" } },
  run = function()
    local keep = {}
    for i = 1, 5 do
      keep[i] = http.get(env.BIG_URL, { max_size = 50e6 }).body
    end
    return #keep
  end,
}
