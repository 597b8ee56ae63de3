-- connectors/email: direct notifications by SMTP (libcurl's smtp, through
-- rill.c.http_client): builds the MIME message (headers, a text part, an
-- HTML part or both as multipart/alternative, non-ASCII subjects and names
-- as RFC 2047 encoded words) and hands it to the server over STARTTLS.
--   email.send{ to, cc, bcc, subject, text, html, from, reply_to, headers }
--       -> { message_id, recipients = { "a@example.com", ... } }
--   email.with{ url, user, password, from, starttls, ca_file, verify } -> a client with those settings
-- to, cc, bcc: an address ("a@example.com" or "Ada <a@example.com>") or a
-- list of them; bcc only reaches the envelope, never a header.
-- Settings from the environment: SMTP_URL (smtp://host:587 for STARTTLS,
-- smtps://host:465 for TLS from the start), SMTP_USER, SMTP_PASSWORD,
-- MAIL_FROM (the default sender), SMTP_STARTTLS ("required", the default:
-- never send in clear; or "try"), SMTP_CA_FILE (a CA file to trust).
-- Inside a step the Message-ID is derived from the run and step, the same
-- on every attempt, so a mail repeated by a retried step can be recognised.
local base = require "rill.connectors.base"
local http = require "rill.http"
local crypto = require "rill.crypto"
local log = require "rill.log"
local current = require "rill.run" -- the step running now
local time = require "rill.time"

local SPEC = {
  url = { env = "SMTP_URL" },
  user = { env = "SMTP_USER" },
  password = { env = "SMTP_PASSWORD", secret = true },
  from = { env = "MAIL_FROM" },
  starttls = { env = "SMTP_STARTTLS", default = "required" },
  ca_file = { env = "SMTP_CA_FILE" },
  verify = {},
  timeout = {},
}
-- what calls on the default client need set in the environment (rill check)
base.needs("email", SPEC, { send = { { "url" } } })

local function bad(fmt, ...) base.raise("email: " .. string.format(fmt, ...)) end

-- An encoded word (RFC 2047) for a header value that is not plain ASCII:
-- =?UTF-8?B?...?= pieces of whole UTF-8 characters, each at most 75
-- characters long, folded onto continuation lines.
local function encode_words(s)
  if not s:find("[\128-\255]") then return s end
  local words, chunk = {}, ""
  for ch in s:gmatch("[%z\1-\127\192-\253][\128-\191]*") do
    if #chunk + #ch > 45 then
      words[#words + 1] = "=?UTF-8?B?" .. crypto.base64(chunk) .. "?="
      chunk = ""
    end
    chunk = chunk .. ch
  end
  if chunk ~= "" then words[#words + 1] = "=?UTF-8?B?" .. crypto.base64(chunk) .. "?=" end
  return table.concat(words, "\r\n ")
end

local function header_value(what, s)
  if type(s) ~= "string" then bad("%s must be a string", what) end
  if s:find("[\r\n]") then bad("%s must be one line (it has a line break)", what) end
  return s
end

-- "Ada <a@example.com>" or "a@example.com" -> the header form, the address
local function address(what, s)
  header_value(what, s)
  local name, addr = s:match("^%s*(.-)%s*<([^<>]+)>%s*$")
  if not addr then name, addr = "", s:match("^%s*(.-)%s*$") end
  if not addr:match("^[^%s@<>,;:\"]+@[^%s@<>,;:\"]+$") then
    bad("%s: %q is not an email address", what, s)
  end
  name = name:gsub('^"(.*)"$', "%1")
  if name == "" then return addr, addr end
  if name:find("[\128-\255]") then return encode_words(name) .. " <" .. addr .. ">", addr end
  if name:find("[^%w%s!#$%%&'*+%-/=?^_`{|}~]") then name = '"' .. name:gsub('["\\]', "\\%0") .. '"' end
  return name .. " <" .. addr .. ">", addr
end

local function addresses(what, v)
  if v == nil then return {}, {} end
  local list = type(v) == "table" and v or { v }
  local shown, envelope = {}, {}
  for i, s in ipairs(list) do
    shown[i], envelope[i] = address(what, s)
  end
  return shown, envelope
end

-- Base64 body lines of 76 characters, CRLF line ends in the text first.
local function body_part(content_type, content)
  if type(content) ~= "string" then bad("text and html must be strings") end
  local encoded = crypto.base64((content:gsub("\r?\n", "\r\n")))
  local lines = {}
  for i = 1, #encoded, 76 do lines[#lines + 1] = encoded:sub(i, i + 75) end
  return "Content-Type: " .. content_type .. "; charset=utf-8\r\n"
    .. "Content-Transfer-Encoding: base64\r\n\r\n" .. table.concat(lines, "\r\n") .. "\r\n"
end

local function message_id(domain)
  local key = current.step_key()
  local local_part = key and ("rill-" .. key) or crypto.uuid4()
  return "<" .. local_part .. "@" .. domain .. ">"
end

-- build(m, from) -> the message text, the envelope recipients, the Message-ID
local function build(m, default_from)
  if type(m) ~= "table" then bad("send: expected a table { to, subject, text, html }") end
  if m.text == nil and m.html == nil then bad("send: give text, html or both") end
  local from_shown, from_addr = address("from", m.from or default_from)
  local to, to_env = addresses("to", m.to)
  local cc, cc_env = addresses("cc", m.cc)
  local _, bcc_env = addresses("bcc", m.bcc)
  local rcpt = {}
  for _, list in ipairs { to_env, cc_env, bcc_env } do
    for _, a in ipairs(list) do rcpt[#rcpt + 1] = a end
  end
  if #rcpt == 0 then bad("send: no recipient (to, cc or bcc)") end
  local id = message_id(from_addr:match("@(.+)$"))
  local h = {
    "From: " .. from_shown,
    #to > 0 and ("To: " .. table.concat(to, ", ")) or nil,
  }
  if #cc > 0 then h[#h + 1] = "Cc: " .. table.concat(cc, ", ") end
  if m.reply_to then h[#h + 1] = "Reply-To: " .. (address("reply_to", m.reply_to)) end
  h[#h + 1] = "Subject: " .. encode_words(header_value("subject", m.subject or ""))
  h[#h + 1] = "Date: " .. os.date("!%a, %d %b %Y %H:%M:%S +0000", math.floor(time.now()))
  h[#h + 1] = "Message-ID: " .. id
  h[#h + 1] = "MIME-Version: 1.0"
  for name, value in pairs(m.headers or {}) do
    if type(name) ~= "string" or not name:match("^[%w%-]+$") then bad("a header name is letters, digits and -") end
    h[#h + 1] = name .. ": " .. header_value("header " .. name, tostring(value))
  end
  local body
  if m.text and m.html then
    local boundary = "rill-" .. crypto.hex(crypto.random(12))
    h[#h + 1] = 'Content-Type: multipart/alternative; boundary="' .. boundary .. '"'
    body = "--" .. boundary .. "\r\n" .. body_part("text/plain", m.text)
      .. "--" .. boundary .. "\r\n" .. body_part("text/html", m.html)
      .. "--" .. boundary .. "--\r\n"
    return table.concat(h, "\r\n") .. "\r\n\r\n" .. body, from_addr, rcpt, id
  end
  local part = m.html and body_part("text/html", m.html) or body_part("text/plain", m.text)
  return table.concat(h, "\r\n") .. "\r\n" .. part, from_addr, rcpt, id
end

local function new(given)
  local c = base.client("email", SPEC, given)
  local email = {}

  function email.send(m)
    local url = c:setting("url")
    if not url:match("^smtps?://[^/]") then bad("the SMTP URL must start with smtp:// or smtps://") end
    local starttls = c:setting("starttls")
    if starttls ~= "required" and starttls ~= "try" then bad('starttls must be "required" or "try"') end
    -- the default sender is needed only when the message names none
    local text, from, rcpt, id = build(m, m.from == nil and c:setting("from") or nil)
    local envelope = {}
    for i, a in ipairs(rcpt) do envelope[i] = "<" .. a .. ">" end
    local verify = c:setting("verify", true)
    if verify == false then log.warn("TLS certificate verification is OFF for this mail", { url = url }) end
    -- through http's transport, so that `rill test` answers it like a request
    local status, err = http.transport {
      url = url, mail_from = "<" .. from .. ">", mail_rcpt = envelope, body = text,
      use_ssl = starttls == "required" and "all" or "try",
      username = c:setting("user", true), password = c:setting("password", true),
      ca_file = c:setting("ca_file", true), verify = verify == nil or verify,
      timeout = c:setting("timeout", true),
    }
    local server = url:gsub("^(%a+://)[^/@]*@", "%1"):match("^%a+://([^/]+)")
    if not status then
      log.warn("email not sent", { server = server, recipients = #rcpt, error = err, step = current.step_name() })
      base.raise(string.format("email: send to %s: %s", table.concat(rcpt, ", "), err))
    end
    log.info("email sent", { server = server, recipients = #rcpt, message_id = id, status = status,
      step = current.step_name() })
    return { message_id = id, recipients = rcpt }
  end

  function email.with(settings) return new(settings) end
  function email.with_env(names, owner) return new(base.from_env("email", SPEC, names, owner)) end

  return email
end

return new(nil)
