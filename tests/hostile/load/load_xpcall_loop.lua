-- hostile: top-level code that loops in an xpcall message handler, again and again
-- must: the file is rejected by the load deadline (rill check exits 1 naming it)
-- expect: deadline exceeded
while true do xpcall(error, function() while true do end end) end
return {}
