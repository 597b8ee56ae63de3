-- A payment notification from Revolut Business: accepted at once (202), then
-- checked and logged. Only a correctly signed request is processed; its
-- signature is HMAC-SHA256 of "v1.<timestamp>.<raw body>" with our secret.
return {
  description = "Receive Revolut payment webhooks",
  triggers = {
    webhook { method = "POST", path = "/api/revolut/webhook-handler", mode = "async" },
  },
  run = function(ctx)
    local req = ctx.request
    local secret = env.REVOLUT_WEBHOOK_SECRET
    if not secret then error("REVOLUT_WEBHOOK_SECRET is not set") end
    local ts = req.headers["revolut-request-timestamp"] or ""
    local expected = "v1=" .. crypto.hex(crypto.hmac_sha256(secret, "v1." .. ts .. "." .. req.body))
    local valid = false
    for sig in (req.headers["revolut-signature"] or ""):gmatch("[^,%s]+") do
      if crypto.equals(sig, expected) then valid = true end
    end
    if not valid then
      log.warn("Revolut webhook with a bad signature ignored")
      return { ignored = true }
    end
    log.info("Revolut event received", { event = ctx.payload.event, id = ctx.payload.id })
    return { event = ctx.payload.event }
  end,
}
