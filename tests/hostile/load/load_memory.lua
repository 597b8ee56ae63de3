-- hostile: top-level code that allocates until memory runs out, swallowing the error
-- must: the file is rejected naming the memory limit (rill check exits 1 naming it)
-- expect: memory limit
local keep = {}
while true do pcall(function() for i = 1, 1e9 do keep[#keep + 1] = ("y"):rep(100) .. i end end) end
return {}
