-- The daily scan: demo quote 3 (company 1) is past its validity, quote 2 (company 1, 3 days' warning)
-- ends within 2 days, quote 4 (company 2, 2 days' warning) in 10 days. Demo dates are relative to the
-- day the fixture is loaded, so the clock is set first.
local function services(t)
  t.env { SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test", SMTP_URL = "smtp://mail.test:587" }
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
  t.stub("MAIL", "smtp://mail.test", { status = 250 })
end

local function setup(t)
  t.now("2026-11-16T07:00:00Z") -- 08:00 in Paris
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("DELETE FROM invoices") -- the payment flows' cron ticks then have nothing to send
  services(t)
end

local function mail_to(t, address)
  local out = {}
  for _, c in ipairs(t.calls("MAIL")) do
    if c.to[1] == "<" .. address .. ">" then out[#out + 1] = c end
  end
  return out
end

test("past validity: expired and followed up; ending soon: reminded; one summary per company", function(t)
  setup(t)
  local run = t.cron("quote-expiry")
  local r = t.get_run(run.id)
  t.eq(r.state, "succeeded", "run")
  t.eq(r.result, { day = "2026-11-16", companies = {
    { company = 1, reminded = { "D-2026-002" }, expired = { "D-2026-003" } } } }, "what it did")
  local q = t.db.query("SELECT id, status, expiry_warned_at, expired_at FROM quotes ORDER BY id")
  t.eq(q[2].expiry_warned_at, "2026-11-16T07:00:00Z", "quote 2 warned")
  t.eq(q[2].status, "sent", "quote 2 still sent")
  t.eq({ q[3].status, q[3].expired_at }, { "expired", "2026-11-16T07:00:00Z" }, "quote 3 expired")
  t.eq(q[4].status, "sent", "quote 4 untouched")
  t.eq(#mail_to(t, "hugo@bernard-archi.example"), 1, "Hugo reminded")
  t.contains(mail_to(t, "hugo@bernard-archi.example")[1].body, "expires on 2026-11-18", "the reminder")
  t.eq(#mail_to(t, "claire.martin@client.example"), 1, "Claire followed up")
  t.contains(mail_to(t, "claire.martin@client.example")[1].body, "Quote D-2026-003 has expired", "the follow-up")
  local slack = t.calls("POST", "slack.test")
  t.eq(#slack, 1, "one summary (nothing for company 2)")
  t.eq(slack[1].json.channel, "#lumen-sales", "company 1's channel")
  t.contains(slack[1].json.text, "expired, client followed up: D-2026-003", "summary")
end)

test("a company without a Slack channel: reminded and expired, its summary posted nowhere", function(t)
  setup(t)
  t.env { SLACK_CHANNEL = "#payments-review" }
  t.db.exec("UPDATE companies SET slack_channel = NULL WHERE id = 1")
  local run = t.cron("quote-expiry")
  t.eq(t.get_run(run.id).state, "succeeded", "run")
  t.eq(#t.calls("MAIL"), 2, "the reminder and the follow-up")
  t.eq(t.calls("POST", "slack.test"), {}, "no summary in the default channel")
end)

test("the next days: nothing twice, and company 2's quote in its own time", function(t)
  setup(t)
  t.cron("quote-expiry")
  t.advance("1d") -- the next tick: nothing new
  t.eq(#t.calls("MAIL"), 2, "no second reminder nor follow-up")
  t.advance("8d") -- the 25th: quote 4 (valid until the 26th) is reminded 2 days before; quote 2 expired on the 19th
  t.eq(#mail_to(t, "j.keller@kunde.example"), 1, "Jonas reminded once")
  t.eq(#mail_to(t, "hugo@bernard-archi.example"), 2, "Hugo's reminder, then his follow-up")
  local nordwind = {}
  for _, c in ipairs(t.calls("POST", "slack.test")) do
    if c.json.channel == "#nordwind" and c.json.text:find("client reminded", 1, true) then nordwind[#nordwind + 1] = c end
  end
  t.eq(#nordwind, 1, "company 2's summary on its channel")
  t.contains(nordwind[1].json.text, "Q-2026-101", "its quote")
end)

test("a quote already reminded by quote-sent is not reminded again", function(t)
  setup(t)
  t.db.exec("UPDATE quotes SET expiry_warned_at = '2026-11-15T00:00:00Z' WHERE id = 2")
  t.cron("quote-expiry")
  t.eq(#mail_to(t, "hugo@bernard-archi.example"), 0, "no reminder")
end)
