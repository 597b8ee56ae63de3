-- An invoice created or changed is mirrored in Invoice Ninja (client once, invoice once, then
-- updates) and audited.
local json = require "rill.json"

local function setup(t)
  t.now("2026-11-25T10:00:00Z")
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  -- one Invoice Ninja account, a token per company: company 2 names its own (companies.invoiceninja_token_env)
  t.env { INVOICENINJA_URL = "https://ninja.test", INVOICENINJA_TOKEN = "tok", NORDWIND_INVOICENINJA_TOKEN = "tok-nordwind" }
  t.stub("POST", "https://ninja.test/api/v1/clients", { json = { data = { id = "CLI9" } } })
  t.stub("GET", "https://ninja.test/api/v1/invoices", { json = { data = {} } }) -- none of that number yet
  t.stub("POST", "https://ninja.test/api/v1/invoices", function(call)
    return { json = { data = { id = "NINV-" .. call.json.number, number = call.json.number } } }
  end)
  t.stub("PUT", "https://ninja.test/api/v1/invoices/", function(call)
    return { json = { data = { id = call.url:match("invoices/([^/?]+)") } } }
  end)
  t.stub("POST", "https://ninja.test/api/v1/invoices/bulk", { json = { data = { { id = "NINV-F-2026-050" } } } })
end

local function row(t, id) return t.db.query("SELECT * FROM invoices WHERE id = $1", id)[1] end

