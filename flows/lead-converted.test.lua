-- A converted lead gives the project manager one task and an email, tells the team, tags the contact
-- in Mautic and records an analytics event. Demo lead 1: company 1, contact 3 (Inès Petit).
local crypto = require "rill.crypto"

local function services(t)
  t.env {
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test",
    SMTP_URL = "smtp://mail.test:587",
    -- company 2's own Mautic (companies.mautic_*_env)
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind",
  }
  t.stub("PATCH", "https://mautic.test/api/contacts/", { json = { contact = { id = 66 } } })
  t.stub("PATCH", "https://mautic.nordwind.test/api/contacts/", { json = { contact = { id = 77 } } })
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
  t.stub("MAIL", "smtp://mail.test", { status = 250 })
end

local function convert(t)
  t.db.exec("UPDATE leads SET status = 'converted' WHERE id = 1")
  return t.db_event("lead-converted", { op = "update", old = { id = 1, status = "new" },
    new = { id = 1, status = "converted" } })
end

test("converted: a task for the project manager, an email, Slack, Mautic tag, analytics", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("UPDATE contacts SET mautic_id = 66 WHERE id = 3")
  services(t)
  t.now("2026-11-02T09:00:00Z")
  local run = convert(t)
  t.eq(t.get_run(run.id).result, { converted = 1, task = true }, "result")
  t.eq(t.db.query("SELECT owner_company, title, assignee_email, related_table, related_id, due_date, status FROM tasks")[1],
    { owner_company = 1, title = "Kick-off: Inès Petit", assignee_email = "projets@lumen.example",
      related_table = "leads", related_id = 1, due_date = "2026-11-04", status = "open" }, "the task")
  t.eq(t.db.query("SELECT converted_at FROM leads WHERE id = 1")[1].converted_at, "2026-11-02T09:00:00Z", "converted_at")
  t.eq(t.calls("MAIL")[1].to, { "<projets@lumen.example>" }, "the project manager mailed")
  t.eq(t.calls("POST", "slack.test")[1].json.channel, "#lumen-sales", "company 1's channel")
  t.eq(t.calls("PATCH", "mautic.test/api/contacts/66/edit")[1].json, { tags = { "client" } }, "tagged in Mautic")
  t.eq(t.db.query("SELECT name FROM analytics_events")[1].name, "lead_converted", "analytics")
end)

test("a company without a Slack channel: no message elsewhere (not the default channel), the task made", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
  t.env { SLACK_CHANNEL = "#payments-review" }
  t.db.exec("UPDATE companies SET slack_channel = NULL WHERE id = 1")
  t.now("2026-11-02T09:00:00Z")
  local run = convert(t)
  t.eq(t.get_run(run.id).state, "succeeded", "run")
  t.eq(t.calls("POST", "slack.test"), {}, "no message")
  t.eq(#t.db.query("SELECT * FROM tasks WHERE related_id = 1"), 1, "the task")
end)

test("converted again after a reopening: no second task", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
  convert(t)
  local again = convert(t)
  t.eq(t.get_run(again.id).result, { converted = 1, task = false }, "no new task")
  t.eq(t.db.query("SELECT count(*) AS n FROM tasks")[1].n, 1, "one task")
  t.eq(#t.calls("MAIL"), 1, "one email to the project manager")
  t.eq(#t.calls("PATCH", "mautic.test"), 0, "no Mautic id, no tag")
end)

test("the task's delay and the day it counts from are the company's: pm_task_days, timezone", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
  t.db.exec("UPDATE companies SET pm_task_days = 5, timezone = 'Pacific/Honolulu' WHERE id = 1")
  t.now("2026-11-02T09:00:00Z") -- still the 1st in Honolulu (23:00)
  local run = convert(t)
  t.eq(t.get_run(run.id).state, "succeeded", "run")
  t.eq(t.db.query("SELECT due_date FROM tasks")[1].due_date, "2026-11-06", "five days after the 1st, Honolulu's day")
  local body = t.calls("MAIL")[1].body
  local text = require("rill.crypto").unbase64((body:match("\r\n\r\n(.*)$") or ""):gsub("%s", ""))
  t.contains(text, "due 2026-11-06", "the email says so")
end)

test("other updates do nothing", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  local run = t.db_event("lead-converted", { op = "update", old = { id = 1, status = "new" },
    new = { id = 1, status = "qualified" } })
  t.eq(t.get_run(run.id).result, { skipped = "the lead's status did not become converted" }, "skipped")
  t.eq(#t.calls(), 0, "no call")
end)

test("company 2's lead converted: the contact tagged in company 2's own Mautic, with its user", function(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("UPDATE contacts SET mautic_id = 77 WHERE id = 5")
  services(t)
  t.now("2026-11-02T09:00:00Z")
  t.db.exec("UPDATE leads SET status = 'converted' WHERE id = 2")
  local run = t.db_event("lead-converted", { op = "update", old = { id = 2, status = "qualified" },
    new = { id = 2, status = "converted" } })
  t.eq(t.get_run(run.id).result, { converted = 2, task = true }, "result")
  t.eq(#t.calls(nil, "https://mautic.test"), 0, "nothing to company 1's Mautic")
  local tag = t.calls("PATCH", "https://mautic.nordwind.test/api/contacts/77/edit")
  t.eq(#tag, 1, "tagged in company 2's Mautic")
  t.eq(tag[1].headers["authorization"], "Basic " .. crypto.base64("nordwind:pw-nordwind"), "with its user")
end)
