-- The collection agency (LP Agency) tells us where each file we handed over stands: its status is
-- recorded on the invoice (collection_status, collection_updated_at) and in the audit log, and the
-- company's Slack channel hears of it. When the agency says "paid", the invoice is paid.
-- LP Agency signs nothing and publishes no scheme: what it can do is send a fixed header. So each
-- update must carry "Authorization: Bearer <LP_AGENCY_WEBHOOK_TOKEN>" (compared in constant time;
-- _PREVIOUS during a rotation) and come from an address in LP_AGENCY_WEBHOOK_ALLOW_FROM (CIDRs;
-- unset refuses everything). No timestamp, so no replay window: event_id makes a replay a no-op.
-- The risks of this mode are in docs/webhooks.md.
-- Each update carries its event_id (a redelivery runs once) and the client_reference we gave the
-- agency (our invoice id); an update older than the last one recorded changes nothing.

local util = require "lib.util"
local present = util.present

return {
  description = "Record the collection agency's updates on the invoices it handles",
  triggers = {
    webhook { method = "POST", path = "/api/collection/lp/webhook", mode = "async", idempotency = "body:event_id",
              verify = signatures.shared_secret { header = "Authorization", prefix = "Bearer ",
                secret = { "LP_AGENCY_WEBHOOK_TOKEN", "LP_AGENCY_WEBHOOK_TOKEN_PREVIOUS" },
                allow_from = "LP_AGENCY_WEBHOOK_ALLOW_FROM" } },
  },
  run = function(ctx)
    local u = ctx.payload
    if type(u) ~= "table" or not present(u.event_id) or not present(u.client_reference)
      or type(u.status) ~= "string" or u.status == "" then
      fail("lpagency: an update needs event_id, client_reference (our invoice id) and status")
    end
    local invoice_id = tonumber(u.client_reference)
    if not invoice_id then fail("lpagency: client_reference " .. tostring(u.client_reference) .. " is not an invoice id") end
    local status = u.status:lower()
    local at = present(u.occurred_at) and u.occurred_at or nil
    if at and not pcall(time.parse, at) then fail("lpagency: occurred_at " .. tostring(at) .. " is not an ISO date-time") end

    local done = step("record status", function()
      local now = time.iso(time.now())
      local when = at and time.iso(time.parse(at)) or now
      return db.tx(function()
        local inv = db.query("SELECT * FROM invoices WHERE id = $1", invoice_id)[1]
        if not inv then return { missing = true } end
        local n = db.exec([[UPDATE invoices SET collection_status = $1, collection_updated_at = $2, updated_at = $3
          WHERE id = $4 AND (collection_updated_at IS NULL OR collection_updated_at <= $2)]], status, when, now, inv.id)
        if n == 0 then return { stale = true, invoice = inv.number } end
        local paid = false
        if status == "paid" and inv.status ~= "paid" then
          db.exec([[UPDATE invoices SET status = 'paid', amount_paid = amount, paid_at = $1 WHERE id = $2]], when, inv.id)
          paid = true
        end
        db.exec([[INSERT INTO audit_log (owner_company, table_name, record_id, action, details, actor, created_at)
          VALUES ($1, 'invoices', $2, 'collection_update', $3, $4, $5)]], inv.owner_company, inv.id,
          json.encode { agency = "lpagency", event_id = u.event_id, status = status, at = when,
            amount_collected = u.amount_collected, note = u.note, marked_paid = paid },
          "collection-agency " .. ctx.run_id, now)
        return { invoice = inv.number, owner_company = inv.owner_company, paid = paid,
          amount = inv.amount, currency = inv.currency }
      end)
    end)
    if done.missing then fail("lpagency: no invoice " .. invoice_id .. " (client_reference)") end
    if done.stale then return { invoice = done.invoice, ignored = "older than the status recorded" } end

    local company = step("company", function()
      return db.query("SELECT slack_channel FROM companies WHERE id = $1", done.owner_company)[1]
    end)
    if present(company.slack_channel) then
      step("tell Slack", function()
        return slack.post(company.slack_channel, string.format("Collection agency: invoice %s is now %q%s",
          done.invoice, status, done.paid and " (marked paid)" or ""))
      end)
    end
    if done.paid then
      emit("payment.received", { invoice_id = invoice_id, invoice = done.invoice, source = "lpagency",
        amount = done.amount, currency = done.currency, invoice_status = "paid", owner_company = done.owner_company })
    end
    return { invoice = done.invoice, status = status, paid = done.paid }
  end,
}
