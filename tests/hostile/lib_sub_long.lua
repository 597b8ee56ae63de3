-- string.sub of a 16 MiB string built by `..`, keeping all but its first
-- byte: one C call that copies 16 MiB (145 ms on a loaded machine). A short
-- piece of a long string is cheap and stays allowed.
-- Must: take the first ten bytes, then fail at the long piece naming max_string.
-- expect: failed: max_string
return {
  deadline = "2s",
  triggers = { manual(), webhook { path = "/hooks/lib_sub_long" } },
  run = function()
    local s = "x"
    while #s < 16 * 1024 * 1024 do s = s .. s end
    assert(s:sub(1, 10) == "xxxxxxxxxx" and string.sub(s, -3) == "xxx", "a short piece")
    return #s:sub(2)
  end,
}
