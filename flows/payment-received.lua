-- When a client pays (a transfer into our Revolut account, or a payment recorded in Invoice Ninja),
-- the payment is matched to its invoice by reference, amount and currency, recorded once, and the
-- invoice becomes paid or partially paid (one at the collection agency stays in collection until paid). A payment that no invoice explains goes to a person.
--
-- Revolut: only a completed incoming transfer is a payment; one still pending waits (parked) for
-- Revolut's TransactionStateChanged to `completed`, unless that came first (noted in audit_log); still
-- pending after 14 days, it goes to review (unless another delivery of it was recorded meanwhile). A Revolut payment is also recorded in Invoice
-- Ninja; one that came from Invoice Ninja is not sent back there. Each matched payment adds the
-- company's mautic_payment_points to the client's Mautic contact, tells the company's Slack channel
-- and emits "payment.received" { invoice_id, payment_id, ... } (a run can wait_for it).
-- Unmatched, ambiguous, over- or mis-currency payments are stored with status 'review' and a
-- review_reason, and posted to Slack. payments UNIQUE(source, external_id): recorded once, whatever
-- the redeliveries. Secrets: REVOLUT_WEBHOOK_SECRET (and _PREVIOUS during a rotation),
-- INVOICENINJA_WEBHOOK_SECRET (the X-Ninja-Secret header set on the Invoice Ninja webhook).

local util = require "lib.util"
local accounts = require "lib.accounts"
local present = util.present
local company_client = accounts.client

local CENT = 0.005

local function money(amount, currency) return string.format("%.2f %s", amount, currency or "") end

-- Revolut signs without a delivery id; the event, the transaction and its state identify one delivery.
local revolut_signature = signatures.revolut { secret = { "REVOLUT_WEBHOOK_SECRET", "REVOLUT_WEBHOOK_SECRET_PREVIOUS" } }
local function revolut_verify(request)
  local ok, why = revolut_signature(request)
  if not ok then return false, why end
  local good, body = pcall(json.decode, request.body)
  local data = good and type(body) == "table" and type(body.data) == "table" and body.data
  if not data or data.id == nil then return true end -- let the run say what is missing
  return true, string.format("%s:%s:%s", tostring(body.event), tostring(data.id),
    tostring(data.new_state or data.state))
end

-- The audit_log details that note Revolut's word that a transaction completed.
local function completion_note(id) return json.encode { transaction = tostring(id) } end

local function company_of(id)
  return db.query("SELECT * FROM companies WHERE id = $1", id)[1]
end

