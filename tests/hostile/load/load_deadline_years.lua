-- hostile: a deadline of 100000 hours: a run that loops is sliced (others go on) but never ends, and each webhook call adds one more
-- must: the file is rejected naming max_deadline, the longest deadline a flow may declare
-- expect: max_deadline
return {
  deadline = "100000h",
  triggers = { manual() },
  run = function() while true do end end,
}
