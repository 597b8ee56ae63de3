-- A legitimate gsub with a replacement string over a 60 MB subject: one C
-- call held the loop for over a second (8 MB: 290 ms) and every other
-- request waited. Must: it is replaced in slices the watchdog can pause
-- between, so a request that comes meanwhile is answered before it ends.
return {
  deadline = "120s",
  triggers = { webhook { method = "POST", path = "/hooks/rv_gsub_long_subject" }, manual {} },
  run = function()
    local s = ("ab"):rep(30e6)
    log.info("gsub starts")
    local out, n = s:gsub("a", "c")
    return { n = n, len = #out, head = out:sub(1, 6) }
  end,
}
