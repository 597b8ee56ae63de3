-- The durable-webhook benchmark's flow (shared/peers/README.md, workload 2):
-- the webhook checks the signature and stores the run before answering 202;
-- the run checks the HMAC again and parses the event, like the peer's worker.
local SECRET = env.BENCH_SECRET or "bench-secret"

local function signed(req)
  local sig = crypto.unhex(req.headers["x-signature"] or "")
  return sig and crypto.equals(crypto.hmac_sha256(SECRET, req.body), sig)
end

return {
  triggers = { webhook { method = "POST", path = "/hooks/bench", mode = "async", verify = signed } },
  run = function(ctx)
    if not signed(ctx.request) then fail("bad signature") end
    return { id = json.decode(ctx.request.body).id }
  end,
}
