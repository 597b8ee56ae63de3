-- hostile: a trigger table whose __index answers every field (passing for one made by a constructor) and loops later
-- must: the file is rejected without calling the metamethod (rill check exits 1 naming it)
-- expect: has a metatable
local calls = 0
local fake = setmetatable({}, { __index = function()
  calls = calls + 1
  if calls > 1 then while true do end end
  return true
end })
return { triggers = { fake }, run = function() return 1 end }
