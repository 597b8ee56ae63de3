-- crypto.unbase64 decodes in one C call, looking each byte up in the
-- alphabet: a 32 MB string (made with .., which max_string does not bound)
-- held the loop for 0.44 s on an idle machine (found by the red team of
-- issue 14).
-- Must: fail naming max_string, before decoding.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_crypto_unbase64_long" } },
  run = function()
    local s = ("QUFB"):rep(2e6)
    s = s .. s .. s .. s
    return #crypto.unbase64(s)
  end,
}
