-- The small stdlib modules: json (null handling, errors), config (files,
-- environment overrides, units, errors, unknown RILL_* names), log
-- (masking), env (read-only), db's table_of (rows' missing-column errors).
local t = require "t"
local json = require "rill.json"
local config = require "rill.config"
local log = require "rill.log"
local os_c = require "rill.c.os"

t.test("json keeps nulls as json.null and round-trips them", function()
  local v = json.decode('{"a":null,"b":[1,null,3],"c":"x"}')
  t.eq(v.a, json.null, "object null")
  t.eq(v.b[2], json.null, "array null")
  t.eq(json.decode(json.encode(v)).a, json.null, "round trip")
  t.eq(json.encode({ json.null }), "[null]", "encode null")
end)

t.test("json.where names a decode error's line and column, not its character offset", function()
  local text = '{\n  "big": {\n    "threshold": 5,\n  }\n}\n'
  local _, err = json.try_decode(text)
  t.eq(json.where(text, err), "4:3: expected object key string but found '}'", "a trailing comma")
  _, err = json.try_decode('{"a": ')
  t.eq(json.where('{"a": ', err), "1:7: expected value but found the end of the text", "cut short")
end)

t.test("json errors name the function and the problem", function()
  t.err(function() json.decode('{"a":') end, "json.decode: ")
  t.err(function() json.decode(42) end, "json.decode: expected a string")
  t.err(function() json.encode({ f = print }) end, "json.encode: ")
  t.err(function() json.encode(0 / 0) end, "json.encode: ")
  local v, err = json.try_decode("[1,")
  t.eq(v, nil, "try_decode value") t.ok(err, "try_decode reason")
end)

t.test("json encodes sparse arrays with nulls, not an error", function()
  t.eq(json.encode({ [1] = "a", [3] = "c" }), '["a",null,"c"]', "sparse")
end)

local function write(path, text)
  local f = assert(io.open(path, "w")) f:write(text) f:close()
end

t.test("config: defaults, a file, units", function()
  local c = config.load(nil)
  t.eq(c.port, 8080, "default port") t.eq(c.max_body, 1048576, "1MiB") t.eq(c.deadline, 30, "30s")
  local path = os.tmpname()
  write(path, 'return { listen = "0.0.0.0:9000", max_body = "64KiB", deadline = "1m30s" }')
  c = config.load(path)
  os.remove(path)
  t.eq(c.host, "0.0.0.0", "host") t.eq(c.port, 9000, "port")
  t.eq(c.max_body, 65536, "64KiB") t.eq(c.deadline, 90, "1m30s")
end)

t.test("config: mistakes are refused with the setting's name", function()
  local path = os.tmpname()
  write(path, 'return { lisen = "x" }')
  t.err(function() config.load(path) end, 'unknown setting "lisen"')
  write(path, 'return { max_body = "lots" }')
  t.err(function() config.load(path) end, "max_body")
  write(path, 'return { listen = "8080" }')
  t.err(function() config.load(path) end, "listen")
  write(path, 'return { log_level = "loud" }')
  t.err(function() config.load(path) end, "log_level")
  -- a count: a string or a fraction would fail later, at each use (each emit compared with max_emits)
  write(path, 'return { max_emits = "lots" }')
  t.err(function() config.load(path) end, "config: max_emits")
  write(path, 'return { max_depth = 2.5 }')
  t.err(function() config.load(path) end, "config: max_depth")
  write(path, 'return { max_emits = -1 }')
  t.err(function() config.load(path) end, "config: max_emits")
  write(path, 'return { max_emits = "20" }')
  t.eq(config.load(path).max_emits, 20, "a count written as a string")
  write(path, 'os.exit(3)')
  t.err(function() config.load(path) end, "config: ")  -- the file can reach nothing
  os.remove(path)
end)

