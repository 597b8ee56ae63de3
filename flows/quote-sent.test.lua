-- A quote sent: signature request, campaign, Invoice Ninja; then the wait for the signature, its
-- reminder and its expiry, fast-forwarded. Demo data: company 1 (Atelier Lumen) warns 3 days before
-- expiry; quote 1 is a draft of contact 1, valid 30 days.
local crypto = require "rill.crypto"
local json = require "rill.json"
local time = require "rill.time"

local SECRET = "whsec_quote_sent_test"

local function services(t)
  t.env {
    DOCUSEAL_URL = "https://sign.test/api", DOCUSEAL_TOKEN = "ds-token", DOCUSEAL_WEBHOOK_SECRET = SECRET,
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    INVOICENINJA_URL = "https://ninja.test", INVOICENINJA_TOKEN = "in-token",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test",
    SMTP_URL = "smtp://mail.test:587",
    -- company 2 (companies.*_env): its own DocuSeal and Mautic, its own token in the same Invoice Ninja
    NORDWIND_DOCUSEAL_URL = "https://sign.nordwind.test/api", NORDWIND_DOCUSEAL_TOKEN = "ds-nordwind",
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind", NORDWIND_INVOICENINJA_TOKEN = "in-nordwind",
  }
  t.stub("POST", "https://sign.nordwind.test/api/submissions", { json = { { id = 19, submission_id = 88,
    email = "j.keller@kunde.example", status = "sent", embed_src = "https://sign.nordwind.test/s/def" } } })
  t.stub("GET", "https://mautic.nordwind.test/api/contacts", { json = { total = "0", contacts = {} } })
  t.stub("POST", "https://mautic.nordwind.test/api/contacts/new", { status = 201, json = { contact = { id = 701 } } })
  t.stub("POST", "https://mautic.nordwind.test/api/campaigns/", { json = { success = 1 } })
  t.stub("POST", "https://sign.test/api/submissions", { json = { { id = 9, submission_id = 77,
    email = "claire.martin@client.example", status = "sent", embed_src = "https://sign.test/s/abc" } } })
  t.stub("GET", "https://mautic.test/api/contacts", { json = { total = "0", contacts = {} } })
  t.stub("POST", "https://mautic.test/api/contacts/new", { status = 201, json = { contact = { id = 501 } } })
  t.stub("POST", "https://mautic.test/api/campaigns/", { json = { success = 1 } })
  t.stub("POST", "https://mautic.test/api/emails/", { json = { success = 1 } })
  t.stub("POST", "https://ninja.test/api/v1/clients", { json = { data = { id = "cl1" } } })
  t.stub("GET", "https://ninja.test/api/v1/invoices", { json = { data = {} } }) -- quote-signed: no deposit yet
  -- the draft of the quote here, and the deposit invoice that quote-signed makes when the signature comes
  t.stub("POST", "https://ninja.test/api/v1/invoices", function(call)
    local items = call.json and call.json.line_items
    return { json = { data = { id = "inv1", number = call.json and call.json.number or "D-2026-001",
      amount = items and items[1] and items[1].cost } } }
  end)
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
  t.stub("MAIL", "smtp://mail.test", { status = 250 })
end

