-- When a big quote is signed, the sales channel hears of it at once.
-- Started by the event "quote.signed", which quote-signed emits once it has marked a quote signed
-- (its data: quote_id, number, title, amount, currency, company_id, company, sales_channel,
-- signed_by). quote-signed is not changed for this: any number of flows can react to its event,
-- each with its own stored run, retried on its own.

return {
  description = "Tell the sales channel when a quote over a threshold (10,000 EUR) is signed",
  settings = {
    -- changed without editing Lua: flows/settings.json, the console, PUT /api/flows/big-deal-alert/settings
    threshold = { type = "number", default = 10000, description = "a signed quote over this many euros is announced" },
  },
  triggers = {
    -- only quotes in euros start a run (checked as the event is emitted)
    event { name = "quote.signed", match = { currency = "EUR" } },
  },
  run = function(ctx)
    local quote = ctx.payload
    local threshold = ctx.settings.threshold -- the value when the run was created, retries included
    if (tonumber(quote.amount) or 0) <= threshold then
      return { skipped = string.format("%s EUR is not over the threshold (%s)", quote.amount, threshold) }
    end
    if not quote.sales_channel then -- the default channel is not this company's
      return { ignored = "company " .. tostring(quote.company) .. " has no sales channel" }
    end
    step("tell sales", function()
      return slack.post(quote.sales_channel, string.format(":tada: Big deal signed: quote %s (%s), %s %s, by %s.",
        quote.number, quote.title or "", quote.amount, quote.currency, quote.signed_by or "the client"))
    end)
    return { announced = quote.number, channel = quote.sales_channel }
  end,
}