t.test("config: RILL_* names that are no setting, with the nearest one", function()
  local u = config.unknown_env { RILL_LOG_LEVL = "debug", RILL_LISTEN = "x", RILL_ADMIN_TOKN = "t",
    RILL_STDLIB = "stdlib", RILL_ZZZZZZZZ = "1", HOME = "/root" }
  t.eq(#u, 3, "three unknown")
  t.eq(u[1].name, "RILL_ADMIN_TOKN") t.eq(u[1].guess, "RILL_ADMIN_TOKEN", "a variable rill reads, not a setting")
  t.eq(u[2].name, "RILL_LOG_LEVL") t.eq(u[2].guess, "RILL_LOG_LEVEL", "a setting")
  t.eq(u[3].name, "RILL_ZZZZZZZZ") t.eq(u[3].guess, nil, "nothing near")
end)

t.test("db: the table a statement names, for a row's missing-column error", function()
  local table_of = require("rill.db").table_of
  for sql, want in pairs {
    ["SELECT id FROM quotes WHERE id IN (1, 2)"] = "quotes",
    ['select a, b from public."Quotes" q where x = 1 order by a, b'] = "quotes",
    ["SELECT id FROM quotes ORDER BY a, b LIMIT 1"] = "quotes",
    ["INSERT INTO quotes (a) VALUES (1) RETURNING id"] = "quotes",
    ["UPDATE quotes SET a = 1 RETURNING *"] = "quotes",
    ["DELETE FROM quotes WHERE id = 1 RETURNING id"] = "quotes",
    ["select id from quotes -- from comments\n where id = 1"] = "quotes",
    ["SELECT * FROM a, b"] = false,
    ["SELECT * FROM a JOIN b ON a.id = b.id"] = false,
    ["SELECT (SELECT 1 FROM x) AS n FROM y"] = false,
    ["SELECT 1 AS n"] = false,
    ["WITH x AS (SELECT 1) SELECT * FROM x"] = false,
  } do
    t.eq(table_of(sql) or false, want, sql)
  end
end)

t.test("log masks secrets and secret-looking fields", function()
  local run = { id = "r1", flow = "f", logs = {} }
  log.add_secret("s3cr3t-value")
  log.configure("error", "json")  -- keep the terminal quiet: lines still go to run.logs
  log.write("info", "token is s3cr3t-value", { api_token = "abc", note = "has s3cr3t-value inside" }, run)
  local line = run.logs[1]
  t.eq(line.msg, "token is ***", "message")
  t.eq(line.fields.api_token, "***", "secret field name")
  t.eq(line.fields.note, "has *** inside", "secret value in a field")
  t.eq(line.run, "r1", "run id") t.eq(line.flow, "f", "flow")
end)

t.test("a log line's text is bounded, masked before it is cut", function()
  local run = { id = "r2", flow = "f", logs = {} }
  log.configure("error", "json")
  local big = string.rep("y", 1024 * 1024)
  log.write("info", big, nil, run)
  local line = run.logs[1]
  t.eq(#line.msg < log.max_line_bytes + 100, true, "a 1 MB message cut to max_line_bytes")
  t.eq(line.msg:find("bytes more: max_line_bytes", 1, true) ~= nil, true, "saying so")
  -- the budget is the line's: fields share what the message left
  log.write("info", "m", { a = big, b = big, c = "small" }, run)
  local size = 0
  for _, v in pairs(run.logs[2].fields) do size = size + #v end
  t.eq(size < log.max_line_bytes + 200, true, "fields together within the line's bound")
  -- a budget left under a field's own cost never goes negative (a negative
  -- end counted from the string's end: a 1 MB field got through)
  log.write("info", "m", { string.rep("y", log.max_line_bytes - 24), string.rep("z", 1e6) }, run)
  size = 0
  for _, v in pairs(run.logs[#run.logs].fields) do size = size + #v end
  t.eq(size < log.max_line_bytes + 200, true, "a field after the budget is spent: cut")
  local many = {}
  for i = 1, 5000 do many["k" .. i] = i end
  log.write("info", "m", many, run)
  t.eq(run.logs[#run.logs].fields["..."] ~= nil, true, "thousands of fields: cut, saying so")
  -- a secret at the cut is masked whole, never half written
  log.add_secret("SECRETSECRET")
  log.write("info", string.rep("x", log.max_line_bytes - 4) .. "SECRETSECRET", nil, run)
  t.eq(run.logs[#run.logs].msg:find("SECR", 1, true), nil, "no part of the secret")
end)

t.test("env hides RILL_ settings and masks secrets it hands out", function()
  local env = require("rill.env")
  env.configure({ PLAIN = "value" })
  t.eq(env.env.PLAIN, "value", "configured value")
  t.eq(env.env.RILL_LOG_LEVEL, nil, "rill's own settings")
  t.err(function() env.env.X = 1 end, "read-only")
  t.eq(env.env.HOME ~= nil, os_c.getenv("HOME") ~= nil, "process environment")
end)

t.test("form bodies decode + and percent escapes", function()
  local form = require("rill.engine.webhook").parse_form("a=1&b=x+y%21&=skip&c")
  t.eq(form.a, "1", "a") t.eq(form.b, "x y!", "b") t.eq(form.c, "", "key without value")
end)

t.done()
