-- SQLite connections (runtime/sqlite.c) through their Lua surface: group
-- commit keeps each batch's failure its own, even when a batch's own
-- statements undo the savepoint that isolates it.
local t = require "t"
local task = require "rill.c.task"
local sqlite = require "rill.c.sqlite"

local function fresh()
  local path = os.tmpname() -- a new empty file of our own: SQLite makes it a database
  return sqlite.open(path), path
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

t.done()
