-- cli: what rill's commands share (main.lua, cli_store.lua): the usage
-- text, output, argument parsing, the settings a command runs with and
-- their application to the modules that hold them, running in a task.
local os_c = require "rill.c.os"

local USAGE = [[
usage: rill <command> [options]

  serve [--config FILE] [--flows DIR] [--listen HOST:PORT] [--store URL]
        [--admin-listen HOST:PORT|off]
                      serve the flows' webhooks and cron triggers; reload on change;
                      the admin API and console (token: RILL_ADMIN_TOKEN), /healthz,
                      /readyz and /metrics on the admin address (default 127.0.0.1:9090)
  check [DIR] [--config FILE] [--luacheck-config]
                      load and validate every flow in DIR (default: flows_dir), and
                      analyse them with luacheck (undefined names are errors; unused
                      variables, shadowing... warnings); exit 1 on errors.
                      --luacheck-config prints luacheck's configuration for flows
  run FLOW [--payload JSON] [--config FILE] [--flows DIR]
                      run one flow once, print its log and result; exit 1 if it fails
  test [FLOW...] [--flows DIR] [--verbose] [--diagrams DIR]
                      run the flows' tests (FLOW.test.lua beside each flow) in a
                      scratch store and database, with stubbed HTTP and a set clock;
                      --diagrams DIR writes the sequence diagram of every run they store
  emit NAME [JSON] [--id ID] [--config FILE] [--admin-listen HOST:PORT]
                      emit the event NAME (its data: JSON, default null) into the
                      running rill through its admin API (token: RILL_ADMIN_TOKEN):
                      stored, it starts the flows with an event trigger on NAME and
                      ends the waits it matches; --id makes a repeat harmless
  runs list [--flow F] [--state S] [--limit N] [--json]
                      the latest runs in the store (states: queued running retrying
                      sleeping waiting succeeded failed dead cancelled)
  runs show ID [--json | --diagram]
                      one run: trigger, payload, result or error, every log line;
                      --diagram: its sequence as Mermaid text (trigger, steps, calls
                      by service and status, sleeps, waits, events, runs it started)
  runs retry ID [--same-version]
                      put a dead, failed or retrying run back in the queue, ready now;
                      it runs the flow's current version, or with --same-version the
                      version its last attempt ran
  runs delete ID      delete a finished or dead run and its log lines
  runs count [--state S]
                      how many runs (in that state) the store holds
                      (every runs command takes --config FILE and --store URL, like serve)
  db apply [--database NAME] FILE...
                      run SQL scripts (schema, demo data) on a database (main unless
                      named); {{date:N}} / {{time:N}} become today plus N days
  db install-events [--database NAME] TABLE...
                      capture inserts, updates and deletes of Postgres tables for
                      db_event triggers (database: main unless named)
  lua FILE [ARG...]    run a trusted Lua script with rill's modules (tests, benchmarks)
  version             print rill's version

Every setting can be overridden by an environment variable RILL_<SETTING>
(RILL_LISTEN, RILL_FLOWS_DIR, RILL_LOG_LEVEL ...; RILL_ENV='{"NAME": "value"}'
for a table): see docs/configuration.md.
]]

local function out(s) os_c.write(1, s) end
local function err(s) os_c.write(2, s) end

local function fail(msg)
  err("rill: " .. msg .. "\n")
  os_c.exit(2)
end

-- parse(args, from, flags) -> options, positional; flags maps --name to true
-- when it takes a value.
local function parse(args, from, flags)
  local opts, pos = {}, {}
  local i = from
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^%-%-([%w-]+)=(.*)$")
    name = name or a:match("^%-%-([%w-]+)$")
    if name then
      if flags[name] == nil then return nil, "unknown option --" .. name end
      if flags[name] and value == nil then
        i = i + 1
        value = args[i]
        if value == nil then return nil, "--" .. name .. " needs a value" end
      end
      opts[name] = value or true
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- Config from --config (or config/rill.lua when it exists), with --flows and
-- --listen on top; raises a readable message.
local function settings(opts)
  local config = require "rill.config"
  local path = opts.config
  if not path and os_c.stat("config/rill.lua") then path = "config/rill.lua" end
  local c = config.load(path)
  if opts.flows then c.flows_dir = opts.flows end
  if opts.store then c.store = opts.store end
  if opts.listen then
    local host, port = opts.listen:match("^%[?([^%]]*)%]?:(%d+)$")
    if not host then error("--listen: expected HOST:PORT", 0) end
    c.host, c.port = host, tonumber(port)
  end
  if opts["admin-listen"] then
    c.admin_listen = opts["admin-listen"]
    local aok, aerr = pcall(config.admin_address, c)
    if not aok then error((aerr:gsub("^config: admin_listen", "--admin-listen")), 0) end
  end
  return c
