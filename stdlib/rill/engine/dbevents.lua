-- dbevents: database event triggers (db_event { table, on, database }).
-- `rill db install-events TABLE...` puts a trigger on each table that
-- writes every insert, update and delete into the outbox table rill_events,
-- in the same transaction as the change, and NOTIFYs the channel
-- rill_events. rill drains the outbox: each event becomes a stored run of
-- every flow whose db_event trigger matches it, with the event's id as its
-- idempotency key (a drain repeated after a crash makes no second run);
-- then the drained events are deleted. Events written while rill was down
-- wait in the outbox and are drained at start. A notification only wakes
-- the drain early: it also runs every poll_interval, so a notification lost
-- with a connection loses nothing. One instance drains at a time (a session
-- advisory lock on its listening connection); if it dies, its connection
-- closes, the lock goes with it, and another instance takes over.
local log = require "rill.log"
local queue = require "rill.engine.queue"
local task = require "rill.c.task"
local timer = require "rill.c.timer"

local dbevents = { poll_interval = 1, batch_size = 500 }

local INSTALL = {
  [[CREATE TABLE IF NOT EXISTS rill_events (
      id BIGSERIAL PRIMARY KEY,
      table_name TEXT NOT NULL,
      op TEXT NOT NULL,
      new JSONB,
      old JSONB,
      at TIMESTAMPTZ NOT NULL DEFAULT now())]],
  -- the run whose write this is ("run_id depth chain"), set by db.lua
  "ALTER TABLE rill_events ADD COLUMN IF NOT EXISTS origin TEXT",
  [[CREATE OR REPLACE FUNCTION rill_capture() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO rill_events (table_name, op, new, old, origin) VALUES (TG_TABLE_NAME, lower(TG_OP),
        CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END,
        CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
        NULLIF(current_setting('rill.origin', true), ''));
      PERFORM pg_notify('rill_events', TG_TABLE_NAME);
      RETURN NULL;
    END $$]],
}

