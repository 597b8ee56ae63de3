-- cli_store: the commands on stored runs and on the databases: rill runs
-- list|show|retry|delete|count and rill db apply|install-events.
local os_c = require "rill.c.os"
local cli = require "rill.engine.cli"
local USAGE, out, fail, parse, settings, apply, in_task =
  cli.USAGE, cli.out, cli.fail, cli.parse, cli.settings, cli.apply, cli.in_task

local M = {}

-- runs list|show|retry|count: reads and changes the store the server uses.
local function ms_iso(ms)
  return ms and require("rill.time").iso(ms / 1000) or "-"
end

local RUNS_COMMANDS = {}

-- rows as a JSON array (an empty Lua table would encode as {}).
local function json_list(rows)
  local json, parts = require "rill.json", {}
  for i, r in ipairs(rows) do parts[i] = json.encode(r) end
  return "[" .. table.concat(parts, ",") .. "]"
end

function RUNS_COMMANDS.list(store, opts)
  local rows = store.list { flow = opts.flow, state = opts.state, limit = tonumber(opts.limit) or 50 }
  if opts.json then return out(json_list(rows) .. "\n") end
  out(string.format("%-36s %-20s %-9s %-7s %-24s %s\n", "ID", "FLOW", "STATE", "ATTEMPT", "CREATED", "ERROR"))
  local json = require "rill.json"
  for _, r in ipairs(rows) do
    local e = r.error and json.try_decode(r.error)
    local msg = e and e.message and e.message:gsub("\n.*", "") or ""
    out(string.format("%-36s %-20s %-9s %-7s %-24s %s\n", r.id, r.flow, r.state,
      r.attempt .. "/" .. r.max_attempts, ms_iso(r.created), msg:sub(1, 80)))
  end
end

