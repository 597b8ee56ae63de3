-- connectors/slack: posting messages to Slack, through an incoming webhook
-- (a URL that posts to one channel) or the Web API's chat.postMessage (a
-- bot token, any channel the bot is in). Blocks are allowed in both.
--   slack.webhook(message)           -> true
--   slack.post(channel, message)     -> { channel, ts }
--   slack.post(message)              -> the same, message.channel or the default channel
--   slack.send(message)              -> post() when a bot token is set, else webhook()
--   slack.with{ webhook_url, token, channel, api_url } -> a client with those settings
-- message: a string (the text) or { text, blocks, ... } (any field Slack takes).
-- Settings from the environment: SLACK_WEBHOOK_URL, SLACK_BOT_TOKEN,
-- SLACK_CHANNEL (the default channel), SLACK_API_URL (https://slack.com/api).
-- The webhook answers errors with a status and a plain-text code; the Web
-- API answers 200 with ok=false and an error code, which is an error here.
local base = require "rill.connectors.base"

local SPEC = {
  webhook_url = { env = "SLACK_WEBHOOK_URL", secret = true },
  token = { env = "SLACK_BOT_TOKEN", secret = true },
  channel = { env = "SLACK_CHANNEL" },
  api_url = { env = "SLACK_API_URL", default = "https://slack.com/api" },
}
-- what calls on the default client need set in the environment (rill check)
base.needs("slack", SPEC, { webhook = { { "webhook_url" } }, post = { { "token" } },
  send = { { "token", "webhook_url" } } })

local function message_table(message)
  if type(message) == "string" then return { text = message } end
  base.check(type(message) == "table", "slack", "a message is a string or a table { text, blocks }, got %s",
    type(message))
  base.check(message.text ~= nil or message.blocks ~= nil, "slack", "a message needs text or blocks")
  local m = {}
  for k, v in pairs(message) do m[k] = v end
  return m
end

local function new(given)
  local c = base.client("slack", SPEC, given)
  -- the Web API's error ({"ok":false,"error":"channel_not_found"}); the
  -- webhook's plain-text code is the body itself
  c.message_of = function(v) return type(v) == "table" and v.error or nil end
  local slack = {}

  function slack.webhook(message)
    local m = message_table(message)
    m.channel = nil -- a webhook posts to its own channel
    c:request("post message (webhook)", { method = "POST", url = c:setting("webhook_url"), json = m })
    return true
  end

  function slack.post(channel, message)
    if message == nil then -- post(message): the channel in the message, or the default
      message, channel = channel, type(channel) == "table" and channel.channel or nil
    end
    local m = message_table(message)
    m.channel = channel or c:setting("channel")
    base.check(type(m.channel) == "string", "slack", "post: the channel is a string (an id like C0123 or #name)")
    local token = c:setting("token")
    local v = c:call("post message to " .. m.channel, {
      method = "POST", url = c:base_url("api_url") .. "/chat.postMessage", json = m,
      headers = { Authorization = "Bearer " .. token, ["Content-Type"] = "application/json; charset=utf-8" },
    })
    if type(v) ~= "table" or v.ok ~= true then
      base.raise(string.format("slack: post message to %s: 200 with ok=false: %s", m.channel,
        type(v) == "table" and tostring(v.error) or "no answer"))
    end
    return { channel = v.channel, ts = v.ts }
  end

  function slack.send(message)
    if c:setting("token", true) then return slack.post(message) end
    return slack.webhook(message)
  end

  function slack.with(settings) return new(settings) end
  function slack.with_env(names, owner) return new(base.from_env("slack", SPEC, names, owner)) end

  return slack
end

return new(nil)
