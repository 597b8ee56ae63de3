-- hostile: a deadline of 400 nines seconds (infinite once read: the run failed at once, converted to C as undefined behaviour), or 100000h (a loop ran on for years, sliced but never ended)
-- must: the file is rejected naming max_deadline, the longest deadline a flow may declare
-- expect: max_deadline
return {
  deadline = ("9"):rep(400) .. "s",
  triggers = { manual() },
  run = function() while true do end end,
}
