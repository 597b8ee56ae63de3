-- testing: `rill test`, the flows' own tests. A test file sits beside its
-- flow (flows/NAME.test.lua) and declares tests with test(name, fn(t)).
-- Each test gets a scratch world: a fresh store and main database (SQLite
-- files in a temporary folder), an environment of its own (t.env; the
-- process environment is not read), outbound HTTP answered by stubs (a call
-- nobody stubbed fails the test) and a clock that stands still until the
-- test moves it (t.now, t.advance: due cron ticks fire, sleeping and
-- waiting runs wake, in time order, without waiting), and the flows'
-- settings at their declared defaults (t.settings sets them). The flows are the
-- real ones, loaded from the flows folder, run by the real queue.
local json = require "rill.json"
local time = require "rill.time"
local timer = require "rill.c.timer"
local os_c = require "rill.c.os"
local tz = require "rill.c.tz"
local store = require "rill.engine.store"
local queue = require "rill.engine.queue"
local flows = require "rill.engine.flows"
local runner = require "rill.engine.runner"
local webhook = require "rill.engine.webhook"
local scheduler = require "rill.engine.scheduler"
local cron = require "rill.cron"
local http = require "rill.http"
local db = require "rill.db"
local env = require "rill.env"
local settings = require "rill.settings"

local testing = {}

-- "Name: value" header lines -> {name = value} (lower-case names).
local function header_table(lines)
  local h = {}
  for _, line in ipairs(lines or {}) do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then h[k:lower()] = v end
  end
  return h
end

-- The world of one test: its folder, clock, stubs and calls.
local World = {}
World.__index = World

local function stored_run(row)
  if not row then return nil end
  local e = row.error and json.try_decode(row.error)
  local r = { id = row.id, flow = row.flow, state = row.state, attempt = row.attempt, depth = row.depth,
    result = row.result and json.decode(row.result), error = e and e.message, steps = row.steps,
    logs = row.logs, payload = row.payload and json.try_decode(row.payload),
    trigger = row.trigger and json.try_decode(row.trigger), started_by = row.started_by }
  if r.result == json.null then r.result = nil end
  return r
end

-- Waits until no run executes and none is due now.
function World:settle()
  local quiet, waited = 0, 0
  while quiet < 3 do
    timer.sleep(0.002)
    waited = waited + 0.002
    if waited > 60 then error("rill test: runs still busy after 60 s", 0) end
    if queue.running() == 0 and #store.ready(store.now_ms()) == 0 then
      quiet = quiet + 1
    else
      quiet = 0
      queue.kick()
    end
  end
end

-- ---- the test's API (t) ----

local function active_flow(name, level)
  local flow = flows.find(name)
  if not flow then error("no flow named " .. tostring(name) .. " in the flows folder", level + 1) end
  return flow
end

local T = {}

local function world(t) return rawget(t, "_world") end

function T.now(t, when, zone)
  local w = world(t)
  if when == nil then return w.clock end
  if type(when) == "string" then
    -- with a zone, a wall-clock time there; else an ISO time with its offset (or UTC)
    local ok, v
    if zone then ok, v = pcall(time.parse_local, when, zone) else ok, v = pcall(time.parse, when) end
    if not ok or not v then error("t.now: " .. tostring(when) .. " is not a date-time", 2) end
    when = v
  end
  w.clock = when
  return when
end

