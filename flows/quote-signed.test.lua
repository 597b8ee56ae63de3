-- The DocuSeal webhook of a signature: only a signed, fresh request gets in; the quote is signed once,
-- with its deposit invoice and campaign, however often DocuSeal delivers it. Demo data: quote 2 (company
-- 1, deposit 30%, signed campaign 12) is sent, contact 2 (Hugo Bernard).
local crypto = require "rill.crypto"
local json = require "rill.json"
local http = require "rill.http"

local SECRET = "whsec_quote_signed_test"
local PATH = "/api/integrations/docuseal/webhook"

local function services(t)
  t.env {
    DOCUSEAL_WEBHOOK_SECRET = SECRET,
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    INVOICENINJA_URL = "https://ninja.test", INVOICENINJA_TOKEN = "in-token",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test",
    -- company 2 (companies.*_env): its own Mautic, its own token in the same Invoice Ninja
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind", NORDWIND_INVOICENINJA_TOKEN = "in-nordwind",
    NORDWIND_DOCUSEAL_URL = "https://sign.nordwind.test/api", NORDWIND_DOCUSEAL_TOKEN = "ds-nordwind",
  }
  t.stub("GET", "https://mautic.nordwind.test/api/contacts", { json = { total = "0", contacts = {} } })
  t.stub("POST", "https://mautic.nordwind.test/api/contacts/new", { status = 201, json = { contact = { id = 71 } } })
  t.stub("POST", "https://mautic.nordwind.test/api/campaigns/", { json = { success = 1 } })
  t.stub("GET", "https://mautic.test/api/contacts", { json = { total = "1", contacts = { ["8"] = { id = 8 } } } })
  t.stub("POST", "https://mautic.test/api/campaigns/", { json = { success = 1 } })
  t.stub("POST", "https://ninja.test/api/v1/clients", { json = { data = { id = "cl2" } } })
  t.stub("GET", "https://ninja.test/api/v1/invoices", { json = { data = {} } }) -- no deposit invoice made yet
  t.stub("POST", "https://ninja.test/api/v1/invoices", function(call)
    return { json = { data = { id = "dep1", number = call.json.number, amount = call.json.line_items[1].cost } } }
  end)
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
end

