-- admin_json: the admin API's JSON, apart from admin.lua to keep it short.
local json = require "rill.json"

-- lua-cjson cannot tell [] from {}: lists are marked, and the JSON texts the
-- store keeps (payloads, results, log fields) are inserted as they are.

local ARRAY, RAW = {}, {}
local function array(t) return setmetatable(t or {}, ARRAY) end

-- raw(text): stored JSON text, sent as JSON; text that is not JSON is sent as a string.
local function raw(text)
  if text == nil then return nil end
  if json.try_decode(text) == nil then return text end
  return setmetatable({ text }, RAW)
end

local function encode(v)
  if type(v) ~= "table" or v == json.null then return json.encode(v) end
  local mt = getmetatable(v)
  if mt == RAW then return v[1] end
  local parts = {}
  if mt == ARRAY then
    for i, x in ipairs(v) do parts[i] = encode(x) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = json.encode(k) .. ":" .. encode(v[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

return { array = array, raw = raw, encode = encode }
