-- fuzz/signatures.lua: the webhook signature verifiers of
-- stdlib/rill/signatures.lua, called the way webhook.lua calls them, with
-- hostile headers and bodies. Input: one byte choosing the scheme and its
-- options, then "name: value" header lines, an empty line, and the body
-- (names are lowercased and a repeated header is joined with ", ", as the
-- HTTP server does). The clock is set to 1700000000. A verifier must return
-- true [, delivery id] or false, reason; never raise, never name a secret in
-- its reason, and never accept a body it did not sign.
local signatures = require "rill.signatures"
local time = require "rill.time"
local env = require "rill.env"
local crypto = require "rill.crypto"

local NOW = 1700000000
local SECRETS = {
  FZ_PLAIN = "plain-secret-value-1",
  FZ_OLD = "old-secret-value-2",
  FZ_WHSEC = "whsec_" .. crypto.base64("standard-webhooks-key-3"),
  FZ_WHSEC_BAD = "whsec_***not*base64***",
}
env.configure(SECRETS)
time.set_clock(function() return NOW end)

-- scheme, options, and whether the signature covers the body
local CASES = {
  { "revolut", { secret = { "FZ_PLAIN", "FZ_OLD" } }, true },
  { "mautic", { secret = "FZ_PLAIN" }, true },
  { "docuseal", { secret = "FZ_WHSEC" }, true },
  { "docuseal", { secret = "FZ_PLAIN", header = "X-Token" }, false },
  { "shared_secret", { secret = "FZ_PLAIN", header = "Authorization", prefix = "Bearer " }, false },
  { "invoiceninja", { secret = { "FZ_OLD", "FZ_PLAIN" }, header = "X-Api-Key" }, false },
  { "standard_webhooks", { secret = "FZ_WHSEC" }, true },
  { "standard_webhooks", { secret = { "FZ_WHSEC", "FZ_WHSEC_BAD", "FZ_UNSET" } }, true },
  { "stripe", { secret = "FZ_WHSEC", tolerance = "10m" }, true },
  { "github", { secret = "FZ_PLAIN" }, true },
  { "hmac", { secret = "FZ_PLAIN", header = "X-Signature", encoding = "base64", prefix = "sha256=",
    signed = "{timestamp}.{id}.{header:X-Extra}.{body}", timestamp_header = "X-Timestamp",
    timestamp_unit = "ms", id_header = "X-Id" }, true },
  { "hmac", { secret = "FZ_PLAIN", header = "X-Sig", encoding = "base64url", algorithm = "sha512" }, true },
  { "hmac", { secret = { "FZ_UNSET", "FZ_OLD" }, header = "X-Sig", algorithm = "sha1" }, true },
  { "revolut", { secret = "FZ_UNSET" }, true },
}
local verifiers = {}
for i, c in ipairs(CASES) do verifiers[i] = signatures[c[1]](c[2]) end

local function fail(fmt, ...) error("FUZZ: " .. string.format(fmt, ...), 0) end

local function check(case, verify, request)
  local ok, accepted, detail = pcall(verify, request)
  if not ok then fail("%s raised: %s", case[1], tostring(accepted)) end
  if accepted == true then
    if detail ~= nil and type(detail) ~= "string" then fail("%s returned a %s delivery id", case[1], type(detail)) end
    return true
  end
  if accepted ~= false then fail("%s returned %s, not true or false", case[1], tostring(accepted)) end
  if type(detail) ~= "string" or detail == "" then fail("%s refused without a reason", case[1]) end
  for name, secret in pairs(SECRETS) do
    if detail:find(secret, 1, true) then fail("%s's reason names the secret %s: %s", case[1], name, detail) end
  end
  return false
end

return function(data)
  if #data == 0 then return end
  local n = data:byte(1) % #CASES + 1
  local case, verify = CASES[n], verifiers[n]
  local head, body = data:sub(2):match("^(.-)\n\n(.*)$")
  if not head then head, body = data:sub(2), "" end
  local headers = {}
  for line in head:gmatch("[^\n]+") do
    local k, v = line:match("^([^:]*):[ \t]*(.-)[ \t\r]*$")
    if k then
      k = k:lower()
      headers[k] = headers[k] and headers[k] .. ", " .. v or v
    end
  end
  if check(case, verify, { headers = headers, body = body }) and case[3] then
    -- a signature covers the body: another body must be refused
    if check(case, verify, { headers = headers, body = body .. "!" }) then
      fail("%s accepted a body it did not sign", case[1])
    end
  end
end
