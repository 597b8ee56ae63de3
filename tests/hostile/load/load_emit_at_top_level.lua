-- hostile: top-level code that emits an event: it would be stored (and start runs) at each load,
-- and at `rill check` it reached the store (an internal error about the store's dialect)
-- must: the file is rejected naming the rule (rill check exits 1 naming it)
-- expect: top-level code
emit("quote.signed", { amount = 1e6 })
return { triggers = { manual() }, run = function() return 1 end }
