-- Only a correctly signed Revolut webhook reaches the flow and the store.
local crypto = require "rill.crypto"

local SECRET = "wsk_test_secret"

local function signed(t, body, ts)
  ts = ts or string.format("%d", t.now() * 1000)
  local sig = "v1=" .. crypto.hex(crypto.hmac_sha256(SECRET, "v1." .. ts .. "." .. body))
  return { body = body, headers = { ["Content-Type"] = "application/json",
    ["Revolut-Request-Timestamp"] = ts, ["Revolut-Signature"] = sig } }
end

test("a signed payment event is accepted and run", function(t)
  t.env { REVOLUT_WEBHOOK_SECRET = SECRET }
  t.now("2026-11-25T10:00:00Z")
  local resp = t.webhook("POST", "/api/revolut/webhook-handler",
    signed(t, '{"event":"TransactionCreated","id":"tx-1"}'))
  t.eq(resp.status, 202, "accepted")
  local runs = t.runs("revolut-payment")
  t.eq(#runs, 1, "stored")
  t.eq(runs[1].result, { event = "TransactionCreated" }, "its result")
end)

test("a bad signature or a stale timestamp is refused and stores nothing", function(t)
  t.env { REVOLUT_WEBHOOK_SECRET = SECRET }
  t.now("2026-11-25T10:00:00Z")
  local req = signed(t, '{"event":"TransactionCreated","id":"tx-2"}')
  req.body = '{"event":"TransactionCreated","id":"tx-3"}'
  t.eq(t.webhook("POST", "/api/revolut/webhook-handler", req).status, 401, "body changed after signing")
  local stale = signed(t, '{"event":"TransactionCreated"}', string.format("%d", (t.now() - 600) * 1000))
  t.eq(t.webhook("POST", "/api/revolut/webhook-handler", stale).status, 401, "ten minutes old")
  t.eq(#t.runs("revolut-payment"), 0, "nothing stored")
end)
