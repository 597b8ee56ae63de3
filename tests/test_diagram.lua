-- test_diagram.lua: the sequence of one run, from its stored record (rill.engine.diagram):
-- the model the console draws and the Mermaid text `rill runs show --diagram` prints.
local t = require "t"
local json = require "rill.json"
local diagram = require "rill.engine.diagram"

local function line(attempt, seq, message, fields)
  return { attempt = attempt, seq = seq, at = 1793610000000 + seq, level = "info", message = message,
    fields = fields and json.encode(fields) }
end

-- A run as store.get returns it: a db event starts it; a step calls DocuSeal
-- through its connector, another calls a host directly and fails once; it
-- emits an event, sleeps 3 days, waits for a signature that comes a day
-- later, mails, starts a run of a flow and awaits it, starts another
-- without waiting, and a run of another flow starts from its database write
-- (a child in the store).
local function sample()
  local t0 = 1793610000000
  return {
    id = "01a24182-0e55-757f-b717-ccad669dee77", flow = "quote-sent", state = "succeeded", attempt = 2,
    max_attempts = 5, trigger = json.encode { type = "db_event", table = "quotes", op = "update" },
    created = t0, started = t0, finished = t0 + 4 * 86400000,
    logs = {
      line(1, 1, "step done", { step = "load the quote", attempt = 1, ms = 3 }),
      line(1, 2, "http", { method = "POST", url = "https://sign.test/api/submissions", status = 200, ms = 41,
        service = "docuseal", step = "signature request" }),
      line(1, 3, "step done", { step = "signature request", attempt = 1, ms = 44 }),
      line(1, 4, "http request failed", { method = "GET", url = "https://rates.example/eur", error = "timeout",
        ms = 5000, step = "rates" }),
      line(1, 5, "step failed", { step = "rates", attempt = 1, of = 2, error = "http: GET https://rates.example/eur: timeout" }),
      line(1, 6, "http", { method = "GET", url = "https://rates.example/eur", status = 503, ms = 12, step = "rates" }),
      line(1, 7, "step done", { step = "rates", attempt = 2, ms = 30 }),
      line(1, 8, "step done", { step = "emit quote.sent", attempt = 1, ms = 1 }),
      line(1, 9, "step done", { step = "cool down", attempt = 1, ms = 0 }),
      line(1, 10, "run sleeps", { step = "cool down", seconds = 3 * 86400, ["until"] = "2026-11-05T09:00:00Z" }),
      line(2, 1, "run waits for an event", { step = "signature", event = "docuseal", since = "2026-11-05T09:00:00Z",
        timeout = "2026-11-28T00:00:00Z" }),
      line(2, 2, "email sent", { server = "mail.test:587", recipients = 1, status = 250, message_id = "<x@y>",
        step = "thank the client" }),
      line(2, 3, "step done", { step = "thank the client", attempt = 1, ms = 2 }),
      line(2, 4, "started a run", { flow = "tell-sales", run_id = "01a24182-bbbb-7000-8000-000000000002", wait = true }),
      line(2, 5, "started run ended", { flow = "tell-sales", run_id = "01a24182-bbbb-7000-8000-000000000002",
        state = "succeeded" }),
      line(2, 6, "started a run", { flow = "archive", run_id = "01a24182-cccc-7000-8000-000000000003", wait = false }),
    },
    steps = {
      { seq = 1, name = "load the quote", result = "{}", attempts = 1, started = t0, finished = t0 },
      { seq = 2, name = "signature request", result = "{}", attempts = 1, started = t0, finished = t0 },
      { seq = 3, name = "rates", result = "1", attempts = 2, started = t0, finished = t0 },
      { seq = 4, name = "emit quote.sent", result = '"ev1"', attempts = 1, started = t0, finished = t0 },
      { seq = 5, name = "cool down", result = tostring(t0 + 3 * 86400000), attempts = 1, started = t0, finished = t0 },
      { seq = 6, name = "signature", result = json.encode { name = "docuseal", id = "ev2", data = {},
        at = "2026-11-06T09:00:00Z" }, attempts = 1, started = t0 + 4 * 86400000, finished = t0 + 4 * 86400000 },
      { seq = 7, name = "thank the client", result = "{}", attempts = 1, started = t0, finished = t0 },
    },
  }
end

local CHILDREN = { { id = "01a24182-aaaa-7000-8000-000000000001", flow = "quote-signed", state = "succeeded" } }

local function has(text, part)
  t.ok(text:find(part, 1, true), "expected the diagram to contain " .. string.format("%q", part) .. ":\n" .. text)
end

local function lacks(text, part)
  t.ok(not text:find(part, 1, true), "expected the diagram not to contain " .. string.format("%q", part) .. ":\n" .. text)
end

t.test("the Mermaid text names the trigger, each step, each call with its service and status", function()
  local text = diagram.mermaid(diagram.model(sample(), CHILDREN))
  t.eq(text:match("^[^\n]+"), "sequenceDiagram")
  has(text, "participant T as db_event quotes update")
  has(text, "participant F as quote-sent")
  has(text, "participant S1 as docuseal")
  has(text, "participant S2 as rates.example")
  has(text, "T->>F: db_event quotes update")
  has(text, "F->>F: load the quote")
  has(text, "F->>S1: POST /api/submissions")
  has(text, "S1-->>F: 200 (41 ms)")
  has(text, "S2--xF: timeout (5000 ms)")
  has(text, "F->>F: rates failed (attempt 1 of 2)")
  has(text, "S2-->>F: 503 (12 ms)")
  -- the order of the stored lines is kept, each step before the calls it made
  t.ok(text:find("POST /api/submissions", 1, true) < text:find("GET /eur", 1, true), "calls in order")
  has(text, "F->>F: signature request\n  F->>S1: POST /api/submissions\n  S1-->>F: 200 (41 ms)\n  F->>F: rates\n")
  has(text, "F->>F: rates\n  F->>S2: GET /eur\n  S2--xF: timeout (5000 ms)\n  F->>F: rates failed (attempt 1 of 2)\n"
    .. "  F->>F: rates\n  F->>S2: GET /eur\n  S2-->>F: 503 (12 ms)\n  F-)E: emit quote.sent")
  has(text, "F->>F: thank the client\n  F->>S3: MAIL mail.test:587\n  S3-->>F: 250\n  F->>R1:")
end)

