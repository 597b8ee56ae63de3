-- The store's claims (stdlib/rill/engine/store_claims.lua) on SQLite:
-- claimed runs given back unstarted, more of them than one statement takes.
local t = require "t"
local store = require "rill.engine.store"

store.open("sqlite:" .. os.tmpname() .. ".db")

local function running(id, owner)
  return { "INSERT INTO runs (id, flow, version, trigger, state, attempt, max_attempts, run_at, lease_until, owner, "
    .. "created, depth) VALUES ($1, 'f', 'v', '{}', 'running', 1, 1, 0, 9999999999999, $2, 0, 0)", id, owner, n = 2 }
end

t.test("claimed runs given back: attempt not counted, lease ended, no owner, in statements of 50", function()
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

t.done()
