-- json.decode reads its whole input in one C call: a 32 MB array of 16
-- million zeros (made with .., which max_string does not bound) held the
-- loop for a second (found by the red team of issue 14).
-- Must: fail naming max_string, before decoding.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_json_decode_long" } },
  run = function()
    local s = ("0,"):rep(4e6)
    return #json.decode("[" .. s .. s .. s .. s .. "0]")
  end,
}
