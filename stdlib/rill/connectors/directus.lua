-- connectors/directus: items of a Directus project through its REST API
-- (/items/COLLECTION[/ID], answers wrapped in { data = ... }), with a static
-- token sent as a Bearer token.
--   directus.items(collection[, query])      -> a list of items
--   directus.item(collection, id[, query])   -> the item
--   directus.create(collection, fields)      -> the item created (with its id)
--   directus.update(collection, id, fields)  -> the item updated (PATCH: only the fields given)
--   directus.with{ url, token }              -> a client with those settings
-- query: { filter = { status = { _eq = "sent" } }, fields = { "id", "total" },
-- sort = { "-date_created" }, limit = 50, offset = 0, search = "..." }: a
-- table filter is sent as JSON, a list as a comma-separated string.
-- Settings from the environment: DIRECTUS_URL, DIRECTUS_TOKEN.
local base = require "rill.connectors.base"
local json = require "rill.json"

local SPEC = {
  url = { env = "DIRECTUS_URL" },
  token = { env = "DIRECTUS_TOKEN", secret = true },
}
-- what calls on the default client need set in the environment (rill check)
base.needs("directus", SPEC, { ["*"] = { { "url" }, { "token" } } })

-- {"errors":[{"message":"...","extensions":{"code":"FORBIDDEN"}}]}
local function message_of(v)
  if type(v) ~= "table" or type(v.errors) ~= "table" then return nil end
  local parts = {}
  for _, e in ipairs(v.errors) do
    if type(e) == "table" then
      local code = type(e.extensions) == "table" and e.extensions.code
      parts[#parts + 1] = tostring(e.message or "") .. (code and (" (" .. tostring(code) .. ")") or "")
    end
  end
  return table.concat(parts, "; ")
end

local function encode_query(query)
  if query == nil then return nil end
  base.check(type(query) == "table", "directus", "a query is a table { filter, fields, sort, limit, ... }")
  local q = {}
  for k, v in pairs(query) do
    if type(v) == "table" then
      q[k] = (v[1] ~= nil and k ~= "filter" and k ~= "deep") and table.concat(v, ",") or json.encode(v)
    else
      q[k] = v
    end
  end
  return q
end

local function new(given)
  local c = base.client("directus", SPEC, given)
  c.message_of = message_of
  local directus = {}

  local function collection_of(name)
    base.check(type(name) == "string" and name:match("^[%w_%-]+$"), "directus",
      "a collection is a name of letters, digits, _ and -, got %s", tostring(name))
    return name
  end

  local function call(operation, method, path, body, query)
    local v = c:call(operation, {
      method = method, url = c:base_url("url") .. path, json = body, query = encode_query(query),
      headers = { Authorization = "Bearer " .. c:setting("token"), Accept = "application/json" },
    })
    return type(v) == "table" and v.data or nil
  end

  function directus.items(collection, query)
    return call("read " .. tostring(collection), "GET", "/items/" .. collection_of(collection), nil, query)
  end

  function directus.item(collection, id, query)
    return call(string.format("read %s %s", tostring(collection), tostring(id)), "GET",
      "/items/" .. collection_of(collection) .. "/" .. base.id("directus", "item id", id), nil, query)
  end

  function directus.create(collection, fields)
    base.check(type(fields) == "table", "directus", "create: expected a table of fields")
    return call("create " .. tostring(collection), "POST", "/items/" .. collection_of(collection), fields)
  end

  function directus.update(collection, id, fields)
    base.check(type(fields) == "table", "directus", "update: expected a table of fields")
    return call(string.format("update %s %s", tostring(collection), tostring(id)), "PATCH",
      "/items/" .. collection_of(collection) .. "/" .. base.id("directus", "item id", id), fields)
  end

  function directus.with(settings) return new(settings) end
  function directus.with_env(names, owner) return new(base.from_env("directus", SPEC, names, owner)) end

  return directus
end

return new(nil)
