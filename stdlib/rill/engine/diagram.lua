-- diagram: the sequence of one run, read from its stored record (the run
-- row, its log lines and steps, as store.get returns them, and the runs it
-- started): what triggered it, each step, each outbound call with its
-- service and status, sleeps and waits with their durations, the events it
-- emitted and the runs it started (flows.trigger writes a line; a run
-- its database write started names it as parent). Pure Lua, no I/O:
--   model(run, children) -> { participants = {{id, label, kind}},
--                             messages = {{from, to, kind, text, ms, run, until}} }
--   label(message, stable) -> the message's text (stable: without the call's
--                             duration, the started run's id, a wait's end time)
--   mermaid(model[, {stable = true}]) -> Mermaid `sequenceDiagram` text
-- The console draws the same model (console.lua). Everything in a record
-- may come from outside (step names, URLs, errors): the Mermaid text keeps
-- each item on its line with `#` and `;` written as entities.
local json = require "rill.json"

local diagram = { max_messages = 400, max_children = 20, max_text = 100 }

-- Message kinds and their Mermaid arrows.
local ARROWS = { call = "->>", reply = "-->>", lost = "--x", async = "-)", async_reply = "--)" }
diagram.ARROWS = ARROWS

-- One line of plain text, no control characters, at most max_text characters.
local function clean(s)
  s = tostring(s == nil and "" or s):gsub("[%c]+", " ")
  if #s > diagram.max_text then s = s:sub(1, diagram.max_text - 3) .. "..." end
  return s
end

