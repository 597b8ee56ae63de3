-- Writes into ctx.request.query and ctx.trigger (when a request had no
-- query, every such request shared one table).
-- Must: succeed, and change nothing another request of any flow sees.
-- expect: succeeded
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_query_poison" } },
  run = function(ctx)
    local seen = { path = ctx.trigger.path, query_empty = not ctx.request or next(ctx.request.query) == nil }
    local q = ctx.request and ctx.request.query
    if q then
      rawset(q, "admin", "yes")
      table.insert(q, "poison")
    end
    rawset(ctx.trigger, "path", "/poisoned")
    return seen
  end,
}
