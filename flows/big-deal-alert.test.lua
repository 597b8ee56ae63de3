-- A quote over 10,000 EUR signed: the sales channel hears of it, once; a smaller one: nothing.
-- Demo data: quote 5 (D-2026-004, 14,800 EUR, company 1, channel #lumen-sales) is sent, signed by
-- Inès Petit; quote 2 (2,350 EUR) is below the threshold.
local crypto = require "rill.crypto"
local json = require "rill.json"

local SECRET = "whsec_big_deal_test"

local function services(t)
  t.env {
    DOCUSEAL_WEBHOOK_SECRET = SECRET,
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    INVOICENINJA_URL = "https://ninja.test", INVOICENINJA_TOKEN = "in-token",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test",
  }
  t.stub("GET", "https://mautic.test/api/contacts", { json = { total = "1", contacts = { ["8"] = { id = 8 } } } })
  t.stub("POST", "https://mautic.test/api/campaigns/", { json = { success = 1 } })
  t.stub("POST", "https://ninja.test/api/v1/clients", { json = { data = { id = "cl3" } } })
  t.stub("GET", "https://ninja.test/api/v1/invoices", { json = { data = {} } })
  t.stub("POST", "https://ninja.test/api/v1/invoices", function(call)
    return { json = { data = { id = "dep5", number = call.json.number, amount = call.json.line_items[1].cost } } }
  end)
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
end

-- DocuSeal's signed webhook for the signer of quote `id` (external_id quote-ID).
local function sign(t, id)
  local body = json.encode { event_type = "form.completed", timestamp = "2026-11-02T09:00:00Z",
    data = { id = 9, submission_id = 500 + id, external_id = "quote-" .. id, status = "completed",
             submission = { id = 500 + id, status = "completed" } } }
  local ts = string.format("%d", t.now())
  local sig = crypto.hex(crypto.hmac_sha256(SECRET, ts .. "." .. body))
  return t.webhook("POST", "/api/integrations/docuseal/webhook", { body = body, headers = {
    ["Content-Type"] = "application/json", ["X-Docuseal-Signature"] = ts .. "." .. sig } })
end

local function big_deal_posts(t)
  local out = {}
  for _, c in ipairs(t.calls("POST", "slack.test")) do
    if c.json.text:find("Big deal", 1, true) then out[#out + 1] = c.json end
  end
  return out
end

test("a signed quote over 10,000 EUR is announced to the company's sales channel, once", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(sign(t, 5).status, 202, "DocuSeal's webhook accepted")
  local signed = t.events("quote.signed")
  t.eq(#signed, 1, "quote-signed emitted quote.signed")
  t.eq({ signed[1].data.number, signed[1].data.amount }, { "D-2026-004", 14800 }, "the event's quote")
  local runs = t.runs("big-deal-alert")
  t.eq(#runs, 1, "one run of big-deal-alert")
  t.eq(runs[1].state, "succeeded", "its state")
  t.eq(runs[1].result, { announced = "D-2026-004", channel = "#lumen-sales" }, "its result")
  t.eq(runs[1].started_by.event, "quote.signed", "started by the event")
  local posts = big_deal_posts(t)
  t.eq(#posts, 1, "one Slack message")
  t.eq(posts[1].channel, "#lumen-sales", "the sales channel")
  t.contains(posts[1].text, "D-2026-004 (Showroom lighting installation), 14800 EUR, by Inès Petit", "the message")
  -- DocuSeal delivers it again: the quote is signed already, nothing is emitted or posted again
  t.advance("1m")
  t.eq(sign(t, 5).status, 202, "a second delivery")
  t.eq(#t.runs("big-deal-alert"), 1, "still one run")
  t.eq(#big_deal_posts(t), 1, "still one message")
end)

test("a signed quote of 10,000 EUR or less is not announced", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(sign(t, 2).status, 202, "quote 2 signed")
  t.eq(#t.events("quote.signed"), 1, "quote.signed emitted")
  local runs = t.runs("big-deal-alert")
  t.eq(#runs, 1, "the run the event started")
  t.eq(runs[1].result, { skipped = "2350 EUR is not over the threshold (10000)" }, "skipped: under the threshold")
  t.eq(#big_deal_posts(t), 0, "no Big deal message")
  -- exactly at the threshold: not over it
  local started = t.emit("quote.signed", { number = "X-1", amount = 10000, currency = "EUR", sales_channel = "#s" })
  t.eq(started[1].result, { skipped = "10000 EUR is not over the threshold (10000)" }, "10,000 EUR")
end)

test("an event from elsewhere starts it too (t.emit)", function(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local started = t.emit("quote.signed", { number = "Q-9", title = "Audit", amount = 25000, currency = "EUR",
    company = "Nordwind", sales_channel = "#nordwind", signed_by = "Jonas Keller" })
  t.eq(#started, 1, "one run started")
  t.eq(started[1].flow, "big-deal-alert", "the flow")
  t.eq(started[1].result, { announced = "Q-9", channel = "#nordwind" }, "announced")
  t.eq(#big_deal_posts(t), 1, "posted")
  local none = t.emit("quote.signed", { number = "Q-10", amount = 25000, currency = "USD", company = "Nordwind" })
  t.eq(#none, 0, "not in euros: no run (the trigger's match)")
end)

test("the threshold is a setting: raised to 20,000 EUR, a 14,800 EUR quote is not announced", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
  t.settings("big-deal-alert", { threshold = 20000 })
  t.now("2026-11-02T09:00:00Z")
  t.eq(sign(t, 5).status, 202, "quote 5 (14,800 EUR) signed")
  local runs = t.runs("big-deal-alert")
  t.eq(#runs, 1, "the run the event started")
  t.eq(runs[1].result, { skipped = "14800 EUR is not over the threshold (20000)" }, "under the raised threshold")
  t.eq(#big_deal_posts(t), 0, "no Big deal message")
end)
