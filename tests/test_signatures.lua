-- signatures.lua at the edges: the services' own published vectors at the
-- exact tolerance boundaries (with a set clock), rotation lists with unset
-- variables, header parsing, option mistakes, and reasons that never carry
-- the secret or the signature. tests/test_signatures.py does it end to end.
local t = require "t"
local signatures = require "rill.signatures"
local time = require "rill.time"
local env = require "rill.env"

local function at(instant, fn)
  time.set_clock(function() return instant end)
  local ok, err = pcall(fn)
  time.set_clock(nil)
  if not ok then error(err, 0) end
end

local function req(headers, body) return { headers = headers, body = body } end

-- Standard Webhooks' published test vector (its spec and every reference library use it).
local SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
local SW_ID, SW_TS, SW_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'
local SW_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
local function sw_request(sig)
  return req({ ["webhook-id"] = SW_ID, ["webhook-timestamp"] = tostring(SW_TS), ["webhook-signature"] = sig or SW_SIG },
    SW_BODY)
end

t.test("the Standard Webhooks vector verifies, returns its id, and the window is 300 s both ways", function()
  env.configure { SW_SECRET = SW_SECRET }
  local verify = signatures.standard_webhooks { secret = "SW_SECRET" }
  at(SW_TS + 300, function()
    local ok, id = verify(sw_request())
    t.eq(ok, true, "300 s old") t.eq(id, SW_ID, "the delivery id")
  end)
  at(SW_TS - 300, function() t.eq(verify(sw_request()), true, "300 s ahead") end)
  at(SW_TS + 301, function()
    local ok, why = verify(sw_request())
    t.eq(ok, false, "301 s old") t.ok(why:find("301 s old", 1, true), why)
  end)
  at(SW_TS - 301, function()
    local ok, why = verify(sw_request())
    t.eq(ok, false, "301 s ahead") t.ok(why:find("in the future", 1, true), why)
  end)
  local long = signatures.standard_webhooks { secret = "SW_SECRET", tolerance = "10m" }
  at(SW_TS + 599, function() t.eq(long(sw_request()), true, "a configured tolerance") end)
end)

t.test("sign_standard reproduces the Standard Webhooks vector, and signs with each secret of a list", function()
  local h = signatures.sign_standard(SW_SECRET, SW_BODY, SW_ID, SW_TS)
  t.eq(h["webhook-signature"], SW_SIG, "signature") t.eq(h["webhook-id"], SW_ID, "id")
  t.eq(h["webhook-timestamp"], tostring(SW_TS), "timestamp")
  h = signatures.sign_standard({ "whsec_" .. require("rill.crypto").base64("other"), SW_SECRET }, SW_BODY, SW_ID, SW_TS)
  t.ok(h["webhook-signature"]:match(" (.+)$") == SW_SIG, "the second of two signatures")
  at(1700000000.9, function()
    h = signatures.sign_standard(SW_SECRET, "{}")
    t.eq(h["webhook-timestamp"], "1700000000", "now, in whole seconds")
    t.ok(h["webhook-id"]:match("^msg_%x+$"), "a fresh id " .. h["webhook-id"])
  end)
  t.err(function() signatures.sign_standard(nil, "{}") end, "no secret given (is its variable set?)")
  t.err(function() signatures.sign_standard("whsec_***", "{}") end, "not a whsec_<base64> string")
  t.err(function() signatures.sign_standard(SW_SECRET, { a = 1 }) end, "body must be the string sent")
end)

-- Revolut's documented example (developer.revolut.com, "Verify the payload signature"),
-- its signature computed with `openssl dgst -sha256 -hmac`.
local RV_BODY = '{"data":{"id":"645a7696-22f3-aa47-9c74-cbae0449cc46","new_state":"completed","old_state":"pending",'
  .. '"request_id":"app_charges-9f5d5eb3-1e06-46c5-b1c0-3914763e0bcb"},"event":"TransactionStateChanged",'
  .. '"timestamp":"2023-05-09T16:36:38.028960Z"}'
local RV_SIG = "v1=bca326fb378d0da7f7c490ad584a8106bab9723d8d9cdd0d50b4c5b3be3837c0"

