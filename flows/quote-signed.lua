-- When the client signs a quote in DocuSeal: the quote becomes `signed`, the client enters the
-- company's "signed" campaign (Mautic), a deposit invoice for the company's deposit_percent of the
-- quote is made and marked sent in Invoice Ninja (and recorded in invoices), and the team hears of it.
-- Every DocuSeal webhook is also emitted as the event "docuseal": it ends quote-sent's wait.
-- Once the quote is marked signed, the event "quote.signed" (the quote, its company and signer) starts
-- every flow with an `event { name = "quote.signed" }` trigger (big-deal-alert): add behaviour there.
-- Beside Directus (DIRECTUS_URL set), the deposit invoice is created through its API, so that people
-- see in Directus that rill made it; the status change stays one SQL claim (docs/directus.md).

local util = require "lib.util"
local accounts = require "lib.accounts"
local present = util.present
local full_name = util.full_name
local company_client = accounts.client
local mautic_contact = accounts.mautic_contact

local plain = db.plain -- the row without its NULL columns (a step's result)

-- DocuSeal 2.5.3 and later sign their webhooks (X-Docuseal-Signature); an older install only sends
-- a secret in a header named in its UI: set DOCUSEAL_WEBHOOK_HEADER to that header's name to accept it.
local SECRETS = { "DOCUSEAL_WEBHOOK_SECRET", "DOCUSEAL_WEBHOOK_SECRET_PREVIOUS" }
local signed = signatures.docuseal { secret = SECRETS }
local function docuseal_verify(request)
  local header = env.DOCUSEAL_WEBHOOK_HEADER
  if header and header ~= "" then return signatures.docuseal { secret = SECRETS, header = header }(request) end
  return signed(request)
end

-- The signed submission's id and our quote id (we set external_id = "quote-ID" on the signer):
-- form.completed carries the signer (submission_id), submission.completed the submission (id).
local function identify(payload)
  local data = type(payload.data) == "table" and payload.data or nil
  if not data then return nil end
  local submission_id = data.submission_id
  if not present(submission_id) and type(data.submission) == "table" then submission_id = data.submission.id end
  if not present(submission_id) and payload.event_type == "submission.completed" then submission_id = data.id end
  local external = type(data.external_id) == "string" and data.external_id
  if not external and type(data.submitters) == "table" and type(data.submitters[1]) == "table" then
    external = data.submitters[1].external_id
  end
  local quote_id = type(external) == "string" and tonumber(external:match("^quote%-(%d+)$")) or nil
  if not present(submission_id) and not quote_id then return nil end
  return present(submission_id) and tostring(submission_id) or nil, quote_id
end

-- The quote: by our own id (the signer's external_id), else by the submission's id. Two companies with
-- their own DocuSeal may each have a submission 12: an id found on several quotes names none of them.
local function load(submission_id, quote_id)
  local quote = quote_id and plain(db.query("SELECT * FROM quotes WHERE id = $1", quote_id)[1])
  if not quote then
    local found = db.query("SELECT * FROM quotes WHERE docuseal_submission_id = $1", submission_id or "")
    if #found > 1 then return { ambiguous = #found } end
    quote = plain(found[1])
  end
  if not quote then return nil end
  return {
    quote = quote,
    company = plain(db.query("SELECT * FROM companies WHERE id = $1", quote.owner_company)[1]),
    contact = plain(db.query("SELECT * FROM contacts WHERE id = $1", quote.contact_id)[1]),
  }
end

local function ninja_client(ninja_api, contact)
  if contact.invoiceninja_client_id then return contact.invoiceninja_client_id end
  local client = ninja_api.create_client {
    name = contact.organization or full_name(contact),
    contacts = { { first_name = contact.first_name, last_name = contact.last_name, email = contact.email } },
  }
  db.exec("UPDATE contacts SET invoiceninja_client_id = $1 WHERE id = $2 AND invoiceninja_client_id IS NULL",
    client.id, contact.id)
  return db.query("SELECT invoiceninja_client_id FROM contacts WHERE id = $1", contact.id)[1].invoiceninja_client_id
end

return {
  description = "A quote signed in DocuSeal: deposit invoice, signed campaign, status signed",
  triggers = {
    webhook { method = "POST", path = "/api/integrations/docuseal/webhook", mode = "async", emit = "docuseal",
              verify = docuseal_verify },
  },
  run = function(ctx)
    local event = ctx.payload.event_type
    if event ~= "form.completed" and event ~= "submission.completed" then
      return { ignored = tostring(event) }
    end
    local submission_id, quote_id = identify(ctx.payload)
    if not submission_id and not quote_id then
      fail("DocuSeal " .. event .. " without data.submission_id (nor a signer external_id quote-ID)")
    end
    local r = step("load the quote", function() return load(submission_id, quote_id) end)
    if not r then
      log.warn("a DocuSeal signature for no quote of ours", { submission_id = submission_id })
      return { ignored = "no quote for submission " .. tostring(submission_id) }
    end
    if r.ambiguous then -- each company's DocuSeal numbers its own submissions
      fail(string.format("DocuSeal submission %s is on %d quotes (companies with their own DocuSeal) and the "
        .. "signer has no external_id quote-ID: sign the right quote by hand", submission_id, r.ambiguous))
    end
    local quote, company, contact = r.quote, r.company, r.contact
    -- form.completed is per signer: with several, the submission is done when it says so
    if event == "form.completed" and type(ctx.payload.data.submission) == "table"
        and present(ctx.payload.data.submission.status) and ctx.payload.data.submission.status ~= "completed" then
      return { waiting = "other signers", quote = quote.number }
    end

    -- signed once: a redelivery, or a second event for the same submission, finds it done
    local marked = step("mark the quote signed", function()
      local now = time.iso(time.now())
      return db.exec("UPDATE quotes SET status = 'signed', signed_at = $1, updated_at = $1 "
        .. "WHERE id = $2 AND status IN ('draft', 'sent')", now, quote.id) > 0
    end)
    if not marked then
      local status = step("status found", function()
        return db.query("SELECT status FROM quotes WHERE id = $1", quote.id)[1].status
      end)
      if status ~= "signed" then
        step("tell the team about a late signature", function()
          return slack.post(company.slack_channel, string.format(
            "Quote %s was signed by %s but is %s: no deposit invoice made, please decide.",
            quote.number, full_name(contact), status))
        end)
      end
      return { already = status, quote = quote.number }
    end
    emit("quote.signed", { quote_id = quote.id, number = quote.number, title = quote.title, amount = quote.amount,
      currency = quote.currency, company_id = company.id, company = company.name,
      sales_channel = company.slack_channel, signed_by = full_name(contact) })

    -- the company's own accounts, for every call below
    local mautic_api = company.mautic_signed_campaign
      and company_client(mautic, "mautic", company, { "url", "user", "password" })
    local ninja_api = company_client(invoiceninja, "invoiceninja", company, { "url", "token" })

    if company.mautic_signed_campaign then
      local mautic_id = step("mautic contact", function() return mautic_contact(mautic_api, contact) end)
      step("signed campaign", function()
        return mautic_api.add_to_campaign(company.mautic_signed_campaign, mautic_id)
      end)
    end

    local client_id = step("invoice ninja client", function() return ninja_client(ninja_api, contact) end)
    local number = quote.number .. "-DEP"
    local deposit = step("deposit invoice", function()
      local today = time.iso(time.now()):sub(1, 10)
      -- a retry of this step (the answer lost after Invoice Ninja made it) finds it by its number
      local inv = ninja_api.find_invoice(number)
      if not (inv and inv.client_id == client_id) then
        inv = ninja_api.create_deposit_invoice {
          client_id = client_id, total = quote.amount, percent = company.deposit_percent, quote = quote.number,
          number = number, po_number = quote.number, date = today, mark_sent = true,
        }
      end
      return { id = inv.id, amount = inv.amount, issued = today }
    end)
    step("record the deposit invoice", function()
      if env.DIRECTUS_URL then -- beside Directus: the team sees rill made it, in the invoice's revisions
        local found = directus.items("invoices", { filter = { owner_company = { _eq = company.id },
          number = { _eq = number } }, fields = { "id" }, limit = 1 })
        if found[1] then return 0 end -- a retry of this step after Directus made it
        directus.create("invoices", { owner_company = company.id, contact_id = contact.id, quote_id = quote.id,
          number = number, kind = "deposit", amount = deposit.amount, currency = quote.currency, status = "sent",
          reference = number, issued_at = deposit.issued, due_date = deposit.issued,
          invoiceninja_id = tostring(deposit.id) })
        return 1
      end
      return db.exec("INSERT INTO invoices (owner_company, contact_id, quote_id, number, kind, amount, currency, "
        .. "status, reference, issued_at, due_date, invoiceninja_id) VALUES ($1, $2, $3, $4, 'deposit', $5, $6, "
        .. "'sent', $4, $7, $7, $8) ON CONFLICT (owner_company, number) DO NOTHING",
        company.id, contact.id, quote.id, number, deposit.amount, quote.currency, deposit.issued, deposit.id)
    end)
    if company.slack_channel then -- none: no message (the default channel is not this company's)
      step("tell the team", function()
        return slack.post(company.slack_channel, string.format(
          "Quote %s signed by %s (%s %s). Deposit invoice %s: %s %s (%s%%).", quote.number, full_name(contact),
          quote.amount, quote.currency, number, deposit.amount, quote.currency, company.deposit_percent))
      end)
    end
    return { signed = quote.number, deposit_invoice = number, deposit = deposit.amount }
  end,
}
