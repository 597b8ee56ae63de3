-- db.query round trips, rill's side: CONC tasks each running the pgbench
-- select-only statement (one random account by primary key) through the
-- flows' db module, on a pool of POOL connections, for SECONDS.
-- Usage: rill lua bench/db/query.lua URL [SECONDS] [CONC] [POOL]
-- Prints "queries=N seconds=S qps=R errors=E".
local url, seconds, conc, pool = arg[1], tonumber(arg[2] or 10), tonumber(arg[3] or 64), tonumber(arg[4] or 8)
local db = require "rill.db"
local task = require "rill.c.task"
local timer = require "rill.c.timer"
local tz = require "rill.c.tz"
db.configure { databases = { main = url }, db_pool = pool, db_statement_timeout = 30 }

local accounts = db.query("SELECT count(*) AS n FROM pgbench_accounts")[1].n
local done, errors, stop = 0, 0, false
local function lane()
  while not stop do
    local ok = pcall(db.query, "SELECT abalance FROM pgbench_accounts WHERE aid = $1", math.random(accounts))
    if ok then done = done + 1 else errors = errors + 1 end
  end
end
for _ = 1, conc do task.spawn(lane, function() end) end
timer.sleep(1) -- warm-up: the pool fills, statements get prepared
local t0, n0 = tz.now(), done
timer.sleep(seconds)
local s, n = tz.now() - t0, done - n0
stop = true
print(string.format("queries=%d seconds=%.3f qps=%.1f errors=%d", n, s, n / s, errors))
require("rill.c.os").exit(errors == 0 and 0 or 1)