t.test("Revolut's example verifies in milliseconds; an unset variable of the rotation list is skipped", function()
  env.configure { RV_NEW = "", RV_OLD = "wsk_r59a4HfWVAKycbCaNO1RvgCJec02gRd8" }
  local verify = signatures.revolut { secret = { "RV_UNSET_ANYWHERE", "RV_NEW", "RV_OLD" } }
  local function call(sig, ts)
    return verify(req({ ["revolut-request-timestamp"] = ts or "1683650202360", ["revolut-signature"] = sig }, RV_BODY))
  end
  at(1683650202.360 + 299.9, function()
    t.eq(call(RV_SIG), true, "the example")
    t.eq(call("v0=00, " .. RV_SIG .. " ,v2=ff"), true, "among other versions, spaces around")
    t.eq(call((RV_SIG:upper():gsub("^V1", "v1"))), true, "upper-case hex")
    local ok, why = call(RV_SIG:sub(1, -2) .. "1")
    t.eq(ok, false, "one hex digit changed")
    t.ok(not why:find(RV_SIG:sub(4, 20), 1, true) and not why:find("wsk_", 1, true), "no signature nor secret in " .. why)
    t.eq((call("v1=zz")), false, "not hex")
    t.eq((call(RV_SIG, "1683650202360.0")), false, "a fractional timestamp")
  end)
  at(1683650202.360 + 301, function() t.eq((call(RV_SIG)), false, "301 s after, in ms") end)
end)

t.test("GitHub's documented test values verify and give X-GitHub-Delivery", function()
  env.configure { GH = "It's a Secret to Everybody" }
  local verify = signatures.github { secret = "GH" }
  local sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
  local ok, id = verify(req({ ["x-hub-signature-256"] = sig, ["x-github-delivery"] = "72d3162e" }, "Hello, World!"))
  t.eq(ok, true, "the docs' example") t.eq(id, "72d3162e", "delivery id")
  t.eq((verify(req({ ["x-hub-signature-256"] = sig .. ", " .. sig }, "Hello, World!"))), false, "sent twice")
  t.eq((verify(req({ ["x-hub-signature-256"] = sig }, "Hello, World?"))), false, "another body")
end)

t.test("Stripe's header: spaces after commas, unknown schemes ignored, one t only", function()
  env.configure { ST = "whsec_test" }
  local verify = signatures.stripe { secret = "ST" }
  local c = require "rill.crypto"
  local sig = c.hex(c.hmac_sha256("whsec_test", "1700000000.{}"))
  at(1700000010, function()
    t.eq(verify(req({ ["stripe-signature"] = "t=1700000000, v1=" .. sig .. ", v0=abc" }, "{}")), true, "spaces")
    local ok, why = verify(req({ ["stripe-signature"] = "t=1700000000,v1=" .. sig .. ", t=1700000000,v1=" .. sig }, "{}"))
    t.eq(ok, false, "the header sent twice") t.ok(why:find("more than one timestamp", 1, true), why)
    t.eq((verify(req({ ["stripe-signature"] = "t=1700000000,v1=" .. sig .. ",junk" }, "{}"))), false, "a garbled item")
  end)
end)

-- issue 15: a verifier called directly by a flow (its own request table) needed
-- lower-case header names: "Stripe-Signature" gave "missing header Stripe-Signature"
t.test("a verifier called directly takes header names in any case", function()
  env.configure { ST = "whsec_test", TOKEN = "tok-123456", SW_SECRET = SW_SECRET }
  local c = require "rill.crypto"
  local sig = c.hex(c.hmac_sha256("whsec_test", "1700000000.{}"))
  local stripe = signatures.stripe { secret = "ST" }
  at(1700000010, function()
    t.eq(stripe(req({ ["Stripe-Signature"] = "t=1700000000,v1=" .. sig }, "{}")), true, "Stripe-Signature")
    t.eq(stripe(req({ ["STRIPE-SIGNATURE"] = "t=1700000000,v1=" .. sig }, "{}")), true, "STRIPE-SIGNATURE")
  end)
  local shared = signatures.shared_secret { header = "X-Token", secret = "TOKEN" }
  t.eq(shared(req({ ["X-Token"] = "tok-123456" }, "")), true, "X-Token")
  local sw = signatures.standard_webhooks { secret = "SW_SECRET" }
  at(SW_TS, function()
    local ok, id = sw(req({ ["Webhook-Id"] = SW_ID, ["Webhook-Timestamp"] = tostring(SW_TS),
      ["Webhook-Signature"] = SW_SIG }, SW_BODY))
    t.eq(ok, true, "Standard Webhooks, capitalised")
    t.eq(id, SW_ID, "its delivery id")
  end)
  local headers = { ["X-Token"] = "tok-123456" }
  shared(req(headers, ""))
  t.eq(next(headers), "X-Token", "the caller's table is left as it was")
end)