test("a new invoice creates its client and itself in Invoice Ninja, keeps both ids, and is audited", function(t)
  setup(t)
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, currency, status, reference,
    issued_at, due_date) VALUES (50, 1, 2, 'F-2026-050', 980.5, 'EUR', 'sent', 'F-2026-050', '2026-11-25', '2026-12-25')]])
  local run = t.db_event("invoice-changed", { op = "insert", new = row(t, 50) })
  t.eq(run.state, "succeeded", "the run")
  t.eq(run.result.invoiceninja, { created = "NINV-F-2026-050" }, "created")
  local clients = t.calls("POST", "ninja.test/api/v1/clients")
  t.eq(#clients, 1, "one client created")
  t.eq(clients[1].json.name, "Bernard Architectes", "named after the organisation")
  t.eq(clients[1].json.contacts[1].email, "hugo@bernard-archi.example", "with the contact's email")
  local made = t.calls("POST", "ninja.test/api/v1/invoices")
  t.eq(#made, 1, "one invoice created")
  t.ok(made[1].url:find("mark_sent=true", 1, true), "marked sent (it is not a draft)")
  t.eq({ made[1].json.client_id, made[1].json.number, made[1].json.due_date }, { "CLI9", "F-2026-050", "2026-12-25" },
    "the invoice's fields")
  t.eq(made[1].json.line_items[1].cost, 980.5, "its amount")
  t.eq(row(t, 50).invoiceninja_id, "NINV-F-2026-050", "the invoice id kept")
  t.eq(t.db.query("SELECT invoiceninja_client_id FROM contacts WHERE id = 2")[1].invoiceninja_client_id, "CLI9",
    "the client id kept")
  local audit = t.db.query("SELECT * FROM audit_log WHERE table_name = 'invoices' AND record_id = 50")
  t.eq(#audit, 1, "one audit entry")
  t.eq({ audit[1].action, audit[1].owner_company }, { "invoice_insert", 1 }, "what and whose")
  t.contains(audit[1].actor, "invoice-changed", "by this flow")

  -- a later change updates the same invoice: no second client, no second invoice
  local old = row(t, 50)
  t.db.exec("UPDATE invoices SET amount = 1000, due_date = '2026-12-31' WHERE id = 50")
  run = t.db_event("invoice-changed", { op = "update", old = old, new = row(t, 50) })
  t.eq(run.result.invoiceninja, { updated = "NINV-F-2026-050" }, "updated")
  t.eq(run.result.changed, { "amount", "due_date" }, "what changed")
  local put = t.calls("PUT", "ninja.test/api/v1/invoices/NINV-F-2026-050")
  t.eq(#put, 1, "one update")
  t.eq(put[1].json.line_items[1].cost, 1000, "the new amount")
  t.eq(#t.calls("POST", "ninja.test/api/v1/clients"), 1, "still one client")
  t.eq(#t.calls("POST", "ninja.test/api/v1/invoices"), 1, "still one invoice")
  local details = json.decode(t.db.query(
    "SELECT details FROM audit_log WHERE record_id = 50 AND action = 'invoice_update'")[1].details)
  t.eq({ details.before.amount, details.after.amount }, { 980.5, 1000 }, "the audit says before and after")
end)

test("a draft that is issued is marked sent; a change Invoice Ninja does not show is only audited", function(t)
  setup(t)
  t.db.exec("UPDATE contacts SET invoiceninja_client_id = 'CLI1' WHERE id = 1")
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, status, invoiceninja_id, due_date)
    VALUES (51, 1, 1, 'F-2026-051', 300, 'draft', 'NINV-F-2026-050', '2026-12-25')]])
  local old = row(t, 51)
  t.db.exec("UPDATE invoices SET status = 'sent' WHERE id = 51")
  local run = t.db_event("invoice-changed", { op = "update", old = old, new = row(t, 51) })
  t.eq(run.result.invoiceninja, { updated = "NINV-F-2026-050", marked_sent = true }, "updated and marked sent")
  t.eq(t.calls("POST", "ninja.test/api/v1/invoices/bulk")[1].json, { action = "mark_sent", ids = { "NINV-F-2026-050" } },
    "the bulk mark_sent")
  t.eq(#t.calls("POST", "ninja.test/api/v1/clients"), 0, "the client exists: none created")

  old = row(t, 51)
  t.db.exec("UPDATE invoices SET collection_status = 'x' WHERE id = 51")
  run = t.db_event("invoice-changed", { op = "update", old = old, new = row(t, 51) })
  t.eq(run.result.invoiceninja, { skipped = "nothing Invoice Ninja shows changed" }, "not synced")
  t.eq(#t.calls("PUT", "ninja.test"), 1, "no second update")
  t.eq(#t.db.query("SELECT * FROM audit_log WHERE record_id = 51"), 2, "both changes audited")
end)

test("Invoice Ninja refusing the invoice fails the run (retried), and nothing is stored as synced", function(t)
  setup(t)
  t.stub("POST", "https://ninja.test/api/v1/invoices", { status = 422,
    json = { message = "The given data was invalid.", errors = { number = { "The number has already been taken." } } } })
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, status, due_date)
    VALUES (52, 1, 2, 'F-2026-052', 300, 'sent', '2026-12-25')]])
  local run = t.db_event("invoice-changed", { op = "insert", new = row(t, 52) })
  t.ok(run.state == "retrying" or run.state == "failed", "not a success: " .. tostring(run.state))
  t.contains(run.error, "number: The number has already been taken.", "Invoice Ninja's reason")
  t.eq(row(t, 52).invoiceninja_id, json.null, "no invoice id stored")
  t.eq(#t.db.query("SELECT * FROM audit_log WHERE record_id = 52"), 0, "audited only once synced")
end)

test("an invoice made in Invoice Ninja but its answer lost: the retry finds it by its number, makes no second", function(t)
  setup(t)
  local made = {}
  t.stub("GET", "https://ninja.test/api/v1/invoices", function(call)
    for _, inv in ipairs(made) do
      if call.url:find("number=" .. inv.number, 1, true) then return { json = { data = { inv } } } end
    end
    return { json = { data = {} } }
  end)
  t.stub("POST", "https://ninja.test/api/v1/invoices", function(call)
    made[#made + 1] = { id = "NINV" .. #made + 1, client_id = call.json.client_id, number = call.json.number }
    if #made == 1 then return { status = 504, body = "gateway timeout" } end -- made, the answer lost
    return { json = { data = made[#made] } }
  end)
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, status, due_date)
    VALUES (53, 1, 2, 'F-2026-053', 300, 'sent', '2026-12-25')]])
  local run = t.db_event("invoice-changed", { op = "insert", new = row(t, 53) })
  t.advance("1m") -- the retry
  t.eq(t.get_run(run.id).state, "succeeded", "the retried run")
  t.eq(#made, 1, "one invoice in Invoice Ninja")
  t.eq(row(t, 53).invoiceninja_id, "NINV1", "the one made, kept")
end)


test("each company's invoice goes to Invoice Ninja with its company's token, every call of the run", function(t)
  setup(t)
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, status, due_date) VALUES
    (54, 1, 2, 'F-2026-054', 300, 'sent', '2026-12-25'), (55, 2, 4, 'R-2026-255', 400, 'sent', '2026-12-25')]])
  t.eq(t.db_event("invoice-changed", { op = "insert", new = row(t, 54) }).state, "succeeded", "company 1's")
  local first = #t.calls(nil, "ninja.test")
  t.eq(first, 3, "find the number, create the client, create the invoice")
  t.eq(t.db_event("invoice-changed", { op = "insert", new = row(t, 55) }).state, "succeeded", "company 2's")
  local calls = t.calls(nil, "ninja.test")
  t.eq(#calls, first * 2, "the same calls for each (find, client, invoice)")
  for i, c in ipairs(calls) do
    t.eq(c.headers["x-api-token"], i <= first and "tok" or "tok-nordwind",
      string.format("call %d (%s %s): its company's token", i, c.method, c.url))
  end
end)

