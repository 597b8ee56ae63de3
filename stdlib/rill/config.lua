-- config: rill's settings. Defaults below, then the config file (a Lua file
-- returning a table, run with no access to anything), then environment
-- variables: every key can be overridden by RILL_<KEY> (RILL_LISTEN,
-- RILL_FLOWS_DIR, RILL_LOG_LEVEL...; a table setting, env or databases, by
-- a JSON object). A RILL_* variable naming no setting is warned about. Secrets
-- never go in the file: flows read them from the env_file or the environment
-- through `env` (see env.lua).
local os_c = require "rill.c.os"

local config = {}

config.defaults = {
  listen = "127.0.0.1:8080",   -- host:port the webhooks are served on
  reuse_port = false,          -- share listen's port with other rill processes (SO_REUSEPORT):
                               -- several instances on one machine, one store (docs/operations.md)
  admin_listen = "127.0.0.1:9090", -- host:port of the admin API, console, /healthz, /metrics;
                               -- "off": none (the token comes from RILL_ADMIN_TOKEN only)
  flows_dir = "flows",         -- the folder of flow files, watched for changes
  log_level = "info",          -- debug | info | warn | error
  log_format = "auto",         -- json | text | auto (text on a terminal, json otherwise)
  log_buffer = "1MiB",         -- log lines held while stderr does not take them (a stalled
                               -- reader); beyond, lines are dropped and counted
  timezone = "UTC",            -- default zone of cron triggers (time functions take a zone, UTC without one)
  max_body = "1MiB",           -- largest webhook body accepted (413 beyond)
  max_bodies_in_flight = "128MiB", -- request bytes the webhook listener holds at once, over all its
                               -- connections: bodies being received (as they arrive) and
                               -- requests buffered behind one in flight; a body past it: 503
  max_connections = "auto",    -- open webhook connections; at the limit the longest idle one makes
                               -- room (503 when none is idle). auto: the descriptor limit (ulimit -n)
                               -- less what the store, the database pools, outbound HTTP and the
                               -- admin listener need
  admin_max_connections = 16,  -- the admin listener's own budget, kept apart from the webhooks'
  max_url = "8KiB",            -- longest request URL (414 beyond)
  max_header_size = "32KiB",   -- request line and headers together (431 beyond)
  max_json_values = 20000,     -- arrays, objects and elements in a webhook's JSON body (413 beyond):
                               -- decoded, a body takes ~25 times its size, before any run holds it
  max_headers = 100,           -- header lines in a request, trailers included (431 beyond)
  max_write_backlog = "1MiB",  -- answers queued for a client that does not read them, past which
                               -- its connection is not read until it catches up
  max_write_backlog_total = "64MiB", -- answers queued for all of the listener's clients, past which
                               -- a connection with answers of its own waiting is not read
  max_pipeline = "1MiB",       -- received bytes not parsed yet (pipelined requests) past which
                               -- a connection is not read until they are handled
  max_requests = 10000,        -- requests per connection; the last one's answer closes it
  http_log_interval = "60s",   -- a limit that bites is logged once per this per reason (and counted
                               -- in /metrics as rill_http_refused_total)
  deadline = "30s",            -- default run deadline; a flow may set its own
  max_deadline = "24h",        -- the longest deadline a flow may declare (its file is rejected beyond)
  load_deadline = "2s",        -- time a flow file may take to load
  run_memory_limit = "256MiB", -- Lua memory one run (or one flow file's loading) may hold;
                               -- over it the run fails naming this setting
  process_memory_limit = "2GiB", -- Lua memory of all runs together: past it, the runs
                               -- holding more than an equal share fail (rill's own code never does)
  kill_grace = "10s",          -- a run still running this long past its deadline is stuck in
                               -- C code: rill logs it and exits for its supervisor to restart it
  stuck_file = "data/rill-stuck.txt", -- where the kill_grace exit names what was stuck, so that
                               -- a flow file stuck at load is not loaded again at the restart
  max_hold = "1s",             -- a run holding the loop this long where it cannot be paused
                               -- (a message handler) fails like at its deadline
  max_log_lines = 1000,        -- log lines one run may write; the rest are counted and dropped
  pattern_max_steps = 10000000, -- steps one string.find/match/gmatch/gsub search may take
                               -- (a backtracking pattern fails with "pattern too complex")
  max_string = "8MiB",         -- largest string a flow builds in one call (string.rep, gsub,
                               -- string.format, table.concat, json.encode): one C call the
                               -- watchdog cannot pause holds the loop ~0.5 ms per MiB
  keepalive_timeout = "75s",   -- idle keep-alive connections are closed after this
  request_timeout = "30s",     -- a whole request, received and answered, within this: else 408
                               -- (still receiving) or 504 (being handled; the run goes on)
  drain_timeout = "10s",       -- on SIGTERM, how long running runs get to finish
  reload_debounce = "0.1s",    -- file changes closer than this reload once
  watch = true,                -- reload when files in flows_dir change
  max_depth = 8,               -- longest chain of flows starting flows
  max_emits = 1000,            -- events one run may emit (each stores the event and a run of
                               -- every flow it starts); past it emit() raises naming this
  max_event_size = "1MiB",     -- largest event data (as JSON) a flow's emit() stores; each
                               -- subscriber's run stores it again (a larger one is refused)
  store = "sqlite:data/rill.db", -- the durable store: sqlite:PATH, or a postgres:// URL
  store_sync = "normal",       -- SQLite: normal (a crash of rill loses nothing; a power
                               -- loss may lose the last commits) or full (fsync per commit)
  store_timeout = "8s",        -- a write the store has not taken within this fails (an async
                               -- webhook answers 503 + Retry-After); Postgres: the connection
                               -- is dropped and made again; SQLite: the statement is interrupted
  store_statement_timeout = "5s", -- Postgres: a statement of rill's own running (or waiting on
                               -- a lock) longer than this is cancelled by the server
  store_reconnect_max = "5s",  -- Postgres: longest wait between two attempts to reconnect
                               -- (100 ms doubling, jittered); batches meanwhile fail at once
  store_retry_after = "5s",    -- the Retry-After of a 503 when the store cannot take an event
  concurrency = 100,           -- runs at once in this instance; more wait in the store
  lease = "60s",               -- a running run is taken over by another instance after this
                               -- long without its instance renewing it (it died)
  poll_interval = "1s",        -- how often queued runs are looked for
  retention = "7d",            -- finished runs are deleted after this; dead runs are kept
  retry_attempts = 5,          -- default attempts of a run (a flow may set retries = {...})
  retry_backoff = "10s",       -- first retry after about this, doubling each time
  retry_max_backoff = "1h",    -- longest wait between two attempts
  record_sync = "failed",      -- sync webhook runs kept in the store's history too: "failed"
                               -- (those that failed), "all", or "none"
  http_max_per_host = 8,       -- outbound connections at once to one host (more requests wait)
  databases = { main = "sqlite:data/app.db" }, -- what db.use(NAME) reaches; db.query uses main;
                               -- a URL, or "env:VAR" to read it from the environment
  db_pool = 8,                 -- Postgres connections per database (and transactions at once)
  db_statement_timeout = "30s", -- a statement running longer is cancelled (Postgres; an interrupt on SQLite)
  env = {},                    -- plain (non-secret) values flows read through env
  luacheck = "luacheck",       -- the program rill check analyses flows with (Debian's lua-check);
                               -- "off": none
  env_file = "",               -- a dotenv file of variables (secrets) flows read through env,
                               -- read at start and again at each reload (SIGHUP, a change of it)
  clock_offset = "0s",         -- for tests only: rill's clock runs this far ahead of the real one
                               -- (a run parked for days is woken by a restart with "2d")
}

local units = { b = 1, kb = 1000, kib = 1024, mb = 1000 * 1000, mib = 1024 * 1024,
                gb = 1000 * 1000 * 1000, gib = 1024 * 1024 * 1024 }

-- size("1MiB") -> 1048576; accepts a number of bytes too.
function config.size(v, key)
  if type(v) == "number" then return v end
  local n, unit = tostring(v):match("^%s*([%d%.]+)%s*(%a*)%s*$")
  local mult = units[(unit or ""):lower() ~= "" and unit:lower() or "b"]
  if not n or not mult then
    error(string.format("config: %s: %q is not a size (e.g. 512KiB, 1MiB)", key or "size", tostring(v)), 0)
  end
  return tonumber(n) * mult
end

-- seconds("30s") -> 30, via rill.time's duration syntax.
function config.seconds(v, key)
  local ok, s = pcall(require("rill.time").duration, v)
  if not ok then
    error(string.format("config: %s: %q is not a duration (e.g. 500ms, 30s, 5m)", key or "duration", tostring(v)), 0)
  end
  return s
end

local function coerce(key, default, value)
  if type(default) == "table" then
    -- env, databases: a JSON object of strings (RILL_ENV='{"CHANNEL": "#sales"}'), in place of the file's
    local t = require("rill.json").try_decode(value)
    local ok = type(t) == "table" and next(t) ~= 1
    for k, v in pairs(type(t) == "table" and t or {}) do
      if type(k) ~= "string" or type(v) ~= "string" then ok = false end
    end
    if not ok then
      error(string.format('config: %s: %q is not a JSON object of strings (e.g. {"NAME": "value"})', key, value), 0)
    end
    return t
  elseif type(default) == "number" then
    local n = tonumber(value)
    if not n then error(string.format("config: %s: %q is not a number", key, value), 0) end
    return n
  elseif type(default) == "boolean" then
    local v = tostring(value):lower()
    if v == "1" or v == "true" or v == "yes" then return true end
    if v == "0" or v == "false" or v == "no" then return false end
    error(string.format("config: %s: %q is not a boolean", key, value), 0)
  end
  return value
end

-- Variables named RILL_* that rill reads and that are no setting.
local NOT_SETTINGS = {
  RILL_ADMIN_TOKEN = true,  -- the admin API's token (admin.lua)
  RILL_STDLIB = true,       -- the stdlib read from disk (runtime/modules.c)
  RILL_TEST_SPIN_C = true,  -- tests/hostile only (flows.lua)
  RILL_BIN = true,          -- the test harness's binary (tests/lib/harness.py)
  RILL_TEST_TOTALS = true,  -- make test's tally (tools/run-tests.sh)
}

-- unknown_env([environ]) -> {{name, guess}} of the RILL_* variables that name
-- no setting (a typo, or a setting renamed), sorted by name; guess is the
-- nearest real name, or nil.
function config.unknown_env(environ)
  environ = environ or os_c.environ()
  local names = {}
  for k in pairs(config.defaults) do names[#names + 1] = k end
  for k in pairs(NOT_SETTINGS) do names[#names + 1] = k:sub(6):lower() end
  table.sort(names)
  local out = {}
  for name in pairs(environ) do
    if type(name) == "string" and name:sub(1, 5) == "RILL_" and not NOT_SETTINGS[name]
        and config.defaults[name:sub(6):lower()] == nil then
      local guess = require("rill.triggers").closest(name:sub(6), names)
      out[#out + 1] = { name = name, guess = guess and ("RILL_" .. guess:upper()) or nil }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

-- admin_address(c): c.admin_host and c.admin_port from c.admin_listen
-- (both nil when it is "off").
function config.admin_address(c)
  c.admin_host, c.admin_port = nil, nil
  if c.admin_listen == "off" then return end
  local host, port = tostring(c.admin_listen):match("^%[?([^%]]*)%]?:(%d+)$")
  if not host then
    error(string.format("config: admin_listen: %q is not host:port or \"off\"", tostring(c.admin_listen)), 0)
  end
  c.admin_host, c.admin_port = host, tonumber(port)
end

-- load(path) -> settings table; path may be nil (defaults and environment only).
-- Raises a message naming the file and the key on any error.
function config.load(path)
  local c = {}
  for k, v in pairs(config.defaults) do c[k] = v end
  if path then
    local src, err = os_c.read_file(path)
    if not src then error("config: " .. err, 0) end
    local chunk, perr = loadstring(src, "@" .. path)
    if not chunk then error("config: " .. perr, 0) end
    setfenv(chunk, {})
    local ok, t = pcall(chunk)
    if not ok then error("config: " .. tostring(t), 0) end
    if type(t) ~= "table" then error("config: " .. path .. " must return a table", 0) end
    for k, v in pairs(t) do
      if config.defaults[k] == nil then
        error(string.format("config: %s: unknown setting %q", path, tostring(k)), 0)
      end
      c[k] = v
    end
  end
  for k, default in pairs(config.defaults) do
    local v = os_c.getenv("RILL_" .. k:upper())
    if v then c[k] = coerce("RILL_" .. k:upper(), default, v) end
  end
  -- Normalise units once, here, so the rest of rill deals in bytes and seconds.
  for _, k in ipairs { "max_body", "max_bodies_in_flight", "max_url", "max_header_size", "max_write_backlog",
                       "max_write_backlog_total", "max_pipeline",
                       "run_memory_limit", "process_memory_limit", "max_string", "log_buffer",
                       "max_event_size" } do
    c[k] = config.size(c[k], k)
  end
  if c.log_buffer < 4096 then error("config: log_buffer: at least 4KiB", 0) end
  if c.max_bodies_in_flight < c.max_body then
    error("config: max_bodies_in_flight: less than max_body (a body of max_body could never be received)", 0)
  end
  if c.max_connections ~= "auto" then
    local n = tonumber(c.max_connections)
    if not n or n < 1 then
      error(string.format("config: max_connections: %q is not a number or \"auto\"", tostring(c.max_connections)), 0)
    end
    c.max_connections = n
  end
  for _, k in ipairs { "deadline", "max_deadline", "load_deadline", "kill_grace", "max_hold", "keepalive_timeout", "request_timeout",
                       "drain_timeout", "reload_debounce", "http_log_interval", "lease", "poll_interval", "retention",
                       "retry_backoff", "retry_max_backoff", "db_statement_timeout", "clock_offset",
                       "store_timeout", "store_statement_timeout", "store_reconnect_max", "store_retry_after" } do
    c[k] = config.seconds(c[k], k)
  end
  -- counts (max_emits, max_depth, concurrency...): whole numbers, 0 or
  -- more; a string or a fraction would fail later, at each use
  for k, default in pairs(config.defaults) do
    if type(default) == "number" then
      local n = tonumber(c[k])
      if not n or n < 0 or n % 1 ~= 0 then
        error(string.format("config: %s: %q is not a whole number, 0 or more", k, tostring(c[k])), 0)
      end
      c[k] = n
    end
  end
  local host, port = tostring(c.listen):match("^%[?([^%]]*)%]?:(%d+)$")
  if not host then error(string.format("config: listen: %q is not host:port", tostring(c.listen)), 0) end
  c.host, c.port = host, tonumber(port)
  config.admin_address(c)
  if not ({ debug = 1, info = 1, warn = 1, error = 1 })[c.log_level] then
    error(string.format("config: log_level: %q is not debug, info, warn or error", tostring(c.log_level)), 0)
  end
  local rs = ({ ["true"] = "all", ["false"] = "none" })[tostring(c.record_sync)] or c.record_sync
  if rs ~= "failed" and rs ~= "all" and rs ~= "none" then
    error(string.format("config: record_sync: %q is not failed, all or none", tostring(c.record_sync)), 0)
  end
  c.record_sync = rs
  if c.store_sync ~= "normal" and c.store_sync ~= "full" then
    error(string.format("config: store_sync: %q is not normal or full", tostring(c.store_sync)), 0)
  end
  return c
end

return config
