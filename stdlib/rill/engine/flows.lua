-- flows: the registry of loaded flow versions, and loading and reloading
-- the flows directory. A flow file runs once per load, in its own sandbox,
-- with the JIT off (so the watchdog can stop its loops) and under a load
-- deadline; what it returns is validated into a flow version. A file that
-- fails leaves its previous version active. Listeners (the webhook router,
-- the scheduler) are told after each reload. Shared modules (DIR/lib/NAME.lua,
-- `require "lib.NAME"`) run inside the loading flow's sandbox and limits, one
-- copy per flow version; a module's hash is part of the version of each flow
-- that requires it.
local os_c = require "rill.c.os"
local task = require "rill.c.task"
local crypto = require "rill.c.crypto"
local log = require "rill.log"
local sandbox = require "rill.sandbox"
local triggers = require "rill.triggers"
local settings = require "rill.settings"

local flows = {
  active = {},   -- name -> flow version
  by_file = {},  -- file -> flow version
  errors = {},   -- file -> load error message
  load_deadline = 2,
  max_deadline = 24 * 3600, -- the longest deadline a flow may declare (setting max_deadline)
  reloads = 0,
  stuck = nil,   -- "the top-level code of FILE (version HASH)": stuck in C at the last start
}

local listeners = {}
local loads = 0

local NAME_PATTERN = "^[%a][%w_%-]*$"
local FLOW_KEYS = { name = 1, description = 1, triggers = 1, run = 1, deadline = 1, retries = 1, concurrency = 1,
  settings = 1 }

-- The `flows` module flows see: flows.trigger(name, payload[, {wait = false}]) (flow_api.lua).
local flow_api = require("rill.engine.flow_api")(flows)

-- response(status, body[, headers]) -> what a sync webhook flow returns to
-- choose its HTTP status and headers. A table body is sent as JSON.
local response_mt = { __metatable = "response" }
flows.response_mt = response_mt

local function response(status, body, headers)
  if type(status) ~= "number" or status < 200 or status > 599 then
    error("response: status must be a number from 200 to 599", 2)
  end
  if headers ~= nil and type(headers) ~= "table" then error("response: headers must be a table", 2) end
  return setmetatable({ status = status, body = body, headers = headers }, response_mt)
end

local function flow_modules()
  local time = require "rill.time"
  local json = require "rill.json"
  local m = {
    json = { encode = json.encode, decode = json.decode, null = json.null },
    log = { debug = log.debug, info = log.info, warn = log.warn, error = log.error },
    crypto = require "rill.crypto",
    env = require("rill.env").proxy(), -- one per flow: a rawset in one reaches no other
    flows = flow_api,
    sleep = time.sleep, -- real time, or the test clock in rill test
    response = response,
    fail = require("rill.engine.runner").fail,
    http = (function(h) -- the requests only: configure and transport are rill's, not a flow's
      return { request = h.request, get = h.get, post = h.post, put = h.put, patch = h.patch, delete = h.delete,
               encode = h.encode }
    end)(require "rill.http"),
    signatures = require "rill.signatures",
  }
  local steps = require "rill.engine.steps"
  m.step, m.sleep_until, m.sleep_for = steps.step, steps.sleep_until, steps.sleep_for
  m.wait_for, m.emit = steps.wait_for, steps.emit
  local db = require "rill.db"
  m.db = { query = db.query, exec = db.exec, tx = db.tx, use = db.use, null = db.null, plain = db.plain }
  local t = {}
  for k, v in pairs(time) do
    if k ~= "set_clock" and k ~= "sleep" then t[k] = v end -- sleep is the global sleep()
  end
  m.time = t
  -- connectors to the company's services (docs/connectors.md)
  for _, name in ipairs { "slack", "mautic", "invoiceninja", "docuseal", "directus", "email" } do
    m[name] = require("rill.connectors." .. name)
  end
  for name, ctor in pairs(triggers.constructors) do m[name] = ctor end
  -- for tests/hostile/exit_c_spin.lua only: C code no hook can interrupt
  if os_c.getenv("RILL_TEST_SPIN_C") == "1" then m._test_spin_c = os_c.spin_c end
  return m
end

