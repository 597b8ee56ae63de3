-- hostile: top-level pcall around table.sort whose comparator loops
-- must: the file is rejected by the load deadline (rill check exits 1 naming it)
-- expect: deadline exceeded
local t = { 3, 2, 1 }
while true do pcall(table.sort, t, function() while true do end end) end
return {}
