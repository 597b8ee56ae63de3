-- connectors/mautic: contacts, segments, campaigns, points and template
-- emails in Mautic, through its REST API (/api/...) with HTTP basic auth
-- (enabled in Mautic's API settings).
--   mautic.create_contact(fields)              -> the contact (contact.id)
--   mautic.update_contact(id, fields)          -> the contact (PATCH: only the fields given)
--   mautic.find_contact(email)                 -> the contact, or nil
--   mautic.add_to_segment(segment_id, contact_id)   -> true
--   mautic.add_to_campaign(campaign_id, contact_id) -> true
--   mautic.add_points(contact_id, points[, { event_name, action_name }]) -> true
--   mautic.send_email(email_id, contact_id[, tokens]) -> true
--   mautic.with{ url, user, password }         -> a client with those settings
-- Settings from the environment: MAUTIC_URL (the site, without /api),
-- MAUTIC_USER, MAUTIC_PASSWORD.
-- A campaign is not "fired" by an API call: Mautic runs a campaign's events
-- for the contacts that are in it, on its own cron. A contact enters a
-- campaign when it joins one of the campaign's segments, or when it is
-- added to the campaign directly (add_to_campaign); the campaign's first
-- events then run at Mautic's next campaign trigger.
local base = require "rill.connectors.base"
local crypto = require "rill.crypto"

local SPEC = {
  url = { env = "MAUTIC_URL" },
  user = { env = "MAUTIC_USER" },
  password = { env = "MAUTIC_PASSWORD", secret = true },
}
-- what calls on the default client need set in the environment (rill check)
base.needs("mautic", SPEC, { ["*"] = { { "url" }, { "user" }, { "password" } } })

-- {"errors":[{"message":"email: This value is not valid.","code":400}]}
local function message_of(v)
  if type(v) ~= "table" or type(v.errors) ~= "table" then return nil end
  local parts = {}
  for _, e in ipairs(v.errors) do
    if type(e) == "table" and e.message then parts[#parts + 1] = tostring(e.message) end
  end
  return table.concat(parts, "; ")
end

local function new(given)
  local c = base.client("mautic", SPEC, given)
  c.message_of = message_of
  local mautic = {}

  local function call(operation, method, path, body, query)
    local auth = crypto.base64(c:setting("user") .. ":" .. c:setting("password"))
    return c:call(operation, {
      method = method, url = c:base_url("url") .. "/api" .. path, json = body, query = query,
      headers = { Authorization = "Basic " .. auth, Accept = "application/json" },
    })
  end

  local function id(what, v) return base.id("mautic", what, v) end

  local function fields_of(what, fields)
    base.check(type(fields) == "table", "mautic", "%s: expected a table of contact fields", what)
    return fields
  end

  function mautic.create_contact(fields)
    local v = call("create contact", "POST", "/contacts/new", fields_of("create contact", fields))
    return v and v.contact
  end

  function mautic.update_contact(contact_id, fields)
    local v = call("update contact " .. tostring(contact_id), "PATCH",
      "/contacts/" .. id("contact id", contact_id) .. "/edit", fields_of("update contact", fields))
    return v and v.contact
  end

  function mautic.find_contact(email)
    base.check(type(email) == "string" and email:find("@", 1, true), "mautic",
      "find contact: expected an email address")
    local v = call("find contact", "GET", "/contacts", nil, { search = "email:" .. email, limit = 1 })
    if type(v) ~= "table" or type(v.contacts) ~= "table" then return nil end
    for _, contact in pairs(v.contacts) do return contact end -- an object keyed by id, or []
    return nil
  end

  function mautic.add_to_segment(segment_id, contact_id)
    call(string.format("add contact %s to segment %s", tostring(contact_id), tostring(segment_id)), "POST",
      "/segments/" .. id("segment id", segment_id) .. "/contact/" .. id("contact id", contact_id) .. "/add")
    return true
  end

  function mautic.add_to_campaign(campaign_id, contact_id)
    call(string.format("add contact %s to campaign %s", tostring(contact_id), tostring(campaign_id)), "POST",
      "/campaigns/" .. id("campaign id", campaign_id) .. "/contact/" .. id("contact id", contact_id) .. "/add")
    return true
  end

  function mautic.add_points(contact_id, points, opts)
    base.check(type(points) == "number" and points > 0 and points == math.floor(points), "mautic",
      "add points: points must be a whole number above 0, got %s", tostring(points))
    opts = opts or {}
    local body = (opts.event_name or opts.action_name)
      and { eventName = opts.event_name, actionName = opts.action_name } or nil
    call(string.format("add %d points to contact %s", points, tostring(contact_id)), "POST",
      "/contacts/" .. id("contact id", contact_id) .. "/points/plus/" .. string.format("%d", points), body)
    return true
  end

  function mautic.send_email(email_id, contact_id, tokens)
    base.check(tokens == nil or type(tokens) == "table", "mautic", "send email: tokens must be a table")
    call(string.format("send email %s to contact %s", tostring(email_id), tostring(contact_id)), "POST",
      "/emails/" .. id("email id", email_id) .. "/contact/" .. id("contact id", contact_id) .. "/send",
      tokens and { tokens = tokens } or nil)
    return true
  end

  function mautic.with(settings) return new(settings) end
  function mautic.with_env(names, owner) return new(base.from_env("mautic", SPEC, names, owner)) end

  return mautic
end

return new(nil)
