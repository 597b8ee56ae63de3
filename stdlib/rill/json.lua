-- json: JSON for flows, on lua-cjson. A private cjson instance, so that no
-- flow can change another's settings.
--   json.decode(s)  -> value; raises "json.decode: <reason>" on malformed input.
--                      JSON null decodes to json.null (not nil), so that keys
--                      holding null are kept: test with `v == json.null`.
--   json.encode(v)  -> string; json.null encodes as null; an empty Lua table
--                      encodes as {} (lua-cjson cannot tell [] from {}).
-- Every call into cjson is guarded: its buffers are charged to the run, and
-- one refused over the run's memory limit raises here (runtime/cjson_buf.c).
local guard = require("rill.c.cjson_buf").guard
local cjson = guard(require("cjson").new)()

cjson.encode_sparse_array(true)      -- {[1]=a,[3]=b} becomes [a,null,b], not an error
cjson.encode_invalid_numbers(false)  -- NaN/inf are errors, never invalid JSON
cjson.encode_max_depth(100)

local json = { null = cjson.null }
-- Decoding is rill's own (runtime/json_decode.c: cjson's language, values
-- and messages, tables made at their size, every byte in the Lua heap);
-- encoding is cjson's.
local decode, encode = require("rill.c.json").decode, guard(cjson.encode)

local bounded -- rill.bounded (max_string), required at the first use and kept: not per call

-- The flows' decode reads at most max_string: it is one C call the watchdog
-- cannot pause, and `..` makes strings of any size (32 MB of "0," held the
-- loop a second). rill's own parsing (try_decode) reads bodies bounded
-- before they reach it.
function json.decode(s)
  if type(s) ~= "string" then
    error("json.decode: expected a string, got " .. type(s), 2)
  end
  bounded = bounded or require "rill.bounded"
  if #s > bounded.max_string then
    bounded.refusal("json.decode", #s)
    error(string.format("json.decode: an input of %d bytes is over the limit max_string (%d bytes)", #s,
      bounded.max_string), 2)
  end
  local ok, v = pcall(decode, s)
  if not ok then
    error("json.decode: " .. tostring(v):gsub("^Expected", "expected"), 2)
  end
  return v
end

-- ---- Bounded output (issue 14) ----
-- cjson builds its output with malloc, outside the Lua heap and its limits,
-- and a table can hold one long string a million times: the output is
-- weighed first and refused over max_string. Each step adds at least 4
-- bytes, so the walk ends within max_string / 4 steps, cycles included.
local too_deep -- set by weigh: cjson refuses it itself, with its own message
local function weigh(v, depth, total, limit)
  local tv = type(v)
  if tv == "string" then return total + #v + 2 end
  if tv ~= "table" then return total + 24 end
  if depth > 100 then
    too_deep = true
    return limit + 1
  end
  for k, x in pairs(v) do
    total = weigh(x, depth + 1, total + (type(k) == "string" and #k + 4 or 8), limit)
    if total > limit then return total end
  end
  return total
end
-- ---- end of bounded output ----

-- cjson keeps its output buffer between calls (encode_keep_buffer), at the
-- largest size it ever reached: one big encode (each string reserves six
-- bytes per byte, for escapes) left that much malloc'd memory, outside any
-- limit, for the life of the process. After an encode that may have grown it
-- past KEEP, or that failed (a run ended by its memory limit inside cjson),
-- the buffer is freed: turning the option off frees it, on again starts a
-- small one. `grown` stays set if the run was ended before that: the next
-- encode frees it first.
local KEEP = 1024 * 1024
local grown = false
local keep_buffer = guard(cjson.encode_keep_buffer)
local function release()
  keep_buffer(false)
  keep_buffer(true)
  grown = false
end

function json.encode(v)
  if grown then release() end
  bounded = bounded or require "rill.bounded"
  local limit = bounded.max_string
  local size = 0
  if type(v) == "table" then
    too_deep = false
    size = weigh(v, 0, 0, limit)
    if size > limit and not too_deep then
      bounded.refusal("json.encode", size)
      error(string.format("json.encode: the result would be over %.0f bytes, over the limit max_string (%d bytes)",
        size, limit), 2)
    end
  elseif type(v) == "string" then
    size = weigh(v, 0, 0, limit)
    if size > limit then
      bounded.refusal("json.encode", size)
      error(string.format("json.encode: the result would be over %.0f bytes, over the limit max_string (%d bytes)",
        size, limit), 2)
    end
  end
  grown = size * 6 > KEEP
  local ok, s = pcall(encode, v)
  if grown or not ok then release() end
  if not ok then
    error("json.encode: " .. tostring(s), 2)
  end
  return s
end

-- stored_text(v) -> v as JSON text the store can keep, or nil and why not:
-- the encoder's error, or the byte of it that is not UTF-8 (cjson copies a
-- string's bytes as they are; Postgres refuses text that is not UTF-8).
-- For rill's own records: a run's result, a child run's payload.
local first_invalid = require("rill.c.utf8").first_invalid
function json.stored_text(v)
  local ok, s = pcall(json.encode, v)
  if not ok then return nil, tostring(s) end
  local bad = first_invalid(s)
  if bad then return nil, "byte " .. bad .. " of it as JSON is not UTF-8" end
  return s
end

-- try_decode(s) -> value, or nil and the reason (for rill's own request parsing).
function json.try_decode(s)
  local ok, v = pcall(decode, s)
  if ok then return v end
  return nil, tostring(v)
end

-- where(text, err) -> "LINE:COL: reason": a try_decode error of text (cjson
-- says "... at character N", an offset no editor shows) as the line and
-- column of that character, with cjson's token names as the characters.
local TOKENS = { T_OBJ_BEGIN = "'{'", T_OBJ_END = "'}'", T_ARR_BEGIN = "'['", T_ARR_END = "']'",
  T_STRING = "a string", T_NUMBER = "a number", T_BOOLEAN = "true or false", T_NULL = "null",
  T_COLON = "':'", T_COMMA = "','", T_END = "the end of the text", T_ERROR = "something invalid" }
function json.where(text, err)
  err = tostring(err)
  local at = tonumber(err:match(" at character (%d+)$"))
  local reason = err:gsub(" at character %d+$", ""):gsub("^Expected", "expected"):gsub("T_[%u_]+", TOKENS)
  if not at then return "1:1: " .. reason end
  local line, start = 1, 1
  for nl in text:sub(1, at - 1):gmatch("()\n") do
    line, start = line + 1, nl + 1
  end
  return string.format("%d:%d: %s", line, at - start + 1, reason)
end

return json
