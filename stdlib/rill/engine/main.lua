-- main: rill's command line. main(args) parses the command, sets up what it
-- needs and returns; the C side then runs the loop until rill.c.os.exit().
--   rill serve [--config FILE] [--flows DIR] [--listen HOST:PORT] [--admin-listen HOST:PORT|off]
--   rill check [DIR] [--config FILE] [--luacheck-config]
--   rill run FLOW [--payload JSON] [--config FILE] [--flows DIR]
--   rill emit NAME [JSON] [--id ID]  an event into the running rill (admin API)
--   rill runs list|show|retry|count ...   the store's runs, from the command line
--   rill lua FILE [ARG...]      run a trusted Lua script (tests, benchmarks)
--   rill version
local os_c = require "rill.c.os"

local M = {}

local VERSION = "0.1.0"

local cli = require "rill.engine.cli" -- the usage text, output, options, settings
local USAGE, out, err, fail, parse, settings, apply, in_task, report_load =
  cli.USAGE, cli.out, cli.err, cli.fail, cli.parse, cli.settings, cli.apply, cli.in_task, cli.report_load

function M.serve(args)
  local opts, perr = parse(args, 2, { config = true, flows = true, listen = true, store = true,
    ["admin-listen"] = true })
  if not opts then return fail(perr) end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  local aok, aerr = pcall(apply, c)
  if not aok then return fail(aerr) end
  if c.env_file ~= "" then require("rill.log").info("env_file read", { file = c.env_file, why = "start" }) end
  in_task(M.serve_in_task, c)
end

