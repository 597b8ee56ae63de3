-- Payments from Revolut and Invoice Ninja: matched to their invoice by reference, amount and
-- currency, recorded once, the invoice paid or partially paid; the others go to review.
local crypto = require "rill.crypto"
local json = require "rill.json"
local NULL = json.null

local REVOLUT_SECRET = "wsk_test_secret"
local NINJA_SECRET = "ninja-hook-secret"

local function setup(t)
  t.now("2026-11-25T10:00:00Z")
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  -- invoice 1 (F-2026-041, 1500 EUR, company 1) and its client are already in Invoice Ninja
  t.db.exec("UPDATE invoices SET invoiceninja_id = 'INV1500' WHERE id = 1")
  t.db.exec("UPDATE contacts SET invoiceninja_client_id = 'CLI1' WHERE id = 1")
  t.env {
    REVOLUT_WEBHOOK_SECRET = REVOLUT_SECRET, INVOICENINJA_WEBHOOK_SECRET = NINJA_SECRET,
    SLACK_BOT_TOKEN = "xoxb-test", SLACK_API_URL = "https://slack.test/api", SLACK_CHANNEL = "#payments-review",
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "rill", MAUTIC_PASSWORD = "pw",
    INVOICENINJA_URL = "https://ninja.test", INVOICENINJA_TOKEN = "tok",
    -- company 2 (companies.*_env): its own Mautic, its own token in the same Invoice Ninja
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind", NORDWIND_INVOICENINJA_TOKEN = "tok-nordwind",
  }
  t.stub("GET", "https://mautic.nordwind.test/api/contacts", { json = { total = 0, contacts = {} } })
  t.stub("POST", "https://mautic.nordwind.test/api/contacts/new", { status = 201, json = { contact = { id = 601 } } })
  t.stub("POST", "https://mautic.nordwind.test/api/contacts/601/points/plus/", { json = { success = 1 } })
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.1" } })
  t.stub("GET", "https://mautic.test/api/contacts", { json = { total = 0, contacts = {} } })
  t.stub("POST", "https://mautic.test/api/contacts/new", { status = 201, json = { contact = { id = 501 } } })
  t.stub("POST", "https://mautic.test/api/contacts/501/points/plus/", { json = { success = 1 } })
  t.stub("GET", "https://ninja.test/api/v1/payments", { json = { data = {} } })
  t.stub("POST", "https://ninja.test/api/v1/payments", { json = { data = { id = "PAY1" } } })
end

local function revolut(t, body, ts)
  ts = ts or string.format("%d", t.now() * 1000)
  local sig = "v1=" .. crypto.hex(crypto.hmac_sha256(REVOLUT_SECRET, "v1." .. ts .. "." .. body))
  return t.webhook("POST", "/api/revolut/webhook-handler", { body = body, headers = {
    ["Content-Type"] = "application/json", ["Revolut-Request-Timestamp"] = ts, ["Revolut-Signature"] = sig } })
end

local function transfer(id, state, amount, currency, reference)
  return json.encode { event = "TransactionCreated", timestamp = "2026-11-25T09:59:59Z", data = {
    id = id, type = "transfer", state = state, reference = reference, created_at = "2026-11-25T09:59:58Z",
    completed_at = state == "completed" and "2026-11-25T09:59:59Z" or nil,
    legs = { { leg_id = id .. "-0", account_id = "acc-eur", amount = amount, currency = currency,
      description = "From Boulangerie Martin", counterparty = { account_type = "external", id = "cp-1" } } } } }
end

local function ninja(t, body, secret)
  return t.webhook("POST", "/api/invoice-ninja/webhook", { body = body, headers = {
    ["Content-Type"] = "application/json", ["X-Ninja-Secret"] = secret or NINJA_SECRET } })
end