local function fixture(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("UPDATE quotes SET docuseal_submission_id = '55' WHERE id = 2")
end

local function request(t, payload, opts)
  opts = opts or {}
  local body = type(payload) == "string" and payload or json.encode(payload)
  local ts = string.format("%d", opts.at or t.now())
  local sig = crypto.hex(crypto.hmac_sha256(opts.secret or SECRET, ts .. "." .. body))
  return t.webhook("POST", PATH, { body = body, headers = {
    ["Content-Type"] = "application/json", ["X-Docuseal-Signature"] = ts .. "." .. sig } })
end

local function completed(submission_id)
  return { event_type = "form.completed", timestamp = "2026-11-02T09:00:00Z",
    data = { id = 3, submission_id = submission_id, email = "hugo@bernard-archi.example", status = "completed",
             submission = { id = submission_id, status = "completed" } } }
end

test("a signature: quote signed, signed campaign, deposit invoice sent and recorded, Slack", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, completed(55)).status, 202, "accepted")
  local run = t.runs("quote-signed")[1]
  t.eq(run.state, "succeeded", "run")
  t.eq(run.result, { signed = "D-2026-002", deposit_invoice = "D-2026-002-DEP", deposit = 705 }, "30% of 2350")
  local q = t.db.query("SELECT status, signed_at FROM quotes WHERE id = 2")[1]
  t.eq(q, { status = "signed", signed_at = "2026-11-02T09:00:00Z" }, "the quote")
  t.eq(#t.calls("POST", "mautic.test/api/campaigns/12/contact/8/add"), 1, "company 1's signed campaign")
  local inv = t.calls("POST", "ninja.test/api/v1/invoices")[1]
  t.contains(inv.url, "mark_sent=true", "marked sent")
  t.eq({ inv.json.client_id, inv.json.number, inv.json.line_items[1].cost }, { "cl2", "D-2026-002-DEP", 705 },
    "the deposit invoice")
  t.eq(t.db.query("SELECT kind, amount, status, quote_id, invoiceninja_id FROM invoices WHERE number = $1",
    "D-2026-002-DEP")[1], { kind = "deposit", amount = 705, status = "sent", quote_id = 2, invoiceninja_id = "dep1" },
    "recorded in invoices")
  local slack = t.calls("POST", "slack.test")[1].json
  t.eq(slack.channel, "#lumen-sales", "company 1's channel")
  t.contains(slack.text, "Quote D-2026-002 signed by Hugo Bernard", "the message")
  -- the event other flows react to (big-deal-alert): the quote, its company, its signer
  local signed = t.events("quote.signed")
  t.eq(#signed, 1, "quote.signed emitted")
  t.eq({ signed[1].data.quote_id, signed[1].data.amount, signed[1].data.sales_channel, signed[1].data.signed_by },
    { 2, 2350, "#lumen-sales", "Hugo Bernard" }, "the event's data")
end)

test("beside Directus (DIRECTUS_URL): the deposit invoice is created through Directus's API, once", function(t)
  fixture(t)
  services(t)
  t.env { DIRECTUS_URL = "https://directus.test", DIRECTUS_TOKEN = "rill-token" }
  t.stub("GET", "https://directus.test/items/invoices", { json = { data = {} } }) -- not made yet
  t.stub("POST", "https://directus.test/items/invoices", { json = { data = { id = 90 } } })
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, completed(55)).status, 202, "accepted")
  t.eq(t.runs("quote-signed")[1].state, "succeeded", "run")
  local made = t.calls("POST", "directus.test/items/invoices")
  t.eq(#made, 1, "one invoice created in Directus")
  t.eq(made[1].headers["authorization"], "Bearer rill-token", "as rill's Directus user")
  t.eq({ made[1].json.number, made[1].json.kind, made[1].json.amount, made[1].json.status, made[1].json.quote_id,
    made[1].json.invoiceninja_id }, { "D-2026-002-DEP", "deposit", 705, "sent", 2, "dep1" }, "its fields")
  t.contains(t.calls("GET", "directus.test/items/invoices")[1].url, "D-2026-002-DEP", "looked up by its number first")
  t.eq(#t.db.query("SELECT id FROM invoices WHERE number = 'D-2026-002-DEP'"), 0, "no SQL insert beside it")

  -- a retry of the step after Directus made it (its answer lost): found, not made again
  t.db.exec("UPDATE quotes SET status = 'sent' WHERE id = 2")
  t.stub("GET", "https://directus.test/items/invoices", { json = { data = { { id = 90 } } } })
  t.advance("1m")
  t.eq(request(t, completed(55)).status, 202, "again")
  t.eq(#t.calls("POST", "directus.test/items/invoices"), 1, "still one invoice in Directus")
end)

test("the same signature delivered twice: one deposit invoice, one campaign", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, completed(55)).status, 202, "first")
  t.advance("1m")
  t.eq(request(t, completed(55)).status, 202, "second")
  local runs = t.runs("quote-signed")
  t.eq(#runs, 2, "two runs")
  t.eq(runs[2].result, { already = "signed", quote = "D-2026-002" }, "the second finds it done")
  t.eq(#t.calls("POST", "ninja.test/api/v1/invoices"), 1, "one deposit invoice")
  t.eq(#t.calls("POST", "mautic.test/api/campaigns"), 1, "one campaign")
  t.eq(#t.calls("POST", "slack.test"), 1, "one message")
end)

test("a company without a Slack channel: signed and invoiced, posted nowhere (not the default channel)", function(t)
  fixture(t)
  services(t)
  t.env { SLACK_CHANNEL = "#payments-review" }
  t.db.exec("UPDATE companies SET slack_channel = NULL WHERE id = 1")
  t.now("2026-11-02T09:00:00Z")
  request(t, completed(55))
  local run = t.runs("quote-signed")[1]
  t.eq(run.state, "succeeded", "run")
  t.eq(run.result.deposit_invoice, "D-2026-002-DEP", "the deposit invoice")
  t.eq(t.calls("POST", "slack.test"), {}, "no message")
end)

test("the deposit is rounded to the cent, half up: 30% of 128.45 is 38.54 (38.535), not 38.53", function(t)
  fixture(t)
  services(t)
  t.db.exec("UPDATE quotes SET amount = 128.45 WHERE id = 2")
  t.now("2026-11-02T09:00:00Z")
  request(t, completed(55))
  t.eq(t.calls("POST", "ninja.test/api/v1/invoices")[1].json.line_items[1].cost, 38.54, "the deposit invoiced")
  t.eq(t.runs("quote-signed")[1].result.deposit, 38.54, "the deposit recorded")
end)

test("a deposit invoice made but its answer lost: the retry finds it by its number, makes no second one", function(t)
  fixture(t)
  services(t)
  local made = {}
  t.stub("GET", "https://ninja.test/api/v1/invoices", function(call)
    local number = call.url:match("number=([^&]+)")
    for _, inv in ipairs(made) do
      if http.encode({ n = inv.number }):sub(3) == number then return { json = { data = { inv } } } end
    end
    return { json = { data = {} } }
  end)
  t.stub("POST", "https://ninja.test/api/v1/invoices", function(call)
    made[#made + 1] = { id = "dep" .. #made + 1, client_id = call.json.client_id, number = call.json.number,
      amount = call.json.line_items[1].cost }
    if #made == 1 then return { status = 504, body = "gateway timeout" } end -- made, the answer lost
    return { json = { data = made[#made] } }
  end)
  t.now("2026-11-02T09:00:00Z")
  request(t, completed(55))
  t.advance("1m") -- the retry
  local run = t.runs("quote-signed")[1]
  t.eq(run.state, "succeeded", "the retried run")
  t.eq(#made, 1, "one deposit invoice in Invoice Ninja")
  t.eq(t.db.query("SELECT invoiceninja_id, amount FROM invoices WHERE number = 'D-2026-002-DEP'")[1],
    { invoiceninja_id = "dep1", amount = 705 }, "the one made, recorded")
end)

test("a signature on an expired quote makes no invoice and asks the team", function(t)
  fixture(t)
  services(t)
  t.db.exec("UPDATE quotes SET status = 'expired' WHERE id = 2")
  t.now("2026-11-02T09:00:00Z")
  request(t, completed(55))
  t.eq(t.runs("quote-signed")[1].result, { already = "expired", quote = "D-2026-002" }, "result")
  t.eq(#t.calls("POST", "ninja.test"), 0, "no invoice")
  t.contains(t.calls("POST", "slack.test")[1].json.text, "please decide", "the team asked")
end)

test("bad signature, stale timestamp: 401, nothing stored", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, completed(55), { secret = "whsec_other" }).status, 401, "another secret")
  t.eq(request(t, completed(55), { at = t.now() - 600 }).status, 401, "ten minutes old")
  t.eq(t.webhook("POST", PATH, { json = completed(55) }).status, 401, "unsigned")
  t.eq(#t.runs("quote-signed"), 0, "nothing stored")
end)

test("malformed: not JSON is a 400; no submission id is a dead run saying why", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, "{not json").status, 400, "not JSON")
  t.eq(request(t, { event_type = "form.completed", data = { email = "x@example.com" } }).status, 202, "accepted")
  local run = t.runs("quote-signed")[1]
  t.eq(run.state, "dead", "dead at once")
  t.contains(run.error, "without data.submission_id", "the reason")
  t.eq(#t.calls(), 0, "no call")
end)

test("other events are ignored; an unknown submission is ignored", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  request(t, { event_type = "form.viewed", data = { submission_id = 55 } })
  request(t, completed(999))
  local runs = t.runs("quote-signed")
  t.eq(runs[1].result, { ignored = "form.viewed" }, "a view")
  t.eq(runs[2].result, { ignored = "no quote for submission 999" }, "not ours")
  t.eq(t.db.query("SELECT status FROM quotes WHERE id = 2")[1].status, "sent", "unchanged")
end)

test("an older DocuSeal (no signature, a secret header named in DOCUSEAL_WEBHOOK_HEADER) is accepted with it only", function(t)
  fixture(t)
  services(t)
  t.env { DOCUSEAL_WEBHOOK_HEADER = "X-Docuseal-Secret" }
  local body = json.encode { event_type = "form.completed", timestamp = "2026-11-25T10:00:00Z",
    data = { id = 9, submission_id = 55, status = "completed" } }
  local function send(secret)
    return t.webhook("POST", PATH, { body = body, headers = { ["Content-Type"] = "application/json",
      ["X-Docuseal-Secret"] = secret } })
  end
  t.eq(send("not-it").status, 401, "another secret")
  t.eq(#t.runs("quote-signed"), 0, "nothing stored")
  t.eq(send(SECRET).status, 202, "the configured secret")
  t.eq(t.runs("quote-signed")[1].state, "succeeded", "the quote signed")
end)

test("company 2's signature: its own Mautic and its own Invoice Ninja token, for every call", function(t)
  fixture(t)
  services(t)
  t.db.exec("UPDATE quotes SET docuseal_submission_id = '66' WHERE id = 4") -- Q-2026-101, company 2's
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, completed(66)).status, 202, "accepted")
  local run = t.runs("quote-signed")[1]
  t.eq(run.result, { signed = "Q-2026-101", deposit_invoice = "Q-2026-101-DEP", deposit = 3840 }, "40% of 9600")
  t.eq(#t.calls(nil, "https://mautic.test"), 0, "nothing to company 1's Mautic")
  local m = t.calls(nil, "https://mautic.nordwind.test")
  t.eq(#m, 3, "find, create, campaign: on company 2's Mautic")
  t.contains(m[3].url, "/api/campaigns/14/contact/71/add", "its signed campaign")
  for _, c in ipairs(m) do
    t.eq(c.headers["authorization"], "Basic " .. crypto.base64("nordwind:pw-nordwind"), "its user: " .. c.url)
  end
  local ninja = t.calls(nil, "ninja.test")
  t.eq(#ninja, 3, "client, look for the deposit, deposit invoice")
  for _, c in ipairs(ninja) do t.eq(c.headers["x-api-token"], "in-nordwind", "its token: " .. c.url) end
end)

test("company 2 without its Mautic password set: a dead run naming it, no call with another account", function(t)
  fixture(t)
  services(t)
  t.env { NORDWIND_MAUTIC_PASSWORD = "" }
  t.db.exec("UPDATE quotes SET docuseal_submission_id = '66' WHERE id = 4")
  t.now("2026-11-02T09:00:00Z")
  t.eq(request(t, completed(66)).status, 202, "accepted")
  local run = t.runs("quote-signed")[1]
  t.eq(run.state, "dead", "no retry: a setting to fix")
  t.contains(run.error, "company 2 (Nordwind Consulting): NORDWIND_MAUTIC_PASSWORD is not set", "the variable, the company")
  t.eq(#t.calls(nil, "mautic"), 0, "no Mautic call")
  t.eq(#t.calls(nil, "ninja"), 0, "no deposit invoice")
end)

test("two companies' DocuSeals both have a submission 55: the signer's external_id names the quote", function(t)
  fixture(t)
  services(t)
  t.db.exec("UPDATE quotes SET docuseal_submission_id = '55' WHERE id = 4") -- company 2's, in its own DocuSeal
  t.now("2026-11-02T09:00:00Z")
  local signed = completed(55)
  signed.data.external_id = "quote-4"
  t.eq(request(t, signed).status, 202, "accepted")
  t.eq(t.runs("quote-signed")[1].result.signed, "Q-2026-101", "company 2's quote signed")
  t.eq(t.db.query("SELECT status FROM quotes WHERE id = 2")[1].status, "sent", "company 1's quote 55 untouched")

  t.db.exec("UPDATE quotes SET status = 'sent', docuseal_submission_id = '56' WHERE id IN (2, 4)")
  t.eq(request(t, completed(56)).status, 202, "accepted") -- no external_id
  local run = t.runs("quote-signed")[2]
  t.eq(run.state, "dead", "neither quote signed")
  t.contains(run.error, "DocuSeal submission 56 is on 2 quotes", "why")
  t.eq(#t.db.query("SELECT id FROM quotes WHERE status = 'signed'"), 0, "none signed")
end)
