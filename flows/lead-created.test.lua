-- New leads, from the database or from a Mautic form (signed webhook): Mautic contact and nurturing
-- segment, Slack, the sales team's email, an analytics event; a second form of the same person only
-- updates its lead.
local crypto = require "rill.crypto"
local json = require "rill.json"

local SECRET = "mautic-webhook-secret"
local PATH = "/api/mautic/webhook"

local function services(t)
  t.env {
    MAUTIC_WEBHOOK_SECRET = SECRET,
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test",
    SMTP_URL = "smtp://mail.test:587",
    -- company 2's own Mautic (companies.mautic_*_env)
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind",
  }
  for _, site in ipairs { "https://mautic.test", "https://mautic.nordwind.test" } do
    t.stub("GET", site .. "/api/contacts", { json = { total = "0", contacts = {} } })
    t.stub("POST", site .. "/api/contacts/new", { status = 201, json = { contact = { id = 900 } } })
    t.stub("PATCH", site .. "/api/contacts/", function(call)
      return { json = { contact = { id = tonumber(call.url:match("contacts/(%d+)/edit")) } } }
    end)
    t.stub("POST", site .. "/api/segments/", { json = { success = 1 } })
  end
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
  t.stub("MAIL", "smtp://mail.test", { status = 250 })
end

