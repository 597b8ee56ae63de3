-- A result holding a string that is not UTF-8: the sync answer and `rill
-- run`'s output were that string's bytes as they are, text that is not
-- JSON, with a 200 and exit 0 (found by the red team of issue 14). A
-- stored run's result already failed so.
-- Must: fail, naming the byte.
-- expect: failed: is not UTF-8
return {
  triggers = { manual(), webhook { path = "/hooks/red_result_not_utf8" } },
  run = function() return { name = "caf" .. string.char(233) } end,
}
