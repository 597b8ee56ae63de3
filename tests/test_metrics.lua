-- test_metrics.lua: the metrics registry and its Prometheus text (rill.metrics).
local t = require "t"
local metrics = require "rill.metrics"

-- The lines of a render that belong to metric `name` (its HELP, TYPE and samples).
local function lines_of(text, name)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local metric = line:match("^# %u+ ([%w_:]+)") or line:match("^([%w_:]+)")
    if metric == name or (metric and metric:find(name .. "_", 1, true) == 1 and not line:find("^#")) then
      out[#out + 1] = line
    end
  end
  return out
end

t.test("a counter with labels renders HELP, TYPE and one sample per child", function()
  local c = metrics.counter("t_requests_total", "Requests seen.", { "route", "status" })
  c:labels("/a", 200):inc()
  c:labels("/a", 200):inc(2)
  c:labels("/a", "500"):inc()
  local l = lines_of(metrics.render(), "t_requests_total")
  t.eq(l[1], "# HELP t_requests_total Requests seen.")
  t.eq(l[2], "# TYPE t_requests_total counter")
  t.eq(l[3], 't_requests_total{route="/a",status="200"} 3')
  t.eq(l[4], 't_requests_total{route="/a",status="500"} 1')
  t.eq(#l, 4)
end)

t.test("a child is found again without being made twice, whatever the value's type", function()
  local c = metrics.counter("t_same_total", "x", { "status" })
  local a = c:labels(404)
  t.ok(c:labels(404) == a, "same child for the same number")
  t.ok(c:labels("404") == a, "200 and \"200\" are one child")
  t.ok(c:labels(404) == a, "still the same after the string was seen")
  c:labels(nil):inc()
  t.ok(c:labels("") == c:labels(nil), "nil is the empty string")
  local l = lines_of(metrics.render(), "t_same_total")
  t.eq(#l, 4, "two children, two samples")
  t.eq(l[4], 't_same_total{status=""} 1')
end)

t.test("past max_children a family counts new label values together as other", function()
  local c = metrics.counter("t_hosts_total", "x", { "host", "status" })
  c:labels("other", "other"):inc(7) -- a child a flow named so: the rest joins it, no second one
  for i = 2, metrics.max_children + 500 do c:labels("h" .. i, 200):inc() end
  c:labels("h2", 200):inc() -- a child made before the bound is still its own
  local l = lines_of(metrics.render(), "t_hosts_total")
  t.eq(#l, 2 + metrics.max_children, "max_children children, the rest in one of them")
  t.eq(l[3], 't_hosts_total{host="other",status="other"} 507', "the rest together: 500 and its own 7")
  t.ok(c:labels("h2", 200).value == 2, "an old child counts on")
end)

t.test("label values are escaped: backslash, double quote, newline", function()
  local c = metrics.counter("t_escape_total", "Help with a \\ and a\nnewline.", { "v" })
  c:labels('a"b\\c\nd'):inc()
  local l = lines_of(metrics.render(), "t_escape_total")
  t.eq(l[1], "# HELP t_escape_total Help with a \\\\ and a\\nnewline.")
  t.eq(l[3], 't_escape_total{v="a\\"b\\\\c\\nd"} 1')
end)

t.test("a histogram renders cumulative buckets, +Inf, _sum and _count", function()
  local h = metrics.histogram("t_duration_seconds", "Durations.", { "flow" }, { 0.1, 1, 0.5 })
  local c = h:labels("f")
  for _, v in ipairs { 0.05, 0.1, 0.3, 0.7, 2, 5 } do c:observe(v) end
  local l = lines_of(metrics.render(), "t_duration_seconds")
  t.eq(l[2], "# TYPE t_duration_seconds histogram")
  t.eq(l[3], 't_duration_seconds_bucket{flow="f",le="0.1"} 2', "0.1 itself is in le=0.1")
  t.eq(l[4], 't_duration_seconds_bucket{flow="f",le="0.5"} 3', "bounds sorted, counts cumulated")
  t.eq(l[5], 't_duration_seconds_bucket{flow="f",le="1"} 4')
  t.eq(l[6], 't_duration_seconds_bucket{flow="f",le="+Inf"} 6')
  t.eq(l[7], 't_duration_seconds_sum{flow="f"} 8.15')
  t.eq(l[8], 't_duration_seconds_count{flow="f"} 6')
end)

t.test("an unlabelled histogram and gauge have no braces", function()
  local h = metrics.histogram("t_plain_seconds", "x", nil, { 1 })
  h:observe(0.5)
  local g = metrics.gauge("t_plain_gauge", "x")
  g:set(7)
  g:inc(3)
  g:dec()
  local text = metrics.render()
  t.eq(lines_of(text, "t_plain_seconds")[3], 't_plain_seconds_bucket{le="1"} 1')
  t.eq(lines_of(text, "t_plain_seconds")[5], "t_plain_seconds_sum 0.5")
  t.eq(lines_of(text, "t_plain_gauge")[3], "t_plain_gauge 9")
end)

t.test("an unlabelled counter shows 0 before its first update", function()
  metrics.counter("t_zero_total", "x")
  t.eq(lines_of(metrics.render(), "t_zero_total")[3], "t_zero_total 0")
end)

t.test("a collected gauge is read at each render, and loses series that went away", function()
  local depth = { queued = 3, retrying = 1 }
  metrics.gauge("t_depth", "Runs waiting.", { "state" }, function(f)
    for state, n in pairs(depth) do f:labels(state):set(n) end
  end)
  local l = lines_of(metrics.render(), "t_depth")
  table.sort(l)
  t.eq(#l, 4)
  t.eq(l[3], 't_depth{state="queued"} 3')
  depth = { queued = 10 }
  l = lines_of(metrics.render(), "t_depth")
  t.eq(#l, 3)
  t.eq(l[3], 't_depth{state="queued"} 10')
end)

t.test("a collect function that fails leaves its family empty and says so", function()
  metrics.gauge("t_broken", "x", nil, function() error("store unreachable", 0) end)
  local l = lines_of(metrics.render(), "t_broken")
  t.eq(#l, 2, "HELP and TYPE, no sample")
  t.ok(metrics.render():find("# t_broken could not be read: store unreachable", 1, true), "the reason")
end)

t.test("values: integers without a point, floats exact, infinities and NaN spelled out", function()
  t.eq(metrics.format_number(42), "42")
  t.eq(metrics.format_number(-3), "-3")
  t.eq(metrics.format_number(0.25), "0.25")
  t.eq(metrics.format_number(1 / 0), "+Inf")
  t.eq(metrics.format_number(-1 / 0), "-Inf")
  t.eq(metrics.format_number(0 / 0), "NaN")
end)

t.test("registering a name twice gives the same family; a different kind is refused", function()
  local a = metrics.counter("t_twice_total", "x", { "a" })
  t.ok(metrics.counter("t_twice_total", "x", { "a" }) == a, "same family")
  t.err(function() metrics.gauge("t_twice_total", "x") end, "already a counter")
  t.err(function() metrics.counter("bad name", "x") end, "bad metric name")
end)

t.test("every rill family is rendered with HELP and TYPE, and samples are well formed", function()
  -- the modules that instrument themselves register their families on load
  for _, m in ipairs { "rill.engine.runner", "rill.engine.queue", "rill.engine.webhook", "rill.http", "rill.db",
                       "rill.engine.flows", "rill.engine.scheduler" } do
    require(m)
  end
  local text = metrics.render()
  local typed = {}
  for line in text:gmatch("[^\n]+") do
    local name, kind = line:match("^# TYPE ([%w_:]+) (%a+)$")
    if name then
      typed[name] = kind
    elseif not line:find("^# ") then
      local metric, value = line:match("^([%w_:]+)[^ ]* (%S+)$")
      t.ok(metric, "a sample line: " .. line)
      local base = metric:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
      t.ok(typed[metric] or typed[base], "a TYPE line before " .. line)
      t.ok(tonumber(value) or value == "+Inf" or value == "NaN", "a number in " .. line)
    end
  end
  for _, name in ipairs { "rill_runs_started_total", "rill_runs_finished_total", "rill_run_duration_seconds",
                          "rill_queue_runs", "rill_queue_oldest_due_age_seconds", "rill_webhook_requests_total",
                          "rill_http_client_requests_total", "rill_db_pool_connections", "rill_flow_reloads_total",
                          "rill_flow_load_errors_total", "rill_cron_fires_total", "rill_cron_lateness_seconds" } do
    t.ok(typed[name], name .. " is registered")
  end
end)

t.done()