-- The flows whose cron ticks fire as the clock moves: the test file's own
-- flow, or those named with t.schedule.
function World:scheduled_flows()
  local out = {}
  for name in pairs(self.cron_flows) do
    if flows.active[name] then out[#out + 1] = flows.active[name] end
  end
  return out
end

-- schedule(name, ...): the flows whose cron ticks fire as time passes
-- (by default the flow the test file is named after).
function T.schedule(t, ...)
  local w = world(t)
  w.cron_flows = {}
  for _, name in ipairs { ... } do
    active_flow(name, 2)
    w.cron_flows[name] = true
  end
end

-- advance(duration): time passes; what falls due meanwhile (cron ticks of
-- the scheduled flows, sleeping runs, wait timeouts, retries) happens in
-- time order.
function T.advance(t, duration)
  local w = world(t)
  local target = w.clock + time.duration(duration)
  while true do
    local next_t = target
    for _, flow in pairs(w:scheduled_flows()) do
      for _, trig in ipairs(flow.triggers) do
        if trig.type == "cron" then
          local n = cron.next(trig.spec, w.clock, trig.tz)
          if n and n < next_t then next_t = n end
        end
      end
    end
    local due = store.next_due(math.floor(w.clock * 1000))
    if due and due / 1000 < next_t then next_t = due / 1000 end
    w.clock = math.max(w.clock, next_t)
    for _, flow in pairs(w:scheduled_flows()) do
      for _, trig in ipairs(flow.triggers) do
        if trig.type == "cron" then
          local n = cron.next(trig.spec, w.clock - 1e-3, trig.tz)
          if n and math.abs(n - w.clock) < 1e-3 then w:fire(flow, trig, n) end
        end
      end
    end
    w:settle()
    if w.clock >= target then return end
  end
end

function World:fire(flow, trig, scheduled, missed)
  local info, payload, key = scheduler.tick(trig, scheduled, missed)
  local done, id, err = false, nil, nil
  queue.submit(flow, info, payload, { idem_key = key }, function(i, e)
    done, id, err = true, i, e
  end)
  while not done do timer.sleep(0.001) end
  if not id then error("rill test: the cron tick could not be stored: " .. tostring(err), 0) end
  return id
end

-- cron(flow [, {scheduled = ISO, missed = true}]) -> the stored run of a tick
-- of the flow's cron trigger, now; with scheduled, the tick of that time run
-- now (missed = true: a catch-up at start, as after ticks missed while down).
function T.cron(t, name, opts)
  local w = world(t)
  local flow = active_flow(name, 2)
  opts = opts or {}
  local scheduled = opts.scheduled and time.parse(opts.scheduled) or w.clock
  for _, trig in ipairs(flow.triggers) do
    if trig.type == "cron" then
      local id = w:fire(flow, trig, scheduled, opts.missed and true or nil)
      w:settle()
      return stored_run(store.get(id))
    end
  end
  error("flow " .. name .. " has no cron trigger", 2)
end

-- next_fire(flow) -> the next tick of the flow's cron trigger after now (ISO, in its zone).
function T.next_fire(t, name)
  local flow = active_flow(name, 2)
  for _, trig in ipairs(flow.triggers) do
    if trig.type == "cron" then return time.iso(cron.next(trig.spec, world(t).clock, trig.tz), trig.tz) end
  end
  error("flow " .. name .. " has no cron trigger", 2)
end

-- run(flow, payload) -> the run, as `rill run` makes it (manual, not stored).
function T.run(t, name, payload)
  local flow = active_flow(name, 2)
  local done
  runner.start(flow, { type = "manual" }, payload, { on_done = function(run) done = run end })
  while not done do timer.sleep(0.001) end
  world(t):settle()
  return { id = done.id, state = done.state, result = done.result, error = done.error and done.error.message }
end

-- event(flow, payload) -> the stored run of a database event trigger.
function T.db_event(t, name, payload)
  local w = world(t)
  local flow = active_flow(name, 2)
  local trig
  for _, tr in ipairs(flow.triggers) do
    if tr.type == "db_event" then trig = tr end
  end
  if not trig then error("flow " .. name .. " has no db_event trigger", 2) end
  payload = payload or {}
  payload.table = payload.table or trig.table
  local done, id
  queue.submit(flow, { type = "db_event", table = payload.table, op = payload.op, database = trig.database },
    payload, {}, function(i) done, id = true, i end)
  while not done do timer.sleep(0.001) end
  w:settle()
  return stored_run(store.get(id))
end

-- webhook(method, path, {json = table | body = string, headers = {}, query = "a=1", peer = "203.0.113.9"})
-- -> the response {status, headers, body, json}, once the runs it started ended.
function T.webhook(t, method, path, opts)
  opts = opts or {}
  local headers, body = {}, opts.body or ""
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
  if opts.json ~= nil then
    body = json.encode(opts.json)
    headers["content-type"] = headers["content-type"] or "application/json"
  end
  local resp
  local req = { peer = function() return opts.peer or "127.0.0.1" end, respond = function(_, status, rbody, rheaders)
    resp = { status = status, body = rbody, headers = rheaders or {} }
  end, alive = function() return true end }
  webhook.dispatch(req, method:upper(), path, opts.query, headers, body)
  while not resp do timer.sleep(0.001) end
  world(t):settle()
  resp.json = json.try_decode(resp.body)
  return resp
end

-- emit(name, data) -> the runs the event started (one per flow with an
-- event trigger on it that matches), once they have settled; the event is
-- stored and delivered to waits as a flow's emit() would.
function T.emit(t, name, data)
  if type(name) ~= "string" then error("t.emit(name, data)", 2) end
  local id = require("rill.engine.events").emit(name, data)
  world(t):settle()
  local out = {}
  for _, r in ipairs(store.event_runs_of(id)) do out[#out + 1] = stored_run(store.get(r.run_id)) end
  return out
end

-- events(name) -> the events of that name stored so far (emitted by the
-- flows, by webhooks' emit, by t.emit), oldest first: {id, name, data}.
function T.events(t, name)
  if type(name) ~= "string" then error("t.events(name)", 2) end
  local out = {}
  for i, e in ipairs(store.events_named(name)) do
    out[i] = { id = e.id, name = e.name, data = e.data and json.try_decode(e.data) }
  end
  return out
end

-- runs(flow) -> the stored runs of a flow, oldest first, with results.
function T.runs(t, name)
  local rows = store.list { flow = name, limit = 1000 }
  local out = {}
  for i = #rows, 1, -1 do out[#out + 1] = stored_run(store.get(rows[i].id)) end
  return out
end

function T.get_run(t, id) return stored_run(store.get(id)) end

-- stub(method, url_prefix, response): calls whose method matches and whose
-- URL starts with url_prefix get response {status, json | body, headers},
-- or what response(call) returns. A later stub of the same call wins.
function T.stub(t, method, prefix, response)
  if type(prefix) ~= "string" then error("t.stub(method, url_prefix, response)", 2) end
  table.insert(world(t).stubs, 1, { method = method:upper(), prefix = prefix, response = response or {} })
end

-- calls([method][, url_part]) -> the outbound calls made, in order (method
-- nil or "*": any):
-- {method, url, headers, body, json}.
function T.calls(t, method, part)
  local out = {}
  for _, c in ipairs(world(t).calls) do
    if (method == nil or method == "*" or c.method == method:upper()) and (part == nil or c.url:find(part, 1, true)) then
      out[#out + 1] = c
    end
  end
  return out
end

function T.env(t, values)
  for k, v in pairs(values) do world(t).env[k] = v end
end

-- settings(flow, values): the flow's settings for this test (validated like
-- settings.json's); each test starts from the declared defaults, whatever
-- settings.json says.
function T.settings(t, name, values)
  local flow = active_flow(name, 2)
  local ok, why = settings.validate(flow.settings or {}, values)
  if not ok then error("t.settings: " .. name .. ": " .. why, 2) end
  local own = world(t).settings
  own[flow.name] = own[flow.name] or {}
  for k, v in pairs(ok) do own[flow.name][k] = v end
end

-- fixture(file): runs the SQL file (relative to the test file) on the main database.
function T.fixture(t, file)
  local w = world(t)
  local path = file:sub(1, 1) == "/" and file or (w.dir_of_file .. "/" .. file)
  local sql, err = os_c.read_file(path)
  if not sql then error("t.fixture: " .. tostring(err), 2) end
  for _, stmt in ipairs(db.statements(sql)) do db.exec(stmt) end
end

-- t.eq, t.ok, t.contains: testing_assert.lua
require("rill.engine.testing_assert")(T)

local T_MT = { __index = function(t, k)
  local f = T[k]
  if f then return function(...) return f(t, ...) end end
  if k == "db" then return { query = db.query, exec = db.exec } end
  local names = { "db" }
  for name in pairs(T) do names[#names + 1] = name end
  table.sort(names)
  local guess = require("rill.triggers").closest(tostring(k), names)
  error("t has no function '" .. tostring(k):sub(1, 64) .. "'" ..
    (guess and (" (did you mean '" .. guess .. "'?)") or " (docs/testing-flows.md lists them)"), 2)
end }

-- ---- running test files ----

local seq = 0

local function new_world(file)
  seq = seq + 1
  local dir = string.format("%s/rill-test-%d-%d", os.getenv("TMPDIR") or "/tmp", os_c.pid(), seq)
  assert(os_c.mkdir_p(dir))
  local own = file:match("([^/]+)%.test%.lua$")
  local w = setmetatable({ dir = dir, dir_of_file = file:match("^(.*)/[^/]*$") or ".", stubs = {}, calls = {},
    unstubbed = {}, env = {}, settings = {}, clock = os.time(), cron_flows = own and { [own] = true } or {} }, World)
  return w
end

local function enter(w)
  -- what waits inside a run (sleep(), a step's retry backoff) moves this
  -- clock on at once, and yields a turn to the other runs
  time.set_clock(function() return w.clock end, function(seconds)
    timer.sleep(0) -- raises where a sleep may not wait (a flow file's top level), before the clock moves
    w.clock = w.clock + seconds
  end)
  env.isolate(w.env)
  settings.isolated = w.settings
  store.close()
  store.open("sqlite:" .. w.dir .. "/rill.db")
  db.configure { databases = { main = "sqlite:" .. w.dir .. "/app.db" }, store = "sqlite:" .. w.dir .. "/rill.db" }
  http.transport = function(req)
    -- a mail (email connector) is a call of method MAIL to its smtp:// URL
    local method = req.method or (req.mail_from and "MAIL") or "GET"
    local call = { method = method, url = req.url, headers = header_table(req.headers), body = req.body,
      from = req.mail_from, to = req.mail_rcpt }
    call.json = req.body and json.try_decode(req.body)
    w.calls[#w.calls + 1] = call
    for _, s in ipairs(w.stubs) do
      if (s.method == "*" or s.method == method) and req.url:sub(1, #s.prefix) == s.prefix then
        local r = s.response
        if type(r) == "function" then r = r(call) or {} end
        if r.error ~= nil then return nil, tostring(r.error) end -- a network failure: no answer at all
        local body = r.body or (r.json ~= nil and json.encode(r.json)) or ""
        local headers = {}
        for k, v in pairs(r.headers or {}) do headers[k:lower()] = v end
        if r.json ~= nil and not headers["content-type"] then headers["content-type"] = "application/json" end
        return r.status or 200, headers, body
      end
    end
    w.unstubbed[#w.unstubbed + 1] = method .. " " .. req.url
    return nil, "rill test: no stub for " .. method .. " " .. req.url
  end
end

local function leave(w)
  queue.stop()
  while queue.busy() do timer.sleep(0.001) end
  db.close()
  store.close()
  for _, f in ipairs { "rill.db", "rill.db-wal", "rill.db-shm", "app.db", "app.db-wal", "app.db-shm" } do
    os.remove(w.dir .. "/" .. f)
  end
  os.remove(w.dir)
end

-- The tests a file declares: {name, fn} in order.
local function declared(file)
  local tests = {}
  local chunk, err = loadfile(file)
  if not chunk then return nil, err end
  local fenv = setmetatable({ json = json, crypto = require "rill.crypto", test = function(name, fn)
    if type(name) ~= "string" or type(fn) ~= "function" then error("test(name, function(t) ... end)", 2) end
    tests[#tests + 1] = { name = name, fn = fn }
  end }, { __index = _G })
  setfenv(chunk, fenv)
  local ok, lerr = pcall(chunk)
  if not ok then return nil, tostring(lerr) end
  return tests
end

-- write_diagrams(dir, file, n, name), failed_runs(): testing_report.lua
local report = require "rill.engine.testing_report"
local write_diagrams, failed_runs = report.write_diagrams, report.failed_runs

-- run(files, out[, opts]) -> passed, failed. out(line) prints. opts.diagrams:
-- a folder to write the sequence diagram of each test's runs to.
function testing.run(files, out, opts)
  opts = opts or {}
  local passed, failed = 0, 0
  for _, file in ipairs(files) do
    local tests, err = declared(file)
    if not tests then
      failed = failed + 1
      out("FAIL " .. file .. ": " .. tostring(err))
    else
      for n, tc in ipairs(tests) do
        local w = new_world(file)
        enter(w)
        queue.start() -- on this test's store
        local started = tz.now()
        local t = setmetatable({ _world = w }, T_MT)
        local ok, terr = xpcall(tc.fn, function(e)
          return tostring(e)
        end, t)
        if ok then
          local sok, serr = pcall(w.settle, w)
          if not sok then ok, terr = false, serr end
        end
        if ok and #w.unstubbed > 0 then
          ok, terr = false, "outbound calls nobody stubbed: " .. table.concat(w.unstubbed, ", ")
        end
        if not ok then terr = tostring(terr) .. failed_runs() end
        if opts.diagrams then
          local dok, derr = pcall(write_diagrams, opts.diagrams, file, n, tc.name)
          if not dok and ok then ok, terr = false, "writing the diagrams of its runs: " .. tostring(derr) end
        end
        local ms = math.floor((tz.now() - started) * 1000 + 0.5)
        if ok then
          passed = passed + 1
          out(string.format("ok   %s: %s (%d ms)", file, tc.name, ms))
        else
          failed = failed + 1
          out(string.format("FAIL %s: %s\n     %s", file, tc.name, tostring(terr):gsub("\n", "\n     ")))
        end
        leave(w)
      end
    end
  end
  time.set_clock(nil)
  env.isolate(nil)
  settings.isolated = nil
  return passed, failed
end

-- The test files in folder dir, added to out.
local function in_folder(out, dir)
  local list = os_c.list_dir(dir) or {}
  table.sort(list)
  for _, name in ipairs(list) do
    if name:match("%.test%.lua$") then out[#out + 1] = dir .. "/" .. name end
  end
end

-- files(dir, names) -> the test files of the named flows (all without
-- names). A name is a flow's (quote-sent), its file's or its test file's
-- path (flows/quote-sent.lua), or a folder's (`rill test flows/`, as a
-- shell completes it: that folder's tests).
function testing.files(dir, names)
  local out = {}
  if not (names and #names > 0) then
    in_folder(out, dir)
    return out
  end
  for _, n in ipairs(names) do
    local folder = n:gsub("/+$", "")
    if folder ~= "" and os_c.list_dir(folder) then
      in_folder(out, folder)
    elseif n:match("%.test%.lua$") then
      out[#out + 1] = n
    elseif n:find("/", 1, true) then
      out[#out + 1] = n:gsub("%.lua$", "") .. ".test.lua"
    else
      out[#out + 1] = dir .. "/" .. n:gsub("%.lua$", "") .. ".test.lua"
    end
  end
  return out
end

return testing
