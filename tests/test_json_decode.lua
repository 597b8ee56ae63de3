-- rill.c.json.decode (runtime/json_decode.c) against lua-cjson's decode,
-- which it replaces: on a corpus of valid and broken texts and on thousands
-- of random mutations of them, both must give the same value (deep, with
-- json.null, -0 and NaN-free numbers compared exactly) or the same error
-- message. The one difference on purpose: bytes after the value other than
-- whitespace, a NUL byte too, are refused (cjson stops reading at a NUL).
local t = require "t"
local decode = require("rill.c.json").decode
local guard = require("rill.c.cjson_buf").guard
local cjson = guard(require("cjson").new)()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(100)
local cdecode = guard(cjson.decode)

local function same(a, b, path)
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) == "number" then
    if a ~= b or 1 / a ~= 1 / b then return false, path .. ": " .. a .. " vs " .. b end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, path .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return true
  end
  for k, v in pairs(a) do
    local ok, why = same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": missing" end
  end
  return true
end

-- compare(text) -> true, or false and how the two decoders differ
local function compare(text)
  local ok1, v1 = pcall(decode, text)
  local ok2, v2 = pcall(cdecode, text)
  if text:find("%z") and ok2 and not ok1 then
    -- cjson ends the text at a NUL; rill refuses what follows the value
    if tostring(v1):find("^Expected the end but found") then return true end
  end
  if ok1 ~= ok2 then
    return false, ("rill %s (%s), cjson %s (%s)"):format(ok1 and "decoded" or "failed", tostring(v1),
      ok2 and "decoded" or "failed", tostring(v2))
  end
  if not ok1 then
    if v1 ~= v2 then return false, ("messages: rill %q, cjson %q"):format(v1, v2) end
    return true
  end
  return same(v1, v2, "$")
end

local corpus = {
  '{"id":"evt_000001","type":"order.created","created":1700000000,"livemode":false,"data":{"object":'
    .. '{"id":"ord_8f","amount":4999,"currency":"usd","customer":{"id":"cus_42","email":"b@example.com"},'
    .. '"items":[{"sku":"sku_1","qty":1,"price":19.99},{"sku":"sku_2","qty":2,"price":1500}],'
    .. '"metadata":{"source":"bench","note":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}}}',
  '[]', '{}', '[[]]', '[{}]', '{"a":[]}', ' \t\r\n[ 1 , 2 ] \n', '"just a string"', '42', '-0', '0', '-0.0',
  'true', 'false', 'null', '[null,null]', '{"a":null}', '{"a":1,"a":2,"a":3}',
  '1e400', '-1e400', '1e-400', '123456789012345', '1234567890123456', '12345678901234567890',
  '-123456789012345', '0.1', '1.5e10', '1E+2', '1e', '1.', '-.5', '.5', '+1', '01', '-01', '0x10',
  '-0x1', 'inf', '-inf', 'Infinity', 'NaN', '-nan', '-', '--1', '1-', '[1 2]', '[1,]', '[,1]', '{"a"}',
  '{"a":}', '{"a" 1}', '{a:1}', '{"a":1,}', '{,}', '{"a":1 "b":2}', '[1}', '{"a":1]', '[', ']', '{',
  '}', '', ' ', '"', '"abc', '"\\', '"\\"', '"a\\qb"', '"\\u00e9\\u20ac\\ud83d\\ude00"', '"\\u0000"',
  '"\\ud83d"', '"\\ude00"', '"\\ud83dx"', '"\\ud83d\\u0041"', '"\\u12"', '"\\u12g4"', '"\\uZZZZ"',
  '"\\/\\b\\f\\n\\r\\t\\"\\\\"', '"tab\there"', '"\1\2\31"', '"caf\195\169"', '"\255\254"',
  '[true,false,null,tru]', '[nul]', '[fals]', 'truex', 'true false', '{} {}', '{}x', '{}\0', '{}\0{}',
  '[1\0]', '"a\0b"', 'a\0', '\0', '\0\0', '[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,'
    .. '24,25,26,27,28,29,30,31,32,33,34,35]',
  '{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,'
    .. '"k14":14,"k15":15,"k16":16,"k17":17,"k18":18,"k19":19,"k20":20,"k21":21,"k22":22,"k23":23,'
    .. '"k24":24,"k25":25,"k26":26,"k27":27,"k28":28,"k29":29,"k30":30,"k31":31,"k32":32,"k33":33,"k1":0}',
  '[1 01]', '[1 -]', '[1 "a\\q"]', '[1 "abc', '{"a" "b\\x"}', '{"a":1 1e999}', '[1 nan]',
}