-- "3d", "1d 2h", "45m", "30s": the two largest units of a duration in seconds.
local UNITS = { { "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 } }
local function duration(seconds)
  seconds = math.floor(seconds + 0.5)
  if seconds <= 0 then return "0s" end
  local parts = {}
  for _, u in ipairs(UNITS) do
    local n = math.floor(seconds / u[2])
    if n > 0 then
      parts[#parts + 1] = n .. u[1]
      seconds = seconds - n * u[2]
    end
    if #parts == 2 or (#parts == 1 and seconds == 0) then break end
  end
  return table.concat(parts, " ")
end
diagram.duration = duration

local function decode(text)
  if type(text) ~= "string" then return nil end
  local v = json.try_decode(text)
  if v == json.null then return nil end
  return v
end

-- The trigger as one line: its type, then the fields that say which.
local function trigger_label(trigger)
  local t = decode(trigger)
  if type(t) ~= "table" then return clean(trigger or "trigger") end
  local parts = { t.type or "trigger" }
  for _, k in ipairs { "method", "path", "table", "op", "expr", "tz", "parent_flow" } do
    if type(t[k]) == "string" or type(t[k]) == "number" then parts[#parts + 1] = tostring(t[k]) end
  end
  return clean(table.concat(parts, " "))
end

local function host_of(url)
  return (tostring(url or ""):match("^%a+://([^/?#]*)") or ""):gsub("^.*@", "")
end

local function path_of(url)
  local p = tostring(url or ""):match("^%a+://[^/?#]*([^?#]*)")
  return (p == nil or p == "") and "/" or p
end

local function iso_seconds(s)
  if type(s) ~= "string" then return nil end
  local ok, v = pcall(require("rill.time").parse, s)
  return ok and v or nil
end

-- model(run, children) -> the participants and messages of the run's sequence.
function diagram.model(run, children)
  local m = { participants = {}, messages = {}, state = run.state }
  local by_label = {}
  local function participant(kind, label, prefix)
    local key = kind .. "\0" .. label
    if by_label[key] then return by_label[key] end
    local n = 0
    for _, p in ipairs(m.participants) do if p.kind == kind then n = n + 1 end end
    -- one trigger, flow and events; services and started runs numbered
    local id = (prefix == "S" or prefix == "R") and (prefix .. (n + 1)) or prefix
    m.participants[#m.participants + 1] = { id = id, label = label, kind = kind }
    by_label[key] = id
    return id
  end
  local left_out = 0
  local function add(from, to, kind, text, extra)
    if #m.messages >= diagram.max_messages then
      left_out = left_out + 1
      return
    end
    local msg = { from = from, to = to, kind = kind, text = clean(text) }
    for k, v in pairs(extra or {}) do msg[k] = v end
    m.messages[#m.messages + 1] = msg
    return msg
  end
  local function note(over, text) return add(over, over, "note", text) end

  local T = participant("trigger", trigger_label(run.trigger), "T")
  local F = participant("flow", clean(run.flow), "F")
  add(T, F, "call", trigger_label(run.trigger))

  -- the recorded steps by name, in order: a wait's outcome is its step's result
  local recorded = {}
  for _, s in ipairs(run.steps or {}) do
    local list = recorded[s.name] or {}
    list[#list + 1] = s
    recorded[s.name] = list
  end
  local function take(name)
    local list = recorded[name]
    if list and #list > 0 then return table.remove(list, 1) end
  end

  local attempt
  -- the step whose calls are being drawn: a call names its step (http.lua),
  -- so the step is drawn before its calls though its line comes after them
  local open
  local function enter(step)
    if step ~= nil and tostring(step) ~= open then
      open = tostring(step)
      add(F, F, "call", open)
    end
  end
  local started = {} -- run id -> participant, of the runs its log says it started
  local shown_wait = {} -- waits whose outcome was drawn from their step already
  local function outcome(wait_event, step, since)
    local result = step and decode(step.result)
    if type(result) ~= "table" then return end
    local after = ""
    if since and step.finished then after = " after " .. duration(step.finished / 1000 - since) end
    local E = participant("events", "events", "E")
    if result.timed_out then
      add(E, F, "async_reply", "timed out" .. after)
    else
      add(E, F, "async_reply", tostring(result.name or wait_event) .. after)
    end
    return true
  end

  for _, l in ipairs(run.logs or {}) do
    local f = decode(l.fields)
    if type(f) ~= "table" then f = {} end
    if attempt and l.attempt ~= attempt then note(F, "attempt " .. tostring(l.attempt)) end
    attempt = l.attempt
    local msg = l.message
    if msg == "step done" then
      local name = tostring(f.step)
      take(name)
      local event = name:match("^emit (.+)$")
      if event then
        add(F, participant("events", "events", "E"), "async", "emit " .. event)
      elseif open ~= name then
        add(F, F, "call", name)
      end
      open = nil
    elseif msg == "step failed" then
      open = nil
      add(F, F, "call", string.format("%s failed (attempt %s of %s)", tostring(f.step), tostring(f.attempt),
        tostring(f.of)))
    elseif msg == "http" or msg == "http request failed" then
      local S = participant("service", clean(f.service or host_of(f.url)), "S")
      enter(f.step)
      add(F, S, "call", tostring(f.method) .. " " .. path_of(f.url))
      if msg == "http" then
        add(S, F, "reply", tostring(f.status), { ms = tonumber(f.ms) })
      else
        add(S, F, "lost", tostring(f.error), { ms = tonumber(f.ms) })
      end
    elseif msg == "email sent" or msg == "email not sent" then
      local S = participant("service", "email", "S")
      enter(f.step)
      add(F, S, "call", "MAIL " .. tostring(f.server))
      if msg == "email sent" then add(S, F, "reply", tostring(f.status)) else add(S, F, "lost", tostring(f.error)) end
    elseif msg == "run sleeps" then
      local last = m.messages[#m.messages]
      if last and last.kind == "call" and last.from == F and last.to == F and last.text == clean(f.step) then
        m.messages[#m.messages] = nil
      end
      note(F, "sleeps " .. duration(tonumber(f.seconds) or 0) .. " (" .. tostring(f.step) .. ")")
    elseif msg == "run waits for an event" then
      local name = tostring(f.step)
      add(F, participant("events", "events", "E"), "async", "wait for " .. tostring(f.event) .. " (" .. name .. ")")
      if outcome(f.event, take(name), iso_seconds(f.since)) then
        shown_wait[name] = (shown_wait[name] or 0) + 1
      else
        add(F, F, "note", f.timeout and "waits" or "waits (no timeout)", { ["until"] = f.timeout })
      end
    elseif msg == "wait timed out" or msg == "wait ended by an event" then
      local name = tostring(f.step)
      if (shown_wait[name] or 0) > 0 then
        shown_wait[name] = shown_wait[name] - 1
      else
        take(name)
        local E = participant("events", "events", "E")
        add(F, E, "async", "wait for " .. tostring(f.event) .. " (" .. name .. ")")
        add(E, F, "async_reply", msg == "wait timed out" and "timed out" or tostring(f.event))
      end
    elseif msg == "started a run" then
      local R = participant("run", clean(f.flow), "R")
      add(F, R, f.wait == false and "async" or "call", "starts a run", { run = f.run_id })
      if f.run_id then started[tostring(f.run_id)] = R end
    elseif msg == "started more runs" then
      note(F, "more runs started than shown")
    elseif msg == "started run ended" then
      add(participant("run", clean(f.flow), "R"), F, "reply", tostring(f.state))
    elseif type(msg) == "string" and msg:find("^run failed: ") then
      note(F, "failed: " .. msg:sub(13))
    end
  end

  local n = 0
  for _, c in ipairs(children or {}) do
    n = n + 1
    if n > diagram.max_children then
      left_out = left_out + 1
    elseif started[tostring(c.id)] then
      note(started[tostring(c.id)], tostring(c.state))
    else
      -- a run its database write started (a db_event trigger): it names this run as its parent
      local R = participant("run", clean(c.flow), "R")
      add(F, R, "async", "starts a run", { run = c.id })
      note(R, tostring(c.state))
    end
  end
  if left_out > 0 then
    m.messages[#m.messages + 1] = { from = F, to = F, kind = "note", text = left_out .. " more not shown" }
  end
  m.messages[#m.messages + 1] = { from = F, to = F, kind = "note", text = clean(run.state) }
  return m
end

-- label(message, stable) -> its text, with its duration and run id unless stable.
function diagram.label(msg, stable)
  local text = msg.text
  if msg.run and not stable then text = text:gsub("^starts a run$", "starts run " .. clean(msg.run)) end
  if msg.ms and not stable then text = text .. " (" .. math.floor(msg.ms) .. " ms)" end
  if msg["until"] and not stable then text = text .. " until " .. clean(msg["until"]) end
  return text
end

-- Text inside a Mermaid statement: # and ; as entities (# starts one, ; ends a statement).
local function escape(s)
  return (s:gsub("[#;]", { ["#"] = "#35;", [";"] = "#59;" }))
end

-- mermaid(model[, {stable = true}]) -> the `sequenceDiagram` text, one statement a line.
function diagram.mermaid(m, opts)
  local stable = opts and opts.stable
  local out = { "sequenceDiagram" }
  for _, p in ipairs(m.participants) do
    -- "end" alone closes a block in Mermaid
    local label = p.label:lower() == "end" and "(" .. p.label .. ")" or p.label
    out[#out + 1] = "  participant " .. p.id .. " as " .. escape(label)
  end
  for _, msg in ipairs(m.messages) do
    local text = escape(diagram.label(msg, stable))
    if msg.kind == "note" then
      out[#out + 1] = "  Note over " .. msg.from .. ": " .. text
    else
      out[#out + 1] = "  " .. msg.from .. ARROWS[msg.kind] .. msg.to .. ": " .. text
    end
  end
  return table.concat(out, "\n") .. "\n"
end

return diagram