test("a completed Revolut transfer pays its invoice, once, and tells Invoice Ninja, Mautic and Slack", function(t)
  setup(t)
  local body = transfer("tx-1", "completed", 1500, "EUR", "F-2026-041")
  t.eq(revolut(t, body).status, 202, "accepted")
  local run = t.runs("payment-received")[1]
  t.eq(run.state, "succeeded", "the run")
  t.eq(run.result.status, "matched", "matched")
  t.eq(run.result.invoice_status, "paid", "paid in full")
  local inv = t.db.query("SELECT status, amount_paid, paid_at FROM invoices WHERE id = 1")[1]
  t.eq({ inv.status, inv.amount_paid }, { "paid", 1500 }, "the invoice")
  t.ok(inv.paid_at ~= NULL, "paid_at set")
  local pay = t.db.query("SELECT * FROM payments")
  t.eq(#pay, 1, "one payment")
  t.eq({ pay[1].source, pay[1].external_id, pay[1].invoice_id, pay[1].owner_company, pay[1].status },
    { "revolut", "tx-1", 1, 1, "matched" }, "the payment row")
  local recorded = t.calls("POST", "ninja.test/api/v1/payments")
  t.eq(#recorded, 1, "recorded in Invoice Ninja")
  t.eq(recorded[1].json.client_id, "CLI1", "its client")
  t.eq(recorded[1].json.invoices, { { invoice_id = "INV1500", amount = 1500 } }, "applied to the invoice")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/501/points/plus/10"), 1, "company 1's 10 points")
  t.eq(t.db.query("SELECT mautic_id FROM contacts WHERE id = 1")[1].mautic_id, 501, "the Mautic id kept")
  local posts = t.calls("POST", "slack.test")
  t.eq(#posts, 1, "one Slack message")
  t.eq(posts[1].json.channel, "#lumen-sales", "to company 1's channel")
  t.contains(posts[1].json.text, "F-2026-041", "naming the invoice")
  t.eq(#t.db.query("SELECT * FROM audit_log WHERE table_name = 'payments' AND action = 'payment_recorded'"), 1, "audited")

  local again = revolut(t, body)
  t.eq(again.status, 200, "a redelivery")
  t.eq(again.json.duplicate, true, "is a duplicate")
  t.eq(#t.runs("payment-received"), 1, "not run again")
  t.eq(#t.db.query("SELECT * FROM payments"), 1, "still one payment")
end)

test("the Invoice Ninja payment is recorded once, even when a retry follows an answer lost after it was made", function(t)
  setup(t)
  local made = {}
  t.stub("GET", "https://ninja.test/api/v1/payments", function(call)
    local out = {}
    for _, p in ipairs(made) do
      if call.url:find("client_id=" .. p.client_id, 1, true) then out[#out + 1] = p end
    end
    return { json = { data = out } }
  end)
  t.stub("POST", "https://ninja.test/api/v1/payments", function(call)
    made[#made + 1] = { id = "PAY" .. #made + 1, client_id = call.json.client_id, amount = call.json.amount,
      transaction_reference = call.json.transaction_reference }
    if #made == 1 then return { status = 504, body = "gateway timeout" } end -- recorded, the answer lost
    return { json = { data = made[#made] } }
  end)
  t.eq(revolut(t, transfer("tx-9", "completed", 500, "EUR", "F-2026-041")).status, 202, "accepted")
  t.advance("1m") -- the retry
  local run = t.runs("payment-received")[1]
  t.eq(run.state, "succeeded", "the retried run")
  t.eq(#made, 1, "one payment in Invoice Ninja, not a second one on the retry")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/501/points/plus/10"), 1, "the run went on: Mautic points")
end)

test("a pending transfer waits for Revolut's completed state; part of the amount is a partial payment", function(t)
  setup(t)
  t.eq(revolut(t, transfer("tx-2", "pending", 500, "EUR", "Invoice F-2026-041, thanks")).status, 202, "accepted")
  t.eq(t.runs("payment-received")[1].state, "waiting", "parked until completed")
  t.eq(#t.db.query("SELECT * FROM payments"), 0, "nothing recorded while pending")
  t.advance("2h")
  local changed = json.encode { event = "TransactionStateChanged", timestamp = "2026-11-25T12:00:00Z",
    data = { id = "tx-2", request_id = "r-2", old_state = "pending", new_state = "completed" } }
  t.eq(revolut(t, changed).status, 202, "the state change accepted")
  local first = t.runs("payment-received")[1]
  t.eq(first.state, "succeeded", "the waiting run went on")
  t.eq({ first.result.status, first.result.invoice_status }, { "partial", "partially_paid" }, "partial")
  local inv = t.db.query("SELECT status, amount_paid FROM invoices WHERE id = 1")[1]
  t.eq({ inv.status, inv.amount_paid }, { "partially_paid", 500 }, "the invoice")
  t.contains(t.calls("POST", "slack.test")[1].json.text, "1000.00 EUR still due", "Slack says what is left")
end)

test("a transfer still pending after its 14 days goes to review and to Slack; the invoice is untouched", function(t)
  setup(t)
  revolut(t, transfer("tx-16", "pending", 1500, "EUR", "F-2026-041"))
  t.eq(t.runs("payment-received")[1].state, "waiting", "parked until completed")
  t.advance("15d")
  local run = t.runs("payment-received")[1]
  t.eq({ run.state, run.result.status }, { "succeeded", "review" }, "the run ends with the payment in review")
  t.contains(run.result.reason, "never completed", "why")
  local pay = t.db.query("SELECT external_id, status, review_reason, invoice_id FROM payments")
  t.eq(#pay, 1, "stored for a person")
  t.eq({ pay[1].external_id, pay[1].status, pay[1].invoice_id }, { "tx-16", "review", 1 },
    "in the review list, its likely invoice noted")
  t.contains(pay[1].review_reason, "still pending after 14 days: it never completed", "the reason")
  t.eq(t.db.query("SELECT status, amount_paid FROM invoices WHERE id = 1")[1], { status = "sent", amount_paid = 0 },
    "the invoice not paid by it")
  local posts = t.calls("POST", "slack.test")
  t.eq(#posts, 1, "one Slack message")
  t.eq(posts[1].json.channel, "#lumen-sales", "the likely company's channel")
  t.contains(posts[1].json.text, "Payment to review: 1500.00 EUR", "a payment to review")
  t.contains(posts[1].json.text, "tx-16", "naming the transaction")
  t.eq(#t.calls("POST", "ninja.test"), 0, "nothing to Invoice Ninja")
  t.eq(#t.calls("*", "mautic.test"), 0, "nothing to Mautic")
end)

test("a pending transfer rill recorded meanwhile (delivered again, completed) is not put in review at the timeout", function(t)
  setup(t)
  revolut(t, transfer("tx-17", "pending", 1500, "EUR", "F-2026-041"))
  t.advance("1h")
  revolut(t, transfer("tx-17", "completed", 1500, "EUR", "F-2026-041")) -- another delivery: recorded by it
  t.eq(t.runs("payment-received")[2].result.status, "matched", "recorded by the completed delivery")
  t.advance("15d")
  local first = t.runs("payment-received")[1]
  t.eq({ first.state, first.result.duplicate }, { "succeeded", true }, "the timed-out run finds it recorded")
  t.eq(t.db.query("SELECT status, review_reason FROM payments")[1], { status = "matched", review_reason = NULL },
    "one payment, not in review")
  local review = {}
  for _, c in ipairs(t.calls("POST", "slack.test")) do
    if c.json.text:find("review", 1, true) then review[#review + 1] = c end
  end
  t.eq(#review, 0, "no review message")
end)

test("Revolut retries a failed TransactionCreated after its TransactionStateChanged: the payment is recorded", function(t)
  setup(t)
  -- the transfer's first delivery failed (rill was paused, say); Revolut retries it 10 minutes later,
  -- after it delivered the state change to completed
  local changed = json.encode { event = "TransactionStateChanged", timestamp = "2026-11-25T10:00:00Z",
    data = { id = "tx-8", request_id = "r-8", old_state = "pending", new_state = "completed" } }
  t.eq(revolut(t, changed).status, 202, "the state change accepted")
  t.advance("10m")
  t.eq(revolut(t, transfer("tx-8", "pending", 1500, "EUR", "F-2026-041")).status, 202, "the retried transfer")
  local run = t.runs("payment-received")[2]
  t.eq(run.state, "succeeded", "not left waiting for a state change already delivered")
  t.eq({ run.result.status, run.result.invoice_status }, { "matched", "paid" }, "the invoice paid")
  t.eq(#t.db.query("SELECT * FROM payments WHERE external_id = 'tx-8'"), 1, "the payment recorded")
end)

test("a part paid on an invoice at the collection agency keeps it in collection; the rest pays it", function(t)
  setup(t)
  t.db.exec("UPDATE invoices SET status = 'collection', collection_status = 'handed_over' WHERE id = 1")
  revolut(t, transfer("tx-10", "completed", 500, "EUR", "F-2026-041"))
  local run = t.runs("payment-received")[1]
  t.eq({ run.state, run.result.status, run.result.invoice_status }, { "succeeded", "partial", "collection" },
    "a partial payment")
  t.eq(t.db.query("SELECT status, amount_paid FROM invoices WHERE id = 1")[1], { status = "collection",
    amount_paid = 500 }, "still with the agency, not back to partially_paid")
  revolut(t, transfer("tx-11", "completed", 1000, "EUR", "F-2026-041"))
  t.eq(t.db.query("SELECT status, amount_paid FROM invoices WHERE id = 1")[1], { status = "paid", amount_paid = 1500 },
    "paid in full")
end)

test("a payment whose recording is retried after the invoice got paid meanwhile goes to review, not paid twice", function(t)
  setup(t)
  -- the database refuses the first recording (a lost connection, say): the run will be retried
  t.db.exec("CREATE TABLE outage (n INTEGER)")
  t.db.exec("INSERT INTO outage VALUES (1)")
  t.db.exec([[CREATE TRIGGER outage_payments BEFORE INSERT ON payments WHEN EXISTS (SELECT 1 FROM outage)
    BEGIN SELECT RAISE(ABORT, 'database unavailable'); END]])
  revolut(t, transfer("tx-12", "completed", 1500, "EUR", "F-2026-041"))
  t.eq(t.runs("payment-received")[1].state, "retrying", "the first recording failed")
  t.db.exec("DELETE FROM outage")
  -- meanwhile the client pays the invoice again, another way, and that payment is recorded first
  revolut(t, transfer("tx-13", "completed", 1500, "EUR", "F-2026-041"))
  t.eq(t.runs("payment-received")[2].result.invoice_status, "paid", "the invoice paid by the second")
  t.advance("1m") -- the first run's retry
  local first = t.runs("payment-received")[1]
  t.eq({ first.state, first.result.status }, { "succeeded", "review" }, "the first now finds it paid: review")
  t.contains(first.result.reason, "already paid", "why")
  t.eq(t.db.query("SELECT status, amount_paid FROM invoices WHERE id = 1")[1], { status = "paid", amount_paid = 1500 },
    "the invoice paid once")
end)

-- The process dies right after the recording's transaction commits, before the step is written to
-- the store: the attempt ends there once, as a crash would leave it (an error that is not text: the
-- store's own errors, text, are tried again until it takes the step).
local function crash_after_recording()
  local store = require "rill.engine.store"
  local record_step = store.step
  store.step = function(run_id, owner, s)
    if s.name == "record payment" then
      store.step = record_step
      error({ message = "the process died before the step was recorded" }, 0)
    end
    return record_step(run_id, owner, s)
  end
  return function() store.step = record_step end
end

test("a crash after the payment is saved, before its step is recorded: the retry goes on, once", function(t)
  setup(t)
  revolut(t, transfer("tx-14", "pending", 1500, "EUR", "F-2026-041"))
  local restore = crash_after_recording()
  revolut(t, json.encode { event = "TransactionStateChanged", timestamp = "2026-11-25T10:00:00Z",
    data = { id = "tx-14", request_id = "r-14", old_state = "pending", new_state = "completed" } })
  restore()
  t.eq(t.runs("payment-received")[1].state, "retrying", "the attempt that recorded the payment died")
  t.eq(#t.db.query("SELECT * FROM payments WHERE external_id = 'tx-14'"), 1, "the payment was saved")
  t.advance("1m") -- the same run's retry
  local run = t.runs("payment-received")[1]
  t.eq(run.state, "succeeded", "the retry")
  t.eq({ run.result.status, run.result.invoice_status, run.result.duplicate }, { "matched", "paid", nil },
    "the payment it recorded, not a duplicate")
  t.eq(t.db.query("SELECT status, amount_paid FROM invoices WHERE id = 1")[1], { status = "paid", amount_paid = 1500 },
    "the invoice paid once")
  t.eq(#t.calls("POST", "ninja.test/api/v1/payments"), 1, "recorded in Invoice Ninja, once")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/501/points/plus/10"), 1, "Mautic points, once")
  local posts = t.calls("POST", "slack.test")
  t.eq(#posts, 1, "one Slack message")
  t.contains(posts[1].json.text, "Payment received: 1500.00 EUR for invoice F-2026-041 (paid in full)", "the payment's")
  local emitted = {}
  for _, st in ipairs(run.steps) do
    if st.name == "emit payment.received" then emitted[#emitted + 1] = st end
  end
  t.eq(#emitted, 1, "payment.received emitted")

  -- another delivery of the same transfer (Revolut's TransactionCreated, completed): another run, a duplicate
  t.eq(revolut(t, transfer("tx-14", "completed", 1500, "EUR", "F-2026-041")).status, 202, "a new delivery")
  local runs = t.runs("payment-received")
  local last = runs[#runs]
  t.eq({ last.state, last.result.duplicate }, { "succeeded", true }, "a duplicate")
  t.eq(#t.calls("POST", "slack.test"), 1, "nothing more told")
  t.eq(#t.calls("POST", "ninja.test/api/v1/payments"), 1, "nothing more in Invoice Ninja")
  t.eq(#t.db.query("SELECT * FROM payments"), 1, "one payment")
end)

test("an unmatched, an ambiguous or a foreign-currency payment goes to review, and the invoice is untouched", function(t)
  setup(t)
  revolut(t, transfer("tx-3", "completed", 99, "EUR", "no such ref"))
  -- the same reference and amount in the other company
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, currency, status, reference, due_date)
    VALUES (9, 2, 4, 'X-1', 820, 'EUR', 'sent', 'F-2026-042', '2026-11-20')]])
  revolut(t, transfer("tx-4", "completed", 820, "EUR", "F-2026-042"))
  revolut(t, transfer("tx-5", "completed", 640, "GBP", "F-2026-043"))
  local rows = t.db.query("SELECT external_id, status, review_reason, invoice_id FROM payments ORDER BY external_id")
  t.eq(#rows, 3, "three payments stored")
  for _, r in ipairs(rows) do t.eq(r.status, "review", r.external_id .. " in review") end
  t.contains(rows[1].review_reason, "no invoice has the reference", "unmatched")
  t.contains(rows[2].review_reason, "ambiguous", "ambiguous")
  t.contains(rows[3].review_reason, "currency GBP", "another currency")
  t.eq(rows[3].invoice_id, 3, "the likely invoice noted for the person")
  t.eq(#t.db.query("SELECT * FROM invoices WHERE amount_paid > 0 AND status <> 'paid'"), 0, "no invoice touched")
  local posts = t.calls("POST", "slack.test")
  t.eq(#posts, 3, "three Slack messages")
  t.eq(posts[1].json.channel, "#payments-review", "no company known: the default channel")
  t.eq(posts[3].json.channel, "#lumen-sales", "the likely company's channel")
  t.eq(#t.calls("POST", "ninja.test"), 0, "nothing to Invoice Ninja")
  t.eq(#t.calls("*", "mautic.test"), 0, "nothing to Mautic")
end)

test("refused: a bad signature, a stale timestamp; ignored: an outgoing transfer; dead: a body without data", function(t)
  setup(t)
  local body = transfer("tx-6", "completed", 1500, "EUR", "F-2026-041")
  local ts = string.format("%d", t.now() * 1000)
  local bad = t.webhook("POST", "/api/revolut/webhook-handler", { body = body, headers = {
    ["Content-Type"] = "application/json", ["Revolut-Request-Timestamp"] = ts, ["Revolut-Signature"] = "v1=00ff" } })
  t.eq(bad.status, 401, "a bad signature")
  t.eq(revolut(t, body, string.format("%d", (t.now() - 600) * 1000)).status, 401, "ten minutes old")
  t.eq(#t.runs("payment-received"), 0, "nothing stored")

  revolut(t, transfer("tx-7", "completed", -20, "EUR", "To Acme"))
  t.eq(t.runs("payment-received")[1].result.ignored, "not an incoming transfer", "an outgoing transfer")
  revolut(t, '{"event":"TransactionCreated"}')
  local dead = t.runs("payment-received")[2]
  t.eq(dead.state, "dead", "a body without data")
  t.contains(dead.error, "a TransactionCreated without data.id", "says why")
  revolut(t, '{"event":"PayoutLinkCreated","data":{"id":"pl-1"}}')
  t.eq(t.runs("payment-received")[3].result, { ignored = "PayoutLinkCreated" }, "another event: ignored")
  t.eq(#t.db.query("SELECT * FROM payments"), 0, "no payment")
end)

test("an Invoice Ninja payment marks its invoice paid without going back to Invoice Ninja", function(t)
  setup(t)
  local body = json.encode { id = "NP1", amount = 1500, transaction_reference = "virement 77", date = "2026-11-24",
    client_id = "CLI1", invoices = { { id = "INV1500", number = "F-2026-041" } } }
  t.eq(ninja(t, body, "wrong").status, 401, "a wrong shared secret")
  t.eq(#t.runs("payment-received"), 0, "nothing stored")
  t.eq(ninja(t, body).status, 202, "accepted")
  local run = t.runs("payment-received")[1]
  t.eq({ run.state, run.result.status, run.result.invoice }, { "succeeded", "matched", "F-2026-041" }, "matched")
  t.eq(t.db.query("SELECT status FROM invoices WHERE id = 1")[1].status, "paid", "paid")
  t.eq(#t.calls("POST", "ninja.test"), 0, "not recorded back in Invoice Ninja")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/501/points/plus/10"), 1, "Mautic points")

  ninja(t, body) -- Invoice Ninja sends no delivery id: the second run finds the payment recorded
  t.eq(t.runs("payment-received")[2].result.duplicate, true, "a redelivery records nothing")
  t.eq(#t.db.query("SELECT * FROM payments"), 1, "one payment")
  ninja(t, json.encode { id = "NP2", amount = 1500, transaction_reference = "revolut tx-1" })
  t.contains(t.runs("payment-received")[3].result.ignored, "from Revolut payment tx-1", "our own echo ignored")
  ninja(t, '{"id":"NP3"}')
  t.eq(t.runs("payment-received")[4].state, "dead", "no amount: dead")
  t.contains(t.runs("payment-received")[4].error, "needs an id and a numeric amount", "says why")
end)

test("company 2's payment: recorded with its Invoice Ninja token, its points in its own Mautic", function(t)
  setup(t)
  -- invoice 5 (R-2026-202, 2750 EUR, company 2, contact 5) is in Invoice Ninja, under company 2's token
  t.db.exec("UPDATE invoices SET invoiceninja_id = 'INV2750' WHERE id = 5")
  t.db.exec("UPDATE contacts SET invoiceninja_client_id = 'CLI5' WHERE id = 5")
  t.eq(revolut(t, transfer("tx-9", "completed", 2750, "EUR", "R-2026-202")).status, 202, "accepted")
  local run = t.runs("payment-received")[1]
  t.eq({ run.state, run.result.invoice_status, run.result.owner_company }, { "succeeded", "paid", 2 }, "paid")
  local ninja_calls = t.calls(nil, "ninja.test")
  t.eq(#ninja_calls, 2, "look for the payment, record it")
  for _, c in ipairs(ninja_calls) do t.eq(c.headers["x-api-token"], "tok-nordwind", "its token: " .. c.url) end
  t.eq(#t.calls(nil, "https://mautic.test"), 0, "nothing to company 1's Mautic")
  local m = t.calls(nil, "https://mautic.nordwind.test")
  t.eq(#m, 3, "find, create, points")
  t.contains(m[3].url, "/api/contacts/601/points/plus/5", "company 2's 5 points")
  for _, c in ipairs(m) do
    t.eq(c.headers["authorization"], "Basic " .. crypto.base64("nordwind:pw-nordwind"), "its user: " .. c.url)
  end
end)

test("company 2 without its Invoice Ninja token set: the payment is recorded here, the run dead naming the variable", function(t)
  setup(t)
  t.env { NORDWIND_INVOICENINJA_TOKEN = "" }
  t.db.exec("UPDATE invoices SET invoiceninja_id = 'INV2750' WHERE id = 5")
  t.db.exec("UPDATE contacts SET invoiceninja_client_id = 'CLI5' WHERE id = 5")
  t.eq(revolut(t, transfer("tx-9", "completed", 2750, "EUR", "R-2026-202")).status, 202, "accepted")
  local run = t.runs("payment-received")[1]
  t.eq(run.state, "dead", "no retry: a setting to fix (rill runs retry goes on once it is set)")
  t.contains(run.error, "company 2 (Nordwind Consulting): NORDWIND_INVOICENINJA_TOKEN is not set", "the variable")
  t.eq(t.db.query("SELECT status FROM invoices WHERE id = 5")[1].status, "paid", "the payment itself is recorded")
  t.eq(#t.calls(nil, "ninja"), 0, "nothing sent with company 1's token")
end)
