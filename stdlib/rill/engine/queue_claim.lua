-- queue_claim: which stored runs this instance claims, and when: a look at
-- what is ready then claims sized to the free slots, or one claim with no
-- look when no flow counts its runs, and the claims made ahead while a burst
-- of runs that end at once (parked runs waking) goes through. Part of
-- queue.lua, apart to keep it short: a function of the queue's table and of
-- `q` (its slots: running(), free(flow), hold(name, n), reserve(n);
-- active(), is_started(), instance(), start(row);
-- maybe_queued(), whether runs may wait in the store), returning
-- claim_and_start().
local store = require "rill.engine.store"
local pauses = require "rill.engine.pauses"
local task = require "rill.c.task"
local log = require "rill.log"

return function(queue, q)
local maybe_queued -- whether runs may wait in the store, as the last look or claim said

-- look_then_claim(look, skip, held, lease_ms) -> rows: a look at what is
-- ready (the `look` due longest of the flows that can take a run now: a
-- long backlog of one paused or held back by its concurrency would fill the
-- look and hide every other flow's runs), then claims sized to the free
-- slots, per flow. A flow with a concurrency of its own may take fewer than
-- its count: the look then counts the 1,000 due longest, and the others'
-- runs counted fill the rest.
local function look_then_claim(look, skip, held, lease_ms)
  local gen = pauses.generation()
  local ready, paused = store.ready(store.now_ms(), look, skip)
  pauses.replace(paused, gen)
  -- (a run of a flow held back may wait: the end of one of its runs looks)
  maybe_queued = #ready > 0 or held
  local claims = {}
  local budget = queue.concurrency - q.running()
  for _, r in ipairs(ready) do
    local flow = q.active()[r.flow] or { name = r.flow }
    -- a paused flow's runs stay in the store
    local n = pauses.is_paused(r.flow) and 0 or math.min(r.n, q.free(flow), budget)
    if n > 0 then
      claims[#claims + 1] = { flow = r.flow, limit = n, max = flow.concurrency }
      budget = budget - n
      q.hold(r.flow, n) -- reserved while the claim is in flight
    end
  end
  if #claims == 0 then return {} end
  local ok, rows = pcall(store.claim, q.instance(), claims, lease_ms)
  for _, c in ipairs(claims) do q.hold(c.flow, -c.limit) end
  if not ok then error(rows, 0) end
  return rows
end

-- claim_free(free, skip, held, lease_ms) -> a function that waits for the
-- claim's rows, and keep(n): when no flow counts its runs, one claim of the
-- `free` due longest of every flow but those in skip and the paused ones,
-- with no look before it (one batch per claim, not two). Sent at once;
-- keep(n) holds n slots for its rows until it is waited for (runs stored
-- meanwhile see them taken).
local function claim_free(free, skip, held, lease_ms)
  local gen = pauses.generation()
  local done, rows, paused, w
  local kept = 0
  store.claim_due(q.instance(), free, skip, lease_ms, function(r, p)
    done, rows, paused = true, r, p
    if w then w:wake() end
  end)
  local function wait()
    if not done then
      w = task.waiter()
      w:wait()
    end
    q.reserve(-kept)
    kept = 0
    if not rows then error(paused, 0) end
    pauses.replace(paused, gen)
    maybe_queued = #rows >= free or held -- (fewer than asked: none left due)
    return rows
  end
  local function keep(n)
    kept = math.max(0, n)
    q.reserve(kept)
  end
  return wait, keep
end

-- claim([ahead]) -> a function that waits for the rows claimed, how many
-- were asked for when that is all the due runs could have given (a claim
-- with no look), and keep(n) (claim_free's). ahead: the claim goes before
-- runs that are about to start and are expected to end at once; its caller
-- keeps the slots for its rows once they did, not now.
local function claim(ahead)
  local skip, held, limited = {}, false, false
  for name, flow in pairs(q.active()) do
    if pauses.is_paused(name) then
      skip[#skip + 1] = name
    elseif flow.concurrency and q.free(flow) <= 0 then
      skip[#skip + 1], held = name, true
    elseif flow.concurrency then
      limited = true
    end
  end
  local free, lease_ms = queue.concurrency - q.running(), math.floor(queue.lease * 1000)
  if limited or free <= 0 or not maybe_queued then
    -- a look (a read) first: with no free slot, for the pauses and whether
    -- runs wait; when no run was known to wait, for runs that came due or
    -- that another instance stored (a claim is a write: every poll of an
    -- idle instance would wait on a store locked by another process)
    local look = limited and math.max(1000, queue.concurrency) or math.max(1, free)
    return function() return look_then_claim(look, skip, held, lease_ms) end
  end
  local wait, keep = claim_free(free, skip, held, lease_ms)
  if not ahead then keep(free) end
  return wait, free, keep
end

-- start(rows): each claimed row starts in a free slot. Rows that cannot
-- start now go back to the store as they were, at once: no slot free (a
-- claim made ahead for runs that did not end at once), their flow paused
-- since, the queue stopped, or a start that failed. A row claimed and not
-- started counts an attempt it never made until it is given back: were it
-- kept waiting for a slot, a crash meanwhile would leave it that attempt
-- (a run of one attempt dead without having run). -> whether the runs
-- started all ended at once.
local function start(rows)
  local back, before = {}, q.running()
  for _, row in ipairs(rows) do
    local ok, err = false, nil
    if q.is_started() and q.running() < queue.concurrency and not pauses.is_paused(row.flow) then
      q.hold(row.flow, 1)
      ok, err = pcall(q.start, row)
      if not ok then
        q.hold(row.flow, -1)
        log.error("a claimed run could not start; it goes back to the queue", { run_id = row.id, error = tostring(err) })
      end
    end
    if not ok then back[#back + 1] = row.id end
  end
  if #back > 0 then
    local ok, err = pcall(store.give_back, q.instance(), back)
    log.write(ok and "info" or "warn", ok and "claimed runs given back to the queue, not started"
      or "claimed runs could not be given back; they run again when their leases end", { runs = #back, error = err })
  end
  return q.running() <= before
end

-- claim_and_start() -> rows claimed (the last claim's), whether runs may
-- still wait in the store. In a task. While claims come back full and
-- their runs end at once (parked runs waking: each finds its step in the
-- claim and returns), the next claim goes to the store before they start,
-- as if they had freed their slots already: the store claims while the
-- loop runs them, instead of each waiting for the other. Such a claim
-- asks for the slots free now: its rows are claimed a turn before they
-- start (claims that grew to ten times that cut the store's CPU per run,
-- not the rate beyond the noise, and left more runs claimed and not
-- started at a crash).
local settled = false -- the last claim_and_start ended without an error
local function claim_and_start()
  -- a claim goes without a look first only after looks and claims that
  -- worked (not at start, nor after a store that failed them: each such
  -- claim, a write, would wait on a locked store at every poll)
  maybe_queued = settled and q.maybe_queued()
  settled = false
  local wait, asked = claim()
  local rows, at_once = wait(), false
  while true do
    local full = q.is_started() and asked and #rows == asked
    local ahead, ahead_asked, keep
    if full and at_once then ahead, ahead_asked, keep = claim(true) end
    at_once = start(rows)
    if ahead and keep then keep(math.min(ahead_asked, queue.concurrency - q.running())) end
    if not ahead then
      if not (full and at_once) then
        settled = true
        return rows, maybe_queued
      end
      -- (claimed in the same turn: still before this turn's finishes)
      ahead, ahead_asked = claim()
    end
    rows, asked = ahead(), ahead_asked
  end
end

return claim_and_start
end
