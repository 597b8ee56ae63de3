-- A lead becomes a client (its status becomes `converted`): the project manager gets a task to start
-- the project (one per lead) and an email, the team hears of it on Slack, the contact is tagged
-- "client" in Mautic, and an analytics event is recorded. The task is due the company's pm_task_days
-- after the conversion, counted in days of its timezone.

local util = require "lib.util"
local accounts = require "lib.accounts"
local full_name = util.full_name
local company_client = accounts.client

local plain = db.plain -- the row without its NULL columns (a step's result)

return {
  description = "A converted lead: task for the project manager, Slack, Mautic, analytics",
  triggers = {
    db_event { table = "leads", on = "update" },
  },
  run = function(ctx)
    local old, new = ctx.payload.old or {}, ctx.payload.new or {}
    if not (new.status == "converted" and old.status ~= "converted") then
      return { skipped = "the lead's status did not become converted" }
    end
    local r = step("load the lead", function()
      local lead = plain(db.query("SELECT * FROM leads WHERE id = $1", new.id)[1])
      if not lead then return nil end
      return { lead = lead,
               company = plain(db.query("SELECT * FROM companies WHERE id = $1", lead.owner_company)[1]),
               contact = lead.contact_id and plain(db.query("SELECT * FROM contacts WHERE id = $1", lead.contact_id)[1]) }
    end)
    if not r then fail("lead " .. tostring(new.id) .. " no longer exists") end
    local lead, company, contact = r.lead, r.company, r.contact
    local who = contact and (full_name(contact) ~= "" and full_name(contact) or contact.email) or ("lead " .. lead.id)
    local now = step("converted at", time.now)
    local due_date = time.iso(time.add_days(now, company.pm_task_days, company.timezone), company.timezone):sub(1, 10)

    -- one kick-off task per lead, even if it is converted, reopened and converted again
    local task_title = "Kick-off: " .. who .. (contact and contact.organization and (" (" .. contact.organization .. ")") or "")
    local task = step("task for the project manager", function()
      db.exec("UPDATE leads SET converted_at = $1 WHERE id = $2 AND converted_at IS NULL", time.iso(now), lead.id)
      local n = db.exec("INSERT INTO tasks (owner_company, title, assignee_email, related_table, related_id, due_date, "
        .. "created_at) SELECT $1, $2, $3, 'leads', $4, $5, $6 WHERE NOT EXISTS "
        .. "(SELECT 1 FROM tasks WHERE related_table = 'leads' AND related_id = $4)",
        company.id, task_title, company.pm_email, lead.id, due_date, time.iso(now))
      return { created = n > 0 }
    end)
    if task.created and company.pm_email then
      step("email the project manager", function()
        return email.send { from = string.format("%s <%s>", company.sender_name or company.name, company.sender_email),
          to = company.pm_email, subject = task_title,
          text = string.format("%s is now a client of %s. A kick-off task is yours, due %s.\n\nEmail: %s\nPhone: %s\n"
            .. "Notes: %s\n", who, company.name, due_date,
            contact and contact.email or "-", contact and contact.phone or "-", lead.notes or "-") }
      end)
    end
    if company.slack_channel then -- none: no message (the default channel is not this company's)
      step("tell the team", function()
        return slack.post(company.slack_channel, string.format("Lead converted: %s is a client.%s", who,
          task.created and " Kick-off task for " .. (company.pm_email or "the project manager") .. "." or ""))
      end)
    end
    if contact and contact.mautic_id then
      local mautic_api = company_client(mautic, "mautic", company, { "url", "user", "password" }) -- the company's own
      step("mautic: tag the client", function()
        return mautic_api.update_contact(contact.mautic_id, { tags = { "client" } }).id
      end)
    end
    step("analytics", function()
      return db.exec("INSERT INTO analytics_events (owner_company, name, properties, created_at) VALUES ($1, $2, $3, $4)",
        company.id, "lead_converted", json.encode { lead_id = lead.id, source = lead.source }, time.iso(now))
    end)
    return { converted = lead.id, task = task.created }
  end,
}
