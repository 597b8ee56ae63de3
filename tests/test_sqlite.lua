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
  -- the others of its group are committed, the failure being its own
  t.eq(table.concat(ks, ","), "a,c", "rows kept")
  t.eq(out[1].err, nil, "batch 1's error")
  t.eq(out[3].err, nil, "batch 3's error")
  conn:close()
end)

t.test("a batch's callback gets the argument given with it, after the results or the error", function()
  local conn = fresh()
  local w, got = task.waiter(), {}
  local function cb(res, err, arg)
    got[#got + 1] = { res = res, err = err, arg = arg }
    if #got == 3 then w:wake() end
  end
  local state = { "mine" }
  conn:batch({ { "SELECT 1 AS one" } }, cb, state)
  conn:batch({ { "SELECT * FROM missing" } }, cb, "two")
  conn:batch({ { "SELECT 2 AS two" } }, cb)
  w:wait()
  table.sort(got, function(a, b) return tostring(a.arg) < tostring(b.arg) end)
  t.eq(got[1].arg, nil, "no argument given: none passed")
  t.eq(got[1].res[1][1].two, 2, "its results")
  t.eq(got[2].arg, state, "the argument, the same table")
  t.eq(got[2].res[1][1].one .. " " .. tostring(got[2].err), "1 nil", "results, no error")
  t.eq(got[3].arg, "two", "the argument after an error")
  t.eq(got[3].res, nil, "no results")
  t.ok(tostring(got[3].err):find("no such table", 1, true), tostring(got[3].err))
  conn:close()
end)

t.test("opening a database that another connection holds locked does not stall the loop", function()
  local path = os.tmpname()
  local holder = assert(sqlite.open(path, { raw = true }))
  assert(holder:batch { { "PRAGMA locking_mode = EXCLUSIVE" } })
  assert(holder:batch { { "BEGIN EXCLUSIVE" } })
  assert(holder:batch { { "CREATE TABLE t (x)" } }) -- takes the lock, kept until COMMIT
  local order, w = {}, task.waiter()
  task.spawn(function() return sqlite.open(path, { busy_ms = 1000 }) end, function()
    order[#order + 1] = "open" -- it waited on the lock for a second, off the loop
    w:wake()
  end)
  timer.sleep(0.01) -- the loop turns meanwhile
  order[#order + 1] = "timer"
  if #order < 2 then w:wait() end
  assert(holder:batch { { "COMMIT" } })
  holder:close()
  t.eq(table.concat(order, ","), "timer,open", "what ended first")
end)

t.test("a parameter not written $N is refused, naming it, instead of binding NULL", function()
  local conn = fresh()
  conn:batch { { "CREATE TABLE p (id TEXT, amount INTEGER)" } }
  for _, sql in ipairs {
    "INSERT INTO p (id, amount) VALUES (?, ?)",
    "INSERT INTO p (id, amount) VALUES (:id, :amount)",
    "INSERT INTO p (id, amount) VALUES ($1, $3)",
  } do
    local out = group(conn, { { { sql, "pi_1", 1500, n = 2 } } })
    t.ok(out[1].err, "refused: " .. sql)
    t.ok(tostring(out[1].err):find("$1, $2", 1, true), "says how to write parameters: " .. tostring(out[1].err))
  end
  local rows = conn:batch { { "SELECT count(*) AS n FROM p" } }[1]
  t.eq(rows[1].n, 0, "no row of NULLs stored")
  local ok = group(conn, { { { "INSERT INTO p (id, amount) VALUES ($1, $2)", "pi_1", 1500, n = 2 } } })
  t.eq(ok[1].err, nil, "$1, $2 bind")
  local again = group(conn, { { { "SELECT id FROM p WHERE id = $1", "pi_1", 7, n = 2 } } })
  t.eq(again[1].err, nil, "a parameter given but not used is fine")
end)

t.done()