-- ---- shared modules ----
-- A flow's top-level code may `require "lib.NAME"`: DIR/lib/NAME.lua runs
-- then, in a sandbox of its own with the flow's modules, inside the flow's
-- load (its deadline and memory limit), once per flow version: each flow
-- gets its own copy, so no flow can change what another one sees. Modules
-- are read with the flows at each reload; a version records the hash of
-- each module it ran (flow.modules), and a change to one makes a new version
-- of every flow that requires it.
local MODULE_NAME = "^lib%.([%a_][%w_]*)$"

-- read_lib(dir) -> name -> {file, source, hash}: the modules in DIR/lib.
function flows.read_lib(dir)
  local lib = {}
  local names = os_c.list_dir(dir .. "/lib") or {}
  for _, name in ipairs(names) do
    local base = name:match("^([%a_][%w_]*)%.lua$")
    if base then
      local file = dir .. "/lib/" .. name
      local source = os_c.read_file(file)
      if source then
        lib["lib." .. base] = { file = file, source = source,
          hash = crypto.hex(crypto.digest("sha256", source)):sub(1, 12) }
      end
    end
  end
  return lib
end

-- compile_module(m) -> chunk, or nil and "file:line: message".
local function compile_module(m)
  if m.source:byte(1) == 27 then return nil, m.file .. ": precompiled bytecode is not accepted" end
  return loadstring(m.source, "@" .. m.file)
end

-- requirer(lib, used, state) -> the `require` of one flow version's load:
-- used[name] = hash of each module it ran; state.open while the flow loads.
local function requirer(lib, used, state, modules_of)
  local cache, loading = {}, {}
  local function require_module(name)
    if not state.open then
      error("require: modules are required by a flow's top-level code, as it loads (not in run)", 2)
    end
    local m = type(name) == "string" and name:match(MODULE_NAME) and lib[name]
    if not m then
      error(string.format("require: no module %s (a module is lib/NAME.lua beside the flows, required as "
        .. "\"lib.NAME\")", tostring(name)), 2)
    end
    if cache[name] ~= nil then return cache[name] end
    if loading[name] then error("require: module " .. name .. " requires itself (a cycle)", 2) end
    local chunk, err = compile_module(m)
    if not chunk then error("require \"" .. name .. "\": " .. err, 2) end
    local env = sandbox.new(modules_of())
    env.require = require_module
    setfenv(chunk, env)
    jit.off(chunk, true)
    loading[name] = true
    local value = chunk(name)
    loading[name] = nil
    if value == nil then value = true end
    cache[name] = value
    used[name] = m.hash
    return value
  end
  return require_module
end