t.test("a shared secret compares whole values and an empty variable counts as unset", function()
  env.configure { TOKEN = "tok-123456", EMPTY = "" }
  local verify = signatures.shared_secret { header = "X-Token", secret = { "EMPTY", "TOKEN" } }
  t.eq(verify(req({ ["x-token"] = "tok-123456" }, "")), true, "the value")
  t.eq((verify(req({ ["x-token"] = "tok-12345" }, ""))), false, "a prefix of it")
  t.eq((verify(req({ ["x-token"] = "" }, ""))), false, "empty")
  local none = signatures.shared_secret { header = "X-Token", secret = "EMPTY" }
  local ok, why = none(req({ ["x-token"] = "" }, ""))
  t.eq(ok, false, "no secret set") t.ok(why:find("EMPTY not set", 1, true), why)
end)

t.test("a shared secret in the URL's query: compared whole, in constant time, one value only", function()
  env.configure { LP = "lp-url-token-0123456789" }
  local verify = signatures.shared_secret { query = "token", secret = "LP" }
  local function q(query) return { headers = {}, body = "", query = query } end
  t.eq(verify(q { token = "lp-url-token-0123456789" }), true, "the token")
  local ok, why = verify(q {})
  t.eq(ok, false, "no token") t.ok(why:find("missing query parameter token", 1, true), why)
  t.eq((verify(q { token = "lp-url-token-012345678" })), false, "a prefix of it")
  t.eq((verify(q { token = { "lp-url-token-0123456789", "x" } })), false, "the parameter twice")
  ok, why = verify(q { token = "nope" })
  t.ok(not why:find("lp-url-token", 1, true) and not why:find("nope", 1, true), "no secret in the reason: " .. why)
  t.err(function() signatures.shared_secret { secret = "LP" } end, "one of them")
  t.err(function() signatures.shared_secret { secret = "LP", header = "X-T", query = "t" } end, "one of them")
  t.err(function() signatures.shared_secret { secret = "LP", query = "t", prefix = "Bearer " } end, "prefix")
end)

t.test("an IP allow-list: the peer address in a CIDR, X-Forwarded-For ignored unless from a trusted proxy", function()
  env.configure { TOKEN = "tok-123456" }
  local verify = signatures.shared_secret { header = "X-Token", secret = "TOKEN",
    allow_from = { "203.0.113.0/24", "198.51.100.7", "2001:db8::/32" } }
  local function from(peer, headers)
    headers = headers or {}
    headers["x-token"] = headers["x-token"] or "tok-123456"
    return { headers = headers, body = "", peer = peer }
  end
  t.eq(verify(from "203.0.113.9"), true, "in the /24")
  t.eq(verify(from "198.51.100.7"), true, "a single address")
  t.eq(verify(from "::ffff:203.0.113.200"), true, "IPv4-mapped IPv6 (a dual-stack listener)")
  t.eq(verify(from "2001:db8:0:1::5"), true, "in the IPv6 /32")
  local ok, why = verify(from "203.0.114.1")
  t.eq(ok, false, "outside") t.ok(why:find("203.0.114.1 is not in allow_from", 1, true), why)
  t.eq((verify(from "198.51.100.8")), false, "the next address")
  t.eq((verify(from "2001:db9::1")), false, "outside the IPv6 /32")
  ok, why = verify(from(nil))
  t.eq(ok, false, "no peer address") t.ok(why:find("peer address", 1, true), why)
  t.eq((verify(from("127.0.0.1", { ["x-forwarded-for"] = "203.0.113.9" }))), false,
    "X-Forwarded-For is not trusted by default")
  ok, why = verify(from("203.0.113.9", { ["x-token"] = "wrong" }))
  t.eq(ok, false, "the right address does not replace the secret") t.ok(why:find("matches none", 1, true), why)

  local proxied = signatures.shared_secret { header = "X-Token", secret = "TOKEN",
    allow_from = { "203.0.113.0/24" }, trusted_proxies = { "10.0.0.0/8", "127.0.0.1" } }
  t.eq(proxied(from("10.1.2.3", { ["x-forwarded-for"] = "203.0.113.9" })), true, "the client behind a trusted proxy")
  t.eq(proxied(from("127.0.0.1", { ["x-forwarded-for"] = "203.0.113.9, 10.0.0.2" })), true,
    "the rightmost untrusted hop, through two proxies")
  t.eq((proxied(from("10.1.2.3", { ["x-forwarded-for"] = "203.0.113.9, 192.0.2.1" }))), false,
    "the client prepended a spoofed address: the rightmost untrusted hop counts")
  t.eq((proxied(from("192.0.2.1", { ["x-forwarded-for"] = "203.0.113.9" }))), false,
    "X-Forwarded-For from a peer that is not a trusted proxy is ignored")
  t.eq((proxied(from("10.1.2.3", {}))), false, "a trusted proxy without X-Forwarded-For: the proxy itself")
  t.eq((proxied(from("10.1.2.3", { ["x-forwarded-for"] = "junk" }))), false, "a malformed hop")

  t.err(function() signatures.shared_secret { header = "X", secret = "TOKEN", allow_from = { "10.0.0.0/33" } } end,
    "not an address or CIDR")
  t.err(function() signatures.shared_secret { header = "X", secret = "TOKEN", allow_from = { "300.0.0.1" } } end,
    "not an address or CIDR")
  t.err(function() signatures.shared_secret { header = "X", secret = "TOKEN", allow_from = {} } end, "allow_from")
  t.err(function() signatures.shared_secret { header = "X", secret = "TOKEN", trusted_proxies = { "10.0.0.0/8" } } end,
    "trusted_proxies needs allow_from")
end)

