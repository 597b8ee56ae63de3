-- hostile: the returned table has an __index that loops: rill reads its fields after the load, outside its deadline
-- must: the file is rejected without calling the metamethod (rill check exits 1 naming it; serve goes on)
-- expect: has a metatable
return setmetatable({}, { __index = function() while true do end end, __metatable = false })
