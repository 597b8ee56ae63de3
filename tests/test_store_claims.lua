-- The store's claims (stdlib/rill/engine/store_claims.lua) on SQLite:
-- claimed runs given back unstarted, and looks and claims that pass over
-- more flows than a statement takes parameters (64).
local t = require "t"
local store = require "rill.engine.store"
local task = require "rill.c.task"

store.open("sqlite:" .. os.tmpname() .. ".db")

local function running(id, owner)
  return { "INSERT INTO runs (id, flow, version, trigger, state, attempt, max_attempts, run_at, lease_until, owner, "
    .. "created, depth) VALUES ($1, 'f', 'v', '{}', 'running', 1, 1, 0, 9999999999999, $2, 0, 0)", id, owner, n = 2 }
end

t.test("claimed runs given back: attempt not counted, lease ended, no owner, more than 64 of them", function()
  local stmts, ids = { running("theirs", "other") }, {}
  for i = 1, 115 do
    ids[i] = "r" .. i
    stmts[#stmts + 1] = running(ids[i], "me")
  end
  store.batch(stmts)
  store.give_back("me", ids)
  local back = store.batch { { "SELECT count(*) AS n, sum(attempt) AS attempts, count(owner) AS owned FROM runs "
    .. "WHERE lease_until = 0" } }[1][1]
  t.eq(back.n, 115, "runs given back")
  t.eq(back.attempts, 0, "their attempts")
  t.eq(back.owned, 0, "their owners")
  local theirs = store.batch { { "SELECT attempt, owner FROM runs WHERE id = 'theirs'" } }[1][1]
  t.eq(theirs.attempt .. " " .. theirs.owner, "1 other", "another owner's run")
end)

local function queued(id, flow)
  return { "INSERT INTO runs (id, flow, version, trigger, state, attempt, max_attempts, run_at, lease_until, "
    .. "created, depth) VALUES ($1, $2, 'v', '{}', 'queued', 0, 1, 0, 0, 0, 0)", id, flow, n = 2 }
end

t.test("a look and a claim that pass over 100 flows: the others' runs are seen and claimed", function()
  local skip, stmts = {}, { { "DELETE FROM runs" } }
  for i = 1, 100 do
    skip[i] = "held" .. i
    stmts[#stmts + 1] = queued("h" .. i, skip[i])
  end
  stmts[#stmts + 1] = queued("go1", "go")
  stmts[#stmts + 1] = queued("go2", "go")
  store.batch(stmts)
  local ready = store.ready(store.now_ms(), 1000, skip)
  t.eq(#ready .. " " .. ready[1].flow .. " " .. ready[1].n, "1 go 2", "the runs waiting, of the one flow not passed over")
  local w = task.waiter()
  store.claim_due("me", 10, skip, 60000, function(rows, err) w:wake(rows, err) end)
  local rows, err = w:wait()
  t.ok(rows, err)
  local ids = {}
  for i, r in ipairs(rows) do ids[i] = r.id end
  table.sort(ids)
  t.eq(table.concat(ids, " "), "go1 go2", "the runs claimed")
end)

t.done()