t.test("an allow-list named by an environment variable is read at each request", function()
  env.configure { TOKEN = "tok-123456", LP_IPS = "203.0.113.0/24, 198.51.100.7" }
  local verify = signatures.shared_secret { header = "X-Token", secret = "TOKEN", allow_from = "LP_IPS" }
  local function from(peer) return { headers = { ["x-token"] = "tok-123456" }, body = "", peer = peer } end
  t.eq(verify(from "198.51.100.7"), true, "listed")
  t.eq((verify(from "198.51.100.8")), false, "not listed")
  env.configure { TOKEN = "tok-123456", LP_IPS = "" }
  local ok, why = verify(from "198.51.100.7")
  t.eq(ok, false, "unset: refused, not opened") t.ok(why:find("LP_IPS", 1, true), why)
  env.configure { TOKEN = "tok-123456", LP_IPS = "203.0.113.0/24, nonsense" }
  ok, why = verify(from "203.0.113.1")
  t.eq(ok, false, "a bad entry refuses") t.ok(why:find("nonsense", 1, true), why)
end)

t.test("the generic HMAC renders its template without reading the body as a template", function()
  env.configure { GEN = "k" }
  local c = require "rill.crypto"
  local verify = signatures.hmac { header = "X-Sig", secret = "GEN", signed = "{header:X-A}|{body}" }
  local body = "{header:X-A} {timestamp} %1"
  local sig = c.hex(c.hmac_sha256("k", "a|" .. body))
  t.eq(verify(req({ ["x-sig"] = sig, ["x-a"] = "a" }, body)), true, "the body as is")
  local ok, why = verify(req({ ["x-sig"] = sig }, body))
  t.eq(ok, false, "a signed header missing") t.ok(why:find("missing header X-A", 1, true), why)
end)

t.test("mistaken options are load errors that name the option", function()
  t.err(function() signatures.revolut { secret = "A", tolerence = 5 } end, 'unknown option "tolerence"')
  t.err(function() signatures.revolut {} end, "secret must name an environment variable")
  t.err(function() signatures.mautic { secret = "whsec_abc+/=" } end, "is not an environment variable name")
  t.err(function() signatures.github { secret = "RILL_SECRET" } end, "RILL_* variables are not visible")
  t.err(function() signatures.invoiceninja { secret = "A" } end, "header must be a header name")
  t.err(function() signatures.hmac { header = "X", secret = "A", signed = "{timestamp}.{body}" } end,
    "give timestamp_header")
  t.err(function() signatures.hmac { header = "X", secret = "A", algorithm = "md5" } end, "algorithm must be")
  t.err(function() signatures.hmac { header = "X", secret = "A", encoding = "base32" } end, "encoding must be")
  t.err(function() signatures.hmac { header = "X", secret = "A", tolerance = 5 } end, "need a timestamp_header")
  t.err(function() signatures.docuseal { secret = "A", header = "X-Token", tolerance = 5 } end, "signed mode")
  t.err(function() signatures.stripe { secret = "A", tolerance = "soon" } end, "tolerance must be a duration")
  t.err(function() signatures.github "A" end, "expected a table of options")
end)

env.configure {}
t.done()
