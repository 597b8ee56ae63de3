-- The sync-webhook benchmark's flow (shared/peers/README.md, workload 1):
-- check the HMAC-SHA256 of the raw body in constant time, parse the JSON,
-- answer {"ok":true,"id":<body.id>}; 401 on a bad signature.
local SECRET = env.BENCH_SECRET or "bench-secret"

return {
  triggers = { webhook { method = "POST", path = "/hooks/bench" } },
  run = function(ctx)
    local sig = crypto.unhex(ctx.request.headers["x-signature"] or "")
    if not sig or not crypto.equals(crypto.hmac_sha256(SECRET, ctx.request.body), sig) then
      return response(401, { ok = false, error = "bad signature" })
    end
    return { ok = true, id = ctx.payload.id }
  end,
}