function M.serve_in_task(c)
  local log = require "rill.log"
  local flows = require "rill.engine.flows"
  local webhook = require "rill.engine.webhook"
  local scheduler = require "rill.engine.scheduler"
  local server_c = require "rill.c.http_server"
  local timer = require "rill.c.timer"
  local task = require "rill.c.task"
  local store = require "rill.engine.store"
  local queue = require "rill.engine.queue"
  local dbevents = require "rill.engine.dbevents"
  local tz = require "rill.c.tz"

  local version = store.open(c.store, { sync = c.store_sync, timeout = c.store_timeout,
    statement_timeout = c.store_statement_timeout, reconnect_max = c.store_reconnect_max })
  require("rill.engine.webhook").store_retry_after = c.store_retry_after
  require("rill.engine.webhook").log_interval = c.http_log_interval
  require("rill.engine.webhook").max_json_values = c.max_json_values
  log.info("store open", { store = store.kind .. ":" .. store.url, schema = version })

  flows.on_reload(webhook.rebuild)
  flows.on_reload(scheduler.sync)
  flows.on_reload(queue.sync)
  flows.on_reload(dbevents.sync)
  local watcher, lib_watcher
  local schedule_reload
  -- DIR/lib (shared modules) is watched once it exists: a watch sees its own folder only
  local function watch_lib()
    if not c.watch or lib_watcher or not os_c.stat(c.flows_dir .. "/lib") then return end
    local werr
    lib_watcher, werr = os_c.watch(c.flows_dir .. "/lib", function() schedule_reload("file change") end)
    if not lib_watcher then log.warn("not watching the modules directory", { error = werr }) end
  end
  local env = require "rill.env"
  -- the warnings (missing variables, settings.json's strays) the last
  -- reload found: each is logged once, not again while it lasts
  local warned = {}
  local function reload(why)
    watch_lib()
    if c.env_file ~= "" and why ~= "start" then
      -- read again before the flows: a flow loaded now sees the new values
      local n, eerr = env.load_file(c.env_file)
      if n then
        log.info("env_file read", { file = c.env_file, variables = n, why = why })
      else
        log.error("env_file not read; the values read before stay: " .. eerr, { file = c.env_file })
      end
    end
    local summary = flows.reload(c.flows_dir)
    report_load(summary, log)
    local now = {}
    local function warn(line)
      if not warned[line] then log.warn(line) end
      now[line] = true
    end
    for _, v in pairs(flows.active) do
      for _, m in ipairs(env.missing(v.env_needs)) do warn("flow " .. v.name .. " needs a variable: " .. m) end
    end
    for _, w in ipairs(summary.warnings or {}) do warn(w) end
    warned = now
    log.info("flows reloaded", { why = why, active = #(function() local n = {} for k in pairs(flows.active) do n[#n + 1] = k end return n end)() })
    return summary
  end
  -- watched before the first load: a file saved while rill starts is not missed
  local pending
  function schedule_reload(why)
    if pending then return end
    pending = timer.after(c.reload_debounce, function()
      pending = nil
      reload(why)
    end)
  end
  if c.watch then
    local werr
    watcher, werr = os_c.watch(c.flows_dir, function(name)
      -- a PUT of settings writes settings.json and reloads: its own write is no change
      if require("rill.settings").applied(c.flows_dir, name) then
        return log.debug("file change skipped: settings.json as the last reload read it", { file = name })
      end
      schedule_reload("file change")
    end)
    if not watcher then log.warn("not watching the flows directory", { error = werr }) end
  end
  local env_watcher
  if c.watch and c.env_file ~= "" then
    -- its folder is watched (an editor or a deploy replaces the file): changes to it alone reload
    local edir, base = c.env_file:match("^(.*)/([^/]*)$")
    edir, base = edir or ".", base or c.env_file
    local werr
    env_watcher, werr = os_c.watch(edir == "" and "/" or edir, function(name)
      if name == base then schedule_reload("env_file change") end
    end)
    if not env_watcher then log.warn("not watching the env_file", { error = werr }) end
  end
  local first = reload("start")
  if next(first.conflicts or {}) then
    -- the order of loading would pick which flow serves, the other offline:
    -- rill does not start until the files say which
    local files = {}
    for file in pairs(first.conflicts) do files[#files + 1] = file end
    table.sort(files)
    log.error("rill does not start: flows claim the same route or name (a route is a method and a path); "
      .. "give each its own, then start again", { files = table.concat(files, " ") })
    if watcher then watcher:close() end
    if lib_watcher then lib_watcher:close() end
    if env_watcher then env_watcher:close() end
    store.close()
    return os_c.exit(1)
  end
  require("rill.engine.pauses").load() -- before the first request: a paused flow's webhooks answer 503
  local admin = require "rill.engine.admin"
  admin.start(c, { reload = reload })

  local listener = require "rill.engine.listener"
  local limits = listener.options(c)
  limits.reuse_port = c.reuse_port
  limits.on_error = function(msg) log.error("error in the HTTP dispatch", { error = msg }) end
  local server, lerr = server_c.listen(c.host, c.port, webhook.dispatch, limits)
  if not server then return fail(lerr) end
  listener.watch("webhooks", server, c.http_log_interval)
  -- the signals are handled from the moment the port is open: a SIGTERM
  -- right after the first request drains instead of killing the process
  os_c.on_signal("HUP", function() reload("SIGHUP") end)

  local stopping = false
  local function stop(sig)
    if stopping then return end
    stopping = true
    log.info("stopping", { signal = sig, running = task.count() })
    server:close()
    admin.set_phase("stopping")
    scheduler.stop()
    dbevents.stop()
    queue.stop()
    if watcher then watcher:close() end
    if lib_watcher then lib_watcher:close() end
    if env_watcher then env_watcher:close() end
    -- the end: one more batch through the store, answered after every
    -- batch sent before it (a sync run's record, the released leases), then
    -- exit 0; a store that does not answer holds the exit 2 s at most
    local function exit()
      local function go() os_c.exit(0) end
      if not store.is_open() then return go() end
      store.batch({ { "SELECT 1 AS ok" } }, go)
      timer.after(2, go)
    end
    local deadline = tz.now() + c.drain_timeout
    local function check()
      -- done when no run executes and every stored run's outcome is committed
      local busy = task.count() > 0 or queue.running() > 0
      local late = tz.now() >= deadline
      if busy and late and queue.running() > 0 then
        log.warn("runs still running at exit go back to the queue", { running = queue.running() })
        return queue.release(exit)
      elseif not busy or late then
        if busy then log.warn("runs still running at exit", { running = task.count() }) end
        return exit()
      end
      timer.after(0.05, check)
    end
    check()
  end
  os_c.on_signal("TERM", stop)
  os_c.on_signal("INT", stop)
  queue.start()
  scheduler.start() -- reads the schedule state: a SIGTERM may come meanwhile
  if stopping then return end
  dbevents.start(c.poll_interval)
  admin.set_phase("serving")
  log.info("rill " .. VERSION .. " serving", { listen = c.host .. ":" .. server:port(), flows = c.flows_dir,
    pid = os_c.pid(), max_connections = limits.max_connections, descriptors = server_c.descriptor_limit() })

end

-- The flow files of dir (what flows.reload loads), its shared modules, and
-- their test files, sorted.
local function flow_files(dir)
  local files, tests = {}, {}
  for _, name in ipairs(os_c.list_dir(dir) or {}) do
    if name:match("%.test%.lua$") then
      tests[#tests + 1] = dir .. "/" .. name
    elseif name:match("%.lua$") and not name:match("^[_.]") then
      files[#files + 1] = dir .. "/" .. name
    end
  end
  for _, name in ipairs(os_c.list_dir(dir .. "/lib") or {}) do -- shared modules (flows.lua)
    if name:match("^[%a_][%w_]*%.lua$") then files[#files + 1] = dir .. "/lib/" .. name end
  end
  table.sort(files)
  table.sort(tests)
  return files, tests
end

-- report_missing_env(flows, write): the variables flows need that are not set
-- (a warning: the machine that checks may not hold the secrets).
function M.report_missing_env(flows, write)
  local env = require "rill.env"
  local lines = {}
  for _, v in pairs(flows.active) do
    for _, m in ipairs(env.missing(v.env_needs)) do lines[#lines + 1] = "warning: " .. m end
  end
  table.sort(lines)
  for _, l in ipairs(lines) do write(l .. "\n") end
end

-- list_settings(flows, out): each flow's settings and the values in force.
function M.list_settings(flows, write)
  local settings = require "rill.settings"
  local names = {}
  for name in pairs(flows.active) do names[#names + 1] = name end
  table.sort(names)
  for _, name in ipairs(names) do
    for _, line in ipairs(settings.describe(flows.active[name])) do write("  " .. line .. "\n") end
  end
end

function M.check(args)
  local opts, pos = parse(args, 2, { config = true, ["luacheck-config"] = false })
  if not opts then return fail(pos) end
  if opts["luacheck-config"] then
    out(require("rill.engine.lint").config(require("rill.engine.flows").environment()))
    return os_c.exit(0)
  end
  require("rill.log").configure("error", "text")
  -- the same limits as at serve's loads: settings from RILL_* (a config
  -- file that cannot be read leaves the defaults, its own error is serve's)
  local sok, c = pcall(settings, { config = opts.config })
  if sok then
    require("rill.env").configure(c.env)
    if c.env_file ~= "" then
      local n, eerr = require("rill.env").load_file(c.env_file)
      if not n then err("rill check: env_file: " .. eerr .. "\n") end
    end
    require("rill.engine.runner").memory_limit = c.run_memory_limit
    require("rill.c.task").configure { kill_grace = c.kill_grace }
    require("rill.engine.flows").load_deadline = c.load_deadline
  end
  local dir = pos[1] or (sok and c.flows_dir) or "flows" -- like serve: flows_dir, RILL_FLOWS_DIR
  local flows = require "rill.engine.flows"
  local summary = flows.reload(dir)
  local bad = {}
  for file in pairs(summary.failed) do bad[file] = summary.failed[file] end
  -- static analysis (lint.lua): errors fail the check, warnings are shown
  local lint = require "rill.engine.lint"
  local program = sok and c.luacheck or "luacheck"
  local findings, warnings, lint_note = {}, 0, nil
  if program == "off" then
    lint_note = "static analysis off (setting luacheck)"
  elseif not lint.available(program) then
    err(string.format("rill check: %s not found: static analysis skipped (install Debian's lua-check, "
      .. "or set luacheck / RILL_LUACHECK to its path)\n", program))
    lint_note = "no static analysis: " .. program .. " not found"
  else
    local files, tests = flow_files(dir)
    local found, why = lint.run(files, program, flows.environment())
    if found then
      local in_tests
      in_tests, why = lint.run(tests, program, nil, lint.TEST_CONFIG)
      for _, f in ipairs(in_tests or {}) do found[#found + 1] = f end
      if not in_tests then found = nil end
    end
    if not found then
      err("rill check: static analysis failed: " .. why .. "\n")
      lint_note = "no static analysis"
    else
      findings = found
    end
  end
  -- by file: its load error first, then luacheck's findings in line order
  local lines = {}
  for _, f in ipairs(findings) do
    if f.severity == "error" then
      bad[f.file] = bad[f.file] or true
    else
      warnings = warnings + 1
    end
    lines[f.file] = lines[f.file] or {}
    table.insert(lines[f.file], lint.format(f))
  end
  local shown = {}
  for file in pairs(bad) do shown[#shown + 1] = file end
  for file in pairs(lines) do
    if not bad[file] then shown[#shown + 1] = file end
  end
  table.sort(shown)
  local files = {}
  for _, file in ipairs(shown) do
    if bad[file] then files[#files + 1] = file end
    if type(bad[file]) == "string" then err(bad[file] .. "\n") end
    for _, line in ipairs(lines[file] or {}) do err(line .. "\n") end
  end
  M.report_missing_env(flows, err)
  for _, w in ipairs(summary.warnings or {}) do err("warning: " .. w .. "\n") end
  local n = 0
  for _ in pairs(flows.by_file) do n = n + 1 end
  local tail = lint_note and (" (" .. lint_note .. ")")
    or (warnings > 0 and string.format(" (%d warning(s))", warnings) or "")
  if #files > 0 then
    err(string.format("rill check: %d flow file(s) with errors in %s%s\n", #files, dir, tail))
    os_c.exit(1)
  else
    out(string.format("rill check: %d flow(s) OK in %s%s\n", n, dir, tail))
    M.list_settings(flows, out)
    os_c.exit(0)
  end
end

function M.run(args)
  local opts, pos = parse(args, 2, { payload = true, config = true, flows = true })
  if not opts then return fail(pos) end
  if not pos[1] then return fail("run: which flow? usage: rill run FLOW [--payload JSON]") end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  if c.log_format == "auto" then c.log_format = "text" end
  apply(c)
  local json = require "rill.json"
  local payload
  if opts.payload then
    local perr
    payload, perr = json.try_decode(opts.payload)
    if payload == nil then return fail("--payload is not JSON: " .. tostring(perr)) end
  end
  local flows = require "rill.engine.flows"
  local summary = flows.reload(c.flows_dir)
  local flow = flows.find(pos[1])
  if not flow then
    local why = ""
    for file, msg in pairs(summary.failed) do
      if file:find(pos[1], 1, true) then why = "\n" .. msg end
    end
    return fail("run: no flow named " .. pos[1] .. " in " .. c.flows_dir .. why)
  end
  require("rill.engine.runner").start(flow, { type = "manual" }, payload, {
    on_done = function(run)
      local s, jerr
      if run.state == "succeeded" then
        s, jerr = json.stored_text(run.result == nil and json.null or run.result)
        if not s then
          run.state, run.error = "failed", { message = "the run's result is not JSON: " .. jerr }
        end
      end
      if run.state == "succeeded" then
        out(s .. "\n")
        os_c.exit(0)
      else
        out(json.encode { error = run.error.message, run_id = run.id } .. "\n")
        if run.error.traceback and run.error.traceback ~= "" then err(run.error.traceback .. "\n") end
        os_c.exit(1)
      end
    end,
  })
end

-- test [FLOW...] [--flows DIR]: the flows' test files (FLOW.test.lua beside
-- each flow), each test in a scratch world (testing.lua); exit 1 if one fails.
function M.test(args)
  local opts, names = parse(args, 2, { config = true, flows = true, verbose = false, diagrams = true })
  if not opts then return fail(names) end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  c.log_level = opts.verbose and "debug" or "error"
  c.log_format = "text"
  c.retention = 100 * 365 * 86400 -- the test's clock moves by days: keep every run it made
  apply(c)
  in_task(function()
    local testing = require "rill.engine.testing"
    local flows = require "rill.engine.flows"
    flows.on_reload(require("rill.engine.webhook").rebuild)
    flows.on_reload(require("rill.engine.queue").sync)
    local summary = flows.reload(c.flows_dir)
    local files = testing.files(c.flows_dir, names)
    for file, msg in pairs(summary.failed) do err("rill test: a flow does not load: " .. msg .. "\n") end
    if #files == 0 then
      out("rill test: no test files (FLOW.test.lua) in " .. c.flows_dir .. "\n")
      return os_c.exit(next(summary.failed) and 1 or 0)
    end
    local passed, failed = testing.run(files, function(line) out(line .. "\n") end, { diagrams = opts.diagrams })
    if next(summary.failed) then failed = failed + 1 end
    out(string.format("%d passed, %d failed\n", passed, failed))
    os_c.exit(failed > 0 and 1 or 0)
  end)
end

-- lua FILE [ARG...]: a trusted script, inside a task (so it may sleep), with
-- FILE's folder and its lib/ on package.path. Exits 1 if the script raises.
function M.lua(args)
  local file = args[2]
  if not file then return fail("lua: which file?") end
  local dir = file:match("^(.*)/[^/]*$") or "."
  package.path = dir .. "/?.lua;" .. dir .. "/lib/?.lua;" .. package.path
  local chunk, lerr = loadfile(file)
  if not chunk then return fail(lerr) end
  _G.arg = { [0] = file, select(3, unpack(args)) }
  local task = require "rill.c.task"
  task.spawn(chunk, function(_, ok, e)
    if not ok then
      err(tostring(e) .. "\n")
      os_c.exit(1)
    end
  end, nil, nil, select(3, unpack(args)))
end

-- emit NAME [JSON] [--id ID]: an event emitted by hand into the running
-- rill, through its admin API (POST /api/events/NAME with RILL_ADMIN_TOKEN,
-- at admin_listen): the server stores and fans it out as a flow's emit()
-- outside a run. Prints the answer; exit 1 when it is not a 2xx.
function M.emit(args)
  local opts, pos = parse(args, 2, { id = true, config = true, ["admin-listen"] = true })
  if not opts then return fail(pos) end
  local name, data = pos[1], pos[2] or "null"
  if not name then return fail("emit: which event? usage: rill emit NAME [JSON] [--id ID]") end
  local json = require "rill.json"
  local _, jerr = json.try_decode(data)
  if jerr then return fail("emit: the event's data is not JSON: " .. json.where(data, jerr)) end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  if not c.admin_host then return fail("emit: admin_listen is off: rill emit sends the event through the admin API") end
  local token = os_c.getenv("RILL_ADMIN_TOKEN")
  if not token or token == "" then return fail("emit: set RILL_ADMIN_TOKEN to the running rill's admin token") end
  require("rill.log").configure("error", "text")
  local function escape(s)
    return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
  end
  in_task(function()
    local host = c.admin_host:find(":", 1, true) and ("[" .. c.admin_host .. "]") or c.admin_host
    if host == "0.0.0.0" or host == "[::]" then host = "127.0.0.1" end
    local sent, res = pcall(require("rill.http").request, { method = "POST", body = data, timeout = 30,
      url = string.format("http://%s:%d/api/events/%s%s", host, c.admin_port, escape(name),
        opts.id and ("?id=" .. escape(opts.id)) or ""),
      headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/json" } })
    local where = "(the admin address: --admin-listen, or admin_listen in --config)"
    if not sent then -- nothing answered: no rill there, or not yet
      err(string.format("rill emit: no answer from %s:%d %s: %s\n", host, c.admin_port, where,
        tostring(res):gsub("^.-: http: ", "")))
      return os_c.exit(1)
    end
    if res.ok then
      out(res.body .. "\n")
      return os_c.exit(0)
    end
    -- which rill answered: another one on the default admin address is a common mix-up
    err(string.format("rill emit: %s:%d answered %d %s %s\n", host, c.admin_port, res.status, res.body, where))
    os_c.exit(1)
  end)
end

-- rill runs ..., rill db ...: cli_store.lua
M.runs, M.db = require("rill.engine.cli_store").runs, require("rill.engine.cli_store").db

function M.version()
  out("rill " .. VERSION .. " (" .. jit.version .. ", " .. _VERSION .. ")\n")
end

function M.main(args)
  local cmd = args[1]
  if cmd == "version" or cmd == "--version" then return M.version() end
  if cmd == nil or cmd == "help" or cmd == "--help" or cmd == "-h" then
    out(USAGE)
    return
  end
  local fn = ({ serve = M.serve, check = M.check, run = M.run, lua = M.lua, runs = M.runs, db = M.db,
    test = M.test, emit = M.emit })[cmd]
  if not fn then return fail("unknown command '" .. cmd .. "'\n" .. USAGE) end
  return fn(args)
end

return M
