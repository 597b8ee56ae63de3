-- os.date builds its result in C, conversion by conversion: a format of
-- 4 million "%c" (8 MB, under max_string) made a 96 MB string in one call,
-- holding the loop for about a second (found by the red team of issue 14).
-- Must: fail naming max_string, before building it.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_os_date_amplifies" } },
  run = function()
    return #os.date(("%c"):rep(4e6))
  end,
}
