-- LP Agency's updates land on the invoice it handles; "paid" pays the invoice.
local crypto = require "rill.crypto"
local json = require "rill.json"

local TOKEN = "lp-webhook-token-0123456789"

local function setup(t)
  t.now("2026-11-25T10:00:00Z")
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  t.db.exec("UPDATE invoices SET status = 'collection', collection_status = 'handed_over', "
    .. "collection_updated_at = '2026-11-20T09:00:00Z' WHERE id = 5")
  t.env { LP_AGENCY_WEBHOOK_TOKEN = TOKEN, LP_AGENCY_WEBHOOK_ALLOW_FROM = "203.0.113.0/24",
    SLACK_BOT_TOKEN = "xoxb-test", SLACK_API_URL = "https://slack.test/api" }
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
end

-- An update as the agency sends it: its token as a Bearer, from its addresses.
local function send(t, update, opts)
  opts = opts or {}
  local body = type(update) == "string" and update or json.encode(update)
  local headers = opts.headers or { Authorization = "Bearer " .. (opts.token or TOKEN) }
  headers["Content-Type"] = "application/json"
  return t.webhook("POST", "/api/collection/lp/webhook", { body = body, headers = headers,
    peer = opts.peer or "203.0.113.40" })
end

local function invoice(t) return t.db.query("SELECT * FROM invoices WHERE id = 5")[1] end

test("the agency's status is recorded on the invoice and audited; a redelivery runs once", function(t)
  setup(t)
  local update = { event_id = "lp-ev-1", client_reference = "5", status = "in_progress",
    occurred_at = "2026-11-25T09:00:00Z", note = "debtor contacted" }
  t.eq(send(t, update).status, 202, "accepted")
  local inv = invoice(t)
  t.eq({ inv.status, inv.collection_status, inv.collection_updated_at:sub(1, 19) },
    { "collection", "in_progress", "2026-11-25T09:00:00" }, "the agency's word on the invoice")
  local audit = t.db.query("SELECT * FROM audit_log WHERE action = 'collection_update'")
  t.eq(#audit, 1, "audited")
  t.eq(json.decode(audit[1].details).note, "debtor contacted", "with the agency's note")
  t.eq(t.calls("POST", "slack.test")[1].json.channel, "#nordwind", "Nordwind's channel (invoice 5 is theirs)")
  local again = send(t, update)
  t.eq({ again.status, again.json.duplicate }, { 200, true }, "the same event_id again")
  t.eq(#t.runs("collection-agency"), 1, "one run")
end)

test("paid from the agency pays the invoice; an older update arriving late changes nothing", function(t)
  setup(t)
  send(t, { event_id = "lp-ev-2", client_reference = "5", status = "PAID", occurred_at = "2026-11-25T09:30:00Z",
    amount_collected = 2750 })
  local inv = invoice(t)
  t.eq({ inv.status, inv.amount_paid, inv.collection_status }, { "paid", 2750, "paid" }, "paid")
  t.eq(t.runs("collection-agency")[1].result, { invoice = "R-2026-202", status = "paid", paid = true }, "the result")
  send(t, { event_id = "lp-ev-0", client_reference = "5", status = "in_progress", occurred_at = "2026-11-24T09:00:00Z" })
  t.eq(t.runs("collection-agency")[2].result.ignored, "older than the status recorded", "late update ignored")
  t.eq(invoice(t).collection_status, "paid", "still paid")
end)

test("refused: a wrong token, another address, an HMAC the agency never sends; dead: an update without its invoice or status", function(t)
  setup(t)
  local update = { event_id = "lp-ev-3", client_reference = "5", status = "closed" }
  t.eq(send(t, update, { token = "nope" }).status, 401, "wrong token")
  t.eq(send(t, update, { peer = "198.51.100.1" }).status, 401, "the right token from outside the agency's addresses")
  t.eq(send(t, update, { peer = "198.51.100.1", headers = { Authorization = "Bearer " .. TOKEN,
    ["X-Forwarded-For"] = "203.0.113.40" } }).status, 401, "X-Forwarded-For is not believed")
  local ts = string.format("%d", t.now())
  local body = json.encode(update)
  t.eq(send(t, body, { headers = { ["X-LP-Timestamp"] = ts,
    ["X-LP-Signature"] = crypto.hex(crypto.hmac_sha256(TOKEN, ts .. "." .. body)) } }).status, 401,
    "an HMAC without the token")
  t.eq(#t.runs("collection-agency"), 0, "nothing stored")
  send(t, { event_id = "lp-ev-4", status = "closed" })
  send(t, { event_id = "lp-ev-5", client_reference = "999", status = "closed" })
  local runs = t.runs("collection-agency")
  t.eq({ runs[1].state, runs[2].state }, { "dead", "dead" }, "both dead, not retried")
  t.contains(runs[1].error, "needs event_id, client_reference (our invoice id) and status", "what is missing")
  t.contains(runs[2].error, "no invoice 999", "which invoice is unknown")
  t.eq(invoice(t).collection_status, "handed_over", "the invoice untouched")
end)
