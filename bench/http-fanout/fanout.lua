-- Outbound fan-out, rill's side: N GET requests through the flows' http
-- module, CONC at a time (CONC tasks, each sending its share one after the
-- other). Usage: rill lua bench/http-fanout/fanout.lua URL N CONC
-- Prints "requests=N seconds=S rps=R failed=F".
local url, n, conc = arg[1], tonumber(arg[2] or 10000), tonumber(arg[3] or 256)
require("rill.log").configure("warn", "text")
local http = require "rill.http"
local task = require "rill.c.task"
local timer = require "rill.c.timer"
local tz = require "rill.c.tz"
http.configure { max_per_host = conc }

local next_i, done, failed = 0, 0, 0
local function lane()
  while next_i < n do
    next_i = next_i + 1
    local ok, res = pcall(http.get, url)
    if not ok or res.status ~= 200 then failed = failed + 1 end
    done = done + 1
  end
end
local t0 = tz.now()
for _ = 1, conc do task.spawn(lane, function() end) end
while done < n do timer.sleep(0.005) end
local s = tz.now() - t0
print(string.format("requests=%d seconds=%.3f rps=%.1f failed=%d", n, s, n / s, failed))
require("rill.c.os").exit(failed == 0 and 0 or 1)
