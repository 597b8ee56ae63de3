-- store_claims: the store's claims: runs taken by an instance (per flow
-- after a look, or the due longest of every flow), with their completed
-- steps, and claimed runs given back unstarted. Part of store.lua, split
-- off to keep files short: store.lua calls this file's function with its
-- table and a getter of the store's SQL dialect once, as it loads.
local schema = require "rill.engine.store_schema"
local PAUSED = schema.PAUSED

return function(store, current_dialect)
local now_ms = store.now_ms

-- The completed steps of the runs a claim just took (same transaction: the
-- runs this owner holds with the lease the claim gave them), so that a
-- resumed run replays its steps without a read of its own.
local CLAIMED_STEPS = "SELECT run_id, seq, name, result FROM run_steps WHERE run_id IN (SELECT id FROM runs "
  .. "WHERE state = 'running' AND lease_until = $2 AND owner = $1)"

-- The claimed rows of results res[i] for i in `claiming`, each with its
-- `steps` (from `steps`, the rows of CLAIMED_STEPS) by seq.
local function with_steps(res, claiming, steps)
  local rows, by_id = {}, {}
  for _, i in ipairs(claiming) do
    for _, row in ipairs(res[i]) do
      rows[#rows + 1] = row
      row.steps, by_id[row.id] = {}, row
    end
  end
  for _, s in ipairs(steps) do
    local row = by_id[s.run_id]
    if row then row.steps[s.seq] = s end
  end
  return rows
end

-- claim(owner, claims, lease_ms) -> rows of the runs now running here, at
-- most claims[i].limit of flow claims[i].flow, oldest due first; with
-- claims[i].max on a shared store, also no more than max runs of the flow
-- running in all instances together. Each row's `steps` are its completed
-- steps by seq ({seq, name, result}). In a task.
function store.claim(owner, claims, lease_ms)
  local now, dialect = now_ms(), current_dialect()
  local stmts, claiming = { dialect.ordered }, {}
  for _, c in ipairs(claims) do
    if c.max and dialect.shared then
      stmts[#stmts + 1] = { dialect.flow_lock, c.flow, n = 1 }
      stmts[#stmts + 1] = { dialect.claim_max, owner, now + lease_ms, now, c.flow, c.limit, c.max, n = 6 }
    else
      stmts[#stmts + 1] = { dialect.claim, owner, now + lease_ms, now, c.flow, c.limit, n = 5 }
    end
    claiming[#claiming + 1] = #stmts
  end
  stmts[#stmts + 1] = dialect.unordered
  stmts[#stmts + 1] = { CLAIMED_STEPS, owner, now + lease_ms, n = 2 }
  local res = store.batch(stmts)
  return with_steps(res, claiming, res[#stmts])
end

-- claim_due(owner, limit, skip, lease_ms, callback): a claim with no look
-- before it, for when no flow counts its runs (a concurrency of its own):
-- the `limit` due longest of every flow but the paused ones and those
-- named in skip; callback(rows, paused) with the set of paused flows (as
-- ready gives it), or callback(nil, err). One batch per claim instead of
-- two: 100,000 parked runs coming due at once were a look then a claim per
-- 100 runs, each side waiting for the other.
function store.claim_due(owner, limit, skip, lease_ms, callback)
  local now, dialect = now_ms(), current_dialect()
  local stmts = { dialect.ordered }
  stmts[#stmts + 1] = { dialect.claim_due, owner, now + lease_ms, now, limit, store.json_list(skip), n = 5 }
  local claiming = #stmts
  stmts[#stmts + 1] = dialect.unordered
  stmts[#stmts + 1] = { CLAIMED_STEPS, owner, now + lease_ms, n = 2 }
  stmts[#stmts + 1] = PAUSED
  store.batch(stmts, function(res, err)
    if not res then return callback(nil, err) end
    local paused = {}
    for _, r in ipairs(res[#stmts]) do paused[r.flow] = true end
    callback(with_steps(res, { claiming }, res[#stmts - 1]), paused)
  end)
end

-- give_back(owner, ids): claimed runs that never started go back to the
-- store as they were before the claim: their attempt not counted, their
-- lease ended and no owner (any instance claims them again, as orphans of
-- a dead one; this owner's lease renewals no longer touch them).
-- In a task.
local GIVE_BACK = "UPDATE runs SET attempt = attempt - 1, lease_until = 0, owner = NULL WHERE owner = $1 "
  .. "AND state = 'running' AND id IN "
function store.give_back(owner, ids)
  store.batch { { GIVE_BACK .. current_dialect().list("$2"), owner, store.json_list(ids), n = 2 } }
end
end
