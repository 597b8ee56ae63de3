-- connectors/docuseal: signature requests in DocuSeal (an API key in the
-- X-Auth-Token header).
--   docuseal.create_submission{ template_id, submitters = { { email, name, role, values }, ... },
--                               send_email, message = { subject, body }, ... }
--       -> { id = the submission's id, submitters = { { id, email, slug, status, embed_src }, ... } }
--   docuseal.get_submission(id) -> the submission: status ("pending", "completed", "declined",
--       "expired"), submitters (each with its status), completed_at, documents, ...
--   docuseal.with{ url, token } -> a client with those settings
-- Settings from the environment: DOCUSEAL_URL, the API's base URL: a
-- self-hosted DocuSeal's site followed by /api (https://sign.example.com/api),
-- or https://api.docuseal.com for DocuSeal's cloud; DOCUSEAL_TOKEN.
local base = require "rill.connectors.base"

local SPEC = {
  url = { env = "DOCUSEAL_URL" },
  token = { env = "DOCUSEAL_TOKEN", secret = true },
}
-- what calls on the default client need set in the environment (rill check)
base.needs("docuseal", SPEC, { ["*"] = { { "url" }, { "token" } } })

-- {"error":"Template not found"}
local function message_of(v)
  return type(v) == "table" and v.error and tostring(v.error) or nil
end

local function new(given)
  local c = base.client("docuseal", SPEC, given)
  c.message_of = message_of
  local docuseal = {}

  local function call(operation, method, path, body)
    return c:call(operation, {
      method = method, url = c:base_url("url") .. path, json = body,
      headers = { ["X-Auth-Token"] = c:setting("token"), Accept = "application/json" },
    })
  end

  function docuseal.create_submission(s)
    base.check(type(s) == "table", "docuseal", "create submission: expected a table { template_id, submitters }")
    base.check(s.template_id ~= nil, "docuseal", "create submission: template_id is required")
    base.check(type(s.submitters) == "table" and #s.submitters > 0, "docuseal",
      "create submission: submitters must list one submitter or more")
    local v = call("create submission from template " .. tostring(s.template_id), "POST", "/submissions", s)
    -- DocuSeal answers with the list of submitters, each naming its submission
    if type(v) == "table" and v[1] ~= nil then
      return { id = v[1].submission_id, submitters = v }
    end
    return v
  end

  function docuseal.get_submission(id)
    return call("get submission " .. tostring(id), "GET",
      "/submissions/" .. base.id("docuseal", "submission id", id))
  end

  function docuseal.with(settings) return new(settings) end
  function docuseal.with_env(names, owner) return new(base.from_env("docuseal", SPEC, names, owner)) end

  return docuseal
end

return new(nil)
