-- SQLite connections (runtime/sqlite.c) through their Lua surface: opening
-- runs off the loop; group commit keeps each batch's failure its own, even
-- when a batch's own statements undo the savepoint that isolates it.
local t = require "t"
local task = require "rill.c.task"
local timer = require "rill.c.timer"
local sqlite = require "rill.c.sqlite"

local function fresh()
  local path = os.tmpname() -- a new empty file of our own: SQLite makes it a database
  return assert(sqlite.open(path)), path
end

-- Queues every batch in one loop turn (one group), waits for all outcomes.
local function group(conn, batches)
  local w, left, out = task.waiter(), #batches, {}
  for i, stmts in ipairs(batches) do
    conn:batch(stmts, function(res, err)
      out[i] = { res = res, err = err }
      left = left - 1
      if left == 0 then w:wake() end
    end)
  end
  if left > 0 then w:wait() end
  return out
end

t.test("a batch that releases its own savepoint and fails commits none of its writes", function()
  local conn = fresh()
  conn:batch { { "CREATE TABLE t (k TEXT)" } }
  local out = group(conn, {
    { { "INSERT INTO t (k) VALUES ('a')" } },
    { { "INSERT INTO t (k) VALUES ('partial')" }, { "RELEASE b" }, { "INSERT INTO missing VALUES (1)" } },
    { { "INSERT INTO t (k) VALUES ('c')" } },
  })
  t.ok(out[2].err, "the failing batch fails")
  local rows = conn:batch { { "SELECT k FROM t ORDER BY k" } }[1]
  local ks = {}
  for _, r in ipairs(rows) do ks[#ks + 1] = r.k end
  t.ok(not table.concat(ks, ","):find("partial", 1, true), "no write of the failed batch is kept: " .. table.concat(ks, ","))
  -- the others either committed or failed, never silently lost
  for _, i in ipairs { 1, 3 } do
    local k = i == 1 and "a" or "c"
    t.ok(out[i].err or table.concat(ks, ","):find(k, 1, true), "batch " .. i .. " committed or failed")
  end
  conn:close()
end)

t.test("opening a database whose file stalls (a FIFO nobody writes) does not stall the loop", function()
  local fifo = os.tmpname()
  os.remove(fifo)
  t.eq(os.execute("mkfifo " .. fifo), 0, "mkfifo")
  -- only so that a loop that does stall (the defect) ends instead of hanging
  os.execute("timeout 20 sh -c 'sleep 5; head -c 65536 /dev/zero > " .. fifo .. "' >/dev/null 2>&1 &")
  local order, w = {}, task.waiter()
  task.spawn(function() return sqlite.open(fifo) end, function(_, ok, conn, err)
    order[#order + 1] = "open"
    w:wake()
  end)
  timer.sleep(0.01) -- the loop turns while the worker waits on the FIFO
  order[#order + 1] = "timer"
  local f = io.open(fifo, "w") -- the worker holds it open: this does not wait
  f:write(string.rep("\0", 100))
  f:close()
  if #order < 2 then w:wait() end
  os.remove(fifo)
  t.eq(table.concat(order, ","), "timer,open", "what ended first")
end)

t.done()
