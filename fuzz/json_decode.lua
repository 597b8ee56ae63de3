-- fuzz/json_decode.lua: rill's JSON decoder (runtime/json_decode.c, as
-- rill.c.json.decode) against lua-cjson's, which it replaced: for any
-- input both give the same value or the same error message, except that
-- rill refuses bytes after the value (cjson stops at a NUL byte). Under
-- ASan, any read past the text or misuse of the Lua stack shows too.
local decode = require("rill.c.json").decode
local guard = require("rill.c.cjson_buf").guard
local cjson = guard(require("cjson").new)()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(100)
local cdecode = guard(cjson.decode)

local function fail(fmt, ...) error("FUZZ: " .. string.format(fmt, ...), 0) end

local function same(a, b, depth)
  if type(a) ~= type(b) then return false end
  if type(a) == "number" then return a == b and 1 / a == 1 / b end
  if type(a) ~= "table" then return a == b end
  if depth > 200 then fail("nested %d deep", depth) end
  for k, v in pairs(a) do
    if not same(v, b[k], depth + 1) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

return function(data)
  local ok1, v1 = pcall(decode, data)
  local ok2, v2 = pcall(cdecode, data)
  if ok2 and not ok1 and data:find("%z") and tostring(v1):find("^Expected the end but found") then
    return -- cjson ended the text at a NUL byte
  end
  if ok1 ~= ok2 then
    fail("rill %s (%s), cjson %s (%s) for %q", ok1 and "decoded" or "failed", tostring(v1),
      ok2 and "decoded" or "failed", tostring(v2), data)
  end
  if not ok1 then
    if v1 ~= v2 then fail("messages differ: rill %q, cjson %q for %q", v1, v2, data) end
  elseif not same(v1, v2, 0) then
    fail("values differ for %q", data)
  end
end
