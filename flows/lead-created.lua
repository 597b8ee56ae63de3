-- A new lead (a row in leads, or a form filled on the company's Mautic site) is synced to Mautic and
-- put in the company's nurturing segment; the team hears of it on Slack, the sales team gets an email,
-- and an analytics event is recorded. A Mautic form creates or updates the contact and its open lead:
-- the same person filling a form again updates the lead and starts nothing new.
-- A Mautic form's submissions belong to the company whose companies.mautic_forms lists the form's
-- id (never to a field of the form: the visitor could change it).

local util = require "lib.util"
local accounts = require "lib.accounts"
local present = util.present
local full_name = util.full_name
local company_client = accounts.client

local plain = db.plain -- the row without its NULL columns (a step's result)

local function text(v)
  if not present(v) then return nil end
  v = tostring(v):match("^%s*(.-)%s*$")
  return v ~= "" and v or nil
end

-- A Mautic form submission -> the contact and lead it creates or updates, in one transaction.
local function record_submission(s, now)
  local results = type(s.results) == "table" and s.results or {}
  local form_id = type(s.form) == "table" and tonumber(s.form.id) or nil
  local email = text(results.email)
  if not form_id or not email then return { refused = "needs the form's id and an email field" } end
  local owner = db.query("SELECT id FROM companies WHERE ',' || mautic_forms || ',' LIKE $1 ORDER BY id",
    "%," .. string.format("%d", form_id) .. ",%")
  if #owner ~= 1 then
    return { refused = string.format("Mautic form %d is the form of %s (companies.mautic_forms)", form_id,
      #owner == 0 and "no company" or "several companies") }
  end
  local company_id = owner[1].id
  email = email:lower()
  local mautic_id = type(s.lead) == "table" and tonumber(s.lead.id) or nil
  local form = type(s.form) == "table" and text(s.form.name) or "a Mautic form"
  return db.tx(function()
    local contact = db.query("SELECT id FROM contacts WHERE owner_company = $1 AND lower(email) = $2 ORDER BY id",
      company_id, email)[1]
    if contact then
      db.exec("UPDATE contacts SET first_name = COALESCE($1, first_name), last_name = COALESCE($2, last_name), "
        .. "phone = COALESCE($3, phone), organization = COALESCE($4, organization), "
        .. "mautic_id = COALESCE(mautic_id, $5), updated_at = $6 WHERE id = $7",
        text(results.firstname), text(results.lastname), text(results.phone), text(results.company), mautic_id,
        now, contact.id)
    else
      contact = db.query("INSERT INTO contacts (owner_company, first_name, last_name, email, phone, organization, "
        .. "mautic_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
        company_id, text(results.firstname), text(results.lastname), email, text(results.phone),
        text(results.company), mautic_id, now)[1]
    end
    local note = "Mautic form: " .. form .. (text(results.message) and (": " .. text(results.message)) or "")
    local lead = db.query("SELECT id FROM leads WHERE contact_id = $1 AND status IN ('new', 'qualified') ORDER BY id",
      contact.id)[1]
    if lead then
      db.exec("UPDATE leads SET notes = $1, updated_at = $2 WHERE id = $3", note, now, lead.id)
      return { lead_id = lead.id, created = false }
    end
    lead = db.query("INSERT INTO leads (owner_company, contact_id, source, status, notes, created_at, updated_at) "
      .. "VALUES ($1, $2, 'mautic', 'new', $3, $4, $4) RETURNING id", company_id, contact.id, note, now)[1]
    return { lead_id = lead.id, created = true }
  end)
end

-- Everything a new lead sets off; steps named after the lead (a delivery can carry several).
local function welcome(lead_id)
  local tag = " (lead " .. lead_id .. ")"
  local r = step("load" .. tag, function()
    local lead = plain(db.query("SELECT * FROM leads WHERE id = $1", lead_id)[1])
    if not lead then return nil end
    return { lead = lead,
             company = plain(db.query("SELECT * FROM companies WHERE id = $1", lead.owner_company)[1]),
             contact = lead.contact_id and plain(db.query("SELECT * FROM contacts WHERE id = $1", lead.contact_id)[1]) }
  end)
  if not r then fail("lead " .. tostring(lead_id) .. " no longer exists") end
  local lead, company, contact = r.lead, r.company, r.contact
  local who = contact and (full_name(contact) ~= "" and full_name(contact) or contact.email) or "someone"

  if contact then
    -- the company's own Mautic, for every call below
    local mautic_api = company_client(mautic, "mautic", company, { "url", "user", "password" })
    local mautic_id = step("mautic contact" .. tag, function()
      local fields = { email = contact.email, firstname = contact.first_name, lastname = contact.last_name,
                       company = contact.organization, phone = contact.phone }
      if contact.mautic_id then
        mautic_api.update_contact(contact.mautic_id, fields)
      else
        local m = mautic_api.find_contact(contact.email)
        m = m and mautic_api.update_contact(m.id, fields) or mautic_api.create_contact(fields)
        db.exec("UPDATE contacts SET mautic_id = $1 WHERE id = $2 AND mautic_id IS NULL", m.id, contact.id)
      end
      return db.query("SELECT mautic_id FROM contacts WHERE id = $1", contact.id)[1].mautic_id
    end)
    if company.mautic_nurture_segment then
      step("nurturing segment" .. tag, function()
        return mautic_api.add_to_segment(company.mautic_nurture_segment, mautic_id)
      end)
    end
  end
  if company.slack_channel then -- none: no message (the default channel is not this company's)
    step("tell the team" .. tag, function()
      return slack.post(company.slack_channel, string.format("New lead from %s: %s%s.", lead.source or "?", who,
        contact and contact.organization and (", " .. contact.organization) or ""))
    end)
  end
  if company.sales_email then
    step("email the sales team" .. tag, function()
      return email.send { from = string.format("%s <%s>", company.sender_name or company.name, company.sender_email),
        to = company.sales_email, reply_to = contact and contact.email or nil,
        subject = string.format("New lead: %s", who),
        text = string.format("A new lead (%s) for %s.\n\nName: %s\nEmail: %s\nPhone: %s\nOrganization: %s\n"
          .. "Notes: %s\n", lead.source or "?", company.name, who, contact and contact.email or "-",
          contact and contact.phone or "-", contact and contact.organization or "-", lead.notes or "-") }
    end)
  end
  step("analytics" .. tag, function()
    return db.exec("INSERT INTO analytics_events (owner_company, name, properties, created_at) VALUES ($1, $2, $3, $4)",
      company.id, "lead_created", json.encode { lead_id = lead.id, source = lead.source }, time.iso(time.now()))
  end)
  return lead.id
end

return {
  description = "Welcome new leads: Mautic nurturing, Slack, sales email, analytics",
  triggers = {
    db_event { table = "leads", on = "insert" },
    webhook { method = "POST", path = "/api/mautic/webhook", mode = "async",
              verify = signatures.mautic { secret = { "MAUTIC_WEBHOOK_SECRET", "MAUTIC_WEBHOOK_SECRET_PREVIOUS" } } },
  },
  run = function(ctx)
    if ctx.trigger.type == "db_event" then
      return { welcomed = { welcome(ctx.payload.new.id) } }
    end
    -- Mautic sends the events of one type in a list under the type's name
    local submissions = ctx.payload["mautic.form_on_submit"]
    if submissions == nil then return { ignored = "not a form submission" } end
    if type(submissions) ~= "table" or #submissions == 0 then
      fail("mautic.form_on_submit is not a list of submissions")
    end
    local welcomed, updated, refused = {}, {}, {}
    for i, event in ipairs(submissions) do
      local s = type(event) == "table" and type(event.submission) == "table" and event.submission or {}
      local name = "submission " .. tostring(s.id or i)
      local rec = step("record " .. name, function() return record_submission(s, time.iso(time.now())) end)
      if rec.refused then
        log.warn("Mautic form submission refused", { submission = s.id, reason = rec.refused })
        refused[#refused + 1] = { submission = s.id, reason = rec.refused }
      elseif rec.created then
        welcomed[#welcomed + 1] = welcome(rec.lead_id)
      else
        updated[#updated + 1] = rec.lead_id
      end
    end
    if #refused == #submissions then
      fail("no usable form submission: " .. refused[1].reason)
    end
    return { welcomed = welcomed, updated = updated, refused = refused }
  end,
}
