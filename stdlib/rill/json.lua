-- json: JSON for flows, on lua-cjson. A private cjson instance, so that no
-- flow can change another's settings.
--   json.decode(s)  -> value; raises "json.decode: <reason>" on malformed input.
--                      JSON null decodes to json.null (not nil), so that keys
--                      holding null are kept: test with `v == json.null`.
--   json.encode(v)  -> string; json.null encodes as null; an empty Lua table
--                      encodes as {} (lua-cjson cannot tell [] from {}).
local cjson = require("cjson").new()

cjson.encode_sparse_array(true)      -- {[1]=a,[3]=b} becomes [a,null,b], not an error
cjson.encode_invalid_numbers(false)  -- NaN/inf are errors, never invalid JSON
cjson.decode_invalid_numbers(false)  -- rejects NaN, Infinity and hex numbers
cjson.encode_max_depth(100)
cjson.decode_max_depth(100)

local json = { null = cjson.null }
local decode, encode = cjson.decode, cjson.encode

function json.decode(s)
  if type(s) ~= "string" then
    error("json.decode: expected a string, got " .. type(s), 2)
  end
  local ok, v = pcall(decode, s)
  if not ok then
    error("json.decode: " .. tostring(v):gsub("^Expected", "expected"), 2)
  end
  return v
end

function json.encode(v)
  local ok, s = pcall(encode, v)
  if not ok then
    error("json.encode: " .. tostring(s), 2)
  end
  return s
end

-- try_decode(s) -> value, or nil and the reason (for rill's own request parsing).
function json.try_decode(s)
  local ok, v = pcall(decode, s)
  if ok then return v end
  return nil, tostring(v)
end

return json
