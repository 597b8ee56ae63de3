-- flow_conflicts: which new flow versions a reload refuses for claiming a
-- flow name or a webhook route another version claims. Part of flows.lua,
-- apart to keep it short: a function of the flows table (the versions in
-- force), which flows.lua calls once as it loads.
return function(flows)
-- Where a version declares what it claims: "file:line", the line of the
-- trigger's constructor (or, for a trigger written by hand, the first line
-- naming its path; for the flow's name, its name field), or the file alone.
local function place(v, file, line, text)
  if not line and text and v.source then
    local n = 0
    for l in (v.source .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if l:find('"' .. text .. '"', 1, true) or l:find("'" .. text .. "'", 1, true) then
        line = n
        break
      end
    end
  end
  return line and (file .. ":" .. line) or file
end

-- What a version claims for itself alone: its flow name and its webhook
-- routes (method and path, parameters unnamed). key -> {what, at}.
local function claims(v, file)
  local out = { ["name " .. v.name] = { what = "flow name '" .. v.name .. "'", verb = "used",
    at = place(v, file, v.name_line) } }
  for _, t in ipairs(v.triggers) do
    if t.type == "webhook" then
      out["route " .. t.method .. " " .. t.path:gsub(":[%w_]+", ":")] = { what = "webhook " .. t.method .. " " .. t.path,
        verb = "served", at = place(v, file, t.line, t.path) }
    end
  end
  return out
end

-- conflicts(versions, files) -> file -> message: the versions that claim a
-- route or a name another version claims. The file whose version in force
-- claims it too keeps it (its new version as well), so a new file never
-- evicts a flow that serves; the others are refused, naming it. When no
-- version in force claims it (at start, or two new files), every claimant
-- is refused, naming the others: no file order decides.
local function conflicts(versions, files)
  local by_key, keys = {}, {}
  for _, file in ipairs(files) do
    local v = versions[file]
    if v then
      for key, c in pairs(claims(v, file)) do
        if not by_key[key] then
          by_key[key] = {}
          keys[#keys + 1] = key
        end
        table.insert(by_key[key], { file = file, claim = c })
      end
    end
  end
  table.sort(keys)
  local bad = {}
  local function refuse(file, msg) bad[file] = bad[file] and (bad[file] .. "\n" .. msg) or msg end
  for _, key in ipairs(keys) do
    local list = by_key[key]
    if #list > 1 then
      local owner
      for _, e in ipairs(list) do
        local current = flows.by_file[e.file]
        if current and claims(current, e.file)[key] then owner = e end
      end
      for _, e in ipairs(list) do
        if owner and e ~= owner then
          refuse(e.file, string.format("%s: %s is already %s by %s", e.claim.at, e.claim.what, e.claim.verb,
            owner.claim.at))
        elseif not owner then
          local others = {}
          for _, o in ipairs(list) do
            if o ~= e then others[#others + 1] = o.claim.at end
          end
          refuse(e.file, string.format("%s: %s is also declared by %s", e.claim.at, e.claim.what,
            table.concat(others, " and ")))
        end
      end
    end
  end
  return bad
end

return conflicts
end
