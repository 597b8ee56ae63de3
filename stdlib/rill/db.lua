-- db: SQL for flows, on the databases named in the config (`databases`):
-- Postgres (libpq on the loop, a pool of connections) or SQLite (a file,
-- statements on a worker thread), through the batch primitive the store
-- uses. Parameters always travel apart from the SQL text ($1, $2, ...).
--   db.query(sql, ...) -> rows (tables keyed by column; NULL is db.null)
--   db.exec(sql, ...)  -> how many rows changed
--   db.tx(function() ... end) -> fn's results: committed, or rolled back
--                         when fn raises (the error goes on), or when a
--                         statement in it failed and left it aborted (raises)
--   db.use(name)       -> the same functions on another database
-- Values: integers and floats as numbers, booleans (Postgres), text,
-- timestamps as ISO strings (UTC), json/jsonb decoded.
local json = require "rill.json"
local task = require "rill.c.task"
local current = require "rill.run" -- at_end

local db = { null = json.null }

local settings = { databases = { main = "sqlite:data/app.db" }, pool = 8, statement_timeout = 30,
  max_result = 256 * 1024 * 1024 } -- max_result: run_memory_limit
local handles = {}                                   -- name -> handle
local open_tx = setmetatable({}, { __mode = "k" })   -- run -> its transaction

-- Pool use, read at scrape time from the handles (nothing counted per statement).
local metrics = require "rill.metrics"
local function each_handle(fn)
  return function(f)
    for name, h in pairs(handles) do fn(f, name, h) end
  end
