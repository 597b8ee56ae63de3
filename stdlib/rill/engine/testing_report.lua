-- testing_report: what a test's stored runs leave besides its result: their
-- sequence diagrams (rill test --diagrams) and the errors of those that
-- failed. Apart from testing.lua to keep it short.
local json = require "rill.json"
local os_c = require "rill.c.os"
local store = require "rill.engine.store"

-- write_diagrams(dir, file, n, name): the sequence diagram of every run
-- the test stored, in stable form (no ids, no call durations), as
-- DIR/<flow of the test file>/<test number>-<run number>-<flow of the run>.mmd,
-- each beginning with a comment naming the test. Runs in creation order.
local function write_diagrams(dir, file, n, name)
  local diagram = require "rill.engine.diagram"
  local own = file:match("([^/]+)%.test%.lua$") or file:match("([^/]+)$")
  local folder = dir .. "/" .. own
  assert(os_c.mkdir_p(folder))
  local rows = store.list { limit = 1000 }
  for i = #rows, 1, -1 do
    local r = store.get(rows[i].id)
    local text = diagram.mermaid(diagram.model(r, store.children(r.id, diagram.max_children + 1)), { stable = true })
    local path = string.format("%s/%02d-%02d-%s.mmd", folder, n, #rows - i + 1, r.flow)
    local f = assert(io.open(path, "w"))
    f:write("%% ", file, ": ", (tostring(name):gsub("[%c]", " ")), "\n", text)
    f:close()
  end
end

-- failed_runs() -> "\nrun of FLOW failed: ERROR" for each run of the test's
-- store that failed (oldest first), or "": why a failed test's runs did
-- not give what it expected, beside its failure rather than in the log.
local function failed_runs()
  local rows = store.list { limit = 1000 }
  local out = {}
  for i = #rows, 1, -1 do
    local r = rows[i]
    if r.error and r.error ~= "" and (r.state == "failed" or r.state == "dead" or r.state == "retrying") then
      local e = json.try_decode(r.error)
      local msg = type(e) == "table" and e.message or r.error
      out[#out + 1] = "\nrun of " .. tostring(r.flow) .. " failed: " .. tostring(msg):sub(1, 500)
    end
  end
  return table.concat(out)
end

return { write_diagrams = write_diagrams, failed_runs = failed_runs }
