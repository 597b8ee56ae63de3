-- Overdue invoices climb their company's reminder ladder one step at a time, each step once; the
-- last hands the file to the collection agency.
local json = require "rill.json"
local crypto = require "rill.crypto"

-- a mail's text (the connector sends it base64-encoded)
local function text_of(mail)
  return crypto.unbase64((mail.body:match("\r\n\r\n(.*)$") or ""):gsub("%s", "")) or ""
end

-- the demo companies and contacts, no quotes (other flows' cron ticks fire too as the clock moves
-- on, and find nothing to do), and the invoices each test adds
local function setup(t, now)
  t.now(now, "Europe/Paris")
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("DELETE FROM invoices")
  t.db.exec("DELETE FROM quotes")
  t.env { SMTP_URL = "smtp://mail.test", SMTP_STARTTLS = "try", LP_AGENCY_URL = "https://lp.test/api/files",
    LP_AGENCY_TOKEN = "lp-token", SLACK_BOT_TOKEN = "xoxb-test", SLACK_API_URL = "https://slack.test/api" }
  t.stub("MAIL", "smtp://mail.test", { status = 250 })
  t.stub("POST", "https://lp.test/api/files", { status = 201, json = { id = "LP-77", status = "received" } })
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
end

local function invoice(t, id, company, contact, number, due_date, status)
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, amount_paid, currency, status,
    reference, issued_at, due_date) VALUES ($1, $2, $3, $4, 1500, 200, 'EUR', $5, $4, '2026-10-01', $6)]],
    id, company, contact, number, status or "sent", due_date)
end