function RUNS_COMMANDS.show(store, opts, id)
  if not id then error("runs show: which run? usage: rill runs show ID", 0) end
  local r = store.get(id)
  if not r then error("runs show: no run " .. id, 0) end
  require("rill.log").mask_all(r)
  local json = require "rill.json"
  if opts.diagram then
    local diagram = require "rill.engine.diagram"
    return out(diagram.mermaid(diagram.model(r, store.children(r.id, diagram.max_children + 1))))
  end
  -- the shared modules its version ran: name -> hash
  local v = r.version and store.version(r.version)
  if v and next(v.modules) then
    r.modules = {}
    for name, m in pairs(v.modules) do r.modules[name] = m.hash end
  end
  if opts.json then
    local logs, steps, event_runs = r.logs, r.steps, r.event_runs
    r.logs, r.steps, r.event_runs = nil, nil, nil
    return out(json.encode(r):sub(1, -2) .. ',"logs":' .. json_list(logs) .. ',"steps":' .. json_list(steps)
      .. ',"event_runs":' .. json_list(event_runs) .. "}\n")
  end
  local function field(name, v) if v ~= nil then out(string.format("%-12s %s\n", name .. ":", v)) end end
  field("id", r.id)
  field("flow", r.flow .. (r.version and (" (version " .. r.version .. ")") or ""))
  local again = (r.state == "dead" or r.state == "failed") and (" (rill runs retry " .. r.id .. " runs it again)") or ""
  field("state", r.state .. again)
  field("attempt", r.attempt .. " of " .. r.max_attempts)
  field("trigger", r.trigger)
  field("parent", r.parent)
  local by = r.started_by
  field("started by", by and string.format("event %s %s, emitted by run %s", by.event, by.event_id,
    by.emitted_by or "(none: emitted outside a run)"))
  if r.chain and r.chain:find(">", 1, true) then field("chain", r.chain .. " (depth " .. r.depth .. ")") end
  field("versions", r.versions and ("attempt:version " .. r.versions))
  if r.modules then
    local mods = {}
    for name, hash in pairs(r.modules) do mods[#mods + 1] = name .. "@" .. hash end
    table.sort(mods)
    field("modules", table.concat(mods, " "))
  end
  field("pinned", r.pinned and ("retries run version " .. r.pinned))
  field("settings", r.settings) -- the values its attempts read, recorded when it was created
  field("created", ms_iso(r.created))
  field("started", r.started and ms_iso(r.started))
  field("finished", r.finished and ms_iso(r.finished))
  if r.state == "retrying" or r.state == "queued" then field("next try", ms_iso(r.run_at)) end
  if r.state == "sleeping" or r.state == "waiting" then
    field("wakes", r.run_at < 2 ^ 52 and ms_iso(r.run_at) or "when its event comes (no timeout)")
  end
  field("payload", r.payload)
  field("result", r.result)
  local e = r.error and json.try_decode(r.error)
  if e then
    field("error", e.message)
    if e.traceback and e.traceback ~= "" then out(e.traceback .. "\n") end
  end
  if #r.steps > 0 then
    out(string.format("steps (%d done):\n", #r.steps))
    for _, s in ipairs(r.steps) do
      out(string.format("  %d %-24s %d attempt(s)  %s\n", s.seq, s.name, s.attempts, (s.result or ""):sub(1, 100)))
    end
  end
  if #r.event_runs > 0 then
    out(string.format("runs its events started (%d):\n", #r.event_runs))
    for _, e in ipairs(r.event_runs) do
      out(string.format("  event %s %s  %-20s %s\n", e.event, e.event_id, e.flow, e.run_id))
    end
  end
  out(string.format("log (%d lines):\n", #r.logs))
  for _, l in ipairs(r.logs) do
    out(string.format("  #%d %-5s %s%s\n", l.attempt, l.level:upper(), l.message, l.fields and ("  " .. l.fields) or ""))
  end
end

function RUNS_COMMANDS.retry(store, opts, id)
  if not id then error("runs retry: which run? usage: rill runs retry ID [--same-version]", 0) end
  local ok, why = store.requeue(id, opts["same-version"])
  if not ok then error("runs retry: " .. why, 0) end
  out("run " .. id .. " is queued again" .. (opts["same-version"] and ", on the version it failed with" or
    ", on the flow's current version") .. "; a running rill picks it up within its poll interval\n")
end

function RUNS_COMMANDS.delete(store, _, id)
  if not id then error("runs delete: which run? usage: rill runs delete ID", 0) end
  local ok, why = store.delete(id)
  if not ok then error("runs delete: " .. why, 0) end
  out("run " .. id .. " deleted\n")
end

function RUNS_COMMANDS.count(store, opts)
  out(string.format("%d\n", store.count(opts.state)))
end

function M.runs(args)
  local sub = args[2]
  local cmd = RUNS_COMMANDS[sub or ""]
  if not cmd then return fail("runs: expected list, show, retry, delete or count\n" .. USAGE) end
  local opts, pos = parse(args, 3, { flow = true, state = true, limit = true, config = true, store = true, json = false,
    ["same-version"] = false, diagram = false })
  if not opts then return fail(pos) end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  -- the env_file's secrets are masked in what is shown
  if c.env_file ~= "" then require("rill.env").load_file(c.env_file) end
  in_task(function()
    local store = require "rill.engine.store"
    store.open(c.store, { sync = c.store_sync })
    cmd(store, opts, pos[1])
    store.close()
    os_c.exit(0)
  end)
end

-- db apply [--database NAME] FILE...: runs SQL scripts (a schema, demo
-- data) on a configured database, statement by statement.
local function db_apply(args)
  local opts, files = parse(args, 3, { database = true, config = true })
  if not opts then return fail(files) end
  if #files == 0 then return fail("db apply: which files? usage: rill db apply [--database NAME] FILE...") end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  apply(c)
  in_task(function()
    local db = require "rill.db"
    local name = opts.database or "main"
    local target = db.use(name)
    for _, file in ipairs(files) do
      local script, rerr = os_c.read_file(file)
      if not script then error("db apply: " .. rerr, 0) end
      local stmts = db.statements(script)
      for i, stmt in ipairs(stmts) do
        local sok, serr = pcall(target.exec, stmt)
        if not sok then
          error(string.format("db apply: %s, statement %d of %d: %s", file, i, #stmts, tostring(serr)), 0)
        end
      end
      out(string.format("%s: %d statements applied to %s\n", file, #stmts, name))
    end
    db.close()
    os_c.exit(0)
  end)
end

-- db install-events [--database NAME] TABLE...: the capture trigger on each
-- table, for db_event triggers.
function M.db(args)
  if args[2] == "apply" then return db_apply(args) end
  if args[2] ~= "install-events" then return fail("db: expected apply or install-events\n" .. USAGE) end
  local opts, tables = parse(args, 3, { database = true, config = true })
  if not opts then return fail(tables) end
  if #tables == 0 then return fail("db install-events: which tables? usage: rill db install-events TABLE...") end
  local ok, c = pcall(settings, opts)
  if not ok then return fail(c) end
  apply(c)
  in_task(function()
    local name = opts.database or "main"
    local url = require("rill.db").url(name)
    if not url:match("^postgres") then error("db install-events: " .. name .. " is not a Postgres database", 0) end
    local conn, err = require("rill.c.pg").open(url)
    if not conn then error(err, 0) end
    require("rill.engine.dbevents").install(conn, tables)
    conn:close()
    out(string.format("events of %s are captured in %s (table rill_events)\n", table.concat(tables, ", "), name))
    os_c.exit(0)
  end)
end

return M
