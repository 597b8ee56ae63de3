-- hostile: a key of the returned table whose __tostring loops (an unknown field is named in the error)
-- must: the file is rejected without calling the metamethod (rill check exits 1 naming it)
-- expect: has a key that is a table
local key = setmetatable({}, { __tostring = function() while true do end end })
return { [key] = 1, triggers = { manual() }, run = function() return 1 end }
