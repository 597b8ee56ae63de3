-- metrics: rill's own counters, gauges and histograms, and their text in the
-- Prometheus exposition format (version 0.0.4) that GET /metrics serves.
--   local runs = metrics.counter("rill_runs_started_total", "Runs started.", { "flow" })
--   runs:labels(flow.name):inc()
-- A family's children are found by walking one table per label value, so an
-- update on a hot path allocates nothing once its child exists (a caller may
-- also keep the child). Gauges may be read at scrape time instead: a
-- family made with a collect function is emptied and refilled by it at each
-- render (collect may wait on the store: render runs in a task).
local metrics = {}

local families = {}  -- in registration order
local by_name = {}

local Family = {}
Family.__index = Family

local Counter, Gauge, Histogram = {}, {}, {}
Counter.__index, Gauge.__index, Histogram.__index = Counter, Gauge, Histogram

function Counter:inc(n) self.value = self.value + (n or 1) end

-- set_counts(counts, sum): the observations per bucket (not cumulative;
-- the last: those above every bound) and their sum, counted elsewhere.
function Histogram:set_counts(counts, sum)
  local n = 0
  for i = 1, #self.bounds + 1 do
    self.counts[i] = counts[i] or 0
    n = n + self.counts[i]
  end
  self.sum, self.count = sum, n
end

function Gauge:set(v) self.value = v end
function Gauge:inc(n) self.value = self.value + (n or 1) end
function Gauge:dec(n) self.value = self.value - (n or 1) end

-- counts[i] holds the observations in (bounds[i-1], bounds[i]]; the last
-- slot those above every bound. Cumulated only when rendered.
function Histogram:observe(v)
  local bounds, counts = self.bounds, self.counts
  local i = 1
  while i <= #bounds and v > bounds[i] do i = i + 1 end
  counts[i] = counts[i] + 1
  self.sum = self.sum + v
  self.count = self.count + 1
end

-- Seconds, from a millisecond to ten minutes: run durations, lateness.
metrics.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600 }

