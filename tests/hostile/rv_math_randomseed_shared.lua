-- math.randomseed reseeds the one generator every flow (and rill's retry
-- jitter, queue.lua) draws from: one flow made the others' math.random
-- predictable, and every retry's jitter the same.
-- Must: fail naming math.randomseed (tests/test_hostile_rv.py).
-- expect: failed: math.randomseed
return {
  deadline = "2s",
  triggers = { manual() },
  run = function()
    math.randomseed(1)
    return math.random(1000)
  end,
}
