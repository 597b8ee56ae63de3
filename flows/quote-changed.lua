-- The team hears of every new quote and of every change of a quote's status on the company's Slack
-- channel (signed and expired are announced by quote-signed, quote-sent and quote-expiry). When a quote
-- is sent, the client also gets the company's quote email (its Mautic template mautic_quote_email).

local util = require "lib.util"
local accounts = require "lib.accounts"
local full_name = util.full_name
local company_client = accounts.client
local mautic_contact = accounts.mautic_contact

local plain = db.plain -- the row without its NULL columns (a step's result)

-- statuses other flows announce themselves
local ANNOUNCED_ELSEWHERE = { signed = true, expired = true }

return {
  description = "Tell the team about quotes; email the client a quote that is sent",
  triggers = {
    db_event { table = "quotes", on = { "insert", "update" } },
  },
  run = function(ctx)
    local p = ctx.payload
    local new, old = p.new or {}, p.old or {}
    local became = p.op == "insert" and new.status or (old.status ~= new.status and new.status or nil)
    if not became then return { skipped = "no new quote, no new status" } end
    if p.op == "update" and ANNOUNCED_ELSEWHERE[became] then return { skipped = became .. " is announced elsewhere" } end

    local r = step("load the quote", function()
      local quote = plain(db.query("SELECT * FROM quotes WHERE id = $1", new.id)[1])
      if not quote then return nil end
      return { quote = quote,
               company = plain(db.query("SELECT * FROM companies WHERE id = $1", quote.owner_company)[1]),
               contact = plain(db.query("SELECT * FROM contacts WHERE id = $1", quote.contact_id)[1]) }
    end)
    if not r then fail("quote " .. tostring(new.id) .. " no longer exists") end
    local quote, company, contact = r.quote, r.company, r.contact

    local what = p.op == "insert" and "New quote" or ("Quote " .. tostring(old.status or "?") .. " → " .. became .. ":")
    if company.slack_channel then -- none: no message (the default channel is not this company's)
      step("tell the team", function()
        return slack.post(company.slack_channel, string.format("%s %s %s for %s: %s %s, valid until %s.", what,
          quote.number, quote.title and ("(" .. quote.title .. ")") or "", full_name(contact), quote.amount,
          quote.currency, quote.valid_until and quote.valid_until:sub(1, 10) or "-"))
      end)
    end

    if became == "sent" and company.mautic_quote_email then
      -- the company's own Mautic, for both calls
      local mautic_api = company_client(mautic, "mautic", company, { "url", "user", "password" })
      local mautic_id = step("mautic contact", function() return mautic_contact(mautic_api, contact) end)
      step("email the client", function()
        return mautic_api.send_email(company.mautic_quote_email, mautic_id, {
          quote_number = quote.number, quote_title = quote.title or "", quote_amount = tostring(quote.amount),
          quote_currency = quote.currency, quote_valid_until = quote.valid_until and quote.valid_until:sub(1, 10) or "",
        })
      end)
      return { notified = became, emailed = contact.email }
    end
    return { notified = became }
  end,
}
