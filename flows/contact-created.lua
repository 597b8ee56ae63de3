-- A contact created without a lead (an analyst adding a person in Directus, an import) is synced to
-- its company's Mautic, as a lead's contact is by lead-created (audit §3.2: Mautic contacts are
-- synced on a lead's or a contact's creation).
-- One Mautic contact per person, whichever flow gets there first:
-- - the sync waits SETTLE first: a contact and its lead are often created together (the contact,
--   then the lead that points at it); a contact that a lead references by then is left to
--   lead-created, which syncs it with the lead's segment;
-- - Mautic is searched by email before anything is created (a person already there is updated);
-- - contacts.mautic_id is the marker: a contact that has one (synced here, by lead-created, or made
--   from a Mautic form) is not synced again, and lead-created updates that Mautic contact when a
--   lead is attached later, never creating a second one.
-- Settings: companies.mautic_*_env (the company's own Mautic; NULL: MAUTIC_URL, MAUTIC_USER,
-- MAUTIC_PASSWORD).

local SETTLE = "5m" -- how long a new contact waits for a lead before it is synced on its own

local present = require("lib.util").present
local accounts = require "lib.accounts"

return {
  description = "Sync a new contact without a lead to its company's Mautic",
  triggers = {
    db_event { table = "contacts", on = "insert" },
  },
  run = function(ctx)
    local id = ctx.payload.new.id
    sleep_for("wait for a lead", SETTLE)
    local r = step("load", function()
      local contact = db.plain(db.query("SELECT * FROM contacts WHERE id = $1", id)[1])
      if not contact then return { gone = true } end
      local lead = db.query("SELECT id FROM leads WHERE contact_id = $1 ORDER BY id", id)[1]
      return { contact = contact, lead = lead and lead.id,
               company = db.plain(db.query("SELECT * FROM companies WHERE id = $1", contact.owner_company)[1]) }
    end)
    if r.gone then return { contact = id, ignored = "no longer exists" } end
    if r.lead then return { contact = id, ignored = "lead " .. tostring(r.lead) .. " syncs it (lead-created)" } end
    local contact = r.contact
    if present(contact.mautic_id) then return { contact = id, ignored = "already in Mautic", mautic_id = contact.mautic_id } end

    -- the company's own Mautic account (as in lead-created)
    local api = accounts.client(mautic, "mautic", r.company, { "url", "user", "password" })
    local mautic_id = step("mautic contact", function()
      local fields = { email = contact.email, firstname = contact.first_name, lastname = contact.last_name,
                       company = contact.organization, phone = contact.phone }
      local m = api.find_contact(contact.email)
      m = m and api.update_contact(m.id, fields) or api.create_contact(fields)
      -- the marker; a lead-created that got there meanwhile keeps its own
      db.exec("UPDATE contacts SET mautic_id = $1 WHERE id = $2 AND mautic_id IS NULL", m.id, id)
      return db.query("SELECT mautic_id FROM contacts WHERE id = $1", id)[1].mautic_id
    end)
    return { contact = id, mautic_id = mautic_id }
  end,
}