t.test("events, sleeps, waits, mail and the runs it started, with their durations", function()
  local text = diagram.mermaid(diagram.model(sample(), CHILDREN))
  has(text, "participant E as events")
  has(text, "F-)E: emit quote.sent")
  lacks(text, "F->>F: emit quote.sent")
  has(text, "Note over F: sleeps 3d (cool down)")
  lacks(text, "F->>F: cool down")
  has(text, "Note over F: attempt 2")
  has(text, "F-)E: wait for docuseal (signature)")
  has(text, "E--)F: docuseal after 1d")
  has(text, "participant S3 as email")
  has(text, "F->>S3: MAIL mail.test:587")
  has(text, "S3-->>F: 250")
  has(text, "participant R1 as tell-sales")
  has(text, "F->>R1: starts run 01a24182-bbbb-7000-8000-000000000002")
  has(text, "R1-->>F: succeeded")
  has(text, "participant R2 as archive")
  has(text, "F-)R2: starts run 01a24182-cccc-7000-8000-000000000003")
  has(text, "participant R3 as quote-signed")
  has(text, "F-)R3: starts run 01a24182-aaaa-7000-8000-000000000001")
  has(text, "Note over R3: succeeded")
  local r = sample()
  r.logs[#r.logs + 1] = line(2, 7, "started more runs", { shown = 20 })
  has(diagram.mermaid(diagram.model(r, nil)), "Note over F: more runs started than shown")
  -- a child the log names is not drawn twice
  local again = diagram.mermaid(diagram.model(sample(), { { id = "01a24182-cccc-7000-8000-000000000003",
    flow = "archive", state = "failed" } }))
  lacks(again, "participant R3")
  has(again, "Note over R2: failed")
  has(text, "Note over F: succeeded")
end)

t.test("a wait that timed out, and a failed run's error", function()
  local r = sample()
  r.state = "dead"
  r.steps[6].result = json.encode { timed_out = true }
  r.logs[#r.logs + 1] = line(2, 4, "run failed: boom; #1", { ms = 2 })
  local text = diagram.mermaid(diagram.model(r, {}))
  has(text, "E--)F: timed out after 1d")
  has(text, "Note over F: failed: boom#59; #35;1")
  has(text, "Note over F: dead")
  lacks(text, "participant R3")
end)

t.test("stable mode: no ids, no times that vary", function()
  local text = diagram.mermaid(diagram.model(sample(), CHILDREN), { stable = true })
  has(text, "S1-->>F: 200\n")
  has(text, "F->>R1: starts a run")
  lacks(text, "ms)")
  lacks(text, "01a24182")
  -- a run still waiting: until when, but not in stable mode
  local r = sample()
  r.state = "waiting"
  r.steps[6] = nil
  local waiting = diagram.model(r, nil)
  has(diagram.mermaid(waiting), "Note over F: waits until 2026-11-28T00:00:00Z")
  has(diagram.mermaid(waiting, { stable = true }), "Note over F: waits\n")
  -- two builds from the same record are the same text
  t.eq(text, diagram.mermaid(diagram.model(sample(), CHILDREN), { stable = true }))
end)

t.test("hostile text cannot break out of a line or the diagram", function()
  local r = sample()
  r.flow = "x\nparticipant Z as evil"
  r.logs = { line(1, 1, "step done", { step = "a\nNote over F: injected;end", attempt = 1, ms = 1 }),
             line(1, 2, "http", { method = "GET", url = "https://h.example/%%{init}%%\n", status = "x", ms = 1 }) }
  r.steps = {}
  r.trigger = "not json"
  local text = diagram.mermaid(diagram.model(r, nil))
  lacks(text, "\nparticipant Z")
  lacks(text, "\nNote over F: injected")
  lacks(text, "\nend")
  -- every line is a statement of the diagram
  for l in text:gmatch("[^\n]+") do
    t.ok(l == "sequenceDiagram" or l:match("^  participant %w+ as ") or l:match("^  %w+%-*[>x)]+%w+: ")
      or l:match("^  Note over %w+: "), "a diagram statement: " .. l)
  end
end)

t.test("a participant named end, a word of Mermaid's, is written so that it does not end a block", function()
  local r = sample()
  r.flow = "End"
  has(diagram.mermaid(diagram.model(r, nil)), "participant F as (End)\n")
end)

t.test("a long run is bounded: at most max_messages, then one note of what was left out", function()
  local r = sample()
  r.logs = {}
  for i = 1, 2000 do r.logs[i] = line(1, i, "step done", { step = "s" .. i, attempt = 1, ms = 0 }) end
  local m = diagram.model(r, nil)
  t.ok(#m.messages <= diagram.max_messages + 3, "bounded: " .. #m.messages)
  has(diagram.mermaid(m), "more not shown")
end)

t.done()