end

-- Applies settings to the modules that hold them.
local function apply(c)
  require("rill.log").configure(c.log_level, c.log_format, c.log_buffer)
  for _, u in ipairs(require("rill.config").unknown_env()) do
    require("rill.log").warn(string.format("%s names no setting, and is ignored%s", u.name,
      u.guess and (" (did you mean " .. u.guess .. "?)") or ""), { variable = u.name })
  end
  require("rill.env").configure(c.env)
  if c.env_file ~= "" then
    local n, eerr = require("rill.env").load_file(c.env_file)
    if not n then error("config: env_file: " .. eerr, 0) end
  end
  require("rill.triggers").default_timezone = c.timezone
  local runner = require "rill.engine.runner"
  runner.default_deadline = c.deadline
  runner.max_depth = c.max_depth
  require("rill.engine.events").max_size = c.max_event_size
  require("rill.engine.events").max_emits = c.max_emits
  runner.memory_limit = c.run_memory_limit
  require("rill.c.task").configure { process_memory = c.process_memory_limit, kill_grace = c.kill_grace,
    max_hold = c.max_hold, stuck_file = c.stuck_file }
  -- what the last exit through kill_grace named (docs/operations.md): a
  -- flow file's version stays unloaded while the file names it; a run is
  -- reported once (the store takes it over)
  local stuck = c.stuck_file ~= "" and os_c.read_file(c.stuck_file)
  if stuck and stuck ~= "" then
    local log = require "rill.log"
    if stuck:find("^the top%-level code of ") then
      require("rill.engine.flows").stuck = stuck
      log.warn("a flow file version stays unloaded: rill exited when its top-level code got stuck in C (kill_grace)",
        { stuck = stuck, file = c.stuck_file })
    else
      log.warn("rill last exited because a run was stuck in C past its deadline (kill_grace)", { stuck = stuck })
      os.remove(c.stuck_file)
    end
  end
  require("rill.log").max_run_lines = c.max_log_lines
  require("rill.engine.flows").load_deadline = c.load_deadline
  require("rill.engine.flows").max_deadline = c.max_deadline
  require("rill.engine.webhook").max_header_size = c.max_header_size
  require("rill.bounded").configure { pattern_max_steps = c.pattern_max_steps, max_string = c.max_string }
  require("rill.engine.queue").configure(c)
  require("rill.http").configure { max_per_host = c.http_max_per_host }
  require("rill.db").configure(c)
  if c.clock_offset ~= 0 then
    local now, offset = require("rill.c.tz").now, c.clock_offset
    require("rill.time").set_clock(function() return now() + offset end)
    require("rill.log").warn("the clock runs ahead of real time (clock_offset, for tests)", { seconds = offset })
  end
end

-- Runs fn(...) in a task (so it may wait on the store); a raised error is
-- printed and exits 1.
local function in_task(fn, ...)
  require("rill.c.task").spawn(fn, function(_, ok, e)
    if not ok then
      err("rill: " .. tostring(e) .. "\n")
      os_c.exit(1)
    end
  end, nil, nil, ...)
end

local function report_load(summary, log)
  local by_file = require("rill.engine.flows").by_file
  for file, msg in pairs(summary.failed) do
    -- what serves instead: an operator reading this needs to know whether the flow is down
    local kept = by_file[file]
    log.error("flow rejected: " .. msg, { file = file,
      serving = kept and ("its previous version, " .. tostring(kept.version)) or "nothing: no version of it loaded" })
  end
  for _, file in ipairs(summary.loaded) do log.info("flow loaded", { file = file }) end
  for _, file in ipairs(summary.removed) do log.info("flow removed", { file = file }) end
end

return { USAGE = USAGE, out = out, err = err, fail = fail, parse = parse, settings = settings, apply = apply,
         in_task = in_task, report_load = report_load }
