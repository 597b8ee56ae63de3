-- string.format weighed "%q" like "%s", but it writes each control
-- character as an escape: one 8 MB string of "\1" made 16 MB in one call
-- (and "\1" before a digit takes five bytes for two) (found by the red
-- team of issue 14).
-- Must: fail naming max_string, before building it.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_format_q_amplifies" } },
  run = function()
    return #string.format("%q", ("\1"):rep(8e6))
  end,
}