-- candidates(payment) -> the invoices the payment may be for (not cancelled)
local function candidates(p)
  local rows
  if p.ninja_invoice_id then
    rows = db.query("SELECT * FROM invoices WHERE invoiceninja_id = $1", p.ninja_invoice_id)
  end
  if (not rows or #rows == 0) and p.invoice_number then
    rows = db.query("SELECT * FROM invoices WHERE upper(number) = upper($1)", p.invoice_number)
  end
  if (not rows or #rows == 0) and present(p.reference) then
    local ref = p.reference:match("^%s*(.-)%s*$")
    rows = db.query("SELECT * FROM invoices WHERE upper(reference) = upper($1) OR upper(number) = upper($1)", ref)
    if #rows == 0 then -- "Payment F-2026-041, thanks": look for a word of it that is a reference
      local seen = {}
      rows = {}
      for word in ref:gmatch("[%w%-_/]+") do
        if #word >= 4 then
          for _, r in ipairs(db.query(
            "SELECT * FROM invoices WHERE upper(reference) = upper($1) OR upper(number) = upper($1)", word)) do
            if not seen[r.id] then seen[r.id] = true; rows[#rows + 1] = r end
          end
        end
      end
    end
  end
  local out = {}
  for _, r in ipairs(rows or {}) do
    if r.status ~= "cancelled" then out[#out + 1] = r end
  end
  return out
end

-- match(payment) -> { invoice = row or nil, status = "matched" | "partial" | "review", reason }
local function match(p)
  local found = candidates(p)
  if #found == 0 then
    return { status = "review", reason = "no invoice has the reference " .. string.format("%q", p.reference or "") }
  end
  if #found > 1 then
    local fitting = {}
    for _, r in ipairs(found) do
      if r.currency == p.currency and math.abs((r.amount - r.amount_paid) - p.amount) < CENT then
        fitting[#fitting + 1] = r
      end
    end
    if #fitting ~= 1 then
      local names = {}
      for _, r in ipairs(found) do names[#names + 1] = r.number .. " (company " .. tostring(r.owner_company) .. ")" end
      return { status = "review", reason = "ambiguous: " .. table.concat(names, ", ") .. " all match" }
    end
    found = fitting
  end
  local inv = found[1]
  local outstanding = inv.amount - inv.amount_paid
  if p.currency ~= inv.currency then
    return { invoice = inv, status = "review",
      reason = string.format("currency %s differs from invoice %s's %s", tostring(p.currency), inv.number, inv.currency) }
  end
  if inv.status == "paid" or outstanding < CENT then
    return { invoice = inv, status = "review", reason = "invoice " .. inv.number .. " is already paid" }
  end
  if p.amount > outstanding + CENT then
    return { invoice = inv, status = "review", reason = string.format("overpayment: %s for %s outstanding on %s",
      money(p.amount, p.currency), money(outstanding, inv.currency), inv.number) }
  end
  return { invoice = inv, status = p.amount < outstanding - CENT and "partial" or "matched" }
end

-- recorded_by_this_run(ctx, payment) -> what the recording returned, when this run recorded the payment
-- in an earlier attempt that died before its step was stored (the retry goes on with the steps after
-- it); nil when another run recorded it (a duplicate).
local function recorded_by_this_run(ctx, p)
  local row = db.query("SELECT id, invoice_id, status, review_reason, recorded_by FROM payments "
    .. "WHERE source = $1 AND external_id = $2", p.source, p.external_id)[1]
  if not row or row.recorded_by ~= ctx.run_id then return nil end
  local inv = present(row.invoice_id) and db.query("SELECT * FROM invoices WHERE id = $1", row.invoice_id)[1] or nil
  local out = { payment_id = row.id, match = { invoice = inv, status = row.status,
    reason = present(row.review_reason) and row.review_reason or nil } }
  if row.status ~= "review" then out.invoice_status, out.amount_paid = inv.status, inv.amount_paid end
  return out
end

-- record(ctx, payment): match, store once, then tell the services.
local function record(ctx, p)
  local stored = step("record payment", function()
    local now = time.iso(time.now())
    return db.tx(function()
      -- matched in the transaction that records it: a retry (the recording failed) sees the invoice as it
      -- is now, not as it was (paid meanwhile, it would be paid twice)
      local m = match(p)
      if p.review_reason then -- money that never arrived: a person looks, the likely invoice noted
        m = { invoice = m.invoice, status = "review", reason = p.review_reason }
      end
      local inv = m.invoice
      local row = db.query([[INSERT INTO payments (owner_company, invoice_id, source, external_id, amount, currency,
          reference, payer, status, review_reason, recorded_by, received_at, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (source, external_id) DO NOTHING RETURNING id]],
        inv and inv.owner_company, inv and inv.id, p.source, p.external_id, p.amount, p.currency,
        p.reference, p.payer, m.status, m.reason, ctx.run_id, p.received_at or now, now)[1]
      if not row then return recorded_by_this_run(ctx, p) or { duplicate = true } end
      local out = { payment_id = row.id, match = m }
      if m.status ~= "review" then
        local after = db.query([[UPDATE invoices SET amount_paid = amount_paid + $1,
            status = CASE WHEN amount_paid + $1 >= amount - $3 THEN 'paid'
              WHEN status = 'collection' THEN 'collection' ELSE 'partially_paid' END, -- the agency keeps its file
            paid_at = CASE WHEN amount_paid + $1 >= amount - $3 THEN $4 ELSE paid_at END,
            updated_at = $4
          WHERE id = $2 RETURNING status, amount_paid]], p.amount, inv.id, CENT, now)[1]
        out.invoice_status, out.amount_paid = after.status, after.amount_paid
      end
      db.exec([[INSERT INTO audit_log (owner_company, table_name, record_id, action, details, actor, created_at)
        VALUES ($1, 'payments', $2, $3, $4, $5, $6)]], inv and inv.owner_company, row.id,
        m.status == "review" and "payment_review" or "payment_recorded",
        json.encode { source = p.source, external_id = p.external_id, amount = p.amount, currency = p.currency,
          invoice = inv and inv.number, reason = m.reason, invoice_status = out.invoice_status },
        "payment-received " .. ctx.run_id, now)
      return out
    end)
  end)
  if stored.duplicate then
    log.info("payment already recorded", { source = p.source, external_id = p.external_id })
    return { duplicate = true, source = p.source, external_id = p.external_id }
  end
  local m = stored.match
  local inv = m.invoice

  local company = inv and step("company", function() return company_of(inv.owner_company) end)

  if m.status == "review" then
    step("tell Slack: review", function()
      local text = string.format("Payment to review: %s from %s (%s %s, reference %q): %s",
        money(p.amount, p.currency), p.payer or "an unknown payer", p.source, p.external_id, p.reference or "", m.reason)
      if company and present(company.slack_channel) then return slack.post(company.slack_channel, text) end
      return slack.post { text = text } -- no company known: the default channel (SLACK_CHANNEL)
    end)
    return { status = "review", reason = m.reason, payment_id = stored.payment_id }
  end

  local contact = step("contact", function()
    return db.query("SELECT * FROM contacts WHERE id = $1", inv.contact_id)[1]
  end)

  if p.source == "revolut" then
    if present(inv.invoiceninja_id) and present(contact.invoiceninja_client_id) then
      local ninja_api = company_client(invoiceninja, "invoiceninja", company, { "url", "token" }) -- the company's own
      step("record in Invoice Ninja", function()
        local reference = "revolut " .. p.external_id
        -- a retry of this step (the answer lost after Invoice Ninja made the payment) finds it there
        for _, known in ipairs(ninja_api.list_payments { client_id = contact.invoiceninja_client_id,
            filter = reference }) do
          if known.transaction_reference == reference and not known.is_deleted then return { id = known.id } end
        end
        local pay = ninja_api.record_payment {
          client_id = contact.invoiceninja_client_id, invoice_id = inv.invoiceninja_id, amount = p.amount,
          date = (p.received_at or time.iso(time.now())):sub(1, 10), transaction_reference = reference,
        }
        return { id = pay.id }
      end)
    else
      log.warn("invoice not in Invoice Ninja yet: payment not recorded there", { invoice = inv.number })
    end
  end

  local mautic_api = company_client(mautic, "mautic", company, { "url", "user", "password" }) -- the company's own
  local mautic_id = step("Mautic contact", function()
    if present(contact.mautic_id) then return contact.mautic_id end
    local found = mautic_api.find_contact(contact.email)
    local id = found and found.id or mautic_api.create_contact {
      email = contact.email, firstname = present(contact.first_name) and contact.first_name or nil,
      lastname = present(contact.last_name) and contact.last_name or nil,
      company = present(contact.organization) and contact.organization or nil,
    }.id
    db.exec("UPDATE contacts SET mautic_id = $1 WHERE id = $2 AND mautic_id IS NULL", id, contact.id)
    return id
  end)
  if company.mautic_payment_points > 0 then
    step("Mautic points", function()
      return mautic_api.add_points(mautic_id, company.mautic_payment_points,
        { event_name = "payment received", action_name = inv.number })
    end)
  end

  if present(company.slack_channel) then
    step("tell Slack", function()
      return slack.post(company.slack_channel, string.format("Payment received: %s for invoice %s (%s)",
        money(p.amount, p.currency), inv.number, stored.invoice_status == "paid" and "paid in full"
          or ("partially paid, " .. money(inv.amount - stored.amount_paid, inv.currency) .. " still due")))
    end)
  end

  local result = { status = m.status, invoice_id = inv.id, invoice = inv.number, payment_id = stored.payment_id,
    amount = p.amount, currency = p.currency, source = p.source, invoice_status = stored.invoice_status,
    owner_company = inv.owner_company }
  emit("payment.received", result)
  return result
end

local function from_revolut(ctx)
  local body = ctx.payload
  if type(body) ~= "table" or type(body.event) ~= "string" then fail("revolut: the body has no event") end
  if body.event ~= "TransactionCreated" and body.event ~= "TransactionStateChanged" then
    return { ignored = body.event } -- PayoutLinkCreated and the like: not payments
  end
  if type(body.data) ~= "table" or body.data.id == nil then
    fail("revolut: a " .. body.event .. " without data.id (the transaction)")
  end
  local tx = body.data
  if body.event == "TransactionStateChanged" then
    if tx.new_state == "completed" then
      -- noted first: Revolut may deliver the transfer itself after this (its delivery failed and is
      -- retried 10 minutes later), when no run waits for this event yet
      step("note the completion", function()
        return db.exec([[INSERT INTO audit_log (table_name, action, details, actor, created_at)
          VALUES ('revolut_transactions', 'transaction_completed', $1, $2, $3)]], completion_note(tx.id),
          "payment-received " .. ctx.run_id, time.iso(time.now()))
      end)
    end
    emit("revolut.state_changed", { id = tx.id, state = tx.new_state })
    return { event = body.event, transaction = tx.id, state = tx.new_state }
  end
  local legs = type(tx.legs) == "table" and tx.legs or {}
  local leg = legs[1]
  if #legs ~= 1 or type(leg) ~= "table" or type(leg.amount) ~= "number" or leg.amount <= 0 then
    -- an outgoing payment, or a move between our own accounts (two legs)
    return { ignored = "not an incoming transfer", transaction = tx.id }
  end
  if type(leg.currency) ~= "string" then fail("revolut: transaction " .. tostring(tx.id) .. " has no currency") end
  local never_completed
  if tx.state ~= "completed" then
    if tx.state ~= "pending" and tx.state ~= "created" then
      return { ignored = "transaction " .. tostring(tx.state), transaction = tx.id }
    end
    local completed_before = step("completed already", function()
      return db.query([[SELECT id FROM audit_log WHERE table_name = 'revolut_transactions'
        AND action = 'transaction_completed' AND details = $1]], completion_note(tx.id))[1] ~= nil
    end)
    if not completed_before then
      local done = wait_for("completed", { event = "revolut.state_changed",
        match = { id = tx.id, state = "completed" }, timeout = "14d" })
      if done.timed_out then never_completed = "transfer still pending after 14 days: it never completed" end
    end
  end
  local cp = type(leg.counterparty) == "table" and leg.counterparty or {}
  -- never completed: stored for review (unless another delivery recorded it meanwhile: a duplicate)
  return record(ctx, {
    source = "revolut", external_id = tostring(tx.id), amount = leg.amount, currency = leg.currency,
    reference = type(tx.reference) == "string" and tx.reference or nil,
    payer = leg.description or cp.name or cp.id,
    received_at = tx.completed_at or tx.updated_at or tx.created_at,
    review_reason = never_completed,
  })
end

-- Invoice Ninja posts the payment as its API shows it (data wrapped or not, the invoices included).
local function from_invoiceninja(ctx)
  local body = ctx.payload
  local p = type(body) == "table" and (type(body.data) == "table" and body.data or body) or {}
  if p.line_items ~= nil then return { ignored = "not a payment (an invoice event)" } end
  if p.id == nil or type(p.amount) ~= "number" then
    fail("invoiceninja: the body is not a payment: it needs an id and a numeric amount")
  end
  if p.amount <= 0 or p.is_deleted == true then return { ignored = "a refund, a deletion or an empty payment" } end
  local from_us = type(p.transaction_reference) == "string" and p.transaction_reference:match("^revolut (.+)$")
  if from_us then -- this flow recorded it there from a Revolut payment: not a second payment
    return { ignored = "recorded in Invoice Ninja from Revolut payment " .. from_us }
  end
  local invoices = type(p.invoices) == "table" and (p.invoices.data or p.invoices) or {}
  local first = type(invoices[1]) == "table" and invoices[1] or {}
  local client = type(p.client) == "table" and (p.client.data or p.client) or {}
  local invoice_id = first.id or first.invoice_id or p.invoice_id
  -- Invoice Ninja knows the invoice, so its currency is the invoice's unless the body says otherwise
  local currency = type(p.currency) == "string" and p.currency or nil
  if not currency then
    local inv = present(invoice_id) and db.query("SELECT currency FROM invoices WHERE invoiceninja_id = $1",
      invoice_id)[1]
    currency = inv and inv.currency or env.INVOICENINJA_CURRENCY or "EUR"
  end
  return record(ctx, {
    source = "invoiceninja", external_id = tostring(p.id), amount = p.amount, currency = currency,
    ninja_invoice_id = present(invoice_id) and tostring(invoice_id) or nil,
    invoice_number = present(first.number) and tostring(first.number) or nil,
    reference = present(p.transaction_reference) and tostring(p.transaction_reference) or nil,
    payer = client.name, received_at = present(p.date) and tostring(p.date) or nil,
  })
end

return {
  description = "Match payments from Revolut and Invoice Ninja to their invoices",
  triggers = {
    webhook { method = "POST", path = "/api/revolut/webhook-handler", mode = "async", verify = revolut_verify },
    webhook { method = "POST", path = "/api/invoice-ninja/webhook", mode = "async",
              verify = signatures.invoiceninja { header = "X-Ninja-Secret", secret = "INVOICENINJA_WEBHOOK_SECRET" } },
  },
  run = function(ctx)
    if ctx.trigger.path == "/api/revolut/webhook-handler" then return from_revolut(ctx) end
    if ctx.trigger.path == "/api/invoice-ninja/webhook" then return from_invoiceninja(ctx) end
    fail("payment-received: started by " .. tostring(ctx.trigger.type) .. ", not by a payment webhook")
  end,
}
