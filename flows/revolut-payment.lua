-- A payment notification from Revolut Business: checked, accepted at once
-- (202), then logged. Only a request signed with our secret, sent within the
-- last 5 minutes, gets through; anything else is refused with 401 before it
-- is stored (docs/webhooks.md). During a secret rotation, set the old one in
-- REVOLUT_WEBHOOK_SECRET_PREVIOUS until Revolut stops using it.
return {
  description = "Receive Revolut payment webhooks",
  triggers = {
    webhook { method = "POST", path = "/api/revolut/webhook-handler", mode = "async",
              verify = signatures.revolut { secret = { "REVOLUT_WEBHOOK_SECRET", "REVOLUT_WEBHOOK_SECRET_PREVIOUS" } } },
  },
  run = function(ctx)
    local data = type(ctx.payload.data) == "table" and ctx.payload.data or {}
    log.info("Revolut event received", { event = ctx.payload.event, id = data.id or data.order_id })
    return { event = ctx.payload.event }
  end,
}
