-- The fan-out benchmark's target: a small JSON answer to GET /target.
return {
  triggers = { webhook { method = "GET", path = "/target" } },
  run = function() return { ok = true, n = 42 } end,
}
