-- Every morning, each unpaid invoice past its due date gets the reminder of the step it has reached
-- on its company's ladder (companies.reminder_ladder: days after the due date, "3,10,30"), mailed
-- to the client from the company's sender, never twice for the same step. The last step hands the
-- file to the collection agency (LP Agency) and the invoice goes to status `collection`.
-- The guard is the row payment_reminders (invoice_id, step), UNIQUE, inserted before the mail is
-- sent, and only while the invoice is unpaid: two runs (a retry, a second instance) cannot both send
-- a step, and an invoice paid since the morning's scan gets nothing. An invoice found late (already
-- past several steps) gets only the step it has reached, not the ones it missed.
-- Days (due, overdue) are counted in the company's timezone.
-- Settings: reminder_ladder, timezone, sender_email, sender_name, slack_channel (companies);
-- LP_AGENCY_URL and LP_AGENCY_TOKEN (the agency's API).

local util = require "lib.util"
local present = util.present

local function money(amount, currency) return string.format("%.2f %s", amount, currency) end

-- "3,10,30" -> { 3, 10, 30 }; a ladder an analyst mistyped stops the run with a clear message
local function ladder_of(company)
  local days = {}
  for part in tostring(company.reminder_ladder):gmatch("[^,]+") do
    local n = tonumber((part:gsub("%s", "")))
    if not n or n < 0 or n ~= math.floor(n) or (#days > 0 and n <= days[#days]) then
      error(string.format("company %s: reminder_ladder %q must be increasing whole days, like \"3,10,30\"",
        tostring(company.id), tostring(company.reminder_ladder)), 0)
    end
    days[#days + 1] = n
  end
  if #days == 0 then error("company " .. tostring(company.id) .. ": reminder_ladder is empty", 0) end
  return days
end

-- the reminders due now: for each overdue invoice, the highest step reached and not sent yet, on the
-- company's day
local function due_reminders(now)
  local out = {}
  for _, company in ipairs(db.query("SELECT * FROM companies ORDER BY id")) do
    local ladder = ladder_of(company)
    local today = time.iso(now, company.timezone):sub(1, 10)
    local today_t = time.parse(today)
    local invoices = db.query([[SELECT i.*, c.email AS contact_email, c.first_name AS contact_first_name,
        (SELECT max(step) FROM payment_reminders r WHERE r.invoice_id = i.id) AS last_step
      FROM invoices i JOIN contacts c ON c.id = i.contact_id
      WHERE i.owner_company = $1 AND i.status IN ('sent', 'partially_paid') AND i.due_date < $2
      ORDER BY i.due_date, i.id]], company.id, today)
    for _, inv in ipairs(invoices) do
      local overdue = math.floor((today_t - time.parse(tostring(inv.due_date):sub(1, 10))) / 86400 + 0.5)
      local reached = 0
      for i, d in ipairs(ladder) do if overdue >= d then reached = i end end
      local last = present(inv.last_step) and inv.last_step or 0
      if reached > last then
        out[#out + 1] = {
          company = { id = company.id, name = company.name, sender_email = company.sender_email,
            sender_name = company.sender_name, slack_channel = company.slack_channel },
          invoice = { id = inv.id, number = inv.number, amount = inv.amount, amount_paid = inv.amount_paid,
            currency = inv.currency, reference = inv.reference, due_date = tostring(inv.due_date):sub(1, 10) },
          contact = { email = inv.contact_email, first_name = inv.contact_first_name },
          step = reached, final = reached == #ladder, days = overdue,
        }
      end
    end
  end
  return out
end

local function letter(r)
  local inv, due = r.invoice, money(r.invoice.amount - r.invoice.amount_paid, r.invoice.currency)
  local hello = "Hello" .. (present(r.contact.first_name) and (" " .. r.contact.first_name) or "") .. ",\n\n"
  local sign = "\n\n" .. (present(r.company.sender_name) and r.company.sender_name or r.company.name) .. "\n"
  local pay = string.format("Please transfer %s with the reference %s.", due,
    present(inv.reference) and inv.reference or inv.number)
  if r.final then
    return "Final notice: invoice " .. inv.number .. " handed to our collection agency",
      hello .. string.format("Invoice %s, due on %s, is still unpaid after %d days despite our reminders. "
        .. "We have handed the file to our collection agency, LP Agency, who will contact you. ", inv.number,
        inv.due_date, r.days) .. pay .. sign
  end
  return (r.step == 1 and "Reminder" or ("Reminder " .. r.step)) .. ": invoice " .. inv.number .. " is overdue",
    hello .. string.format("Invoice %s was due on %s, %d days ago, and we have not received its payment yet. ",
      inv.number, inv.due_date, r.days) .. pay
      .. " If you have paid it meanwhile, thank you, and please ignore this message." .. sign
end

-- The agency's API: one POST per file handed over, Bearer token. The agency answers with its file id,
-- or, for a client_reference it already has, 409 with the first file's id: a hand-over repeated by a
-- retry (the agency got the first one, its answer was lost) is done already.
local function hand_to_agency(r)
  local url, token = env.LP_AGENCY_URL, env.LP_AGENCY_TOKEN
  if not present(url) or not present(token) then error("lpagency: LP_AGENCY_URL and LP_AGENCY_TOKEN must be set", 0) end
  local inv = r.invoice
  local res = http.post(url, { headers = { Authorization = "Bearer " .. token }, json = {
    client_reference = tostring(inv.id), invoice_number = inv.number, creditor = r.company.name,
    debtor_email = r.contact.email, amount_due = inv.amount - inv.amount_paid, currency = inv.currency,
    due_date = inv.due_date, days_overdue = r.days,
  } })
  local ok, body = pcall(res.json, res)
  local file_id = ok and type(body) == "table" and body.id or nil
  if not res.ok and not (res.status == 409 and file_id) then
    error(string.format("lpagency: hand over invoice %s: %d %s", inv.number, res.status, res.body:sub(1, 200)), 0)
  end
  return { file_id = file_id, status = res.status }
end

return {
  description = "Daily payment reminders on each company's ladder; the last step goes to the collection agency",
  triggers = {
    -- when the scan runs; the days are each company's. A scan missed while rill was down runs once
    -- at start (docs/flows.md): the reminders due are those due now
    cron { "0 9 * * *", tz = "Europe/Paris", missed = "run_once" },
  },
  run = function(ctx)
    local now = step("now", time.now)
    local due = step("due reminders", function() return due_reminders(now) end)
    local sent = {}
    for _, r in ipairs(due) do
      local key = string.format("invoice %d step %d", r.invoice.id, r.step)
      local claimed = step(key .. ": claim", function()
        local at = time.iso(time.now())
        -- only while the invoice is still unpaid: a payment may have come since the scan above
        return #db.query([[INSERT INTO payment_reminders (invoice_id, step, sent_at) SELECT $1, $2, $3
          WHERE EXISTS (SELECT 1 FROM invoices WHERE id = $1 AND status IN ('sent', 'partially_paid'))
          ON CONFLICT (invoice_id, step) DO NOTHING RETURNING id]], r.invoice.id, r.step, at) == 1
      end)
      if claimed then
        step(key .. ": email", function()
          local subject, text = letter(r)
          local from = present(r.company.sender_name)
            and string.format("%s <%s>", r.company.sender_name, r.company.sender_email) or r.company.sender_email
          return email.send { from = from, to = r.contact.email, subject = subject, text = text }
        end)
        if r.final then
          local agency = step(key .. ": collection agency", function() return hand_to_agency(r) end)
          step(key .. ": status collection", function()
            local at = time.iso(time.now())
            -- collection_updated_at stays the agency's own clock (collection-agency orders its updates by it)
            db.exec([[UPDATE invoices SET status = 'collection', collection_status = 'handed_over',
              updated_at = $1 WHERE id = $2 AND status IN ('sent', 'partially_paid')]], at, r.invoice.id)
            return db.exec([[INSERT INTO audit_log (owner_company, table_name, record_id, action, details, actor,
              created_at) VALUES ($1, 'invoices', $2, 'collection_handover', $3, $4, $5)]], r.company.id,
              r.invoice.id, json.encode { agency = "lpagency", file_id = agency.file_id, days_overdue = r.days },
              "payment-reminders " .. ctx.run_id, at)
          end)
          if present(r.company.slack_channel) then
            step(key .. ": tell Slack", function()
              return slack.post(r.company.slack_channel, string.format(
                "Invoice %s (%s due, %d days late) handed to the collection agency after the last reminder",
                r.invoice.number, money(r.invoice.amount - r.invoice.amount_paid, r.invoice.currency), r.days))
            end)
          end
        end
        sent[#sent + 1] = { invoice = r.invoice.number, step = r.step, final = r.final }
      end
    end
    return { at = time.iso(now), reminders = sent } -- (each company counts its own day)
  end,
}