local function escape_label(v)
  return (v:gsub('[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end
metrics.escape_label = escape_label

local function escape_help(s)
  return (s:gsub("[\\\n]", { ["\\"] = "\\\\", ["\n"] = "\\n" }))
end

local function register(kind, name, help, labelnames, opts)
  if not name:match("^[a-zA-Z_:][a-zA-Z0-9_:]*$") then error("metrics: bad metric name " .. tostring(name), 3) end
  labelnames = labelnames or {}
  if #labelnames > 4 then error("metrics: at most 4 labels", 3) end
  local existing = by_name[name]
  if existing then
    -- a module loaded again (tests) gets the family it made before
    if existing.kind ~= kind then error("metrics: " .. name .. " is already a " .. existing.kind, 3) end
    return existing
  end
  local f = setmetatable({ kind = kind, name = name, help = help, labelnames = labelnames, n = #labelnames,
    children = {}, list = {}, by_key = {}, collect = opts and opts.collect }, Family)
  if kind == "histogram" then
    local b = {}
    for i, v in ipairs(opts and opts.buckets or metrics.DEFAULT_BUCKETS) do b[i] = v end
    table.sort(b)
    f.bounds = b
  end
  families[#families + 1] = f
  by_name[name] = f
  -- an unlabelled family shows 0 before its first update
  if f.n == 0 and not f.collect then f:labels() end
  return f
end

-- counter(name, help, labelnames[, collect]): collect, as for a gauge, for
-- counts kept elsewhere (in C) and read at each render.
function metrics.counter(name, help, labelnames, collect)
  return register("counter", name, help, labelnames, collect and { collect = collect } or nil)
end

-- gauge(name, help, labelnames[, collect]): collect(family), when given,
-- sets the family's values at each render (after emptying it).
function metrics.gauge(name, help, labelnames, collect)
  return register("gauge", name, help, labelnames, { collect = collect })
end

-- histogram(name, help, labelnames[, buckets[, collect]]): buckets are upper
-- bounds. collect, as for a gauge, for observations kept elsewhere (in C):
-- it sets each child's counts with child:set_counts.
function metrics.histogram(name, help, labelnames, buckets, collect)
  return register("histogram", name, help, labelnames, { buckets = buckets, collect = collect })
end

function metrics.get(name) return by_name[name] end

-- The children one family keeps; past it, new label values share one child
-- whose labels are all "other" (20,000 URL spellings made a 38 MB /metrics).
metrics.max_children = 2000

-- A label value nil is the empty string.
local function lookup(self, a, b, c, d)
  local n = self.n
  if n == 0 then return self.list[1] end
  local x = self.children[a == nil and "" or a]
  if n == 1 or x == nil then return x end
  x = x[b == nil and "" or b]
  if n == 2 or x == nil then return x end
  x = x[c == nil and "" or c]
  if n == 3 or x == nil then return x end
  return x[d == nil and "" or d]
end

local function new_child(self, values)
  local labels = {}
  for i, name in ipairs(self.labelnames) do labels[i] = name .. '="' .. escape_label(values[i]) .. '"' end
  local child
  if self.kind == "histogram" then
    local counts = {}
    for i = 1, #self.bounds + 1 do counts[i] = 0 end
    child = setmetatable({ bounds = self.bounds, counts = counts, sum = 0, count = 0 }, Histogram)
  else
    child = setmetatable({ value = 0 }, self.kind == "counter" and Counter or Gauge)
  end
  child.labels = table.concat(labels, ",")
  return child
end

-- labels(a, b, c, d) -> the child with these label values (in the order of
-- the family's label names), made the first time it is asked for. Values
-- 200 and "200" name one child.
function Family:labels(a, b, c, d)
  local child = lookup(self, a, b, c, d)
  if child then return child end
  local raw = { a, b, c, d }
  local values = {}
  for i = 1, self.n do values[i] = raw[i] == nil and "" or tostring(raw[i]) end
  local key = table.concat(values, "\0")
  child = self.by_key[key]
  local over = not child and #self.list >= metrics.max_children
  if over then
    -- label values a flow chooses (a URL's host) must not grow /metrics
    -- without end: past the bound, new values are counted together, in the
    -- child whose values are all "other" (one, whether made here or before)
    for i = 1, self.n do values[i] = "other" end
    key = table.concat(values, "\0")
    child = self.by_key[key]
  end
  if not child then
    child = new_child(self, values)
    self.by_key[key] = child
    self.list[#self.list + 1] = child
  end
  -- (the values past the bound are not kept for lookup: they would grow it)
  if over or self.n == 0 then return child end
  local node = self.children
  for i = 1, self.n - 1 do
    local k = raw[i] == nil and "" or raw[i]
    node[k] = node[k] or {}
    node = node[k]
  end
  local k = raw[self.n]
  node[k == nil and "" or k] = child
  return child
end

-- The unlabelled family's own value.
function Family:inc(n) self:labels():inc(n) end
function Family:dec(n) self:labels():dec(n) end
function Family:set(v) self:labels():set(v) end
function Family:observe(v) self:labels():observe(v) end

-- reset(): no children (a collect function refills them).
function Family:reset()
  self.children, self.list, self.by_key = {}, {}, {}
end

local function number(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  if v == math.floor(v) and v > -1e15 and v < 1e15 then return string.format("%d", v) end
  -- the shortest text that reads back as the same number
  for digits = 15, 16 do
    local text = string.format("%." .. digits .. "g", v)
    if tonumber(text) == v then return text end
  end
  return string.format("%.17g", v)
end
metrics.format_number = number

local function series(out, name, labels, extra, value)
  local l = labels
  if extra then l = l ~= "" and (l .. "," .. extra) or extra end
  out[#out + 1] = l ~= "" and (name .. "{" .. l .. "} " .. number(value) .. "\n") or (name .. " " .. number(value) .. "\n")
end

local function render_family(out, f)
  out[#out + 1] = "# HELP " .. f.name .. " " .. escape_help(f.help or "") .. "\n"
  out[#out + 1] = "# TYPE " .. f.name .. " " .. f.kind .. "\n"
  for _, c in ipairs(f.list) do
    if f.kind == "histogram" then
      local cum = 0
      for i, bound in ipairs(f.bounds) do
        cum = cum + c.counts[i]
        series(out, f.name .. "_bucket", c.labels, 'le="' .. number(bound) .. '"', cum)
      end
      series(out, f.name .. "_bucket", c.labels, 'le="+Inf"', c.count)
      series(out, f.name .. "_sum", c.labels, nil, c.sum)
      series(out, f.name .. "_count", c.labels, nil, c.count)
    else
      series(out, f.name, c.labels, nil, c.value)
    end
  end
end

-- render() -> every family as Prometheus text. Collect functions run first;
-- one that fails leaves its family empty and says why in a comment.
function metrics.render()
  local out = {}
  for _, f in ipairs(families) do
    local failed
    if f.collect then
      f:reset()
      local ok, err = pcall(f.collect, f)
      if not ok then
        f:reset()
        failed = tostring(err):gsub("\n", " ")
      end
    end
    render_family(out, f)
    if failed then out[#out + 1] = "# " .. f.name .. " could not be read: " .. failed .. "\n" end
  end
  return table.concat(out)
end

metrics.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- Always there: when this process started, and its Lua heap.
local start_time = require("rill.c.tz").now()
metrics.gauge("rill_process_start_time_seconds", "When this rill process started, in Unix seconds.", nil,
  function(f) f:set(start_time) end)
metrics.gauge("rill_lua_memory_bytes", "Memory held by the Lua heap.", nil,
  function(f) f:set(collectgarbage("count") * 1024) end)
local loopstat = require "rill.c.loopstat"
loopstat.start()
do
  local bounds = loopstat.read()
  metrics.histogram("rill_loop_busy_seconds",
    "How long each turn of the event loop worked (not waiting for I/O): the longest a request that came"
    .. " meanwhile waited before being read.", nil, bounds,
    function(f)
      local _, counts, sum = loopstat.read()
      f:labels():set_counts(counts, sum)
    end)
end
local log_c = require "rill.c.log"
metrics.counter("rill_log_lines_dropped_total",
  "Log lines dropped because stderr did not take them in time (a stalled reader; log_buffer was full).", nil,
  function(f) f:labels():inc(log_c.dropped()) end)

return metrics