local function fixture(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
end

-- the demo's forms: 2 is Atelier Lumen's (company 1), 5 Nordwind's (company 2); 9 is nobody's
local FORMS = { [1] = 2, [2] = 5, [9] = 9 }

local function form(company, email, extra)
  local results = { email = email, firstname = "Léa", lastname = "Roux",
                    company = "Roux SARL", message = "A quote for a shop, please" }
  for k, v in pairs(extra or {}) do results[k] = v end
  return { ["mautic.form_on_submit"] = { { submission = { id = 31, form = { id = FORMS[company], name = "Contact us" },
    lead = { id = 444 }, results = results }, timestamp = "2026-11-02T09:00:00+00:00" } },
    timestamp = "2026-11-02T09:00:00+00:00" }
end

local function deliver(t, payload, secret)
  local body = type(payload) == "string" and payload or json.encode(payload)
  local sig = crypto.base64(crypto.hmac_sha256(secret or SECRET, body))
  return t.webhook("POST", PATH, { body = body, headers = { ["Content-Type"] = "application/json",
    ["Webhook-Signature"] = sig } })
end

test("a lead inserted in the database: Mautic, nurturing segment, Slack, sales email, analytics", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = t.db_event("lead-created", { op = "insert", new = { id = 2, owner_company = 2, status = "qualified" } })
  t.eq(t.get_run(run.id).result, { welcomed = { 2 } }, "result")
  t.eq(#t.calls(nil, "https://mautic.test"), 0, "nothing to company 1's Mautic")
  t.eq(t.calls("POST", "mautic.nordwind.test/api/contacts/new")[1].json.email, "maja@schulz.example",
    "the contact, in company 2's Mautic")
  t.eq(#t.calls("POST", "mautic.nordwind.test/api/segments/22/contact/900/add"), 1, "company 2's nurturing segment")
  for _, c in ipairs(t.calls(nil, "mautic.nordwind.test")) do
    t.eq(c.headers["authorization"], "Basic " .. crypto.base64("nordwind:pw-nordwind"), "its user: " .. c.url)
  end
  t.eq(t.db.query("SELECT mautic_id FROM contacts WHERE id = 5")[1].mautic_id, 900, "Mautic id recorded")
  local slack = t.calls("POST", "slack.test")[1].json
  t.eq(slack.channel, "#nordwind", "company 2's channel")
  t.contains(slack.text, "New lead from referral: Maja Schulz, Schulz & Partner", "message")
  local mail = t.calls("MAIL")[1]
  t.eq(mail.to, { "<sales@nordwind.example>" }, "company 2's sales team")
  t.contains(mail.body, "From: Nordwind <quotes@nordwind.example>", "company 2's sender")
  local text = crypto.unbase64((mail.body:match("\r\n\r\n(.*)$"):gsub("%s", "")))
  t.contains(text, "Notes: Referred by Keller GmbH", "the lead's notes, in the text")
  local event = t.db.query("SELECT owner_company, name, properties FROM analytics_events")[1]
  t.eq({ event.owner_company, event.name, json.decode(event.properties) },
    { 2, "lead_created", { lead_id = 2, source = "referral" } }, "analytics")
end)

test("a company without a Slack channel: no message elsewhere (not the default channel), the rest done", function(t)
  fixture(t)
  services(t)
  t.env { SLACK_CHANNEL = "#payments-review" } -- the default channel, for payments no company claims
  t.db.exec("UPDATE companies SET slack_channel = NULL WHERE id = 2")
  t.now("2026-11-02T09:00:00Z")
  local run = t.db_event("lead-created", { op = "insert", new = { id = 2, owner_company = 2, status = "qualified" } })
  t.eq(t.get_run(run.id).state, "succeeded", "run")
  t.eq(t.calls("POST", "slack.test"), {}, "company 2's lead posted nowhere")
  t.eq(t.calls("MAIL")[1].to, { "<sales@nordwind.example>" }, "the sales team still told")
end)

test("a Mautic form: contact and lead created, then welcomed; the same person again only updates", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(deliver(t, form(1, "Lea.Roux@Example.com")).status, 202, "accepted")
  local run = t.runs("lead-created")[1]
  t.eq(run.state, "succeeded", "run")
  local lead = t.db.query("SELECT l.id, l.source, l.status, l.owner_company, c.email, c.mautic_id, c.organization "
    .. "FROM leads l JOIN contacts c ON c.id = l.contact_id WHERE c.email = 'lea.roux@example.com'")
  t.eq(#lead, 1, "one lead")
  t.eq(lead[1], { id = 3, source = "mautic", status = "new", owner_company = 1, email = "lea.roux@example.com",
    mautic_id = 444, organization = "Roux SARL" }, "the lead and its contact")
  t.eq(run.result, { welcomed = { 3 }, updated = {}, refused = {} }, "result")
  t.eq(#t.calls("PATCH", "mautic.test/api/contacts/444/edit"), 1, "the Mautic contact updated, not created")
  t.eq(#t.calls("POST", "mautic.test/api/segments/21/contact/444/add"), 1, "company 1's segment")
  t.eq(t.calls("MAIL")[1].to, { "<ventes@lumen.example>" }, "company 1's sales team")

  t.advance("1h")
  t.eq(deliver(t, form(1, "lea.roux@example.com", { message = "Any news?" })).status, 202, "again")
  local again = t.runs("lead-created")[2]
  t.eq(again.result, { welcomed = {}, updated = { 3 }, refused = {} }, "updated only")
  t.eq(t.db.query("SELECT notes FROM leads WHERE id = 3")[1].notes, "Mautic form: Contact us: Any news?", "notes")
  t.eq(#t.calls("POST", "slack.test"), 1, "no second Slack message")
  t.eq(#t.calls("MAIL"), 1, "no second email")
end)

test("Mautic webhook: bad signature 401; not JSON 400; no company or email, a dead run saying why", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.eq(deliver(t, form(1, "a@example.com"), "other-secret").status, 401, "another secret")
  t.eq(t.webhook("POST", PATH, { json = form(1, "a@example.com") }).status, 401, "unsigned")
  t.eq(#t.runs("lead-created"), 0, "nothing stored")
  t.eq(deliver(t, "{oops").status, 400, "not JSON")
  t.eq(deliver(t, form(1, nil)).status, 202, "accepted")
  local run = t.runs("lead-created")[1]
  t.eq(run.state, "dead", "dead")
  t.contains(run.error, "needs the form's id and an email field", "why")
  deliver(t, form(9, "b@example.com"))
  t.contains(t.runs("lead-created")[2].error, "Mautic form 9 is the form of no company", "a form of no company")
  t.eq(#t.calls(), 0, "no call")
end)

test("a field of the form naming another company changes nothing: the form's id decides", function(t)
  fixture(t)
  services(t)
  deliver(t, form(1, "c@example.com", { owner_company = "2" }))
  t.eq(t.db.query("SELECT l.owner_company FROM leads l JOIN contacts c ON c.id = l.contact_id "
    .. "WHERE c.email = 'c@example.com'")[1].owner_company, 1, "the lead is the form's company's")
end)

test("other Mautic events are ignored", function(t)
  fixture(t)
  services(t)
  t.now("2026-11-02T09:00:00Z")
  deliver(t, { ["mautic.lead_post_save_update"] = { { contact = { id = 1 } } } })
  t.eq(t.runs("lead-created")[1].result, { ignored = "not a form submission" }, "ignored")
end)

test("company 2 without its Mautic user set: a dead run naming it, nothing through company 1's Mautic", function(t)
  fixture(t)
  services(t)
  t.env { NORDWIND_MAUTIC_USER = "" }
  local run = t.db_event("lead-created", { op = "insert", new = { id = 2, owner_company = 2, status = "qualified" } })
  t.eq(run.state, "dead", "no retry: a setting to fix")
  t.contains(run.error, "company 2 (Nordwind Consulting): NORDWIND_MAUTIC_USER is not set", "the variable, the company")
  t.eq(#t.calls(nil, "mautic"), 0, "no Mautic call")
end)
