-- strings: what the bounded string functions (stdlib/rill/bounded.lua,
-- runtime/pattern.c) cost beside the string library's, per call, on the
-- calls a signed webhook makes (signatures.lua, webhook.lua), compiled (as
-- stdlib code runs) and interpreted (as flow code runs).
--   build/rill lua bench/strings.lua [iterations]
local bounded = require "rill.bounded"
local N = tonumber(arg and arg[1]) or 200000
local clock = os.clock

local function signing(lib)
  local header = "t=1733300000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,v0=abc"
  local signed = "{timestamp}.{body}"
  local fields = { timestamp = "1733300000", body = '{"id":"evt_1","type":"invoice.paid"}' }
  return function()
    local n = 0
    for item in lib.gmatch(header, "[^,]+") do
      local k, v = lib.match(item, "^%s*(%w+)=(%S+)%s*$")
      if k then n = n + #v end
    end
    local ts, hex = lib.match("1733300000.5257a869e7ecebeda32a", "^(%d+)%.(%x+)$")
    local msg = lib.gsub(signed, "{([^}]*)}", function(f) return fields[f] end)
    local json = lib.find("application/json; charset=utf-8", "[Jj][Ss][Oo][Nn]")
    local route = lib.match("/hooks/stripe/acme", "^/hooks/stripe/([^/]+)$")
    local plain = lib.find("deadline exceeded: at x", "deadline exceeded", 1, true)
    local f = lib.format("%s is %d s old", "t", 42)
    return n + #ts + #hex + #msg + json + #route + plain + #f
  end
end

local function time(fn)
  fn()
  local t0 = clock()
  for _ = 1, N do fn() end
  return (clock() - t0) / N * 1e9
end

local real = { find = string.find, match = string.match, gmatch = string.gmatch, gsub = string.gsub,
               format = string.format }
for _, mode in ipairs { "compiled (stdlib)", "interpreted (flows)" } do
  local a, b = signing(real), signing(bounded)
  if mode:find("interpreted") then
    jit.off(a, true); jit.off(b, true)
  end
  local ta, tb = time(a), time(b)
  print(string.format("%-20s one signed webhook's string calls: string %6.0f ns, bounded %6.0f ns (%+.0f%%)",
    mode, ta, tb, (tb - ta) / ta * 100))
end

local function each(name, s, p, r)
  local fa = function() return string.find(s, p) end
  local fb = function() return bounded.find(s, p) end
  if r then
    fa = function() return string.gsub(s, p, r) end
    fb = function() return bounded.gsub(s, p, r) end
  end
  print(string.format("  %-36s string %6.0f ns, bounded %6.0f ns", name, time(fa), time(fb)))
end
print("single calls (compiled):")
each("find plain word in 40 B", "content-type: application/json", "json")
each("find [%a]+$ in 40 B", "content-type: application/json", "[%a]+$")
each("find %d+ in 4 KiB", ("x"):rep(4096) .. "123", "%d+")
each("gsub %s+ -> ' ' in 1 KiB", ("word  "):rep(170), "%s+", " ")
each("gsub no match in 1 KiB", ("word  "):rep(170), "z", "y")

-- A whole verifier of the stdlib, with the string metatable's __index on
-- the string library, then on the bounded table sandbox.lua puts there.
require "rill.sandbox"
local signatures = require "rill.signatures"
local crypto = require "rill.crypto"
require("rill.env").isolate { BENCH_SECRET = "bench-secret" }
local verify = signatures.revolut { secret = "BENCH_SECRET", tolerance = "1000d" }
local body = '{"id":"evt_1","type":"invoice.paid","pad":"' .. ("x"):rep(900) .. '"}'
local ts = tostring(math.floor(os.time() * 1000))
local sig = "v1=" .. crypto.hex(crypto.hmac_sha256("bench-secret", "v1." .. ts .. "." .. body))
local request = { headers = { ["revolut-request-timestamp"] = ts, ["revolut-signature"] = "v1=00," .. sig }, body = body }
assert(verify(request))
local mt = debug.getmetatable("")
local bounded_index = mt.__index
mt.__index = string
local t_real = time(function() return verify(request) end)
mt.__index = bounded_index
local t_bounded = time(function() return verify(request) end)
print(string.format("signatures.revolut verify (1 KiB body, 2 signatures): string %.0f ns, bounded %.0f ns (%+.0f ns)",
  t_real, t_bounded, t_bounded - t_real))
