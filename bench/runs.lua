-- bench/runs.lua: what a run costs. Run with `rill lua bench/runs.lua [N]`.
-- 1. Memory of an idle suspended run: start N runs of flows/idle.lua that
--    sleep, then compare the process's RSS and the Lua heap before and after.
-- 2. Runs started per second: N runs that finish at once, back to back.
-- Prints one line per figure.
local flows = require "rill.engine.flows"
local runner = require "rill.engine.runner"
local os_c = require "rill.c.os"
local task = require "rill.c.task"
local timer = require "rill.c.timer"

local N = tonumber(arg[1]) or 100000
local here = arg[0]:match("^(.*)/[^/]*$") or "."
require("rill.log").configure("warn", "text")

local src = assert(os_c.read_file(here .. "/flows/idle.lua"))
local flow = assert(flows.load_file(here .. "/flows/idle.lua", src))

local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Runs started per second, each finishing at once.
local done = 0
local function count() done = done + 1 end
local t0 = os_c.hrtime()
for i = 1, N do
  runner.start(flow, { type = "manual" }, { wait = 0, n = i }, { on_done = count })
end
local t1 = os_c.hrtime()
assert(done == N, "every run finished")
print(string.format("runs_started_per_s=%.0f  (%d runs that finish at once, %.3f s)", N / (t1 - t0), N, t1 - t0))

-- Memory per idle suspended run.
settle()
local rss0, heap0 = os_c.rss(), collectgarbage("count") * 1024
local runs = {}
for i = 1, N do
  runs[i] = runner.start(flow, { type = "manual" }, { wait = 3600, n = i }, {})
end
settle()
local rss1, heap1 = os_c.rss(), collectgarbage("count") * 1024
local alive = task.count()
print(string.format("idle_run_bytes_rss=%.0f idle_run_bytes_lua_heap=%.0f  (%d suspended runs, rss %.1f MiB -> %.1f MiB)",
  (rss1 - rss0) / N, (heap1 - heap0) / N, alive, rss0 / 2^20, rss1 / 2^20))
os_c.exit(0)
