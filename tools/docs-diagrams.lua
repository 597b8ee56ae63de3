-- docs-diagrams.lua DIR DOC: prints DOC with the part between the markers
-- <!-- diagrams:begin --> and <!-- diagrams:end --> made again from the
-- sequence diagrams `rill test --diagrams DIR` wrote (DIR/<flow>/<test>-<run>-<flow of
-- the run>.mmd, each opening with a %% comment naming its test). For each
-- flow with a test file, its representative run: the longest diagram of its
-- own runs that succeeded with no step failing on the way (else that
-- succeeded, else any), ties to the first test. Run by tools/docs-diagrams.sh (`make docs`).
local os_c = require "rill.c.os"

local dir, doc = arg[1], arg[2]
local function fail(msg)
  io.stderr:write("docs-diagrams: ", msg, "\n")
  os_c.exit(1)
end
if not dir or not doc then fail("usage: rill lua tools/docs-diagrams.lua DIR DOC") end

local BEGIN, END = "<!-- diagrams:begin -->", "<!-- diagrams:end -->"
local text = os_c.read_file(doc) or fail("cannot read " .. doc)
local head, tail = text:match("^(.-" .. BEGIN:gsub("%p", "%%%0") .. "\n).-\n?(" .. END:gsub("%p", "%%%0") .. ".*)$")
if not head then fail(doc .. " has no " .. BEGIN .. " ... " .. END .. " section") end

local flows = os_c.list_dir(dir) or fail("cannot list " .. dir)
table.sort(flows)
local out = { head }
for _, flow in ipairs(flows) do
  local files = os_c.list_dir(dir .. "/" .. flow) or {}
  table.sort(files)
  local best, best_key
  for _, name in ipairs(files) do
    if name:sub(-#flow - 5) == "-" .. flow .. ".mmd" then
      local body = os_c.read_file(dir .. "/" .. flow .. "/" .. name)
      local _, lines = body:gsub("\n", "")
      local succeeded = body:find("\n  Note over F: succeeded\n$") ~= nil
      -- the way it goes when nothing fails: no step tried again, no failed attempt
      local smooth = not body:find("\n  Note over F: failed: ") and not body:find(" failed %(attempt ")
      local key = (succeeded and 1000000 or 0) + (smooth and 100000 or 0) + lines
      if not best_key or key > best_key then best, best_key = body, key end
    end
  end
  if best then
    local test = best:match("^%%%% [^:]+: ([^\n]*)\n")
    out[#out + 1] = string.format("\n### %s\n\nA run from its test \"%s\" (`flows/%s.test.lua`):\n\n```mermaid\n%s```\n",
      flow, test or "?", flow, best:gsub("^%%%%[^\n]*\n", ""))
  end
end
out[#out + 1] = "\n" .. tail
io.write(table.concat(out))
