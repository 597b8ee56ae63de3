-- bench/dispatch.lua: what one signed sync webhook request costs rill's Lua
-- side, without sockets: webhook.dispatch of bench/flows/bench.lua's request
-- (the peers' 1 KiB body, its HMAC header) in a loop, answered by a stand-in
-- request object. Prints the bytes allocated per request (GC stopped) and
-- the CPU time per request. Run with any rill binary, old or new, to compare:
--   rill lua bench/dispatch.lua BODY_FILE [N]
-- (BODY_FILE: e.g. from ../shared/peers/gen-body.sh; N requests, 100,000.)
-- (the old main's stdlib, before the engine's move to rill/engine/, too)
local function engine(name)
  local ok, m = pcall(require, "rill.engine." .. name)
  return ok and m or require("rill." .. name)
end
local flows = engine "flows"
local webhook = engine "webhook"
local os_c = require "rill.c.os"
local crypto = require "rill.c.crypto"
require("rill.log").configure("warn", "text")

local body = assert(os_c.read_file(assert(arg[1], "usage: rill lua bench/dispatch.lua BODY_FILE [N]")))
local N = tonumber(arg[2]) or 100000
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local file = here .. "/flows/bench.lua"
local flow = assert(flows.load_file(file, assert(os_c.read_file(file))))
webhook.rebuild({ bench = flow })
local sig = crypto.hex(crypto.hmac("sha256", os.getenv("BENCH_SECRET") or "bench-secret", body))

local answered, status = 0, nil
local req = { respond = function(_, s) answered, status = answered + 1, s end }
local function requests(n)
  for _ = 1, n do
    webhook.dispatch(req, "POST", "/hooks/bench", nil, { ["content-type"] = "application/json",
      ["x-signature"] = sig, host = "127.0.0.1", ["content-length"] = tostring(#body) }, body)
  end
end

requests(20000) -- warm-up: the JIT's traces
assert(status == 200, "the bench request was answered " .. tostring(status))
collectgarbage("collect")
collectgarbage("stop")
local k0 = collectgarbage("count")
requests(5000)
local bytes = (collectgarbage("count") - k0) * 1024 / 5000
collectgarbage("restart")
collectgarbage("collect")
local c0 = os.clock()
requests(N)
print(string.format("bytes_allocated_per_request=%.0f cpu_us_per_request=%.2f  (%d requests)", bytes,
  (os.clock() - c0) * 1e6 / N, N))
os_c.exit(0)
