-- fuzz/webhook_json.lua: request bodies through the webhook's validation
-- (webhook.payload_of, what webhook.dispatch does before anything is stored
-- or run), for a trigger declaring body = "json". Input: one byte choosing
-- the method and Content-Type, then the body. A body is either refused with
-- a 4xx and a reason, or decoded into a payload whose every string and key
-- is valid UTF-8 (RFC 8259: JSON text exchanged is UTF-8), and which
-- encodes back to JSON.
local webhook = require "rill.engine.webhook"
local json = require "rill.json"

local TRIGGER = { type = "webhook", method = "POST", path = "/j", body = "json" }
local CTYPES = { false, "application/json", "application/json; charset=utf-8", "text/plain",
  "application/vnd.api+JSON" }
local METHODS = { "POST", "PUT", "GET", "DELETE" }

local function fail(fmt, ...) error("FUZZ: " .. string.format(fmt, ...), 0) end

-- An independent UTF-8 check (no overlongs, no surrogates, at most U+10FFFF).
local function utf8_ok(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local need, min
    if c < 0x80 then need, min = 0, 0
    elseif c >= 0xC0 and c < 0xE0 then need, min = 1, 0x80
    elseif c >= 0xE0 and c < 0xF0 then need, min = 2, 0x800
    elseif c >= 0xF0 and c < 0xF8 then need, min = 3, 0x10000
    else return false end
    local cp = need == 0 and c or c % (2 ^ (6 - need))
    for k = 1, need do
      local b = s:byte(i + k)
      if not b or b < 0x80 or b > 0xBF then return false end
      cp = cp * 64 + b % 64
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
    i = i + need + 1
  end
  return true
end

local function strings_ok(v, depth)
  if depth > 200 then fail("a payload nested %d deep", depth) end
  if type(v) == "string" then return utf8_ok(v) end
  if type(v) == "table" then
    for k, x in pairs(v) do
      if not strings_ok(k, depth + 1) or not strings_ok(x, depth + 1) then return false end
    end
  end
  return true
end

return function(data)
  if #data == 0 then return end
  local b = data:byte(1)
  local ctype, method = CTYPES[b % #CTYPES + 1], METHODS[math.floor(b / 16) % #METHODS + 1]
  local body = data:sub(2)
  local headers = { ["content-type"] = ctype or nil }
  local ok, payload, status, reason = pcall(webhook.payload_of, TRIGGER, method, nil, headers, body)
  if not ok then fail("payload_of raised: %s", tostring(payload)) end
  if payload == nil then
    if status ~= 400 and status ~= 415 then fail("refused with status %s", tostring(status)) end
    if type(reason) ~= "string" or reason == "" then fail("refused without a reason") end
    return
  end
  if body == "" then return end -- a GET or DELETE without a body: the query's form
  if not utf8_ok(body) then fail("accepted a body that is not UTF-8: %q", body) end
  if not strings_ok(payload, 0) then fail("a decoded string is not UTF-8 (from %q)", body) end
  local eok, encoded = pcall(json.encode, payload)
  if not eok then fail("an accepted payload does not encode back: %s (from %q)", tostring(encoded), body) end
end