-- the demo companies and contacts, and quote 1 only: other flows' cron ticks (quote-expiry, payment
-- reminders, reports) fire too while the clock moves on, and find nothing else to do
local function fixture(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("DELETE FROM invoices")
  t.db.exec("DELETE FROM quotes WHERE id <> 1")
end

-- quote 1 becomes sent, valid until the given day
local function send(t, valid_until)
  t.db.exec("UPDATE quotes SET status = 'sent', valid_until = $1 WHERE id = 1", valid_until)
  return t.db_event("quote-sent", { op = "update", old = { id = 1, status = "draft" },
    new = { id = 1, status = "sent", owner_company = 1 } })
end

local function signed_webhook(t, submission_id)
  local body = json.encode { event_type = "form.completed", timestamp = time.iso(t.now()),
    data = { id = 9, submission_id = submission_id, status = "completed", email = "claire.martin@client.example",
             external_id = "quote-1", submission = { id = submission_id, status = "completed" } } }
  local ts = string.format("%d", t.now())
  return t.webhook("POST", "/api/integrations/docuseal/webhook", { body = body, headers = {
    ["Content-Type"] = "application/json",
    ["X-Docuseal-Signature"] = ts .. "." .. crypto.hex(crypto.hmac_sha256(SECRET, ts .. "." .. body)) } })
end

local function mails(t)
  local out = {}
  for _, c in ipairs(t.calls("MAIL")) do
    if c.to[1] == "<claire.martin@client.example>" then out[#out + 1] = c end
  end
  return out
end

test("sent: signature request, campaign, Invoice Ninja, then the run waits", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-30")
  t.eq(t.get_run(run.id).state, "waiting", "parked until the signature")

  local ds = t.calls("POST", "sign.test")[1].json
  t.eq(ds.template_id, 41, "company 1's DocuSeal template")
  t.eq(ds.submitters[1].email, "claire.martin@client.example", "the client signs")
  t.eq(ds.submitters[1].external_id, "quote-1", "the quote, for the webhook")
  t.eq(t.db.query("SELECT docuseal_submission_id AS s, invoiceninja_invoice_id AS i FROM quotes WHERE id = 1")[1],
    { s = "77", i = "inv1" }, "submission and Invoice Ninja ids stored")
  t.eq(#t.calls("POST", "mautic.test/api/campaigns/11/contact/501/add"), 1, "company 1's quote-sent campaign")
  t.eq(t.db.query("SELECT mautic_id, invoiceninja_client_id FROM contacts WHERE id = 1")[1],
    { mautic_id = 501, invoiceninja_client_id = "cl1" }, "the contact's ids recorded")
  local inv = t.calls("POST", "ninja.test/api/v1/invoices")[1].json
  t.eq({ inv.number, inv.client_id, inv.line_items[1].cost }, { "D-2026-001", "cl1", 4800 }, "the quote mirrored")
  t.eq(#mails(t), 0, "no mail yet")
end)

test("signed: the DocuSeal webhook ends the wait, no reminder ever", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-30")
  t.advance("3d")
  t.eq(signed_webhook(t, 77).status, 202, "webhook accepted")
  local r = t.get_run(run.id)
  t.eq(r.state, "succeeded", "the wait ended")
  t.eq(r.result, { signed = true, submission_id = 77 }, "its result")
  t.eq(t.db.query("SELECT status FROM quotes WHERE id = 1")[1].status, "signed", "quote-signed did its part")
  t.advance("40d")
  t.eq(#mails(t), 0, "no reminder, no follow-up")
  t.eq(t.db.query("SELECT count(*) AS n FROM quotes WHERE id = 1 AND expiry_warned_at IS NULL")[1].n, 1, "never warned")
end)

test("another submission's signature does not end the wait", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-30")
  t.eq(signed_webhook(t, 78).status, 202, "webhook accepted")
  t.eq(t.get_run(run.id).state, "waiting", "still waiting")
end)

test("no signature: one reminder 3 days before the end, then expired with a follow-up", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-10") -- valid through the 10th: reminder due on the 8th at 00:00
  t.advance("5d")                     -- the 7th, 09:00
  t.eq(#mails(t), 0, "no reminder on the 7th")
  t.advance("1d")                     -- the 8th
  local m = mails(t)
  t.eq(#m, 1, "one reminder")
  t.eq(m[1].to, { "<claire.martin@client.example>" }, "to the client")
  t.contains(m[1].body, "expires on 2026-11-10", "the reminder says when")
  t.contains(m[1].body, "devis@lumen.example", "from the company's sender")
  t.eq(t.get_run(run.id).state, "waiting", "waiting again")
  t.advance("3d")                     -- the 11th: expired
  m = mails(t)
  t.eq(#m, 2, "the follow-up")
  t.contains(m[2].body, "Quote D-2026-001 has expired", "its subject")
  local q = t.db.query("SELECT status, expired_at, expiry_warned_at FROM quotes WHERE id = 1")[1]
  t.eq(q.status, "expired", "expired")
  t.eq(q.expiry_warned_at, "2026-11-08T00:00:00Z", "warned once, on time")
  local r = t.get_run(run.id)
  t.eq(r.result, { expired = true, reminded = true }, "the run's result")
  local told
  for _, c in ipairs(t.calls("POST", "slack.test")) do
    if c.json.text:find("Quote D-2026-001 (Claire Martin, 4800 EUR) expired unsigned", 1, true) then told = c end
  end
  if not told then t.eq(t.calls("POST", "slack.test"), {}, "the team told") end
  t.eq(told.json.channel, "#lumen-sales", "on company 1's channel")
end)

test("a reminder already sent by quote-expiry is not sent again", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-10")
  t.db.exec("UPDATE quotes SET expiry_warned_at = '2026-11-07T08:00:00Z' WHERE id = 1")
  t.advance("6d")
  t.eq(#mails(t), 0, "no second reminder")
  t.advance("3d")
  t.eq(#mails(t), 1, "the follow-up only")
  t.eq(t.get_run(run.id).result, { expired = true, reminded = false }, "result")
end)

test("a quote valid until the past expires at once: no reminder of a date already gone, only the follow-up", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-10-31")
  local r = t.get_run(run.id)
  t.eq(r.state, "succeeded", "no wait")
  t.eq(r.result, { expired = true, reminded = false }, "expired, not reminded")
  local sent = mails(t)
  t.eq(#sent, 1, "one mail")
  t.contains(sent[1].body, "Quote D-2026-001 has expired", "the follow-up")
  t.eq(t.db.query("SELECT expiry_warned_at FROM quotes WHERE id = 1")[1].expiry_warned_at, json.null,
    "no reminder claimed")
end)

test("a quote sent on its last valid day is still reminded before it expires", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-02")
  t.eq(t.get_run(run.id).state, "waiting", "waits for the signature until the end of the day")
  local sent = mails(t)
  t.eq(#sent, 1, "the reminder")
  t.contains(sent[1].body, "expires on 2026-11-02", "of today's end")
end)

test("a company without a Slack channel: expired and followed up, posted nowhere", function(t)
  fixture(t)
  services(t)
  t.env { SLACK_CHANNEL = "#payments-review" }
  t.db.exec("UPDATE companies SET slack_channel = NULL WHERE id = 1")
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-10-31")
  local r = t.get_run(run.id)
  t.eq(r.state, "succeeded", "run")
  t.eq(r.result, { expired = true, reminded = false }, "expired (past its date: not reminded)")
  t.eq(t.calls("POST", "slack.test"), {}, "no message")
end)

test("a quote inserted already sent starts it too", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.db.exec("UPDATE quotes SET status = 'sent', valid_until = '2026-11-30' WHERE id = 1")
  local run = t.db_event("quote-sent", { op = "insert", new = { id = 1, status = "sent", owner_company = 1 } })
  t.eq(t.get_run(run.id).state, "waiting", "sent for signature, waiting")
  t.eq(#t.calls("POST", "sign.test"), 1, "one signature request")
end)

test("only a change to sent starts it", function(t)
  fixture(t)
  local run = t.db_event("quote-sent", { op = "update", old = { id = 2, status = "sent" },
    new = { id = 2, status = "sent" } })
  t.eq(t.get_run(run.id).result, { skipped = "the quote's status did not become sent" }, "skipped")
  t.eq(#t.calls(), 0, "no call")
end)

-- quote 10: company 2's (Nordwind), a draft of contact 4, made sent
local function send_nordwind_quote(t)
  t.db.exec([[INSERT INTO quotes (id, owner_company, contact_id, number, title, amount, currency, status, valid_until)
    VALUES (10, 2, 4, 'Q-2026-110', 'Audit', 2000, 'EUR', 'sent', '2026-11-30')]])
  return t.db_event("quote-sent", { op = "update", old = { id = 10, status = "draft" },
    new = { id = 10, status = "sent", owner_company = 2 } })
end

test("company 2's quote: its own DocuSeal and Mautic, its own Invoice Ninja token, for every call", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send_nordwind_quote(t)
  t.eq(t.get_run(run.id).state, "waiting", "sent, waiting for the signature")

  t.eq(#t.calls(nil, "https://sign.test"), 0, "nothing to company 1's DocuSeal")
  local ds = t.calls(nil, "https://sign.nordwind.test")
  t.eq(#ds, 1, "the signature request, on company 2's DocuSeal")
  t.eq({ ds[1].json.template_id, ds[1].headers["x-auth-token"] }, { 42, "ds-nordwind" }, "its template, its key")
  t.eq(t.db.query("SELECT docuseal_submission_id AS s FROM quotes WHERE id = 10")[1].s, "88", "its submission")

  t.eq(#t.calls(nil, "https://mautic.test"), 0, "nothing to company 1's Mautic")
  local m = t.calls(nil, "https://mautic.nordwind.test")
  t.eq(#m, 3, "find, create, campaign: on company 2's Mautic")
  t.contains(m[3].url, "/api/campaigns/13/contact/701/add", "its quote-sent campaign")
  for _, c in ipairs(m) do
    t.eq(c.headers["authorization"], "Basic " .. crypto.base64("nordwind:pw-nordwind"), "its user: " .. c.url)
  end

  local ninja = t.calls(nil, "ninja.test")
  t.eq(#ninja, 2, "client and quote in Invoice Ninja")
  for _, c in ipairs(ninja) do t.eq(c.headers["x-api-token"], "in-nordwind", "its token: " .. c.url) end
end)

test("company 2 without its DocuSeal key set: a dead run naming it, nothing sent anywhere", function(t)
  fixture(t)
  services(t)
  t.env { NORDWIND_DOCUSEAL_TOKEN = "" }
  t.now("2026-11-02T09:00:00Z")
  local run = send_nordwind_quote(t)
  t.eq(run.state, "dead", "no retry: a setting to fix")
  t.contains(run.error, "company 2 (Nordwind Consulting): NORDWIND_DOCUSEAL_TOKEN is not set "
    .. "(named for docuseal's token)", "the variable and the company")
  t.eq(#t.calls(nil, "sign"), 0, "no signature request with another key")
  t.eq(#t.calls(nil, "mautic"), 0, "no campaign")
  t.eq(#t.calls(nil, "ninja"), 0, "nothing in Invoice Ninja")
end)

test("another company's DocuSeal completing its own submission 77 does not end this quote's wait", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = send(t, "2026-11-30")
  local body = json.encode { event_type = "form.completed", timestamp = time.iso(t.now()),
    data = { id = 3, submission_id = 77, status = "completed", email = "someone@else.example",
             external_id = "quote-999", submission = { id = 77, status = "completed" } } }
  local ts = string.format("%d", t.now())
  t.webhook("POST", "/api/integrations/docuseal/webhook", { body = body, headers = {
    ["Content-Type"] = "application/json",
    ["X-Docuseal-Signature"] = ts .. "." .. crypto.hex(crypto.hmac_sha256(SECRET, ts .. "." .. body)) } })
  t.eq(t.get_run(run.id).state, "waiting", "still waiting: quote-999 is not this quote")
  t.eq(signed_webhook(t, 77).status, 202, "this quote's signer")
  t.eq(t.get_run(run.id).state, "succeeded", "the wait ended")
end)