t.test("the corpus: every text decodes to cjson's value or fails with cjson's message", function()
  for i, text in ipairs(corpus) do
    local ok, why = compare(text)
    t.ok(ok, ("corpus[%d] %q: %s"):format(i, text, tostring(why)))
  end
end)

t.test("arrays and objects across the size where the table is made early (32 members)", function()
  for n = 0, 70 do
    local a, o = {}, {}
    for i = 1, n do
      a[i] = tostring(i)
      o[i] = ('"k%d":%d'):format(i % 40, i) -- keys repeat past 40: the last value wins
    end
    for _, text in ipairs { "[" .. table.concat(a, ",") .. "]", "{" .. table.concat(o, ",") .. "}" } do
      local ok, why = compare(text)
      t.ok(ok, ("%d members: %s"):format(n, tostring(why)))
    end
  end
end)

t.test("nesting: 100 levels decode, 101 fail with cjson's message, inside objects and arrays", function()
  for _, depth in ipairs { 99, 100, 101, 150, 5000 } do
    for _, pair in ipairs { { "[", "]" }, { '{"a":', "}" }, { '[{"k":[', "]}]" } } do
      local text = pair[1]:rep(depth) .. "1" .. pair[2]:rep(depth)
      local ok, why = compare(text)
      t.ok(ok, ("depth %d of %s: %s"):format(depth, pair[1], tostring(why)))
    end
  end
  t.ok(pcall(decode, ("["):rep(100) .. ("]"):rep(100)), "100 levels decode")
  local ok, err = pcall(decode, ("["):rep(101) .. ("]"):rep(101))
  t.ok(not ok, "101 levels fail")
  t.ok(tostring(err):find("too many nested data structures (101)", 1, true), "the depth in the message")
end)

t.test("long strings, with and without escapes, at every offset of the 16-byte scan", function()
  for n = 0, 40 do
    for _, piece in ipairs { "x", "\\n", "\\u00e9", "\\\\", "\195\169" } do
      local s = ("a"):rep(n) .. piece .. ("b"):rep(40 - n)
      local ok, why = compare('["' .. s .. '", "' .. s .. '"]')
      t.ok(ok, ("offset %d %q: %s"):format(n, piece, tostring(why)))
    end
  end
  local big = ("y"):rep(100000) .. "\\n" .. ("z"):rep(100000)
  local v = decode('"' .. big .. '"')
  t.eq(#v, 200001, "a 200 KB string with an escape in the middle")
end)

-- Random mutations of the corpus: bytes replaced, inserted, deleted, and
-- pieces of texts spliced; both decoders must agree on each.
t.test("10,000 random mutations: both decoders agree", function()
  math.randomseed(tonumber(os.getenv("RILL_FUZZ_SEED") or "") or 14)
  local alphabet = '{}[]:,"\\ \t\n0123456789-+.eEtrufalsn\0\1\255ux'
  local function pick(s) local i = math.random(#s) return s:sub(i, i) end
  local failures = {}
  for i = 1, 10000 do
    local text = corpus[math.random(#corpus)]
    for _ = 1, math.random(3) do
      local at = math.random(#text + 1)
      local op = math.random(4)
      if op == 1 then
        text = text:sub(1, at - 1) .. pick(alphabet) .. text:sub(at + 1)
      elseif op == 2 then
        text = text:sub(1, at - 1) .. pick(alphabet) .. text:sub(at)
      elseif op == 3 then
        text = text:sub(1, at - 1) .. text:sub(at + 1)
      else
        local other = corpus[math.random(#corpus)]
        text = text:sub(1, at - 1) .. other:sub(math.random(#other + 1))
      end
    end
    local ok, why = compare(text)
    if not ok and #failures < 5 then failures[#failures + 1] = ("%q: %s"):format(text, why) end
  end
  t.eq(#failures, 0, table.concat(failures, "\n"))
end)

t.test("numbers past a double's range are counted for the webhook (cjson_buf.infinities)", function()
  local infinities = require("rill.c.cjson_buf").infinities
  local before = infinities()
  decode("[1e400, -1e999, 5]")
  t.eq(infinities() - before, 2, "two infinite numbers")
end)
t.done()