-- install(conn, tables): the outbox, the capture function, and a trigger
-- on each table (replaced if there). In a task; raises.
function dbevents.install(conn, tables)
  local stmts = {}
  for _, sql in ipairs(INSTALL) do stmts[#stmts + 1] = { sql } end
  for _, t in ipairs(tables) do
    if not t:match("^[%a_][%w_]*$") then error("db install-events: " .. t .. " is not a table name", 0) end
    stmts[#stmts + 1] = { "DROP TRIGGER IF EXISTS rill_events ON " .. t }
    stmts[#stmts + 1] = { "CREATE TRIGGER rill_events AFTER INSERT OR UPDATE OR DELETE ON " .. t
      .. " FOR EACH ROW EXECUTE FUNCTION rill_capture()" }
  end
  local ok, err = conn:batch(stmts)
  if not ok then error("db install-events: " .. err, 0) end
end

local listeners = {} -- database name -> listener
local active = {}    -- flow name -> flow version

-- The flows an event goes to: a trigger that ignores its own flow's
-- writes skips an event whose origin run was of that flow.
local function targets(dbname, ev, writer)
  local out = {}
  for _, flow in pairs(active) do
    for _, t in ipairs(flow.triggers) do
      if t.type == "db_event" and t.database == dbname and t.table == ev.table_name and t.ops[ev.op]
        and not (t.ignore_own_writes and writer == flow.name) then
        out[#out + 1] = { flow = flow, trigger = t }
        break
      end
    end
  end
  return out
end

-- One pass over the outbox, in the listener's task: runs stored, then the
-- events deleted. Returns whether the outbox may hold more.
local function drain_once(l)
  local res = assert(l.conn:batch {
    { "LISTEN rill_events" }, -- again each time: a reconnection forgets both
    { "SELECT pg_try_advisory_lock(7224186) AS mine" },
    { "SELECT id, table_name, op, new, old, at, origin FROM rill_events ORDER BY id LIMIT $1", dbevents.batch_size,
      n = 1 },
  })
  local events = res[3]
  if not res[2][1].mine or #events == 0 then return false end
  local outstanding, failed, waiter = 0, nil, nil
  for _, ev in ipairs(events) do
    -- written by a run: the runs it starts are that run's children
    local parent, depth, chain = (ev.origin or ""):match("^(%S+) (%d+) (.+)$")
    local writer = chain and chain:match("([^ >]+)$")
    for _, target in ipairs(targets(l.name, ev, writer)) do
      outstanding = outstanding + 1
      local payload = { id = ev.id, table = ev.table_name, op = ev.op, new = ev.new, old = ev.old, at = ev.at }
      local key = "dbevent " .. l.name .. " " .. string.format("%d", ev.id)
      -- emit = NAME: the change is also that event, stored with the run (and
      -- the runs it starts), once per change even when drained again
      local emit = target.trigger.emit
      local event = emit and require("rill.engine.events").row(emit, payload, key .. " " .. emit)
      queue.submit(target.flow, { type = "db_event", table = ev.table_name, op = ev.op, database = l.name },
        payload, { idem_key = key, event = event,
          parent = parent, depth = depth and tonumber(depth) + 1 or 0, chain = chain }, function(id, err)
          outstanding = outstanding - 1
          if not id then failed = err end
          if outstanding == 0 and waiter then waiter:wake() end
        end)
    end
  end
  if outstanding > 0 then -- until the last run is stored (a submit may answer at once)
    waiter = task.waiter()
    waiter:wait()
  end
  if failed then error("storing the runs of database events failed: " .. tostring(failed), 0) end
  -- Only the events read: one with a smaller id may have been committed
  -- since (ids are taken before commits), and is read next time.
  local ids = {}
  for i, ev in ipairs(events) do ids[i] = string.format("%d", ev.id) end
  assert(l.conn:batch { { "DELETE FROM rill_events WHERE id = ANY(CAST($1 AS BIGINT[]))",
    "{" .. table.concat(ids, ",") .. "}", n = 1 } })
  return #events == dbevents.batch_size
end

local function drain(l)
  if l.draining then
    l.again = true
    return
  end
  l.draining = true
  task.spawn(function()
    repeat
      l.again = false
      while drain_once(l) do end
    until not l.again or l.stopped
  end, function(_, ok, err)
    l.draining = false
    if not ok then log.error("draining database events failed", { database = l.name, error = tostring(err) }) end
  end, 60) -- a drain stuck on a dead connection ends, and the next tick starts another
end

local function start_listener(name)
  local l = { name = name }
  listeners[name] = l
  local ok, url = pcall(require("rill.db").url, name)
  if ok and not url:match("^postgres") then
    -- a setting, not an outage: said once (until the flows change), not retried
    l.stopped = true
    log.warn("db_event triggers need a Postgres database: their flows do not start on this one",
      { database = name, kind = (url:gsub(":.*", "")) })
    return
  end
  task.spawn(function()
    if not ok then error(url, 0) end
    local conn, err = require("rill.c.pg").open(url)
    if not conn then error(err, 0) end
    if l.stopped then return conn:close() end -- stopped while it connected
    l.conn = conn
    conn:on_notify(function() drain(l) end)
    local function tick()
      if l.stopped then return end
      drain(l)
      l.timer = timer.after(dbevents.poll_interval, tick)
    end
    tick()
  end, function(_, ok, err)
    if ok then return end
    log.error("database events are not listened to; trying again in 10 s", { database = name, error = tostring(err) })
    timer.after(10, function()
      if listeners[name] == l and not l.stopped then
        listeners[name] = nil
        start_listener(name)
      end
    end)
  end)
end

local function stop_listener(l)
  l.stopped = true
  if l.timer then l.timer:stop() end
  if l.conn then l.conn:close() end
  listeners[l.name] = nil
end

-- sync(active_flows): listens to the databases that db_event triggers name.
function dbevents.sync(active_flows)
  active = active_flows
  if not dbevents.running then return end
  local wanted = {}
  for _, flow in pairs(active_flows) do
    for _, t in ipairs(flow.triggers) do
      if t.type == "db_event" then wanted[t.database] = true end
    end
  end
  for name in pairs(wanted) do
    if not listeners[name] then start_listener(name) end
  end
  for name, l in pairs(listeners) do
    if not wanted[name] then stop_listener(l) end
  end
end

function dbevents.start(poll_interval)
  dbevents.poll_interval = poll_interval or dbevents.poll_interval
  dbevents.running = true
  dbevents.sync(active)
end

function dbevents.stop()
  dbevents.running = false
  for _, l in pairs(listeners) do stop_listener(l) end
end

return dbevents
