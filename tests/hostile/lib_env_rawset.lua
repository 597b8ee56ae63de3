-- rawset on env, to change what other flows read (issue 14: it did).
-- Must: fail with "env is read-only"; other flows read their own values.
-- expect: failed: env is read-only
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_env_rawset" } },
  run = function()
    table.insert(env, "x")
    rawset(env, "SLACK_CHANNEL", "#attacker")
    return "written"
  end,
}
