-- crypto.hex doubles its input, crypto.base64 takes it by 4/3, both in one C
-- call with no limit: hex of hex of hex of an 8 MB string made 64 MB,
-- holding the loop for over a second (found by the red team of issue 14).
-- Must: fail naming max_string, before building it.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_crypto_hex_amplifies" } },
  run = function()
    return #crypto.hex(("a"):rep(8e6))
  end,
}
