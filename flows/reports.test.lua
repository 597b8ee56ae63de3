-- Every Monday morning (Paris), each company's week in its own Slack channel.

local function setup(t)
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.env { SLACK_BOT_TOKEN = "xoxb-test", SLACK_API_URL = "https://slack.test/api" }
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
end

test("Monday 08:00 in Paris, winter and summer time", function(t)
  t.now("2026-03-25T12:00:00", "Europe/Paris")
  t.eq(t.next_fire("reports"), "2026-03-30T08:00:00+02:00", "the Monday after the clocks went forward")
  t.now("2026-10-28T12:00:00", "Europe/Paris")
  t.eq(t.next_fire("reports"), "2026-11-02T08:00:00+01:00", "the Monday after they went back")
end)

test("each company gets its own figures for the past week in its own channel", function(t)
  t.now("2026-11-23T07:59:00", "Europe/Paris") -- a Monday, a minute before the report
  setup(t)
  -- Lumen's week: a quote sent, one signed, an invoice paid; one outside the week, another company's
  t.db.exec("UPDATE quotes SET status = 'sent', sent_at = '2026-11-18T10:00:00Z', valid_until = '2027-01-01' WHERE id = 1")
  t.db.exec([[INSERT INTO quotes (id, owner_company, contact_id, number, amount, status, sent_at, signed_at, valid_until)
    VALUES (10, 1, 2, 'D-9', 1000, 'signed', '2026-11-10T10:00:00Z', '2026-11-20T15:00:00Z', '2027-01-01'),
           (11, 1, 2, 'D-8', 700, 'signed', '2026-11-01T10:00:00Z', '2026-11-05T15:00:00Z', '2027-01-01')]])
  t.db.exec("UPDATE invoices SET status = 'paid', amount_paid = amount, paid_at = '2026-11-19T08:00:00Z' WHERE id = 3")
  t.db.exec("UPDATE invoices SET paid_at = '2026-11-19T08:00:00Z' WHERE id = 4")
  t.advance("2m")
  local runs = t.runs("reports")
  t.eq(#runs, 1, "one report run")
  t.eq(runs[1].state, "succeeded", "it ran")
  local posts = t.calls("POST", "slack.test")
  t.eq(#posts, 2, "one message per company")
  t.eq({ posts[1].json.channel, posts[2].json.channel }, { "#lumen-sales", "#nordwind" }, "each in its channel")
  local lumen, nordwind = posts[1].json.text, posts[2].json.text
  t.contains(lumen, "*Atelier Lumen: the week of 2026-11-16 to 2026-11-22*", "the week")
  t.contains(lumen, "• Quotes sent: 1 (4800.00 EUR)", "quotes sent")
  t.contains(lumen, "• Quotes signed: 1 (1000.00 EUR)", "signed in the week only")
  t.contains(lumen, "• Invoices paid: 1 (640.00 EUR)", "paid in the week")
  t.contains(lumen, "• Open invoices: 2 (2320.00 EUR)", "still open")
  t.contains(lumen, "• Overdue: 2 (2320.00 EUR)", "overdue")
  t.contains(nordwind, "• Invoices paid: 1 (3200.00 EUR)", "Nordwind's own payment")
  t.contains(nordwind, "• Quotes signed: 0 (0.00 EUR)", "nothing of Lumen's")
  t.contains(nordwind, "• Overdue: 1 (2750.00 EUR)", "Nordwind's overdue invoice")
end)

test("the week is the company's, in its timezone", function(t)
  t.now("2026-11-23T07:59:00", "Europe/Paris") -- a Monday; in Honolulu still Sunday the 22nd
  setup(t)
  t.db.exec("UPDATE companies SET timezone = 'Pacific/Honolulu' WHERE id = 2")
  t.advance("2m")
  local posts = t.calls("POST", "slack.test")
  t.eq(#posts, 2, "one message per company")
  t.contains(posts[1].json.text, "*Atelier Lumen: the week of 2026-11-16 to 2026-11-22*", "Paris's week")
  t.contains(posts[2].json.text, "*Nordwind Consulting: the week of 2026-11-15 to 2026-11-21*", "Honolulu's week")
end)

test("a Monday report missed while rill was down, caught up on Tuesday, covers the same week", function(t)
  t.now("2026-11-24T10:30:00", "Europe/Paris") -- rill started again on the Tuesday
  setup(t)
  t.db.exec("UPDATE invoices SET status = 'paid', amount_paid = amount, paid_at = '2026-11-23T09:00:00Z' WHERE id = 3")
  local run = t.cron("reports", { scheduled = "2026-11-23T08:00:00+01:00", missed = true })
  t.eq(run.state, "succeeded", "it ran")
  local lumen = t.calls("POST", "slack.test")[1].json.text
  t.contains(lumen, "*Atelier Lumen: the week of 2026-11-16 to 2026-11-22*", "the week that ended on Monday")
  t.contains(lumen, "• Invoices paid: 0 (0.00 EUR)", "Monday's payment belongs to the next report")
end)

test("amounts in another currency are summed apart, never added to the company's currency", function(t)
  t.now("2026-11-23T07:59:00", "Europe/Paris")
  setup(t)
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, amount_paid, currency, status,
    reference, issued_at, due_date) VALUES (20, 1, 2, 'F-CHF-1', 1000, 0, 'CHF', 'sent', 'F-CHF-1', '2026-11-01',
    '2026-11-15')]])
  t.db.exec([[INSERT INTO quotes (id, owner_company, contact_id, number, amount, currency, status, sent_at, valid_until)
    VALUES (20, 1, 2, 'D-CHF-1', 500, 'CHF', 'sent', '2026-11-18T10:00:00Z', '2027-01-01')]])
  t.advance("2m")
  local lumen = t.calls("POST", "slack.test")[1].json.text
  t.contains(lumen, "• Quotes sent: 1 (500.00 CHF)", "the CHF quote, in CHF")
  t.contains(lumen, "• Open invoices: 4 (2960.00 EUR + 1000.00 CHF)", "open: each currency its own total")
  t.contains(lumen, "• Overdue: 3 (2320.00 EUR + 1000.00 CHF)", "overdue: each currency its own total")
  t.contains(lumen, "• Quotes signed: 0 (0.00 EUR)", "none: in the company's currency")
end)
