-- Every Monday at 08:00 (Paris), each company gets its weekly summary in its own Slack channel:
-- quotes sent, signed and expired during the past seven days (count and amount), invoices paid in
-- those days, and the receivables still open today (due, and overdue), each currency summed apart.
-- Each company sees only its own figures, its week in its own timezone. Settings: companies.slack_channel
-- (a company without one gets no report), companies.timezone.

local util = require "lib.util"
local present = util.present

local function money(amount, currency) return string.format("%.2f %s", amount or 0, currency) end

-- { n, totals = { { currency, total }, ... } }: amounts in different currencies are never added
-- together (the company's currency first, then the others)
local function by_currency(company, sql, ...)
  local out = { n = 0, totals = {} }
  for _, r in ipairs(db.query(sql .. " GROUP BY currency ORDER BY currency", ...)) do
    out.n = out.n + r.n
    local entry = { currency = r.currency, total = r.total }
    if r.currency == company.currency then table.insert(out.totals, 1, entry) else out.totals[#out.totals + 1] = entry end
  end
  return out
end

local function figures(company, from, to, today)
  local function sums(what, where, ...)
    return by_currency(company, "SELECT currency, count(*) AS n, COALESCE(sum(" .. what .. "), 0) AS total FROM "
      .. where, ...)
  end
  local q = function(col)
    return sums("amount", "quotes WHERE owner_company = $1 AND " .. col .. " >= $2 AND " .. col .. " < $3",
      company.id, from, to)
  end
  local open = "invoices WHERE owner_company = $1 AND status IN ('sent', 'partially_paid', 'collection')"
  return {
    quotes_sent = q("sent_at"), quotes_signed = q("signed_at"), quotes_expired = q("expired_at"),
    invoices_paid = sums("amount", "invoices WHERE owner_company = $1 AND status = 'paid' AND paid_at >= $2 "
      .. "AND paid_at < $3", company.id, from, to),
    receivables = sums("amount - amount_paid", open, company.id),
    overdue = sums("amount - amount_paid", open .. " AND due_date < $2", company.id, today),
  }
end

local function message(company, f, week)
  local line = function(label, x)
    local amounts = {}
    for _, t in ipairs(x.totals) do amounts[#amounts + 1] = money(t.total, t.currency) end
    if #amounts == 0 then amounts[1] = money(0, company.currency) end
    return string.format("• %s: %d (%s)", label, x.n, table.concat(amounts, " + "))
  end
  return table.concat({
    string.format("*%s: the week of %s to %s*", company.name, week.first, week.last),
    "Pipeline",
    line("Quotes sent", f.quotes_sent), line("Quotes signed", f.quotes_signed), line("Quotes expired", f.quotes_expired),
    "Receivables",
    line("Invoices paid", f.invoices_paid), line("Open invoices", f.receivables), line("Overdue", f.overdue),
  }, "\n")
end

return {
  description = "Weekly pipeline and receivables summary per company, to its Slack channel",
  triggers = {
    -- when it is sent; each company's week is in its timezone. A Monday missed while rill was down
    -- is sent once when it starts again, for the week that ended that Monday (docs/flows.md)
    cron { "0 8 * * MON", tz = "Europe/Paris", missed = "run_once" },
  },
  run = function(ctx)
    -- the week ends at the tick's time, even when the tick runs late (a catch-up)
    local tick = type(ctx.payload) == "table" and ctx.payload.scheduled
    local now = step("now", function() return tick and time.parse(tick) or time.now() end)
    -- the seven days before now, named by the company's dates
    local function period_in(zone)
      local from = time.add_days(now, -7, zone)
      return { from = time.iso(from), to = time.iso(now), today = time.iso(now, zone):sub(1, 10),
        first = time.iso(from, zone):sub(1, 10), last = time.iso(time.add_days(now, -1, zone), zone):sub(1, 10) }
    end
    local companies = step("companies", function()
      return db.query("SELECT id, name, currency, slack_channel, timezone FROM companies ORDER BY id")
    end)
    local sent = {}
    for _, company in ipairs(companies) do
      if present(company.slack_channel) then
        local period = period_in(company.timezone)
        local f = step("figures " .. company.id, function() return figures(company, period.from, period.to, period.today) end)
        step("report " .. company.id, function()
          return slack.post(company.slack_channel, message(company, f, period))
        end)
        sent[#sent + 1] = { company = company.id, channel = company.slack_channel, figures = f }
      end
    end
    return { from = time.iso(time.add_days(now, -7)), to = time.iso(now), reports = sent }
  end,
}
