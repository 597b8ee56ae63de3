-- hostile: code stuck inside C past its deadline (a test-only primitive,
-- _test_spin_c(seconds), that spins in C without ever checking; present only
-- when rill runs with RILL_TEST_SPIN_C=1)
-- must: rill cannot stop it, so once the deadline plus kill_grace has passed
-- rill logs one line naming the flow and the run and exits non-zero (the
-- last line of defence); the supervisor restarts it
-- expect: could not be stopped
return {
  deadline = "1s",
  triggers = { webhook { path = "/hooks/exit_c_spin" }, manual() },
  run = function(ctx)
    _test_spin_c(120)
  end,
}
