-- Tasks (runtime/task.c, watchdog.c, timer.c) through their Lua surface:
-- spawn, sleep, waiters, deadlines, time slices, and that on_done runs once.
local t = require "t"
local task = require "rill.c.task"
local timer = require "rill.c.timer"
local os_c = require "rill.c.os"

-- Runs fn in a task and waits, in this (the test's own) task, for it to end.
local function finish(fn, limits, ...)
  local w = task.waiter()
  local result, calls = nil, 0
  task.spawn(fn, function(_, ...)
    calls = calls + 1
    result = { ... }
    w:wake()
  end, limits, nil, ...)
  if calls == 0 then w:wait() end
  return result, calls
end

t.test("a task's results reach on_done", function()
  local r = finish(function(a, b) return a + b, "done" end, nil, 2, 3)
  t.eq(r[1], true, "ok") t.eq(r[2], 5, "sum") t.eq(r[3], "done", "second result")
end)

t.test("an error fails the task with its message", function()
  local r = finish(function() error("boom") end)
  t.eq(r[1], false, "ok")
  t.ok(r[2]:find("boom", 1, true), "message: " .. tostring(r[2]))
end)

t.test("sleeping tasks wake in the order of their deadlines", function()
  local order, w, left = {}, task.waiter(), 3
  for _, d in ipairs { 0.06, 0.02, 0.04 } do
    task.spawn(function() timer.sleep(d) return d end, function(_, ok, v)
      order[#order + 1] = v
      left = left - 1
      if left == 0 then w:wake() end
    end)
  end
  w:wait()
  t.eq(table.concat(order, ","), "0.02,0.04,0.06", "wake order")
end)

t.test("a waiter passes values to the task it wakes", function()
  local w = task.waiter()
  timer.after(0.01, function() w:wake("hello", 42) end)
  local a, b = w:wait()
  t.eq(a, "hello", "first") t.eq(b, 42, "second")
  t.eq(task.waiter():wake(), false, "waking a waiter nobody waits on")
end)

t.test("a waiting task is stopped at its deadline and on_done runs once", function()
  local r, calls = finish(function() timer.sleep(10) return "late" end, 0.05)
  t.eq(calls, 1, "on_done calls")
  t.eq(r[1], false, "ok")
  t.ok(r[2]:find("deadline exceeded while waiting", 1, true), r[2])
end)

t.test("an endless loop is stopped at its deadline, with where it was", function()
  local spin = loadstring("local n = 0\nwhile true do\n  n = n + 1\nend", "@spin.lua")
  jit.off(spin, true)
  local r = finish(spin, 0.2)
  t.eq(r[1], false, "ok")
  t.ok(r[2]:find("deadline exceeded: code still running at spin.lua:", 1, true), r[2])
end)

t.test("a long computation is sliced and other tasks run between slices", function()
  local ticks, spinning = 0, true
  local compute = loadstring([[
    local stop_at = ...
    local n = 0
    while os.clock() < stop_at do n = n + 1 end
    return n
  ]])
  jit.off(compute, true)
  local w = task.waiter()
  task.spawn(compute, function() spinning = false w:wake() end, 5, nil, os.clock() + 0.3)
  local function tick()
    if spinning then
      ticks = ticks + 1
      timer.after(0.01, tick)
    end
  end
  tick()
  w:wait()
  t.ok(ticks >= 5, "timers fired while the computation ran: " .. ticks)
end)

t.test("a loop inside a C call (table.sort) is still stopped at its deadline", function()
  local f = loadstring([[
    local t = {3, 2, 1}
    table.sort(t, function(a, b) while true do end end)
  ]], "@sort.lua")
  jit.off(f, true)
  local r = finish(f, 0.2)
  t.eq(r[1], false, "ok")
  t.ok(r[2]:find("deadline exceeded", 1, true), r[2])
end)

t.test("non-preemptible tasks run to their end in one go", function()
  local f = loadstring("local s = os.clock() while os.clock() - s < 0.06 do end return 'whole'")
  jit.off(f, true)
  local result
  task.spawn(f, function(_, ok, v) result = v end, { deadline = 1, preempt = false })
  t.eq(result, "whole", "finished before spawn returned")
end)

t.test("sleep outside a task is refused clearly", function()
  local ok, err = pcall(timer.sleep, 0)   -- pcall runs on this task's coroutine...
  t.ok(ok, "inside a task sleep works")
  local r
  task.spawn(function()
    return pcall(function()
      local co = coroutine.create(function() timer.sleep(0) end)
      return assert(coroutine.resume(co))
    end)
  end, function(_, _, ok2, e) r = { ok2, e } end)
  t.eq(r[1], false, "sleep in a foreign coroutine")
  t.ok(tostring(r[2]):find("can only be called from a run", 1, true), tostring(r[2]))
end)

t.test("the task count returns to zero", function()
  -- this test's own task is the only one left
  t.eq(task.count(), 1, "live tasks")
end)

t.done()
