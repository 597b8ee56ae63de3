-- Every invoice created or changed in our database is mirrored in Invoice Ninja (its client created
-- the first time, the invoice created then updated, marked sent when it leaves draft), and every
-- change is written to the audit log (beside Directus, DIRECTUS_URL set, through its API: its activity
-- shows rill wrote it; docs/directus.md). Cancelled invoices are only audited.
-- The Invoice Ninja ids are kept (contacts.invoiceninja_client_id, invoices.invoiceninja_id), stored
-- only where still empty, so a retried or concurrent run never makes a second client or invoice.

local util = require "lib.util"
local accounts = require "lib.accounts"
local present = util.present
local company_client = accounts.client

local SYNCED = { "number", "amount", "currency", "status", "issued_at", "due_date", "contact_id", "reference" }

local function date_of(v) return present(v) and tostring(v):sub(1, 10) or nil end

-- the fields that changed between the old and the new row (all of SYNCED for an insert)
local function changes(payload)
  local out = {}
  for _, k in ipairs(SYNCED) do
    local new = payload.new and payload.new[k]
    local old = payload.old and payload.old[k]
    if payload.op == "insert" or tostring(new) ~= tostring(old) then out[#out + 1] = k end
  end
  return out
end

local function ninja_fields(inv, client_id)
  return {
    client_id = client_id, number = inv.number, date = date_of(inv.issued_at), due_date = date_of(inv.due_date),
    po_number = present(inv.reference) and inv.reference or nil,
    line_items = { { product_key = inv.kind, quantity = 1, cost = inv.amount,
      notes = (inv.kind == "deposit" and "Deposit invoice " or "Invoice ") .. inv.number } },
  }
end

return {
  description = "Mirror invoices in Invoice Ninja and audit every change",
  concurrency = 1, -- one change at a time: the first run stores the Invoice Ninja ids the next one uses
  triggers = {
    db_event { table = "invoices", on = { "insert", "update" } },
  },
  run = function(ctx)
    local ev = ctx.payload
    if type(ev.new) ~= "table" or ev.new.id == nil then fail("invoice-changed: the event has no new row") end
    local changed = changes(ev)

    -- read once (a replay sees what this run saw, not the ids it stored since)
    local inv = step("read invoice", function()
      return db.query("SELECT * FROM invoices WHERE id = $1", ev.new.id)[1] or false
    end)
    if not inv then return { skipped = "invoice " .. tostring(ev.new.id) .. " no longer exists" } end
    local contact = step("read contact", function()
      return db.query("SELECT * FROM contacts WHERE id = $1", inv.contact_id)[1]
    end)
    local company = step("read company", function()
      return db.plain(db.query("SELECT * FROM companies WHERE id = $1", inv.owner_company)[1])
    end)

    local ninja = { skipped = "cancelled" }
    if inv.status ~= "cancelled" and #changed > 0 then
      -- the invoice's company's Invoice Ninja (its own token), for every call below
      local ninja_api = company_client(invoiceninja, "invoiceninja", company, { "url", "token" })
      local client_id = contact.invoiceninja_client_id
      if not present(client_id) then
        client_id = step("create client", function()
          local name = present(contact.organization) and contact.organization
            or ((present(contact.first_name) and contact.first_name .. " " or "") .. (present(contact.last_name) and contact.last_name or ""))
          local client = ninja_api.create_client { name = name ~= "" and name or contact.email,
            contacts = { { first_name = present(contact.first_name) and contact.first_name or nil,
              last_name = present(contact.last_name) and contact.last_name or nil, email = contact.email,
              phone = present(contact.phone) and contact.phone or nil } } }
          db.exec("UPDATE contacts SET invoiceninja_client_id = $1 WHERE id = $2 AND invoiceninja_client_id IS NULL",
            client.id, contact.id)
          -- another flow may have stored one meanwhile: use the stored one
          return db.query("SELECT invoiceninja_client_id FROM contacts WHERE id = $1", contact.id)[1].invoiceninja_client_id
        end)
      end

      if not present(inv.invoiceninja_id) then
        local created = step("create invoice", function()
          -- a retry of this step (the answer lost after Invoice Ninja made it) finds it by its number
          local made = ninja_api.find_invoice(inv.number)
          if not (made and made.client_id == client_id) then
            made = ninja_api.create_invoice(ninja_fields(inv, client_id), { mark_sent = inv.status ~= "draft" })
          end
          db.exec("UPDATE invoices SET invoiceninja_id = $1 WHERE id = $2 AND invoiceninja_id IS NULL", made.id, inv.id)
          return { id = made.id }
        end)
        ninja = { created = created.id }
      else
        step("update invoice", function()
          return { id = ninja_api.update_invoice(inv.invoiceninja_id, ninja_fields(inv, client_id)).id }
        end)
        ninja = { updated = inv.invoiceninja_id }
        local old_status = ev.old and ev.old.status
        if old_status == "draft" and inv.status ~= "draft" then
          step("mark sent", function() return { id = ninja_api.mark_sent(inv.invoiceninja_id).id } end)
          ninja.marked_sent = true
        end
      end
    elseif #changed == 0 then
      ninja = { skipped = "nothing Invoice Ninja shows changed" }
    end

    step("audit log", function()
      local details = { op = ev.op, changed = changed, invoiceninja = ninja, status = inv.status }
      if ev.op == "update" then
        details.before, details.after = {}, {}
        for _, k in ipairs(changed) do details.before[k], details.after[k] = ev.old[k], ev.new[k] end
      end
      local actor = "invoice-changed " .. ctx.run_id
      if env.DIRECTUS_URL then -- beside Directus: where the company's people look (its activity, by rill)
        local found = directus.items("audit_log", { filter = { actor = { _eq = actor } }, fields = { "id" }, limit = 1 })
        if found[1] then return 0 end -- a retry of this step after Directus wrote it
        directus.create("audit_log", { owner_company = inv.owner_company, table_name = "invoices", record_id = inv.id,
          action = "invoice_" .. ev.op, details = json.encode(details), actor = actor, created_at = time.iso(time.now()) })
        return 1
      end
      return db.exec([[INSERT INTO audit_log (owner_company, table_name, record_id, action, details, actor, created_at)
        VALUES ($1, 'invoices', $2, $3, $4, $5, $6)]], inv.owner_company, inv.id, "invoice_" .. ev.op,
        json.encode(details), actor, time.iso(time.now()))
    end)
    return { invoice = inv.number, op = ev.op, changed = changed, invoiceninja = ninja }
  end,
}
