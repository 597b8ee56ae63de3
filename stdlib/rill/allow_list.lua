-- allow_list: IP addresses and CIDRs (IPv4 and IPv6), and the allow-list a
-- webhook verifier can sit behind (signatures.lua's allow_from and
-- trusted_proxies). Apart from signatures.lua to keep it short.
local env = require "rill.env"

local M = {}

-- An IPv4 or IPv6 address as 16 bytes (IPv4 as IPv4-mapped IPv6,
-- ::ffff:a.b.c.d, so that a dual-stack listener's peers match IPv4 CIDRs),
-- and whether it was written as IPv4; nil when it is not an address.
local function ipv4_bytes(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  local out = {}
  for i, part in ipairs { a, b, c, d } do
    if #part > 3 or tonumber(part) > 255 then return nil end
    out[i] = string.char(tonumber(part))
  end
  return table.concat(out)
end

local function ip_bytes(s)
  if type(s) ~= "string" or #s > 45 then return nil end
  local v4 = ipv4_bytes(s)
  if v4 then return string.rep("\0", 10) .. "\255\255" .. v4, true end
  if not s:find(":", 1, true) or s:find("[^%x:%.]") then return nil end
  local tail = ""
  local dotted = s:match(":(%d+%.%d+%.%d+%.%d+)$")
  if dotted then
    tail = ipv4_bytes(dotted)
    if not tail then return nil end
    s = s:sub(1, #s - #dotted) .. "0:0" -- two groups stand for the IPv4 tail; replaced below
  end
  local function groups(part)
    local list = {}
    if part == "" then return list end
    for g in (part .. ":"):gmatch("([^:]*):") do
      if not g:match("^%x%x?%x?%x?$") then return nil end
      list[#list + 1] = tonumber(g, 16)
    end
    return list
  end
  local head, rest = s:match("^(.-)::(.*)$")
  local list
  if head then
    if rest:find("::", 1, true) then return nil end
    local h, r = groups(head), groups(rest)
    if not h or not r or #h + #r > 7 then return nil end
    list = h
    for _ = 1, 8 - #h - #r do list[#list + 1] = 0 end
    for _, g in ipairs(r) do list[#list + 1] = g end
  else
    list = groups(s)
    if not list or #list ~= 8 then return nil end
  end
  local out = {}
  for i, g in ipairs(list) do out[i] = string.char(math.floor(g / 256), g % 256) end
  local bytes = table.concat(out)
  if dotted then bytes = bytes:sub(1, 12) .. tail end
  return bytes, false
end

-- "a.b.c.d/n", "x::y/n" or a single address -> { bytes, bits }, or nil.
local function parse_cidr(s)
  if type(s) ~= "string" then return nil end
  local addr, bits = s:match("^%s*([^/%s]+)/(%d+)%s*$")
  if not addr then addr = s:match("^%s*(%S+)%s*$") end
  local bytes, v4 = ip_bytes(addr)
  if not bytes then return nil end
  local width = v4 and 32 or 128
  local n = bits and tonumber(bits) or width
  if #(bits or "") > 3 or n > width then return nil end
  return { bytes = bytes, bits = n + 128 - width }
end

local function in_cidr(bytes, cidr)
  local whole, rest = math.floor(cidr.bits / 8), cidr.bits % 8
  if bytes:sub(1, whole) ~= cidr.bytes:sub(1, whole) then return false end
  if rest == 0 then return true end
  local step = 2 ^ (8 - rest)
  return math.floor(bytes:byte(whole + 1) / step) == math.floor(cidr.bytes:byte(whole + 1) / step)
end

local function in_any(bytes, cidrs)
  for _, c in ipairs(cidrs) do
    if in_cidr(bytes, c) then return true end
  end
  return false
end

-- A list of CIDRs, or nil and the first entry that is not one.
local function parse_cidrs(list)
  local out = {}
  for _, entry in ipairs(list) do
    local c = parse_cidr(entry)
    if not c then return nil, tostring(entry) end
    out[#out + 1] = c
  end
  return out
end

-- The address a request comes from: the peer's; behind trusted proxies
-- (a peer in trusted_proxies), the rightmost X-Forwarded-For hop that is not
-- one of them, since every proxy appends the address it received from and
-- only the hops our own proxies wrote can be believed. nil and why when a
-- hop is not an address.
local function client_address(request, proxies)
  local peer = ip_bytes(request.peer)
  if not peer then return nil, "the peer address is unknown" end
  if not proxies or not in_any(peer, proxies) then return peer, request.peer end
  local hops = {}
  for hop in (request.headers["x-forwarded-for"] or ""):gmatch("[^,]+") do hops[#hops + 1] = hop:match("^%s*(.-)%s*$") end
  local shown = request.peer
  for i = #hops, 1, -1 do
    local b = ip_bytes(hops[i])
    if not b then return nil, "X-Forwarded-For holds a hop that is not an address" end
    shown = hops[i]
    if not in_any(b, proxies) then return b, shown end
  end
  return peer, request.peer -- only proxies: the nearest one is the client
end

-- Wraps verify with an allow-list: the request's address (client_address)
-- must be in allow_from (a list of CIDRs, or the name of an environment
-- variable holding them comma-separated, read at each request: unset is a
-- refusal, never an open door) before the secret is looked at.
local function allow_list(verify, allow_from, proxies)
  return function(request)
    local cidrs = allow_from
    if type(allow_from) == "string" then
      local v = env.get(allow_from)
      if v == nil or v == "" then
        return false, "allow_from: environment variable " .. allow_from .. " not set (set it to the sender's CIDRs)"
      end
      local list = {}
      for entry in tostring(v):gmatch("[^,%s]+") do list[#list + 1] = entry end
      local bad
      cidrs, bad = parse_cidrs(list)
      if not cidrs then return false, string.format("allow_from: %s holds %q, not an address or CIDR", allow_from, bad) end
    end
    local addr, shown = client_address(request, proxies)
    if not addr then return false, shown end
    if not in_any(addr, cidrs) then return false, shown .. " is not in allow_from" end
    return verify(request)
  end
end

M.parse_cidrs, M.allow_list = parse_cidrs, allow_list
return M
