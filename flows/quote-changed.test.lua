-- New quotes and status changes reach the company's own Slack channel; a quote sent is emailed to the
-- client through the company's Mautic template; other updates say nothing.
local crypto = require "rill.crypto"

local function services(t)
  t.env {
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test",
    -- company 2's own Mautic (companies.mautic_*_env)
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind",
  }
  t.stub("GET", "https://mautic.nordwind.test/api/contacts", { json = { total = "0", contacts = {} } })
  t.stub("POST", "https://mautic.nordwind.test/api/contacts/new", { status = 201, json = { contact = { id = 71 } } })
  t.stub("POST", "https://mautic.nordwind.test/api/emails/", { json = { success = 1 } })
  t.stub("GET", "https://mautic.test/api/contacts", { json = { total = "0", contacts = {} } })
  t.stub("POST", "https://mautic.test/api/contacts/new", { status = 201, json = { contact = { id = 700 } } })
  t.stub("POST", "https://mautic.test/api/emails/", { json = { success = 1 } })
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
end

local function fixture(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
end

test("a new quote of company 2 goes to company 2's channel only", function(t)
  fixture(t)
  services(t)
  local run = t.db_event("quote-changed", { op = "insert", new = { id = 4, status = "draft", owner_company = 2 } })
  t.eq(t.get_run(run.id).result, { notified = "draft" }, "result")
  local calls = t.calls("POST", "slack.test")
  t.eq(#calls, 1, "one message")
  t.eq(calls[1].json.channel, "#nordwind", "company 2's channel")
  t.contains(calls[1].json.text, "New quote Q-2026-101 (Process audit) for Jonas Keller: 9600 EUR", "the message")
  t.eq(#t.calls("POST", "mautic.test"), 0, "no email for a draft")
end)

test("a company without a Slack channel: its quotes are posted nowhere (not the default channel)", function(t)
  fixture(t)
  services(t)
  t.env { SLACK_CHANNEL = "#payments-review" }
  t.db.exec("UPDATE companies SET slack_channel = NULL WHERE id = 2")
  local run = t.db_event("quote-changed", { op = "insert", new = { id = 4, status = "draft", owner_company = 2 } })
  t.eq(t.get_run(run.id).state, "succeeded", "run")
  t.eq(t.calls("POST", "slack.test"), {}, "no message")
end)

test("a quote sent: Slack, and the company's Mautic template to the client", function(t)
  fixture(t)
  services(t)
  t.db.exec("UPDATE quotes SET status = 'sent' WHERE id = 1")
  local run = t.db_event("quote-changed", { op = "update", old = { id = 1, status = "draft" },
    new = { id = 1, status = "sent" } })
  t.eq(t.get_run(run.id).result, { notified = "sent", emailed = "claire.martin@client.example" }, "result")
  t.contains(t.calls("POST", "slack.test")[1].json.text, "Quote draft → sent: D-2026-001", "Slack")
  local created = t.calls("POST", "mautic.test/api/contacts/new")[1].json
  t.eq(created.email, "claire.martin@client.example", "the client made a Mautic contact")
  local mail = t.calls("POST", "mautic.test/api/emails/31/contact/700/send")
  t.eq(#mail, 1, "company 1's template 31 to the contact")
  t.eq(mail[1].json.tokens.quote_number, "D-2026-001", "with the quote's number")
  t.eq(t.db.query("SELECT mautic_id FROM contacts WHERE id = 1")[1].mautic_id, 700, "contact id recorded")
end)

test("updates without a new status, and signed or expired, say nothing here", function(t)
  fixture(t)
  services(t)
  local a = t.db_event("quote-changed", { op = "update", old = { id = 2, status = "sent" },
    new = { id = 2, status = "sent" } })
  local b = t.db_event("quote-changed", { op = "update", old = { id = 2, status = "sent" },
    new = { id = 2, status = "signed" } })
  t.eq(t.get_run(a.id).result, { skipped = "no new quote, no new status" }, "same status")
  t.eq(t.get_run(b.id).result, { skipped = "signed is announced elsewhere" }, "signed")
  t.eq(#t.calls(), 0, "no call")
end)

test("company 2's quote sent: emailed through company 2's own Mautic, with its user", function(t)
  fixture(t)
  services(t)
  local run = t.db_event("quote-changed", { op = "update", old = { id = 4, status = "draft" },
    new = { id = 4, status = "sent" } })
  t.eq(t.get_run(run.id).result, { notified = "sent", emailed = "j.keller@kunde.example" }, "result")
  t.eq(#t.calls(nil, "https://mautic.test"), 0, "nothing to company 1's Mautic")
  local m = t.calls(nil, "https://mautic.nordwind.test")
  t.eq(#m, 3, "find, create, send")
  t.contains(m[3].url, "/api/emails/32/contact/71/send", "company 2's template")
  for _, c in ipairs(m) do
    t.eq(c.headers["authorization"], "Basic " .. crypto.base64("nordwind:pw-nordwind"), "its user: " .. c.url)
  end
end)

test("company 2 without its Mautic URL set: a dead run naming it, no email through company 1's Mautic", function(t)
  fixture(t)
  services(t)
  t.env { NORDWIND_MAUTIC_URL = "" }
  local run = t.db_event("quote-changed", { op = "update", old = { id = 4, status = "draft" },
    new = { id = 4, status = "sent" } })
  t.eq(run.state, "dead", "no retry: a setting to fix")
  t.contains(run.error, "company 2 (Nordwind Consulting): NORDWIND_MAUTIC_URL is not set", "the variable, the company")
  t.eq(#t.calls(nil, "mautic"), 0, "no Mautic call")
end)
