-- Every morning, for each company: a sent quote past its validity (valid_until) expires and its client
-- gets a follow-up; a sent quote whose validity ends within the company's quote_warning_days gets a
-- reminder first, once. The team gets one Slack summary per company. quote-sent does the same while
-- it waits for a signature: the conditional updates below let only one of the two remind, or expire.

local util = require "lib.util"
local sender = util.sender

local plain = db.plain -- the row without its NULL columns (a step's result)

-- What is due today, per company: { {company, expire = {quotes}, remind = {quotes}} }. A quote valid
-- until D is valid through D; its reminder is due quote_warning_days before the end of D.
local function due(today)
  local plan = {}
  for _, company in ipairs(db.query("SELECT * FROM companies ORDER BY id")) do
    company = plain(company)
    local entry = { company = company, expire = {}, remind = {} }
    local quotes = db.query("SELECT q.*, c.email, c.first_name, c.last_name FROM quotes q "
      .. "JOIN contacts c ON c.id = q.contact_id WHERE q.owner_company = $1 AND q.status = 'sent' "
      .. "AND q.valid_until IS NOT NULL ORDER BY q.id", company.id)
    for _, q in ipairs(quotes) do
      q = plain(q)
      q.valid_until = q.valid_until:sub(1, 10)
      local expires = time.parse(q.valid_until) + 86400
      if q.valid_until < today then
        entry.expire[#entry.expire + 1] = q
      elseif not q.expiry_warned_at and expires - company.quote_warning_days * 86400 <= time.parse(today) then
        entry.remind[#entry.remind + 1] = q
      end
    end
    if #entry.expire + #entry.remind > 0 then plan[#plan + 1] = entry end
  end
  return plan
end

return {
  description = "Daily: remind quotes about to expire, expire those past validity",
  triggers = {
    cron { "0 8 * * *", missed = "run_once" },
    manual(),
  },
  run = function(ctx)
    local now = step("now", time.now)
    local today = time.iso(now):sub(1, 10)
    local plan = step("quotes due", function() return due(today) end)
    local summary = {}
    for _, entry in ipairs(plan) do
      local company = entry.company
      local reminded, expired = {}, {}
      for _, q in ipairs(entry.remind) do
        local claimed = step("claim the reminder of quote " .. q.id, function()
          return db.exec("UPDATE quotes SET expiry_warned_at = $1 WHERE id = $2 AND status = 'sent' "
            .. "AND expiry_warned_at IS NULL", time.iso(now), q.id) > 0
        end)
        if claimed then
          step("remind quote " .. q.id, function()
            return email.send { from = sender(company), to = q.email,
              subject = string.format("Your quote %s expires on %s", q.number, q.valid_until),
              text = string.format("Hello %s,\n\nquote %s (%s, %s %s) is valid until %s and is not signed yet. "
                .. "The signing link is in the email from our signature service.\n\n%s", q.first_name or "",
                q.number, q.title or "", q.amount, q.currency, q.valid_until, company.sender_name or company.name) }
          end)
          reminded[#reminded + 1] = q.number
        end
      end
      for _, q in ipairs(entry.expire) do
        local claimed = step("claim the expiry of quote " .. q.id, function()
          return db.exec("UPDATE quotes SET status = 'expired', expired_at = $1, updated_at = $1 "
            .. "WHERE id = $2 AND status = 'sent'", time.iso(now), q.id) > 0
        end)
        if claimed then
          step("follow up quote " .. q.id, function()
            return email.send { from = sender(company), to = q.email,
              subject = string.format("Quote %s has expired", q.number),
              text = string.format("Hello %s,\n\nquote %s (%s) expired on %s without a signature. "
                .. "Reply to this email and we will gladly send you an updated quote.\n\n%s", q.first_name or "",
                q.number, q.title or "", q.valid_until, company.sender_name or company.name) }
          end)
          expired[#expired + 1] = q.number
        end
      end
      -- a company without a channel: no summary (the default channel is not this company's)
      if #reminded + #expired > 0 and company.slack_channel then
        step("summary for company " .. company.id, function()
          local lines = { string.format("Quotes today (%s):", today) }
          if #expired > 0 then
            lines[#lines + 1] = string.format("expired, client followed up: %s", table.concat(expired, ", "))
          end
          if #reminded > 0 then
            lines[#lines + 1] = string.format("expiring soon, client reminded: %s", table.concat(reminded, ", "))
          end
          return slack.post(company.slack_channel, table.concat(lines, "\n"))
        end)
      end
      summary[#summary + 1] = { company = company.id, reminded = reminded, expired = expired }
    end
    return { day = today, companies = summary }
  end,
}
