-- When a quote is sent: ask the client to sign it (DocuSeal), start the company's "quote sent"
-- campaign (Mautic), mirror the client and the quote in Invoice Ninja. Then wait for the signature:
-- none `quote_warning_days` before the end of validity, remind the client once; none by the end of
-- validity, the quote expires and the client gets a follow-up. (quote-signed handles a signature.)
-- quote-expiry does the same reminders and expiries by a daily scan; the database makes sure a
-- quote is reminded, and expired, once whichever flow gets there first.

local util = require "lib.util"
local accounts = require "lib.accounts"
local full_name = util.full_name
local sender = util.sender
local company_client = accounts.client
local mautic_contact = accounts.mautic_contact

local plain = db.plain -- the row without its NULL columns (a step's result)

local function load(quote_id)
  local quote = plain(db.query("SELECT * FROM quotes WHERE id = $1", quote_id)[1])
  if not quote then return nil end
  return {
    quote = quote,
    company = plain(db.query("SELECT * FROM companies WHERE id = $1", quote.owner_company)[1]),
    contact = plain(db.query("SELECT * FROM contacts WHERE id = $1", quote.contact_id)[1]),
  }
end

local function day(iso) return iso:sub(1, 10) end

-- The client in the company's Invoice Ninja: updated when known, else created and recorded.
local function ninja_client(ninja_api, contact)
  local fields = {
    name = contact.organization or full_name(contact),
    contacts = { { first_name = contact.first_name, last_name = contact.last_name, email = contact.email } },
  }
  if contact.invoiceninja_client_id then
    ninja_api.update_client(contact.invoiceninja_client_id, fields)
    return contact.invoiceninja_client_id
  end
  local client = ninja_api.create_client(fields)
  db.exec("UPDATE contacts SET invoiceninja_client_id = $1 WHERE id = $2 AND invoiceninja_client_id IS NULL",
    client.id, contact.id)
  return db.query("SELECT invoiceninja_client_id FROM contacts WHERE id = $1", contact.id)[1].invoiceninja_client_id
end

return {
  description = "Send a quote for signature, then remind before expiry, or expire it",
  triggers = {
    db_event { table = "quotes", on = { "insert", "update" } }, -- a quote may be created already sent
  },
  run = function(ctx)
    local old, new = ctx.payload.old or {}, ctx.payload.new or {}
    if not (new.status == "sent" and old.status ~= "sent") then
      return { skipped = "the quote's status did not become sent" }
    end
    local r = step("load the quote", function() return load(new.id) end)
    if not r then fail("quote " .. tostring(new.id) .. " no longer exists") end
    local quote, company, contact = r.quote, r.company, r.contact
    if not company.docuseal_template then
      fail(string.format("company %d (%s) has no docuseal_template: set it to send quotes for signature",
        company.id, company.name))
    end
    -- the company's own accounts, for every call below
    local docuseal_api = company_client(docuseal, "docuseal", company, { "url", "token" })
    local mautic_api = company.mautic_quote_sent_campaign
      and company_client(mautic, "mautic", company, { "url", "user", "password" })
    local ninja_api = company_client(invoiceninja, "invoiceninja", company, { "url", "token" })

    -- the end of validity: the quote's own, else the company's validity from today
    local valid_until = step("validity", function()
      if quote.valid_until then return day(quote.valid_until) end
      local until_day = day(time.iso(time.now() + company.quote_validity_days * 86400))
      db.exec("UPDATE quotes SET valid_until = $1 WHERE id = $2 AND valid_until IS NULL", until_day, quote.id)
      return day(db.query("SELECT valid_until FROM quotes WHERE id = $1", quote.id)[1].valid_until)
    end)

    local submission = step("signature request", function()
      local s = docuseal_api.create_submission {
        template_id = company.docuseal_template,
        send_email = true,
        submitters = { { email = contact.email, name = full_name(contact), external_id = "quote-" .. quote.id } },
        message = {
          subject = string.format("%s: quote %s to sign", company.name, quote.number),
          body = string.format("Please review and sign quote %s (%s), valid until %s: {{submitter.link}}",
            quote.number, quote.title or "", valid_until),
        },
      }
      return { id = s.id }
    end)
    step("record the signature request", function()
      return db.exec("UPDATE quotes SET docuseal_submission_id = $1, updated_at = $2 WHERE id = $3",
        tostring(submission.id), time.iso(time.now()), quote.id)
    end)

    if company.mautic_quote_sent_campaign then
      local mautic_id = step("mautic contact", function() return mautic_contact(mautic_api, contact) end)
      step("quote-sent campaign", function()
        return mautic_api.add_to_campaign(company.mautic_quote_sent_campaign, mautic_id)
      end)
    end

    local client_id = step("invoice ninja client", function() return ninja_client(ninja_api, contact) end)
    step("invoice ninja quote", function()
      if quote.invoiceninja_invoice_id then return quote.invoiceninja_invoice_id end
      local invoice = ninja_api.create_invoice {
        client_id = client_id, number = quote.number, po_number = quote.number,
        line_items = { { product_key = quote.number, notes = quote.title or quote.number,
                         cost = quote.amount, quantity = 1 } },
        public_notes = "Quote " .. quote.number .. ", valid until " .. valid_until,
      }
      db.exec("UPDATE quotes SET invoiceninja_invoice_id = $1 WHERE id = $2", invoice.id, quote.id)
      return invoice.id
    end)

    -- Waiting. The quote is valid through valid_until; the reminder is due
    -- quote_warning_days before the end of that day.
    local expires_at = time.parse(valid_until) + 86400
    local remind_at = expires_at - company.quote_warning_days * 86400
    local sent_at = step("waiting since", time.now)
    -- this quote's signer: a company with its own DocuSeal numbers its own submissions, so the
    -- submission id alone may be another company's
    local signature = { event = "docuseal", match = { event_type = "form.completed",
      data = { submission_id = submission.id, external_id = "quote-" .. quote.id } } }

    local signed = wait_for("signature before the reminder", {
      event = signature.event, match = signature.match, timeout = math.max(0, remind_at - sent_at) })
    if not signed.timed_out then return { signed = true, submission_id = submission.id } end

    -- the reminder, once: this flow or quote-expiry, whichever claims it first; none for a quote
    -- already past its date (sent late, or the wait woke late): it only expires, as in quote-expiry
    local claim = step("claim the reminder", function()
      if time.now() >= expires_at then
        return { claimed = false, status = db.query("SELECT status FROM quotes WHERE id = $1", quote.id)[1].status }
      end
      local n = db.exec("UPDATE quotes SET expiry_warned_at = $1 WHERE id = $2 AND status = 'sent' "
        .. "AND expiry_warned_at IS NULL", time.iso(time.now()), quote.id)
      return { claimed = n > 0, status = db.query("SELECT status FROM quotes WHERE id = $1", quote.id)[1].status }
    end)
    if claim.status ~= "sent" then return { ended = claim.status } end
    if claim.claimed then
      step("remind the client", function()
        return email.send {
          from = sender(company), to = contact.email,
          subject = string.format("Your quote %s expires on %s", quote.number, valid_until),
          text = string.format("Hello %s,\n\nquote %s (%s, %s %s) is valid until %s and is not signed yet. "
            .. "The signing link is in the email from our signature service.\n\n%s",
            contact.first_name or "", quote.number, quote.title or "", quote.amount, quote.currency,
            valid_until, company.sender_name or company.name),
        }
      end)
    end

    local reminded_at = step("reminded at", time.now)
    signed = wait_for("signature before expiry", {
      event = signature.event, match = signature.match, timeout = math.max(0, expires_at - reminded_at) })
    if not signed.timed_out then return { signed = true, reminded = claim.claimed, submission_id = submission.id } end

    -- expiry, once: this flow or quote-expiry
    local expired = step("claim the expiry", function()
      local now = time.iso(time.now())
      return db.exec("UPDATE quotes SET status = 'expired', expired_at = $1, updated_at = $1 WHERE id = $2 "
        .. "AND status = 'sent'", now, quote.id) > 0
    end)
    if not expired then return { ended = "expired or changed elsewhere", reminded = claim.claimed } end
    step("follow up with the client", function()
      return email.send {
        from = sender(company), to = contact.email,
        subject = string.format("Quote %s has expired", quote.number),
        text = string.format("Hello %s,\n\nquote %s (%s) expired on %s without a signature. "
          .. "Reply to this email and we will gladly send you an updated quote.\n\n%s",
          contact.first_name or "", quote.number, quote.title or "", valid_until, company.sender_name or company.name),
      }
    end)
    if company.slack_channel then -- none: no message (the default channel is not this company's)
      step("tell the team", function()
        return slack.post(company.slack_channel, string.format("Quote %s (%s, %s %s) expired unsigned; "
          .. "the client got a follow-up.", quote.number, full_name(contact), quote.amount, quote.currency))
      end)
    end
    return { expired = true, reminded = claim.claimed }
  end,
}
