-- hostile: top-level code that starts another flow's run: at a reload, with flows active, the run started
-- must: the file is rejected naming the rule (rill check exits 1 naming it)
-- expect: top-level code
flows.trigger("ping", {}, { wait = false })
return { triggers = { manual() }, run = function() return 1 end }
