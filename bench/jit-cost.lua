-- bench/jit-cost.lua: what running flow code with the JIT off costs.
-- Flows are loaded with jit.off so that the watchdog's hook can stop and
-- preempt them (compiled traces never call hooks). This times the same
-- Lua workloads compiled (JIT on) and interpreted (JIT off, as flows run).
-- Run with `rill lua bench/jit-cost.lua`.
local os_c = require "rill.c.os"

local workloads = {
  -- Business-flow-like work: build records, format strings, look things up.
  records = function(n)
    local total = 0
    for i = 1, n do
      local r = { id = i, amount = i * 3 % 1000, currency = i % 2 == 0 and "EUR" or "CHF" }
      local label = string.format("%s-%06d", r.currency, r.id)
      if r.amount > 500 and label:sub(1, 3) == "EUR" then total = total + r.amount end
    end
    return total
  end,
  -- Pure arithmetic in a tight loop: the JIT's best case.
  arithmetic = function(n)
    local x = 0
    for i = 1, n * 20 do x = (x + i * 7) % 1000003 end
    return x
  end,
}

local function time(fn, n)
  local t0 = os_c.hrtime()
  fn(n)
  return os_c.hrtime() - t0
end

local N = tonumber(arg[1]) or 200000
for _, name in ipairs { "records", "arithmetic" } do
  local on = workloads[name]
  local off = loadstring(string.dump(on))  -- a separate copy to switch off
  jit.off(off, true)
  time(on, N) time(off, N)                 -- warm up
  local t_on, t_off = time(on, N), time(off, N)
  print(string.format("%-10s jit_on_ms=%.1f jit_off_ms=%.1f interpreted_costs=%.1fx", name,
    t_on * 1000, t_off * 1000, t_off / t_on))
end
os_c.exit(0)