local function mails_to(t, address)
  local out = {}
  for _, c in ipairs(t.calls("MAIL")) do
    if c.to[1] == "<" .. address .. ">" then out[#out + 1] = c end
  end
  return out
end

test("over forty days an overdue invoice gets its three reminders on days 3, 10 and 30, then goes to the agency", function(t)
  setup(t, "2026-11-02T08:00:00")
  invoice(t, 1, 1, 1, "F-1", "2026-11-01")                     -- Atelier Lumen, ladder 3,10,30
  invoice(t, 2, 1, 2, "F-2", "2026-11-01", "paid")             -- paid: never reminded
  invoice(t, 3, 1, 2, "F-3", "2026-12-24")                     -- not due yet
  t.advance("40d")

  local steps = t.db.query("SELECT invoice_id, step, sent_at FROM payment_reminders ORDER BY step")
  t.eq(#steps, 3, "three reminders")
  t.eq({ steps[1].sent_at:sub(1, 10), steps[2].sent_at:sub(1, 10), steps[3].sent_at:sub(1, 10) },
    { "2026-11-04", "2026-11-11", "2026-12-01" }, "3, 10 and 30 days after the due date")
  for _, s in ipairs(steps) do t.eq(s.invoice_id, 1, "for the overdue invoice only") end

  local mails = mails_to(t, "claire.martin@client.example")
  t.eq(#mails, 3, "three mails to the client")
  t.eq(mails[1].from, "<devis@lumen.example>", "from the company's sender")
  t.contains(mails[1].body, "Subject: Reminder: invoice F-1 is overdue", "the first reminder")
  t.contains(mails[1].body, "From: Atelier Lumen <devis@lumen.example>", "signed by the company")
  t.contains(mails[2].body, "Subject: Reminder 2: invoice F-1 is overdue", "the second")
  t.contains(mails[3].body, "Subject: Final notice: invoice F-1 handed to our collection agency", "the last")
  t.contains(text_of(mails[3]), "Please transfer 1300.00 EUR with the reference F-1", "the amount still due")
  t.eq(#mails_to(t, "hugo@bernard-archi.example"), 0, "nothing for the paid or not yet due invoices")

  local agency = t.calls("POST", "lp.test")
  t.eq(#agency, 1, "handed over once")
  t.eq(agency[1].headers.authorization, "Bearer lp-token", "with the agency's token")
  t.eq({ agency[1].json.client_reference, agency[1].json.amount_due, agency[1].json.days_overdue },
    { "1", 1300, 30 }, "the file")
  local inv = t.db.query("SELECT status, collection_status FROM invoices WHERE id = 1")[1]
  t.eq({ inv.status, inv.collection_status }, { "collection", "handed_over" }, "in collection")
  local slack = t.calls("POST", "slack.test")
  local told = 0
  for _, c in ipairs(slack) do
    if c.json.text:find("handed to the collection agency", 1, true) then
      told = told + 1
      t.eq(c.json.channel, "#lumen-sales", "the company's channel")
    end
  end
  t.eq(told, 1, "Slack told once")
  local audit = t.db.query("SELECT details FROM audit_log WHERE action = 'collection_handover'")
  t.eq(json.decode(audit[1].details).file_id, "LP-77", "the agency's file id audited")
  -- (old finished runs are pruned by the store's retention as the clock moves: check the ones kept)
  local runs = t.runs("payment-reminders")
  for _, r in ipairs(runs) do t.eq(r.state, "succeeded", "every daily run") end
  t.eq(runs[#runs].payload.scheduled:sub(1, 10), "2026-12-11", "the last one today, the 40th day")
end)

test("overdue counts in days of the company's timezone: not yet the third day in Honolulu", function(t)
  setup(t, "2026-11-04T09:00:00") -- 08:00 UTC: the 4th in Paris, still the 3rd (22:00) in Honolulu
  t.db.exec("UPDATE companies SET reminder_ladder = '3,10,30', timezone = 'Pacific/Honolulu' WHERE id = 2")
  invoice(t, 1, 1, 1, "F-1", "2026-11-01") -- Atelier Lumen, Paris: 3 days overdue
  invoice(t, 4, 2, 4, "N-1", "2026-11-01") -- Nordwind, in Honolulu here: 2 days overdue
  local run = t.cron("payment-reminders")
  t.eq(t.get_run(run.id).state, "succeeded", "run")
  t.eq(#mails_to(t, "claire.martin@client.example"), 1, "Lumen's client reminded on its third day")
  t.eq(#mails_to(t, "j.keller@kunde.example"), 0, "Nordwind's client not yet: its second day")
  t.eq(#t.db.query("SELECT * FROM payment_reminders WHERE invoice_id = 4"), 0, "no step claimed for it")
end)

test("never twice for one step: a second run the same day, or a step already claimed, sends nothing", function(t)
  setup(t, "2026-11-20T09:30:00")
  invoice(t, 1, 1, 1, "F-1", "2026-11-08")   -- 12 days late: step 2 reached (3,10,30)
  invoice(t, 2, 2, 4, "R-1", "2026-11-10")   -- Nordwind, ladder 5,15,45: 10 days, step 1
  invoice(t, 3, 2, 5, "R-2", "2026-11-13")   -- 7 days: step 1, but another instance claimed it already
  t.db.exec("INSERT INTO payment_reminders (invoice_id, step, sent_at) VALUES (3, 1, '2026-11-20T08:00:00Z')")

  local first = t.cron("payment-reminders")
  t.eq(t.get_run(first.id).result.reminders, { { invoice = "F-1", step = 2, final = false },
    { invoice = "R-1", step = 1, final = false } }, "what the run sent")
  t.eq(#t.calls("MAIL"), 2, "two mails")
  t.eq(#mails_to(t, "claire.martin@client.example"), 1, "one to Lumen's client: step 2 only, not the missed step 1")
  t.contains(mails_to(t, "j.keller@kunde.example")[1].body, "From: Nordwind <quotes@nordwind.example>",
    "Nordwind's sender for Nordwind's client")

  t.advance("1h")
  local second = t.run("payment-reminders", {}) -- by hand, the same day
  t.eq(second.state, "succeeded", "the second run")
  t.eq(second.result.reminders, {}, "finds nothing to send")
  t.eq(#t.calls("MAIL"), 2, "no mail sent twice")
end)

test("a mistyped ladder stops the run with a message naming the company", function(t)
  setup(t, "2026-11-20T09:30:00")
  t.db.exec("UPDATE companies SET reminder_ladder = '10,3' WHERE id = 2")
  local run = t.get_run(t.cron("payment-reminders").id)
  t.ok(run.state ~= "succeeded", "not a success")
  t.contains(run.error, "company 2: reminder_ladder \"10,3\" must be increasing", "the reason")
  t.eq(#t.calls("MAIL"), 0, "nothing sent")
end)

test("a step another instance claims between this run's scan and its claim is not sent by this run", function(t)
  setup(t, "2026-11-20T09:30:00")
  invoice(t, 1, 1, 1, "F-1", "2026-11-08")   -- Lumen, step 2
  invoice(t, 2, 2, 4, "R-1", "2026-11-10")   -- Nordwind, step 1
  -- while this run mails F-1's reminder, another instance claims R-1's step 1 (and sends it itself)
  t.stub("MAIL", "smtp://mail.test", function(call)
    if call.to[1] == "<claire.martin@client.example>" then
      t.db.exec("INSERT INTO payment_reminders (invoice_id, step, sent_at) VALUES (2, 1, '2026-11-20T08:30:01Z')")
    end
    return { status = 250 }
  end)
  local run = t.get_run(t.cron("payment-reminders").id)
  t.eq(run.result.reminders, { { invoice = "F-1", step = 2, final = false } }, "only the step this run claimed")
  t.eq(#mails_to(t, "j.keller@kunde.example"), 0, "R-1's reminder left to the instance that claimed it")
  t.eq(t.db.query("SELECT sent_at FROM payment_reminders WHERE invoice_id = 2")[1].sent_at, "2026-11-20T08:30:01Z",
    "its claim untouched")
end)

test("an invoice paid between this run's scan and its claim gets no reminder and is not handed over", function(t)
  setup(t, "2026-11-20T09:30:00")
  invoice(t, 1, 1, 1, "F-1", "2026-11-08")   -- Lumen, step 2
  invoice(t, 2, 2, 4, "R-1", "2026-10-01")   -- Nordwind, 50 days late: its last step (5,15,45), the agency
  -- while this run mails F-1's reminder, the client of R-1 pays it (payment-received marks it paid)
  t.stub("MAIL", "smtp://mail.test", function(call)
    if call.to[1] == "<claire.martin@client.example>" then
      t.db.exec("UPDATE invoices SET status = 'paid', amount_paid = amount WHERE id = 2")
    end
    return { status = 250 }
  end)
  local run = t.get_run(t.cron("payment-reminders").id)
  t.eq(run.result.reminders, { { invoice = "F-1", step = 2, final = false } }, "only the invoice still unpaid")
  t.eq(#mails_to(t, "j.keller@kunde.example"), 0, "no final notice for a paid invoice")
  t.eq(#t.calls("POST", "lp.test"), 0, "not handed to the collection agency")
  t.eq(t.db.query("SELECT status FROM invoices WHERE id = 2")[1].status, "paid", "still paid")
end)

test("a hand-over repeated after the agency got it (its answer lost) is taken as done: 409 and the first file", function(t)
  setup(t, "2026-11-20T09:30:00")
  invoice(t, 2, 2, 4, "R-1", "2026-10-01")   -- Nordwind, 50 days late: its last step, the agency
  local posts = 0
  t.stub("POST", "https://lp.test/api/files", function()
    posts = posts + 1
    if posts == 1 then return { status = 504, body = "upstream timed out" } end -- the agency filed it all the same
    return { status = 409, json = { error = "already handed over", id = "LP-77" } }
  end)
  local run = t.cron("payment-reminders")
  t.advance("10m") -- the retry
  local r = t.get_run(run.id)
  t.eq(r.state, "succeeded", "the retried run")
  t.eq(posts, 2, "handed over, then again on the retry")
  local inv = t.db.query("SELECT status, collection_status FROM invoices WHERE id = 2")[1]
  t.eq({ inv.status, inv.collection_status }, { "collection", "handed_over" }, "in collection")
  local audit = t.db.query("SELECT details FROM audit_log WHERE action = 'collection_handover'")
  t.eq(#audit, 1, "audited once")
  t.eq(json.decode(audit[1].details).file_id, "LP-77", "with the agency's first file")
  t.eq(#mails_to(t, "j.keller@kunde.example"), 1, "one final notice")
end)