-- The version of a flow: its source's hash, or with modules, the hash of
-- the source's hash and each module's name and hash.
local function version_of(hash, used)
  local names = {}
  for name in pairs(used) do names[#names + 1] = name end
  if #names == 0 then return hash end
  table.sort(names)
  local parts = { hash }
  for _, name in ipairs(names) do parts[#parts + 1] = name .. "@" .. used[name] end
  return crypto.hex(crypto.digest("sha256", table.concat(parts, " "))):sub(1, 12)
end

-- Whether every module a version ran is in lib unchanged.
local function modules_unchanged(v, lib)
  for name, hash in pairs(v.modules or {}) do
    if not lib[name] or lib[name].hash ~= hash then return false end
  end
  return true
end
-- ---- end of shared modules ----

-- environment() -> a fresh copy of the globals a flow file runs with (what
-- rill check hands luacheck: lint.lua).
function flows.environment()
  local env = sandbox.new(flow_modules())
  env.require = requirer({}, {}, {}, flow_modules) -- a flow's top level and its modules have require
  return env
end

local function stem(file)
  return (file:match("([^/]+)%.lua$") or file)
end

-- plain(v, where, seen) -> a copy of what a flow file returned, made of
-- tables without metatables (keyed by strings, numbers, booleans), functions
-- and plain values. rill
-- reads the flow's table after its load, outside its deadline: a
-- metamethod (__index, __tostring...) it ran then could loop with nothing
-- to stop it. So the copy is made inside the load, and a table with a
-- metatable is refused without calling it.
local function plain(v, where, seen)
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  if debug.getmetatable(v) ~= nil then
    error("the flow's table must hold plain tables: " .. where .. " has a metatable", 0)
  end
  local c = {}
  seen[v] = c
  for k, x in pairs(v) do
    local tk = type(k)
    if tk ~= "string" and tk ~= "number" and tk ~= "boolean" and not rawequal(k, triggers.MARK) then
      error("the flow's table must hold plain tables: " .. where .. " has a key that is a " .. tk, 0)
    end
    c[k] = plain(x, tk == "string" and (where .. "." .. k) or (where .. "[" .. tostring(k) .. "]"), seen)
  end
  return c
end

-- Runs a flow chunk under the load deadline and a run's memory limit;
-- returns ok, value (a plain copy of the chunk's value: plain above).
local function run_chunk(chunk, label)
  local result
  local t = task.spawn(function(...) return plain((chunk(...)), "the returned table", {}) end,
    function(_, ...) result = { ... } end,
    { deadline = flows.load_deadline, preempt = false, memory = require("rill.engine.runner").memory_limit,
      label = label }, nil)
  if not result then
    t:kill("flows must not wait while loading")
  end
  return result[1], result[2]
end

-- retries = { attempts = 5, backoff = "10s", max_backoff = "1h" } -> seconds
local function check_retries(r, file, source)
  local line = triggers.field_line(source, "retries")
  local where = file .. (line and (":" .. line) or "")
  local function bad(fmt, ...) error(where .. ": retries: " .. string.format(fmt, ...), 0) end
  if type(r) ~= "table" then bad("expected a table like { attempts = 5, backoff = \"10s\" }") end
  local out = {}
  for k, v in pairs(r) do
    if k == "attempts" then
      if type(v) ~= "number" or v < 1 or v % 1 ~= 0 then bad("attempts must be a whole number, 1 or more (1 = no retry)") end
      out.attempts = v
    elseif k == "backoff" or k == "max_backoff" then
      local ok, d = pcall(require("rill.time").duration, v)
      if not ok or d < 0 then bad("%s %q is not a duration (e.g. \"30s\")", k, tostring(v)) end
      out[k] = d
    else
      bad("%s", triggers.unknown("option", k, { "attempts", "backoff", "max_backoff" }))
    end
  end
  return out
end

local FLOW_FIELDS = { "name", "description", "triggers", "run", "deadline", "retries", "concurrency", "settings" }

local function validate(def, file, source)
  if type(def) ~= "table" then
    error(file .. ": a flow file must return a table with triggers and a run function", 0)
  end
  for k in pairs(def) do
    if not FLOW_KEYS[k] then
      local line = triggers.field_line(source, k)
      error(string.format("%s%s: %s", file, line and (":" .. line) or "", triggers.unknown("field", k, FLOW_FIELDS)), 0)
    end
  end
  local name = def.name or stem(file)
  if type(name) ~= "string" or not name:match(NAME_PATTERN) then
    error(string.format("%s: flow name %q must be letters, digits, - and _", file, tostring(name)), 0)
  end
  if type(def.run) ~= "function" then error(file .. ": the flow has no run function", 0) end
  if type(def.triggers) ~= "table" or #def.triggers == 0 then
    error(file .. ": the flow needs at least one trigger in triggers = { ... }", 0)
  end
  local deadline
  if def.deadline ~= nil then
    local ok, d = pcall(require("rill.time").duration, def.deadline)
    if not ok or not (d > 0) then -- (not d > 0: NaN too)
      error(string.format("%s: deadline %q is not a duration (e.g. \"30s\")", file, tostring(def.deadline)), 0)
    end
    -- a deadline the flow picks must still end its runs (400 nines read as infinite; 100000h: years)
    if d > flows.max_deadline then
      error(string.format("%s: deadline %q is over max_deadline (%.0f s), the longest a flow may declare", file,
        tostring(def.deadline):sub(1, 40), flows.max_deadline), 0)
    end
    deadline = d
  end
  local retries = def.retries ~= nil and check_retries(def.retries, file, source) or nil
  local concurrency = def.concurrency
  if concurrency ~= nil and (type(concurrency) ~= "number" or concurrency < 1 or concurrency % 1 ~= 0) then
    error(string.format("%s: concurrency must be a whole number of runs at once, 1 or more, got %s", file,
      tostring(concurrency)), 0)
  end
  local decls = {}
  if def.settings ~= nil then
    local from = triggers.field_line(source, "settings")
    decls = settings.declare(def.settings, file, function(n) return triggers.field_line(source, n, from) end)
  end
  local list, accepts, asks = {}, {}, false
  for i, t in ipairs(def.triggers) do
    local ok, trig = pcall(triggers.check, t)
    if not ok then error(string.format("%s: triggers[%d]: %s", file, i, trig), 0) end
    list[i] = trig
    accepts[trig.type] = true
    asks = asks or trig.match_fn ~= nil
  end
  local run = def.run
  if asks then
    -- an event trigger's match function is asked in the run it would start
    run = function(ctx)
      local why = require("rill.engine.events").skip(list, ctx)
      if why then
        log.info("run skipped: " .. why, { event = ctx.trigger.event })
        return { skipped = why }
      end
      return def.run(ctx)
    end
  end
  return { name = name, name_line = def.name ~= nil and triggers.field_line(source, "name") or nil,
           description = def.description, run = run, triggers = list,
           accepts = accepts, deadline = deadline, retries = retries, concurrency = concurrency,
           settings = decls }
end

-- load_file(file, source[, lib]) -> flow version, or nil and a "file:line:
-- message" error. lib: the modules it may require (flows.read_lib).
function flows.load_file(file, source, lib)
  if source:byte(1) == 27 then return nil, file .. ": precompiled bytecode is not accepted" end
  local hash = crypto.hex(crypto.digest("sha256", source)):sub(1, 12)
  local label = "the top-level code of " .. file .. " (version " .. hash .. ")"
  if flows.stuck == label then
    -- loading it again would make rill exit again, and again at each restart
    return nil, file .. ": not loaded: this version's top-level code got stuck in C code at an earlier load "
      .. "and rill exited (kill_grace); change the file to load it again"
  end
  local chunk, err = loadstring(source, "@" .. file)
  if not chunk then return nil, err end
  local used, state = {}, { open = true }
  local env = sandbox.new(flow_modules())
  env.require = requirer(lib or {}, used, state, flow_modules)
  setfenv(chunk, env)
  jit.off(chunk, true)
  triggers.loading_source = source
  local env_mod = require "rill.env"
  env_mod.begin_load(file)
  local ok, def = run_chunk(chunk, label)
  local needs = env_mod.end_load()
  triggers.loading_source = nil
  state.open = false
  if not ok then
    local msg = require("rill.engine.runner").describe_error(def)
    return nil, msg:find(file, 1, true) and msg or (file .. ": " .. msg)
  end
  local vok, flow = pcall(validate, def, file, source)
  if not vok then return nil, tostring(flow) end
  loads = loads + 1
  flow.file = file
  flow.hash = hash
  flow.modules = used
  flow.version = version_of(hash, used)
  flow.module_sources = {}
  for name, h in pairs(used) do
    flow.module_sources[name] = { file = lib[name].file, source = lib[name].source, hash = h }
    for _, need in ipairs(env_mod.scan(lib[name].source, lib[name].file)) do needs[#needs + 1] = need end
  end
  -- what it needs set: its verifiers' secrets, the secret-looking env.NAME it reads
  for _, need in ipairs(env_mod.scan(source, file)) do needs[#needs + 1] = need end
  flow.env_needs = needs
  flow.loaded_at = os.time()
  return flow
end

local function is_flow_file(name)
  return name:match("%.lua$") and not name:match("%.test%.lua$") and not name:match("^[_.]")
end

-- conflicts(versions, files) -> file -> message: the versions that claim a route or a name another
-- version claims (flow_conflicts.lua).
local conflicts = require("rill.engine.flow_conflicts")(flows)

local metrics = require "rill.metrics"
local reloads_total = metrics.counter("rill_flow_reloads_total",
  "Reloads of the flows folder (at start, on a file change, SIGHUP or the admin API).")
local load_errors_total = metrics.counter("rill_flow_load_errors_total",
  "Flow files refused at a reload (syntax or load error, invalid definition, a name or route taken).")
metrics.gauge("rill_flows_active", "Flow versions in force.", nil, function(f)
  local n = 0
  for _ in pairs(flows.active or {}) do n = n + 1 end
  f:set(n)
end)
metrics.gauge("rill_flow_files_failing", "Flow files whose last load failed (an older version may be in force).",
  nil, function(f)
    local n = 0
    for _ in pairs(flows.errors or {}) do n = n + 1 end
    f:set(n)
  end)

-- reload(dir) -> summary {loaded = {files}, removed = {files}, failed = {file = msg},
-- conflicts = {file = msg}, warnings = {msg}} (conflicts: the failures for a
-- route or name taken; warnings: settings.json's entries no flow reads)
-- Loads new and changed files; a failure keeps the file's previous version.
function flows.reload(dir)
  local names, err = os_c.list_dir(dir)
  if not names then
    log.error("cannot read the flows directory", { error = err })
    return { loaded = {}, removed = {}, failed = { [dir] = err } }
  end
  table.sort(names)
  local summary = { loaded = {}, removed = {}, failed = {} }
  local lib = flows.read_lib(dir)
  for _, m in pairs(lib) do
    -- a module no flow requires yet is checked too (`rill check`)
    local chunk, cerr = compile_module(m)
    if not chunk then summary.failed[m.file] = cerr end
  end
  local next_by_file, files, seen = {}, {}, {}
  for _, name in ipairs(names) do
    local file = dir .. "/" .. name
    if is_flow_file(name) then
      seen[file] = true
      files[#files + 1] = file
      local source, rerr = os_c.read_file(file)
      local old = flows.by_file[file]
      if not source then
        summary.failed[file] = rerr
        next_by_file[file] = old
      elseif old and old.source == source and modules_unchanged(old, lib) then
        next_by_file[file] = old
      else
        local flow, lerr = flows.load_file(file, source, lib)
        if flow then
          flow.source = source
          next_by_file[file] = flow
          summary.loaded[#summary.loaded + 1] = file
        else
          summary.failed[file] = lerr
          next_by_file[file] = old
        end
      end
    end
  end
  -- A new version that clashes with another file's is refused like a load
  -- error and its file keeps its version in force (or none). That older
  -- version may clash with another new one: again, until none clashes.
  summary.conflicts = {}
  repeat
    local again = false
    for file, msg in pairs(conflicts(next_by_file, files)) do
      summary.failed[file] = summary.conflicts[file] or msg
      summary.conflicts[file] = summary.failed[file]
      local old = flows.by_file[file]
      next_by_file[file] = (old and old ~= next_by_file[file]) and old or nil
      if next_by_file[file] then again = true end
      for i, f in ipairs(summary.loaded) do
        if f == file then table.remove(summary.loaded, i) break end
      end
    end
  until not again
  -- settings.json's values for each version: a value that does not
  -- validate refuses the new version (its previous one serves, with the
  -- values it had), or keeps the version in force on its previous values
  local bad_settings
  bad_settings, summary.warnings = settings.apply(next_by_file, dir)
  for file, msg in pairs(bad_settings) do
    summary.failed[file] = msg
    local old = flows.by_file[file]
    if next_by_file[file] ~= old then
      next_by_file[file] = old
      for i, f in ipairs(summary.loaded) do
        if f == file then table.remove(summary.loaded, i) break end
      end
    end
  end
  for file in pairs(flows.by_file) do
    if not seen[file] then summary.removed[#summary.removed + 1] = file end
  end
  flows.by_file = next_by_file
  flows.active = {}
  for _, v in pairs(next_by_file) do flows.active[v.name] = v end
  flows.errors = summary.failed
  flows.reloads = flows.reloads + 1
  reloads_total:inc()
  for _ in pairs(summary.failed) do load_errors_total:inc() end
  for _, fn in ipairs(listeners) do fn(flows.active, summary) end
  return summary
end

-- on_reload(fn): fn(active, summary) after every reload.
function flows.on_reload(fn)
  listeners[#listeners + 1] = fn
end

-- find(name_or_file) -> the active version by flow name or by file path.
function flows.find(key)
  if flows.active[key] then return flows.active[key] end
  for file, v in pairs(flows.by_file) do
    if file == key or file:match("[^/]+$") == key or stem(file) == key then return v end
  end
end

-- The queue and events are below flows (docs/architecture.md, "Layout"): what they need of it
require("rill.engine.queue").load_file = flows.load_file
require("rill.engine.events").active_flows = function() return flows.active end

return flows
