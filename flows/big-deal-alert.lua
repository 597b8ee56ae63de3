-- When a big quote is signed, the sales channel hears of it at once.
-- Started by the event "quote.signed", which quote-signed emits once it has marked a quote signed
-- (its data: quote_id, number, title, amount, currency, company_id, company, sales_channel,
-- signed_by). quote-signed is not changed for this: any number of flows can react to its event,
-- each with its own stored run, retried on its own.

-- What makes a deal big, in euros. One constant for now, to become a flow setting.
local BIG_DEAL_EUR = 10000

local function big(quote)
  return quote.currency == "EUR" and (tonumber(quote.amount) or 0) > BIG_DEAL_EUR
end

return {
  description = "Tell the sales channel when a quote over 10,000 EUR is signed",
  triggers = {
    -- asked for each quote.signed: a smaller quote's run ends at once as skipped
    event { name = "quote.signed", match = big },
  },
  run = function(ctx)
    local quote = ctx.payload
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