end
metrics.gauge("rill_db_pool_connections",
  "Open connections of the flows' databases, by database and kind: statements (shared) or transactions.",
  { "database", "kind" }, each_handle(function(f, name, h)
    f:labels(name, "statements"):set(#h.conns)
    f:labels(name, "transactions"):set(h.tx_open)
  end))
metrics.gauge("rill_db_pool_in_use",
  "Database work in progress, by database and kind: statements in flight, transactions open.",
  { "database", "kind" }, each_handle(function(f, name, h)
    local n = 0
    for _, load in pairs(h.load) do n = n + load end
    f:labels(name, "statements"):set(n)
    f:labels(name, "transactions"):set(h.tx_open - #h.spare)
  end))
metrics.gauge("rill_db_pool_waiting",
  "Transactions waiting in line for a connection of their database's pool, by database.",
  { "database" }, each_handle(function(f, name, h) f:labels(name):set(#h.waiters) end))
-- A statement whose result was larger than a run may hold (max_result, from
-- run_memory_limit): counted, and a line in the run's log even when the
-- flow catches the error.
local results_refused = metrics.counter("rill_db_results_refused_total",
  "db statements failed because their result was larger than a run may hold (run_memory_limit), by database.",
  { "database" })
local function result_refused(h, err)
  results_refused:labels(h.name):inc()
  require("rill.log").warn("a db result over run_memory_limit refused", { database = h.name,
    max_result = settings.max_result, error = err })
end
metrics.gauge("rill_db_pool_max", "Most connections a database's pool opens (db_pool; 1 for SQLite).",
  { "database" }, each_handle(function(f, name, h)
    f:labels(name):set(h.kind == "sqlite" and 1 or settings.pool)
  end))

-- configure{databases, db_pool, db_statement_timeout}
function db.configure(c)
  for _, h in pairs(handles) do h:close() end
  handles = {}
  settings.databases = {}
  for k, v in pairs(c.databases or { main = "sqlite:data/app.db" }) do settings.databases[k] = v end
  -- (rill's own store is not one of them: a flow that could open it would
  -- read every flow's runs, and store runs that skip a webhook's verify)
  settings.pool = c.db_pool or settings.pool
  settings.statement_timeout = c.db_statement_timeout or settings.statement_timeout
  settings.max_result = c.run_memory_limit or settings.max_result
end

-- "env:NAME" takes the URL from the environment (a URL with a password is a secret).
local function resolve(name)
  local url = settings.databases[name]
  if url == nil then
    local known = {}
    for k in pairs(settings.databases) do known[#known + 1] = k end
    table.sort(known)
    error(string.format("db: no database %q (databases: %s)", tostring(name), table.concat(known, ", ")), 0)
  end
  local var = tostring(url):match("^env:(.+)$")
  if var then
    url = require("rill.c.os").getenv(var)
    if not url then error("db " .. name .. ": the environment variable " .. var .. " is not set", 0) end
  end
  return url
end

-- url(name) -> the URL of a configured database (raises for an unknown one).
function db.url(name) return resolve(name) end

local Handle = {}
Handle.__index = Handle

-- Counts one in h[field] while fn() runs, and takes it back however that
-- ends: fn returns, raises, or the run is stopped while fn waits.
local function counted(h, field, fn, ...)
  h[field] = h[field] + 1
  local done = false
  local function undo()
    if not done then
      done = true
      h[field] = h[field] - 1
    end
  end
  local run = task.current()
  if run then current.at_end(run, undo) end
  local r = { pcall(fn, ...) }
  undo()
  if not r[1] then error(r[2], 0) end
  return unpack(r, 2, table.maxn(r))
end

-- A transaction's connection (tx) never reconnects: a new session would run
-- the rest of the transaction's statements outside it.
-- A result larger than a run may hold (max_result, or what the run has
-- left) fails while it arrives, on both kinds: its rows are kept in C,
-- outside every memory limit, until the statement is done (Postgres reads
-- them row by row then, where libpq held them all first).
local function open_conn(h, tx)
  if h.kind == "postgres" then
    local c, err = require("rill.c.pg").open(h.url,
      { statement_timeout = settings.statement_timeout, reconnect = not tx, max_result = settings.max_result })
    if not c then error("db " .. h.name .. ": " .. err, 0) end
    return c
  end
  local path = h.url:gsub("^sqlite:", "")
  local dir = path:match("^(.*)/[^/]+$")
  if dir then require("rill.c.os").mkdir_p(dir) end
  -- the statement timeout holds on SQLite too: a run ended at its deadline
  -- leaves its statement running on the worker, and a recursive query with
  -- no end held the one connection (every flow's queries on it) for ever
  -- (and a result larger than a run may hold fails while SQLite makes it:
  -- its rows are kept in C, outside every memory limit, until it is done)
  local c, err = require("rill.c.sqlite").open(path, { raw = tx, timeout = settings.statement_timeout,
    max_result = settings.max_result })
  if not c then error("db " .. h.name .. ": " .. err, 0) end
  return c
end

local function handle(name)
  local h = handles[name]
  if h then return h end
  local url = resolve(name)
  h = setmetatable({ name = name, url = url, kind = url:match("^postgres") and "postgres" or "sqlite",
    conns = {}, load = {}, opening = 0, spare = {}, tx_open = 0, tx_opening = 0, waiters = {}, open_waiters = {} }, Handle)
  handles[name] = h
  return h
end

-- The connection a statement outside a transaction goes through: the least
-- busy one, or a new one while the pool has room (Postgres). SQLite has one:
-- its writes are one at a time anyway, and it commits them in groups.
local function pick(h)
  local best
  for _, c in ipairs(h.conns) do
    if not best or h.load[c] < h.load[best] then best = c end
  end
  local room = h.kind == "postgres" and #h.conns + h.opening < settings.pool
  if best == nil and h.kind ~= "postgres" and h.opening > 0 then
    -- SQLite's one connection is opening (on a worker: it waits): wait too
    local w = task.waiter()
    h.open_waiters[#h.open_waiters + 1] = w
    w:wait()
    return pick(h)
  end
  if best == nil or (h.load[best] > 0 and room) then
    local ok, c = pcall(counted, h, "opening", open_conn, h)
    if ok then
      h.conns[#h.conns + 1] = c
      h.load[c] = 0
      best = c
    end
    local waiting = h.open_waiters
    h.open_waiters = {}
    for _, w in ipairs(waiting) do w:wake() end
    if not ok then error(c, 0) end
  end
  return best
end

-- On Postgres, the run's writes carry their origin: the capture trigger
-- of database events (dbevents.lua) reads it from this setting, local to
-- the transaction, so that the runs an event starts know the run (and the
-- chain of flows) that caused it.
local SET_ORIGIN = "SELECT set_config('rill.origin', $1, true)"

local function origin_of(run)
  if not run then return "" end
  return run.id .. " " .. run.depth .. " " .. (run.chain or run.flow)
end

-- run_batch(h, conn, stmt[, origin[, tx]]): stmt's result; with origin
-- (Postgres: a run, or false for none), in one transaction after the
-- origin is set; tx: the transaction stmt is part of (see Handle:tx).
local function run_batch(h, conn, stmt, origin, tx)
  local stmts = { stmt }
  if origin ~= nil then stmts = { { SET_ORIGIN, origin_of(origin), n = 1 }, stmt } end
  local ok, res, err
  if h.load[conn] then -- a shared connection: its load counts in pick()
    ok, res, err = pcall(counted, h.load, conn, conn.batch, conn, stmts)
  else
    ok, res, err = pcall(conn.batch, conn, stmts) -- raises on a bad parameter
  end
  if not ok then err = res:gsub("^[^:]*:%d+: ", "") end
  if not ok or not res then
    err = err:gsub("^%a+: ", "")
    local refused = err:find("the result is larger than", 1, true)
    if refused then result_refused(h, err) end
    if h.kind == "sqlite" and err:find("^interrupted") then -- by the statement timeout (or rill's exit)
      err = string.format("the statement ran longer than db_statement_timeout (%g s) and was interrupted%s",
        settings.statement_timeout, err:sub(#"interrupted" + 1))
    end
    err = "db " .. h.name .. ": " .. err
    if tx then
      tx.failed = tx.failed or err
      if refused then tx.aborted = err end
    end
    error(err, 0)
  end
  return res[#res]
end

-- Runs one statement, in the run's transaction on h if there is one.
local function execute(h, sql, ...)
  if type(sql) ~= "string" then error("db: the first argument must be the SQL text", 0) end
  local stmt = { sql, ... }
  stmt.n = select("#", ...)
  local run = task.current()
  local tx = run and open_tx[run]
  if tx and tx.handle == h then
    if tx.aborted then
      local why = tx.aborted:gsub("^db [^:]*: ", "")
      error(string.format("db %s: the transaction is aborted, by a result refused in it (%s): "
        .. "its statements fail until db.tx ends and rolls it back", h.name, why), 0)
    end
    return run_batch(h, tx.conn, stmt, nil, tx)
  end
  local conn, origin = pick(h), nil
  if h.kind == "postgres" then
    if run and run.id then
      origin = run
    elseif h.load[conn] > 0 then
      -- a task that is no run (a webhook's verify) has none; batches sharing
      -- a connection commit together, and a run's batch before it in the
      -- group would lend it its origin. (Alone, a statement is sent as it
      -- is: `rill db apply` may run what a pipeline refuses, such as
      -- CREATE INDEX CONCURRENTLY.)
      origin = false
    end
  end
  return run_batch(h, conn, stmt, origin)
end

-- ---- Rows know their columns (issue 15) ----
-- Reading a column the query did not return raises, naming the table and
-- the columns it has ("quotes row has no column amout (columns: id,
-- amount)"), where it would have been a silent nil. Every returned column
-- is in the row (NULL as db.null), so the check is an __index metamethod:
-- a read of a present column never reaches it, and pairs, json.encode (raw
-- reads) and rawget see the plain row. The metatable is one per query.

-- The one table a statement reads or writes, when it names exactly one:
-- SELECT ... FROM t (no join, no second FROM, no list), INSERT INTO t,
-- UPDATE t, DELETE FROM t. nil otherwise (the rows are then "row"s).
local function word(s, w) return s:find("%f[%w_]" .. w .. "%f[^%w_]") end
local function table_of(sql)
  local s = " " .. sql:lower():gsub("%-%-[^\n]*", " "):gsub("%s+", " ") .. " "
  local first = s:match("^ (%a+)")
  local name, rest
  if first == "insert" then
    name = s:match("^ insert into ([%w_%.\"]+)")
  elseif first == "update" then
    name = s:match("^ update ([%w_%.\"]+)")
  elseif first == "select" or first == "delete" then
    local _, n = s:gsub("%f[%w_]from%f[^%w_]", "")
    if n ~= 1 or word(s, "join") then return nil end
    name, rest = s:match("%f[%w_]from ([%w_%.\"]+)(.*)$")
    -- FROM a, b or FROM a AS x, b: more than one table
    local tables = rest and rest:gsub("%f[%w_]where%f[^%w_].*", ""):gsub("%f[%w_]order%f[^%w_].*", "")
      :gsub("%f[%w_]group%f[^%w_].*", ""):gsub("%f[%w_]limit%f[^%w_].*", "")
    if tables and tables:find(",", 1, true) then return nil end
  end
  if not name then return nil end
  name = name:gsub('"', ""):match("([^%.]+)$")
  return name
end

local function row_meta(sql, cols)
  return { __metatable = false, __index = function(_, k)
    local name = table_of(sql) -- only once it is needed: a read that fails
    error(string.format("%s has no column %s (columns: %s)", name and name .. " row" or "row", tostring(k),
      table.concat(cols, ", ")), 2)
  end }
end
db.table_of = table_of -- for tests
-- ---- end of rows know their columns ----

-- The functions flows call raise at the flow's line (level 2: they are
-- reached through tail calls, so their caller is the flow).
function Handle:query(sql, ...)
  local ok, res = pcall(execute, self, sql, ...)
  if not ok then error(res, 2) end
  local cols, null = res.columns, db.null
  local meta = row_meta(sql, cols)
  local rows = {}
  for i, row in ipairs(res) do
    for _, col in ipairs(cols) do
      if row[col] == nil then row[col] = null end
    end
    rows[i] = setmetatable(row, meta)
  end
  return rows
end

function Handle:exec(sql, ...)
  local ok, res = pcall(execute, self, sql, ...)
  if not ok then error(res, 2) end
  return res.changes
end

-- wake_waiter(h): the longest-waiting transaction that still waits (a run
-- stopped meanwhile does not) looks again for a connection.
local function wake_waiter(h)
  while #h.waiters > 0 do
    if table.remove(h.waiters, 1):wake() then return end
  end
end

-- A connection of its own for a transaction: a spare one, a new one while
-- there are fewer than the pool size (SQLite: one, as its transactions take
-- the write lock in turn anyway, and waiting here keeps them from holding
-- worker threads in SQLite's busy wait), or else the first one released:
-- the transaction waits in line, woken by release().
local function acquire(h)
  local limit = h.kind == "sqlite" and 1 or settings.pool
  while true do
    local c = table.remove(h.spare)
    if c then return c end
    if h.tx_open + h.tx_opening < limit then
      local ok, opened = pcall(counted, h, "tx_opening", open_conn, h, true)
      if not ok then
        wake_waiter(h) -- the room this one took is free again
        error(opened, 0)
      end
      h.tx_open = h.tx_open + 1
      return opened
    end
    local w = task.waiter()
    h.waiters[#h.waiters + 1] = w
    w:wait()
  end
end

-- Gives a transaction's connection back (one that was lost is closed), and
-- wakes the next transaction waiting for one.
local function release(h, conn)
  if conn.connected and not conn:connected() then
    conn:close()
    h.tx_open = h.tx_open - 1
  else
    h.spare[#h.spare + 1] = conn
  end
  wake_waiter(h)
end

function Handle:tx(fn)
  local run = task.current()
  if not run then error("db.tx: only inside a run", 2) end
  if open_tx[run] then error("db.tx: this run is already in a transaction", 2) end
  local conn = acquire(self)
  local t = { handle = self, conn = conn, open = true }
  -- A run stopped inside the transaction (its deadline), even while BEGIN
  -- is on its way, rolls it back and gives the connection back.
  current.at_end(run, function()
    if not t.open then return end
    t.open = false
    conn:batch({ { "ROLLBACK" } }, function() release(self, conn) end)
  end)
  local begin = self.kind == "sqlite" and "BEGIN IMMEDIATE" or "BEGIN"
  local ok, err = pcall(run_batch, self, conn, { begin })
  if ok and self.kind == "postgres" then
    -- (a task that is no run, a webhook's verify, has no origin)
    ok, err = pcall(run_batch, self, conn, { SET_ORIGIN, origin_of(run.id and run or nil), n = 1 })
    if not ok then pcall(run_batch, self, conn, { "ROLLBACK" }) end
  end
  if not ok then
    t.open = false
    release(self, conn)
    error(err, 2)
  end
  open_tx[run] = t
  local results = { pcall(fn) }
  open_tx[run] = nil
  -- t stays open until COMMIT or ROLLBACK is done: a run stopped meanwhile
  -- still gives the connection back (its ROLLBACK then comes after).
  -- A transaction a failed statement aborted is never reported committed,
  -- even when fn caught the error: a result refused aborts it here (on
  -- SQLite, COMMIT would keep what the refused statement changed; Postgres
  -- lost the connection with it), and Postgres answers the COMMIT of one
  -- its error aborted with ROLLBACK, and no error.
  local done, done_err, ended = results[1], nil, false
  local function rolled_back(why)
    local first = (t.aborted or t.failed or "?"):gsub("^db [^:]*: ", "")
    return string.format("db %s: the transaction was rolled back, not committed: %s (%s)", self.name, why, first)
  end
  if done and t.aborted then
    done, done_err = false, rolled_back("a result in it was refused")
  elseif done then
    local res
    done, res = pcall(run_batch, self, conn, { "COMMIT" })
    ended = done and res.command == "ROLLBACK"
    if not done then
      done_err = res
    elseif ended then
      done, done_err = false, rolled_back("a statement in it failed, which aborted it")
    end
  end
  if not done and not ended then pcall(run_batch, self, conn, { "ROLLBACK" }) end
  t.open = false
  release(self, conn)
  if not results[1] then error(results[2], 0) end
  if not done then error(done_err, 2) end
  return unpack(results, 2, table.maxn(results))
end

function Handle:close()
  for _, c in ipairs(self.conns) do c:close() end
  for _, c in ipairs(self.spare) do c:close() end
  self.conns, self.spare = {}, {}
end

-- The flows' db: the default database's functions, and use(name).
function db.use(name)
  local h = handle(name)
  return {
    query = function(...) return h:query(...) end,
    exec = function(...) return h:exec(...) end,
    tx = function(fn) return h:tx(fn) end,
    null = db.null,
  }
end

function db.query(...) return handle("main"):query(...) end
function db.exec(...) return handle("main"):exec(...) end
function db.tx(fn) return handle("main"):tx(fn) end

-- plain(row) -> the row without its NULL columns (nil for no row): a value
-- a step can return (db.null is not JSON).
function db.plain(row)
  if not row then return nil end
  local out = {}
  for k, v in pairs(row) do
    if v ~= db.null then out[k] = v end
  end
  return out
end

-- statements(script) -> the statements of an SQL script, split at each ";"
-- that ends a line (comment lines dropped), with {{date:N}} and {{time:N}}
-- replaced by today plus N days (YYYY-MM-DD) and that instant (ISO, UTC),
-- by rill's clock: demo data and fixtures stay current.
function db.statements(script)
  local time = require "rill.time"
  local now = time.now()
  script = script:gsub("{{(%a+):([+-]?%d+)}}", function(kind, n)
    local t = now + tonumber(n) * 86400
    if kind == "date" then return time.iso(t):sub(1, 10) end
    if kind == "time" then return time.iso(t) end
  end)
  local out = {}
  for stmt in (script .. "\n"):gmatch("(.-);[ \t]*\r?\n") do
    stmt = stmt:gsub("^%s*%-%-[^\n]*", ""):gsub("\n%s*%-%-[^\n]*", "")
    if stmt:find("%S") then out[#out + 1] = stmt end
  end
  return out
end

function db.close()
  for _, h in pairs(handles) do h:close() end
  handles = {}
end

return db
