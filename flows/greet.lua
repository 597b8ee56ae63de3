-- Builds a greeting for a name; other flows call it with flows.trigger, and
-- POST /hooks/greet {"name": "Ada"} calls it through a webhook flow.
return {
  triggers = {
    from_flow(),
    webhook { method = "POST", path = "/hooks/greet" },
  },
  run = function(ctx)
    local name = (ctx.payload and ctx.payload.name) or "world"
    if type(name) ~= "string" or #name > 100 then
      return response(422, { error = "name must be a string of at most 100 characters" })
    end
    return { greeting = "Hello, " .. name .. "!" }
  end,
}
