-- signature_checks: what webhook verifiers check at each request: the
-- named secrets' current values, a timestamp's age, MACs compared in
-- constant time, a shared secret in a header or the query. Apart from
-- signatures.lua to keep it short.
local crypto = require "rill.crypto"
local time = require "rill.time"
local env = require "rill.env"
local log = require "rill.log"

local M = {}

-- The current values of the named secrets (unset or empty ones skipped).
-- Read at each request, so that a restart with a rotated environment takes
-- effect without touching the flow; every value is masked in the log.
local function read_secrets(names)
  local values = {}
  for _, name in ipairs(names) do
    local v = env.get(name)
    if v ~= nil and v ~= "" then
      v = tostring(v)
      log.add_secret(v)
      values[#values + 1] = v
    end
  end
  if #values == 0 then
    return nil, "no secret to check against: environment variable " .. table.concat(names, ", ") .. " not set"
  end
  return values
end

-- A timestamp header's value in `unit` (1 = seconds, 1000 = milliseconds)
-- within tolerance of now, either way; or nil and why not.
local function check_time(header, value, unit, tolerance)
  if not value:match("^%d+$") or #value > 16 then return nil, header .. " is not a Unix timestamp" end
  local age = time.now() - tonumber(value) / unit
  if age > tolerance then
    return nil, string.format("%s is %d s old, beyond the %d s tolerance (a replay, or a delivery held back)",
      header, math.floor(age), tolerance)
  elseif -age > tolerance then
    return nil, string.format("%s is %d s in the future, beyond the %d s tolerance", header, math.floor(-age), tolerance)
  end
  return true
end

-- Does any secret's MAC of message equal any candidate (raw bytes)? Every
-- pair is compared, in constant time each, whatever matched before.
local function any_match(algorithm, keys, message, candidates)
  local found = false
  for _, key in ipairs(keys) do
    local mac = crypto.hmac(algorithm, key, message)
    for _, candidate in ipairs(candidates) do
      if crypto.equals(mac, candidate) then found = true end
    end
  end
  return found
end

local function missing(header) return "missing header " .. header end

-- Does any of the named secrets equal value? The digests are compared, so
-- that neither the time nor the length of the comparison says anything.
local function secret_matches(names, value)
  local keys, why = read_secrets(names)
  if not keys then return nil, why end
  local given, found = crypto.sha256(value), false
  for _, key in ipairs(keys) do
    if crypto.equals(crypto.sha256(key), given) then found = true end
  end
  return found
end

-- A shared secret sent as is in a header.
local function shared_secret(names, header, shown, prefix)
  return function(request)
    local value = request.headers[header]
    if not value then return false, missing(shown) end
    if prefix then
      if value:sub(1, #prefix) ~= prefix then return false, shown .. " does not start with its prefix" end
      value = value:sub(#prefix + 1)
    end
    local found, why = secret_matches(names, value)
    if found == nil then return false, why end
    if found then return true end
    return false, shown .. " matches none of the secrets"
  end
end

-- A shared secret sent as is in a query parameter (a secret URL). Given
-- twice, the parameter is a list: refused, like a repeated header.
local function query_secret(names, param)
  return function(request)
    local value = request.query and request.query[param]
    if value == nil then return false, "missing query parameter " .. param end
    if type(value) ~= "string" then return false, "query parameter " .. param .. " is given more than once" end
    local found, why = secret_matches(names, value)
    if found == nil then return false, why end
    if found then return true end
    return false, "query parameter " .. param .. " matches none of the secrets"
  end
end

M.read_secrets = read_secrets
M.check_time = check_time
M.any_match = any_match
M.missing = missing
M.shared_secret = shared_secret
M.query_secret = query_secret
return M
