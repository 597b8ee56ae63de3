-- check-lua.lua FILE...: every Lua file given compiles (syntax only; what a
-- file does when it runs is for the tests). Run by `make test` through
-- `rill lua`, so that a stdlib module with a syntax error, which would only
-- fail when first required, stops the build's checks instead.
local bad = 0
for _, file in ipairs(arg) do
  local ok, err = loadfile(file)
  if not ok then
    io.stderr:write("check-lua: ", err, "\n")
    bad = bad + 1
  end
end
print(string.format("check-lua: %d Lua files compile, %d do not", #arg - bad, bad))
if bad > 0 then require("rill.c.os").exit(1) end
