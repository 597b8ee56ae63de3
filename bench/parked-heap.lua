-- bench/parked-heap.lua: what a parked run holds in the process. Run with
-- `rill lua bench/parked-heap.lua [N]`. N stored runs of a flow that parks
-- at once (sleep_for), through the queue and an SQLite store in a temp
-- file; the Lua heap after a full collection, before and after they are
-- all parked (state sleeping in the store, their coroutines ended).
local flows = require "rill.engine.flows"
local queue = require "rill.engine.queue"
local store = require "rill.engine.store"
local os_c = require "rill.c.os"
local timer = require "rill.c.timer"

local N = tonumber(arg[1]) or 20000
require("rill.log").configure("warn", "text")
local dir = os.tmpname()
os.remove(dir)
os_c.mkdir_p(dir)
store.open("sqlite:" .. dir .. "/rill.db")
local flow = assert(flows.load_file(dir .. "/park.lua",
  'return { triggers = { from_flow() }, run = function() sleep_for("park", "1h") end }'))
queue.configure { concurrency = 100 }
queue.sync { [flow.name] = flow }
queue.start()

local function heap()
  collectgarbage("collect")
  collectgarbage("collect")
  return collectgarbage("count") * 1024
end

local heap0 = heap()
local submitted = 0
for _ = 1, N do
  queue.submit(flow, { type = "flow" }, {}, {}, function() submitted = submitted + 1 end)
  if submitted % 1000 == 0 then timer.sleep(0) end
end
while store.count("sleeping") < N do timer.sleep(0.2) end
local heap1 = heap()
print(string.format("parked_runs=%d lua_heap_before=%d lua_heap_after=%d bytes_per_parked_run=%.1f",
  N, heap0, heap1, (heap1 - heap0) / N))
queue.stop()
store.close()
os.execute("rm -rf " .. dir)
os_c.exit(0)
