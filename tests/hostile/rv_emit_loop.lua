-- Emits in a loop: each emit stores an event and one run of every flow
-- subscribed to it (the fan-out); max_depth bounds chains of runs, not how
-- many one run starts: with three subscribers, five seconds of this stored
-- thousands of events and runs (tests/test_hostile_rv.py).
-- Must: fail naming max_emits once the run has emitted that many.
-- expect: failed: max_emits
return {
  deadline = "5s",
  triggers = { manual(), webhook { path = "/hooks/rv_emit_loop" } },
  run = function()
    for i = 1, 1e6 do emit("rv.spam", { i = i }) end
  end,
}
