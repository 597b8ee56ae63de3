-- signatures: webhook signature verifiers, one constructor per sender's
-- scheme, for the `verify` option of a webhook trigger, and the signing of
-- rill's own outbound webhooks the Standard Webhooks way.
--   verify = signatures.revolut { secret = "REVOLUT_WEBHOOK_SECRET" }
-- A constructor checks its options when the flow loads and returns
-- function(request) -> true [, delivery id] | false, reason. The reason is
-- for the log (webhook.lua writes it at warn level); it never holds a secret
-- or a signature. Secrets are named, not given: `secret` is the name of an
-- environment variable, or a list of names during a rotation (each one that
-- is set is accepted), read through env at every request. Signatures are
-- always computed over the raw body and compared in constant time.
-- Headers a client sends twice reach rill joined with ", " (RFC 9110): for a
-- list-valued signature header (Revolut, Standard Webhooks, Stripe's v1)
-- that is one longer list; any other repeated header is malformed.
local crypto = require "rill.crypto"
local time = require "rill.time"
local env = require "rill.env"
local log = require "rill.log"

local signatures = {}
local schemes = {} -- name -> function(opts) -> verify function; exported below

local DEFAULT_TOLERANCE = 300 -- seconds, both directions (the senders' own advice)
local ALGORITHMS = { sha1 = true, sha256 = true, sha512 = true }
local DECODERS = { hex = crypto.unhex, base64 = crypto.unbase64, base64url = crypto.unbase64url }

---------------------------------------------------------------------------
-- Options, checked when the flow loads

-- A mistake in a constructor's options; the exported constructor reports it
-- at the flow's line ("flows/x.lua:5: signatures.stripe: ...").
local function options_error(what, msg)
  error(what .. ": " .. msg, 0)
end

local function check_options(what, opts, allowed)
  if type(opts) ~= "table" then
    options_error(what, "expected a table of options, like " .. what .. " { secret = \"MY_WEBHOOK_SECRET\" }")
  end
  for k in pairs(opts) do
    if not allowed[k] then options_error(what, string.format("unknown option %q", tostring(k))) end
  end
end

-- secret = "NAME" or { "NAME", "NAME_PREVIOUS" } -> list of variable names.
local function secret_names(what, v)
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" or #v == 0 then
    options_error(what, "secret must name an environment variable (or a list of them during a rotation), "
      .. "like secret = \"MY_WEBHOOK_SECRET\"")
  end
  local names = {}
  for i, name in ipairs(v) do
    if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
      options_error(what, string.format("secret %s is not an environment variable name (the secret itself "
        .. "belongs in the environment, not in the flow)", type(name) == "string" and "#" .. i or tostring(name)))
    end
    if name:sub(1, 5) == "RILL_" then options_error(what, "secret " .. name .. ": RILL_* variables are not visible to flows") end
    names[i] = name
  end
  env.needed(names, what) -- named by `rill check` and /readyz while none is set
  return names
end

local function check_header(what, key, v, required)
  if v == nil and not required then return nil end
  if type(v) ~= "string" or not v:match("^[%w%-_]+$") then
    options_error(what, key .. " must be a header name, like \"X-Signature\"")
  end
  return v:lower()
end

local function check_tolerance(what, v)
  if v == nil then return DEFAULT_TOLERANCE end
  local ok, d = pcall(time.duration, v)
  if not ok or d <= 0 then options_error(what, "tolerance must be a duration, like \"5m\" or 300") end
  return d
end

---------------------------------------------------------------------------
-- Checks made at each request: signature_checks.lua

local checks = require "rill.signature_checks"
local read_secrets, check_time, any_match, missing, shared_secret, query_secret =
  checks.read_secrets, checks.check_time, checks.any_match, checks.missing, checks.shared_secret, checks.query_secret

---------------------------------------------------------------------------
-- IP allow-lists

-- Addresses, CIDRs and the allow-list itself: allow_list.lua
local parse_cidrs, allow_list = require("rill.allow_list").parse_cidrs, require("rill.allow_list").allow_list

local function check_cidrs(what, key, v)
  if type(v) == "string" and not v:find("[/:%.]") then return v end -- an environment variable's name
  if type(v) == "string" then v = { v } end
  if type(v) ~= "table" or #v == 0 then
    options_error(what, key .. " must be a list of addresses or CIDRs, like { \"203.0.113.0/24\" }, "
      .. "or the name of an environment variable holding them")
  end
  local cidrs, bad = parse_cidrs(v)
  if not cidrs then options_error(what, string.format("%s: %q is not an address or CIDR", key, bad)) end
  return cidrs
end

-- The HMAC key of a Standard Webhooks secret: the base64 after "whsec_".
local function standard_key(secret)
  return crypto.unbase64((secret:gsub("^whsec_", "")))
end

---------------------------------------------------------------------------
-- The schemes

-- Revolut (Business and Merchant): Revolut-Request-Timestamp in Unix
-- milliseconds; Revolut-Signature "v1=<hex>", several comma-separated while
-- a rotated secret is still valid; HMAC-SHA256 of "v1.{timestamp}.{body}"
-- keyed with the whole secret string.
function schemes.revolut(opts)
  local what = "signatures.revolut"
  check_options(what, opts, { secret = 1, tolerance = 1 })
  local names, tolerance = secret_names(what, opts.secret), check_tolerance(what, opts.tolerance)
  return function(request)
    local h = request.headers
    local ts, sig = h["revolut-request-timestamp"], h["revolut-signature"]
    if not ts then return false, missing("Revolut-Request-Timestamp") end
    if not sig then return false, missing("Revolut-Signature") end
    local fresh, why = check_time("Revolut-Request-Timestamp", ts, 1000, tolerance)
    if not fresh then return false, why end
    local candidates = {}
    for entry in sig:gmatch("[^,]+") do
      local raw = crypto.unhex(entry:match("^%s*v1=(%x+)%s*$") or "")
      if raw and raw ~= "" then candidates[#candidates + 1] = raw end
    end
    if #candidates == 0 then return false, "Revolut-Signature holds no v1=<hex> signature" end
    local keys, kwhy = read_secrets(names)
    if not keys then return false, kwhy end
    if any_match("sha256", keys, "v1." .. ts .. "." .. request.body, candidates) then return true end
    return false, "Revolut-Signature matches none of the secrets (another secret, or an altered body)"
  end
end

-- Mautic: Webhook-Signature = base64(HMAC-SHA256(secret, body)). No
-- timestamp and no delivery id: a captured request can be replayed, so the
-- flow must be idempotent on the event itself.
function schemes.mautic(opts)
  local what = "signatures.mautic"
  check_options(what, opts, { secret = 1 })
  local names = secret_names(what, opts.secret)
  return function(request)
    local sig = request.headers["webhook-signature"]
    if not sig then return false, missing("Webhook-Signature") end
    local raw = crypto.unbase64(sig)
    if not raw or raw == "" then return false, "Webhook-Signature is not base64" end
    local keys, why = read_secrets(names)
    if not keys then return false, why end
    if any_match("sha256", keys, request.body, { raw }) then return true end
    return false, "Webhook-Signature matches none of the secrets (another secret, or an altered body)"
  end
end

-- DocuSeal 2.5.3 and later: X-Docuseal-Signature "{unix seconds}.{hex}",
-- HMAC-SHA256 of "{seconds}.{body}" keyed with the whole "whsec_..." string.
-- Older installs send only a custom header holding a secret (set in their
-- webhook's Security > Secret): give its name as `header` for that mode.
function schemes.docuseal(opts)
  local what = "signatures.docuseal"
  check_options(what, opts, { secret = 1, tolerance = 1, header = 1 })
  local names = secret_names(what, opts.secret)
  if opts.header ~= nil then
    if opts.tolerance ~= nil then options_error(what, "tolerance applies to the signed mode, not to header = ...") end
    return shared_secret(names, check_header(what, "header", opts.header), opts.header)
  end
  local tolerance = check_tolerance(what, opts.tolerance)
  return function(request)
    local value = request.headers["x-docuseal-signature"]
    if not value then return false, missing("X-Docuseal-Signature") end
    local ts, hex = value:match("^(%d+)%.(%x+)$")
    local raw = hex and crypto.unhex(hex)
    if not raw then return false, "X-Docuseal-Signature is not {timestamp}.{hex}" end
    local fresh, why = check_time("X-Docuseal-Signature's timestamp", ts, 1, tolerance)
    if not fresh then return false, why end
    local keys, kwhy = read_secrets(names)
    if not keys then return false, kwhy end
    if any_match("sha256", keys, ts .. "." .. request.body, { raw }) then return true end
    return false, "X-Docuseal-Signature matches none of the secrets (another secret, or an altered body)"
  end
end

-- A secret sent as is, in a header the sender lets you configure (Invoice
-- Ninja v5's webhook headers, a collection agency's token; prefix: a fixed
-- start of the value, such as "Bearer ") or in the URL's query (query = the
-- parameter's name, for a sender that can set nothing but the URL). No
-- timestamp: no replay window. allow_from: the addresses the sender posts
-- from (CIDRs, or an environment variable's name), checked first;
-- X-Forwarded-For counts only from a peer in trusted_proxies.
function schemes.shared_secret(opts)
  local what = "signatures.shared_secret"
  check_options(what, opts, { secret = 1, header = 1, prefix = 1, query = 1, allow_from = 1, trusted_proxies = 1 })
  local names = secret_names(what, opts.secret)
  if (opts.header == nil) == (opts.query == nil) then
    options_error(what, "give header (a header holding the secret) or query (a query parameter holding it), one of them")
  end
  local verify
  if opts.query ~= nil then
    if type(opts.query) ~= "string" or not opts.query:match("^[%w%-_%.]+$") then
      options_error(what, "query must be a query parameter's name, like \"token\"")
    end
    if opts.prefix ~= nil then options_error(what, "prefix applies to header = ..., not to query = ...") end
    verify = query_secret(names, opts.query)
  else
    local header = check_header(what, "header", opts.header, true)
    if opts.prefix ~= nil and type(opts.prefix) ~= "string" then options_error(what, "prefix must be a string") end
    verify = shared_secret(names, header, opts.header, opts.prefix)
  end
  if opts.trusted_proxies ~= nil and opts.allow_from == nil then
    options_error(what, "trusted_proxies needs allow_from (it says whose X-Forwarded-For to believe)")
  end
  if opts.allow_from == nil then return verify end
  local proxies = opts.trusted_proxies
  if proxies ~= nil then
    proxies = check_cidrs(what, "trusted_proxies", proxies)
    if type(proxies) == "string" then options_error(what, "trusted_proxies must be a list of addresses or CIDRs") end
  end
  return allow_list(verify, check_cidrs(what, "allow_from", opts.allow_from), proxies)
end

-- Invoice Ninja v5 signs nothing: its webhook sends the custom headers
-- configured on it, so one of them carries a shared secret.
function schemes.invoiceninja(opts)
  local what = "signatures.invoiceninja"
  check_options(what, opts, { secret = 1, header = 1 })
  local names = secret_names(what, opts.secret)
  local header = check_header(what, "header", opts.header, true)
  return shared_secret(names, header, opts.header)
end

-- Standard Webhooks (standardwebhooks.com): webhook-id, webhook-timestamp
-- (seconds), webhook-signature a space-separated list of "v1,<base64>";
-- HMAC-SHA256 of "{id}.{timestamp}.{body}" keyed with the base64-decoded
-- part of "whsec_...". The id is the delivery id (the run's idempotency key).
function schemes.standard_webhooks(opts)
  local what = "signatures.standard_webhooks"
  check_options(what, opts, { secret = 1, tolerance = 1 })
  local names, tolerance = secret_names(what, opts.secret), check_tolerance(what, opts.tolerance)
  return function(request)
    local h = request.headers
    local id, ts, sig = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    if not id or id == "" then return false, missing("webhook-id") end
    if not ts then return false, missing("webhook-timestamp") end
    if not sig then return false, missing("webhook-signature") end
    local fresh, why = check_time("webhook-timestamp", ts, 1, tolerance)
    if not fresh then return false, why end
    local candidates = {}
    for token in sig:gmatch("[^%s]+") do
      local raw = crypto.unbase64(token:match("^v1,([%w+/=]+),?$") or "")
      if raw and raw ~= "" then candidates[#candidates + 1] = raw end
    end
    if #candidates == 0 then return false, "webhook-signature holds no v1,<base64> signature" end
    local secrets, kwhy = read_secrets(names)
    if not secrets then return false, kwhy end
    local keys = {}
    for _, s in ipairs(secrets) do
      local key = standard_key(s)
      if not key or key == "" then return false, "a secret of " .. table.concat(names, ", ") .. " is not whsec_<base64>" end
      keys[#keys + 1] = key
    end
    if any_match("sha256", keys, id .. "." .. ts .. "." .. request.body, candidates) then return true, id end
    return false, "webhook-signature matches none of the secrets (another secret, or an altered body)"
  end
end

-- Stripe: Stripe-Signature "t={seconds},v1={hex}[,v1=...][,v0=...]",
-- HMAC-SHA256 of "{t}.{body}" keyed with the whole "whsec_..." string.
-- The event id is in the body (idempotency = "body:id").
function schemes.stripe(opts)
  local what = "signatures.stripe"
  check_options(what, opts, { secret = 1, tolerance = 1 })
  local names, tolerance = secret_names(what, opts.secret), check_tolerance(what, opts.tolerance)
  return function(request)
    local value = request.headers["stripe-signature"]
    if not value then return false, missing("Stripe-Signature") end
    local t, candidates = nil, {}
    for item in value:gmatch("[^,]+") do
      local k, v = item:match("^%s*(%w+)=(%S+)%s*$")
      if not k then return false, "Stripe-Signature is malformed" end
      if k == "t" then
        if t then return false, "Stripe-Signature has more than one timestamp" end
        t = v
      elseif k == "v1" then
        local raw = crypto.unhex(v)
        if raw and raw ~= "" then candidates[#candidates + 1] = raw end
      end
    end
    if not t then return false, "Stripe-Signature has no timestamp" end
    if #candidates == 0 then return false, "Stripe-Signature holds no v1 signature" end
    local fresh, why = check_time("Stripe-Signature's timestamp", t, 1, tolerance)
    if not fresh then return false, why end
    local keys, kwhy = read_secrets(names)
    if not keys then return false, kwhy end
    if any_match("sha256", keys, t .. "." .. request.body, candidates) then return true end
    return false, "Stripe-Signature matches none of the secrets (another secret, or an altered body)"
  end
end

-- GitHub: X-Hub-Signature-256 "sha256=<hex>" of the body; no timestamp, but
-- X-GitHub-Delivery (a GUID, the same on a redelivery) is the delivery id.
function schemes.github(opts)
  local what = "signatures.github"
  check_options(what, opts, { secret = 1 })
  local names = secret_names(what, opts.secret)
  return function(request)
    local value = request.headers["x-hub-signature-256"]
    if not value then return false, missing("X-Hub-Signature-256") end
    local raw = crypto.unhex(value:match("^sha256=(%x+)$") or "")
    if not raw or raw == "" then return false, "X-Hub-Signature-256 is not sha256=<hex>" end
    local keys, why = read_secrets(names)
    if not keys then return false, why end
    if any_match("sha256", keys, request.body, { raw }) then
      local delivery = request.headers["x-github-delivery"]
      return true, delivery ~= "" and delivery or nil
    end
    return false, "X-Hub-Signature-256 matches none of the secrets (another secret, or an altered body)"
  end
end

-- A scheme of one's own choosing (a partner's unknown one):
--   signatures.hmac { header = "X-Signature", secret = "LP_WEBHOOK_SECRET",
--     algorithm = "sha256", encoding = "hex" | "base64" | "base64url", prefix = "sha256=",
--     signed = "{timestamp}.{body}",            -- also {id} and {header:Name}
--     timestamp_header = "X-Timestamp", timestamp_unit = "s" | "ms", tolerance = "5m",
--     id_header = "X-Delivery-Id" }             -- the delivery id, for idempotency
function schemes.hmac(opts)
  local what = "signatures.hmac"
  check_options(what, opts, { secret = 1, header = 1, algorithm = 1, encoding = 1, prefix = 1, signed = 1,
    timestamp_header = 1, timestamp_unit = 1, tolerance = 1, id_header = 1 })
  local names = secret_names(what, opts.secret)
  local header = check_header(what, "header", opts.header, true)
  local algorithm = opts.algorithm or "sha256"
  if not ALGORITHMS[algorithm] then options_error(what, "algorithm must be \"sha1\", \"sha256\" or \"sha512\"") end
  local decode = DECODERS[opts.encoding or "hex"]
  if not decode then options_error(what, "encoding must be \"hex\", \"base64\" or \"base64url\"") end
  local prefix = opts.prefix
  if prefix ~= nil and (type(prefix) ~= "string" or prefix == "") then options_error(what, "prefix must be a string") end
  local ts_header = check_header(what, "timestamp_header", opts.timestamp_header)
  local id_header = check_header(what, "id_header", opts.id_header)
  local unit = ({ s = 1, ms = 1000 })[opts.timestamp_unit or "s"]
  if not unit then options_error(what, "timestamp_unit must be \"s\" or \"ms\"") end
  if not ts_header and (opts.tolerance ~= nil or opts.timestamp_unit ~= nil) then
    options_error(what, "tolerance and timestamp_unit need a timestamp_header")
  end
  local tolerance = check_tolerance(what, opts.tolerance)
  local signed = opts.signed or "{body}"
  if type(signed) ~= "string" then options_error(what, "signed must be a template string, like \"{timestamp}.{body}\"") end
  for field in signed:gmatch("{([^}]*)}") do
    local named = field:match("^header:([%w%-_]+)$")
    if not (field == "body" or field == "timestamp" or field == "id" or named) then
      options_error(what, string.format("signed: unknown field {%s} ({body}, {timestamp}, {id}, {header:Name})", field))
    end
    if field == "timestamp" and not ts_header then options_error(what, "signed uses {timestamp}: give timestamp_header") end
    if field == "id" and not id_header then options_error(what, "signed uses {id}: give id_header") end
  end
  return function(request)
    local h = request.headers
    local value = h[header]
    if not value then return false, missing(opts.header) end
    if prefix then
      if value:sub(1, #prefix) ~= prefix then return false, opts.header .. " does not start with " .. prefix end
      value = value:sub(#prefix + 1)
    end
    local raw = decode(value)
    if not raw or raw == "" then return false, opts.header .. " is not " .. (opts.encoding or "hex") end
    local ts, id = ts_header and h[ts_header], id_header and h[id_header]
    if ts_header then
      if not ts then return false, missing(opts.timestamp_header) end
      local fresh, why = check_time(opts.timestamp_header, ts, unit, tolerance)
      if not fresh then return false, why end
    end
    if id_header and (not id or id == "") then return false, missing(opts.id_header) end
    local absent
    local message = signed:gsub("{([^}]*)}", function(field)
      if field == "body" then return request.body end
      if field == "timestamp" then return ts end
      if field == "id" then return id end
      local name = field:sub(8)
      local v = h[name:lower()]
      if not v then absent = absent or name end
      return v or ""
    end)
    if absent then return false, missing(absent) end
    local keys, kwhy = read_secrets(names)
    if not keys then return false, kwhy end
    if any_match(algorithm, keys, message, { raw }) then return true, id end
    return false, opts.header .. " matches none of the secrets (another secret, or an altered body)"
  end
end

-- The verifiers read headers by lower-case name, as rill's webhooks give
-- them. A request a flow builds itself may spell them as sent
-- ("Stripe-Signature"): such a request is read through a copy whose names
-- are lower case (two spellings of one name are joined with ", ", like a
-- header sent twice). The caller's tables are left as they are.
local function lower_headers(request)
  local h = type(request) == "table" and request.headers
  if type(h) ~= "table" then return request end
  local mixed = false
  for k in pairs(h) do
    if type(k) == "string" and k:find("%u") then mixed = true break end
  end
  if not mixed then return request end
  local copy = {}
  for k, v in pairs(h) do
    local lk = type(k) == "string" and k:lower() or k
    copy[lk] = copy[lk] and (copy[lk] .. ", " .. tostring(v)) or v
  end
  local r = {}
  for k, v in pairs(request) do r[k] = v end
  r.headers = copy
  return r
end

-- The constructors flows call. No tail call: error level 2 must be the flow.
for name, build in pairs(schemes) do
  signatures[name] = function(opts)
    local ok, verify = pcall(build, opts)
    if not ok then error(verify, 2) end
    return function(request) return verify(lower_headers(request)) end
  end
end

---------------------------------------------------------------------------
-- Outbound

-- sign_standard(secret, body [, id, timestamp]) -> the Standard Webhooks
-- headers of a request rill sends: webhook-id (given, or a new msg_<uuid>),
-- webhook-timestamp (now), webhook-signature. `secret` is the "whsec_..."
-- value (env.PARTNER_WEBHOOK_SECRET), or a list of them to sign with each
-- during a rotation. Give a stable id (one per event) so that the receiver
-- can tell a retry from a new event.
function signatures.sign_standard(secret, body, id, timestamp)
  local secrets = type(secret) == "table" and secret or { secret }
  if #secrets == 0 then error("signatures.sign_standard: no secret given (is its variable set?)", 2) end
  if type(body) ~= "string" then error("signatures.sign_standard: body must be the string sent (json.encode it first)", 2) end
  if id ~= nil and (type(id) ~= "string" or id == "" or id:find("[%s%c]")) then
    error("signatures.sign_standard: id must be a string without spaces", 2)
  end
  if timestamp ~= nil and type(timestamp) ~= "number" then error("signatures.sign_standard: timestamp must be a number", 2) end
  id = id or "msg_" .. crypto.uuid7():gsub("-", "")
  local ts = tostring(math.floor(timestamp or time.now()))
  local list = {}
  for _, s in ipairs(secrets) do
    local key = type(s) == "string" and standard_key(s)
    if not key or key == "" then
      error("signatures.sign_standard: a secret is not a whsec_<base64> string (is its variable set?)", 2)
    end
    -- (a whsec_ key is longer than 16: a flow signing with words like
    -- "payment" made them masked in every flow's log lines)
    if #s > 16 then log.add_flow_secret(s) end
    list[#list + 1] = "v1," .. crypto.base64(crypto.hmac("sha256", key, id .. "." .. ts .. "." .. body))
  end
  return { ["webhook-id"] = id, ["webhook-timestamp"] = ts, ["webhook-signature"] = table.concat(list, " ") }
end

return signatures