test("a company whose token variable is not set: the run fails naming the variable, no call with another token", function(t)
  setup(t)
  t.env { NORDWIND_INVOICENINJA_TOKEN = "" } -- named by company 2, but empty: not set
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, status, due_date)
    VALUES (56, 2, 4, 'R-2026-256', 400, 'sent', '2026-12-25')]])
  local run = t.db_event("invoice-changed", { op = "insert", new = row(t, 56) })
  t.eq(run.state, "dead", "failed without retries: a setting to fix")
  t.contains(run.error, "company 2 (Nordwind Consulting): NORDWIND_INVOICENINJA_TOKEN is not set", "the variable, the company")
  t.eq(#t.calls(nil, "ninja.test"), 0, "nothing sent with the default token")
  t.eq(row(t, 56).invoiceninja_id, json.null, "nothing stored as synced")
end)

test("a company's column holding something else than a variable's name: refused without showing it", function(t)
  setup(t)
  t.db.exec("UPDATE companies SET invoiceninja_token_env = 'sk live/0123456789' WHERE id = 2")
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, status, due_date)
    VALUES (57, 2, 4, 'R-2026-257', 400, 'sent', '2026-12-25')]])
  local run = t.db_event("invoice-changed", { op = "insert", new = row(t, 57) })
  t.eq(run.state, "dead", "failed")
  t.contains(run.error, "the variable named for invoiceninja's token is not an environment variable name", "why")
  t.ok(not run.error:find("0123456789", 1, true), "the value is not in the error: " .. run.error)
  t.eq(#t.calls(nil, "ninja.test"), 0, "no call")
end)

test("beside Directus (DIRECTUS_URL): the audit entry is written through Directus's API, once per run", function(t)
  setup(t)
  t.env { INVOICENINJA_URL = "https://ninja.test", INVOICENINJA_TOKEN = "tok", DIRECTUS_URL = "https://directus.test",
    DIRECTUS_TOKEN = "rill-token" }
  t.stub("GET", "https://directus.test/items/audit_log", { json = { data = {} } })
  t.stub("POST", "https://directus.test/items/audit_log", { json = { data = { id = 7 } } })
  t.db.exec([[INSERT INTO invoices (id, owner_company, contact_id, number, amount, currency, status, reference,
    issued_at, due_date) VALUES (50, 1, 2, 'F-2026-050', 980.5, 'EUR', 'sent', 'F-2026-050', '2026-11-25', '2026-12-25')]])
  local run = t.db_event("invoice-changed", { op = "insert", new = row(t, 50) })
  t.eq(run.state, "succeeded", "the run")
  local posted = t.calls("POST", "directus.test/items/audit_log")
  t.eq(#posted, 1, "one audit entry in Directus")
  t.eq({ posted[1].json.table_name, posted[1].json.record_id, posted[1].json.action, posted[1].json.owner_company },
    { "invoices", 50, "invoice_insert", 1 }, "what and whose")
  t.contains(posted[1].json.actor, "invoice-changed " .. run.id, "by this run")
  t.eq(json.decode(posted[1].json.details).invoiceninja, { created = "NINV-F-2026-050" }, "its details")
  t.eq(#t.db.query("SELECT id FROM audit_log WHERE record_id = 50"), 0, "no SQL row beside it")
  t.contains(t.calls("GET", "directus.test/items/audit_log")[1].url, run.id, "looked up by the run first")
end)

