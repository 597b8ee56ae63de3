-- env (stdlib/rill/env.lua): the env_file's dotenv format, its precedence
-- over the process environment, masking, and what flows need set.
local t = require "t"
local env = require "rill.env"
local log = require "rill.log"

t.test("dotenv lines: export, comments, quotes and escapes", function()
  local v = assert(env.parse(table.concat({
    "# a comment",
    "",
    "PLAIN=hello world  # trailing comment",
    "export EXPORTED=yes",
    "  SPACED = padded  ",
    "SINGLE='as is: # $HOME \\n'",
    'DOUBLE="a\\nb \\"q\\" \\\\ end" # comment',
    "EMPTY=",
    "HASH=a#b",
    "CRLF=windows\r",
  }, "\n"), "x.env"))
  t.eq(v.PLAIN, "hello world", "unquoted, trimmed, comment cut")
  t.eq(v.EXPORTED, "yes", "export")
  t.eq(v.SPACED, "padded", "spaces around")
  t.eq(v.SINGLE, "as is: # $HOME \\n", "single quotes: as is")
  t.eq(v.DOUBLE, 'a\nb "q" \\ end', "double-quote escapes")
  t.eq(v.EMPTY, "", "empty value")
  t.eq(v.HASH, "a#b", "# inside a word stays")
  t.eq(v.CRLF, "windows", "CR at the end of a line")
end)

t.test("a long line of spaces parses in one pass (it took quadratic time: hours for a megabyte)", function()
  local task = require "rill.c.task"
  local w, result = task.waiter(), nil
  local n = 1024 * 1024
  -- the deadline only stops a parse that never ends: the fixed one takes milliseconds
  task.spawn(env.parse, function(_, ...) result = { ... } w:wake() end, { deadline = 60 }, nil,
    "A=" .. (" "):rep(n) .. "x" .. (" \t"):rep(n) .. "y\nB=b" .. (" "):rep(n) .. "#c\n", "long.env")
  if not result then w:wait() end
  t.eq(result[1], true, "parsed: " .. tostring(result[2]))
  t.eq(result[2].A, "x" .. (" \t"):rep(n) .. "y", "inner spaces kept, outer trimmed")
  t.eq(result[2].B, "b", "comment after spaces cut")
end)

t.test("a line that is not NAME=value is refused with its line", function()
  local v, err = env.parse("A=1\nnot a variable\n", "x.env")
  t.eq(v, nil, "no values")
  t.ok(err:find("x.env:2: expected NAME=value", 1, true), err)
  v, err = env.parse('A="unclosed\n', "x.env")
  t.ok(err:find("x.env:1: A: the value's closing \" is missing", 1, true), err)
  v, err = env.parse("A='x' trailing\n", "x.env")
  t.ok(err:find("x.env:1: A: unexpected text after the quoted value", 1, true), err)
  v, err = env.parse("1A=x\n", "x.env")
  t.ok(err:find("x.env:1:", 1, true), err)
end)

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

t.test("load_file: values win over the environment, secrets are masked, RILL_* refused", function()
  local path = os.tmpname()
  write(path, "HOME=from-the-file\nTEST_API_TOKEN=abcdef123456\n")
  t.eq(env.load_file(path), 2, "two variables")
  t.eq(env.get("HOME"), "from-the-file", "the file wins over the process environment")
  t.eq(log.mask("x abcdef123456 y"), "x *** y", "a secret-looking value is masked once read from the file")
  write(path, "RILL_LISTEN=0.0.0.0:1\n")
  local n, err = env.load_file(path)
  t.eq(n, nil, "refused")
  t.ok(err:find("RILL_LISTEN: RILL_* variables configure rill", 1, true), err)
  t.eq(env.get("HOME"), "from-the-file", "the values read before stay")
  write(path, "OTHER=1\n")
  env.load_file(path)
  t.eq(env.get("HOME"), os.getenv("HOME"), "a variable gone from the file: the environment's again")
  os.remove(path)
end)

t.test("masking a long text full of a secret takes one pass (it copied the text at each one: quadratic)", function()
  -- admin's GET /api/runs/ID masks a run's result outside any run: a flow
  -- returning its secret 200,000 times held the loop for minutes
  local task = require "rill.c.task"
  log.add_secret("sekret-42")
  local n = 200000
  local w, result = task.waiter(), nil
  -- the deadline only stops a mask that never ends: the fixed one takes milliseconds
  task.spawn(log.mask, function(_, ...) result = { ... } w:wake() end, { deadline = 60 }, nil,
    ("a sekret-42 "):rep(n) .. "sekret-4")
  if not result then w:wait() end
  t.eq(result[1], true, "masked: " .. tostring(result[2]))
  t.eq(result[2], ("a *** "):rep(n) .. "sekret-4", "every whole occurrence masked")
  t.eq(log.mask("sekret-42sekret-42"), "******", "side by side")
end)

t.test("needs: secret-looking env.NAME without a fallback; missing ones named", function()
  local needs = env.scan(table.concat({
    "local a = env.MY_API_TOKEN",
    "local b = env.OTHER_SECRET or 'x'",
    "local c = env.PLAIN_URL",
    "-- env.COMMENTED_SECRET",
    "local d = myenv.NOT_ENV_SECRET",
  }, "\n"), "f.lua")
  t.eq(#needs, 1, "one need")
  t.eq(needs[1].names[1], "MY_API_TOKEN", "name")
  t.eq(needs[1].at, "f.lua:1", "line")
  local missing = env.missing(needs)
  t.eq(#missing, 1, "not set")
  t.ok(missing[1]:find("f.lua:1: MY_API_TOKEN is not set", 1, true), missing[1])
  env.isolate({ MY_API_TOKEN = "set-now-123" })
  t.eq(#env.missing(needs), 0, "set")
  env.isolate(nil)
end)

t.done()
