-- Every Monday at 08:00 (Paris), each company gets its weekly summary in its own Slack channel:
-- quotes sent, signed and expired during the past seven days (count and amount), invoices paid in
-- those days, and the receivables still open today (due, and overdue). Each company sees only its
-- own figures. Setting: companies.slack_channel (a company without one gets no report).

local ZONE = "Europe/Paris"

local function present(v) return v ~= nil and v ~= db.null and v ~= "" end

local function money(amount, currency) return string.format("%.2f %s", amount or 0, currency) end

local function figures(company, from, to, today)
  local function one(sql, ...) return db.query(sql, ...)[1] end
  local q = function(col)
    return one("SELECT count(*) AS n, COALESCE(sum(amount), 0) AS total FROM quotes WHERE owner_company = $1 AND "
      .. col .. " >= $2 AND " .. col .. " < $3", company.id, from, to)
  end
  local open = "owner_company = $1 AND status IN ('sent', 'partially_paid', 'collection')"
  return {
    quotes_sent = q("sent_at"), quotes_signed = q("signed_at"), quotes_expired = q("expired_at"),
    invoices_paid = one("SELECT count(*) AS n, COALESCE(sum(amount), 0) AS total FROM invoices WHERE owner_company = $1"
      .. " AND status = 'paid' AND paid_at >= $2 AND paid_at < $3", company.id, from, to),
    receivables = one("SELECT count(*) AS n, COALESCE(sum(amount - amount_paid), 0) AS total FROM invoices WHERE "
      .. open, company.id),
    overdue = one("SELECT count(*) AS n, COALESCE(sum(amount - amount_paid), 0) AS total FROM invoices WHERE "
      .. open .. " AND due_date < $2", company.id, today),
  }
end

local function message(company, f, week)
  local cur = company.currency
  local line = function(label, x) return string.format("• %s: %d (%s)", label, x.n, money(x.total, cur)) end
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
    cron { "0 8 * * MON", tz = ZONE },
  },
  run = function(ctx)
    local period = step("period", function()
      local now = time.now()
      local from = time.add_days(now, -7, ZONE)
      return { from = time.iso(from), to = time.iso(now), today = time.iso(now, ZONE):sub(1, 10),
        first = time.iso(from, ZONE):sub(1, 10), last = time.iso(time.add_days(now, -1, ZONE), ZONE):sub(1, 10) }
    end)
    local companies = step("companies", function()
      return db.query("SELECT id, name, currency, slack_channel FROM companies ORDER BY id")
    end)
    local sent = {}
    for _, company in ipairs(companies) do
      if present(company.slack_channel) then
        local f = step("figures " .. company.id, function() return figures(company, period.from, period.to, period.today) end)
        step("report " .. company.id, function()
          return slack.post(company.slack_channel, message(company, f, period))
        end)
        sent[#sent + 1] = { company = company.id, channel = company.slack_channel, figures = f }
      end
    end
    return { from = period.from, to = period.to, reports = sent }
  end,
}
