-- A contact created without a lead reaches its company's Mautic once; a contact a lead is attached to
-- is left to lead-created, and a contact synced here and attached to a lead later is not created twice.

local function services(t)
  t.env {
    MAUTIC_URL = "https://mautic.test", MAUTIC_USER = "api", MAUTIC_PASSWORD = "pw",
    SLACK_API_URL = "https://slack.test/api", SLACK_BOT_TOKEN = "xoxb-test", SMTP_URL = "smtp://mail.test:587",
    NORDWIND_MAUTIC_URL = "https://mautic.nordwind.test", NORDWIND_MAUTIC_USER = "nordwind",
    NORDWIND_MAUTIC_PASSWORD = "pw-nordwind",
  }
  for _, site in ipairs { "https://mautic.test", "https://mautic.nordwind.test" } do
    t.stub("GET", site .. "/api/contacts", { json = { total = "0", contacts = {} } })
    t.stub("POST", site .. "/api/contacts/new", { status = 201, json = { contact = { id = 900 } } })
    t.stub("PATCH", site .. "/api/contacts/", function(call)
      return { json = { contact = { id = tonumber(call.url:match("contacts/(%d+)/edit")) } } }
    end)
    t.stub("POST", site .. "/api/segments/", { json = { success = 1 } })
  end
  t.stub("POST", "https://slack.test/api/chat.postMessage", { json = { ok = true, channel = "C1", ts = "1.0" } })
  t.stub("MAIL", "smtp://mail.test", { status = 250 })
end

local function setup(t)
  t.now("2026-11-02T09:00:00Z")
  t.fixture("../db/schema.sqlite.sql")
  t.fixture("../db/demo.sql")
  services(t)
end

-- A contact as an analyst creates it in Directus, and the database event its insert makes.
local function new_contact(t, id, company, email)
  t.db.exec("INSERT INTO contacts (id, owner_company, first_name, last_name, email, organization) "
    .. "VALUES ($1, $2, 'Léa', 'Roux', $3, 'Roux SARL')", id, company, email)
  return t.db_event("contact-created", { op = "insert", new = { id = id, owner_company = company, email = email } })
end

local function mautic_id(t, id) return t.db.query("SELECT mautic_id FROM contacts WHERE id = $1", id)[1].mautic_id end

test("a contact without a lead is created in Mautic once the delay for a lead has passed", function(t)
  setup(t)
  local run = new_contact(t, 20, 1, "lea@roux.example")
  t.eq(run.state, "sleeping", "waits for a lead to be attached first")
  t.eq(#t.calls("*", "mautic.test"), 0, "nothing sent yet")
  t.advance("5m")
  run = t.runs("contact-created")[1]
  t.eq(run.state, "succeeded", "synced")
  t.eq(run.result, { contact = 20, mautic_id = 900 }, "the result")
  local created = t.calls("POST", "mautic.test/api/contacts/new")
  t.eq(#created, 1, "one contact created")
  t.eq(created[1].json, { email = "lea@roux.example", firstname = "Léa", lastname = "Roux", company = "Roux SARL" },
    "its fields")
  t.eq(mautic_id(t, 20), 900, "the marker: contacts.mautic_id")
end)

test("a contact already in Mautic (same email) is updated, not created again", function(t)
  setup(t)
  t.stub("GET", "https://mautic.test/api/contacts", function(call)
    t.contains(call.url, "search=email%3Alea%40roux.example", "searched by email")
    return { json = { total = "1", contacts = { ["444"] = { id = 444 } } } }
  end)
  new_contact(t, 20, 1, "lea@roux.example")
  t.advance("5m")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/new"), 0, "no creation")
  t.eq(#t.calls("PATCH", "mautic.test/api/contacts/444/edit"), 1, "the existing one updated")
  t.eq(mautic_id(t, 20), 444, "linked to it")
end)

test("a contact a lead is attached to meanwhile is left to lead-created: one Mautic contact", function(t)
  setup(t)
  new_contact(t, 20, 1, "lea@roux.example")
  t.db.exec("INSERT INTO leads (id, owner_company, contact_id, source, status) VALUES (30, 1, 20, 'website', 'new')")
  t.db_event("lead-created", { op = "insert", new = { id = 30, owner_company = 1, status = "new" } })
  t.advance("5m")
  local run = t.runs("contact-created")[1]
  t.eq(run.state, "succeeded", "ended")
  t.eq(run.result, { contact = 20, ignored = "lead 30 syncs it (lead-created)" }, "left to the lead")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/new"), 1, "created once, by lead-created")
end)

test("a contact synced here and attached to a lead later is updated by lead-created, not created twice", function(t)
  setup(t)
  new_contact(t, 20, 1, "lea@roux.example")
  t.advance("5m")
  t.advance("3h")
  t.db.exec("INSERT INTO leads (id, owner_company, contact_id, source, status) VALUES (30, 1, 20, 'referral', 'new')")
  local lead = t.db_event("lead-created", { op = "insert", new = { id = 30, owner_company = 1, status = "new" } })
  t.eq(lead.state, "succeeded", "the lead's flow ran")
  t.eq(#t.calls("POST", "mautic.test/api/contacts/new"), 1, "one creation in all")
  t.eq(#t.calls("PATCH", "mautic.test/api/contacts/900/edit"), 1, "the lead updates the same Mautic contact")
  t.eq(#t.calls("GET", "mautic.test/api/contacts"), 1, "and does not search for it again")
end)

test("company 2's contact goes to company 2's Mautic; a contact from a Mautic form is not sent back", function(t)
  setup(t)
  new_contact(t, 21, 2, "tom@weber.example")
  t.advance("5m")
  t.eq(#t.calls("POST", "mautic.nordwind.test/api/contacts/new"), 1, "Nordwind's Mautic")
  t.eq(t.calls("POST", "mautic.nordwind.test/api/contacts/new")[1].headers.authorization,
    "Basic " .. require("rill.crypto").base64("nordwind:pw-nordwind"), "with Nordwind's account")
  t.eq(#t.calls("*", "//mautic.test"), 0, "nothing to company 1's")

  t.db.exec("INSERT INTO contacts (id, owner_company, email, mautic_id) VALUES (22, 1, 'form@x.example', 555)")
  t.db_event("contact-created", { op = "insert", new = { id = 22, owner_company = 1 } })
  t.advance("5m")
  local run = t.runs("contact-created")[2]
  t.eq(run.result, { contact = 22, ignored = "already in Mautic", mautic_id = 555 }, "already there")
  t.eq(#t.calls("*", "//mautic.test"), 0, "no call")
end)

test("a contact deleted before the delay ends is not synced", function(t)
  setup(t)
  new_contact(t, 20, 1, "lea@roux.example")
  t.db.exec("DELETE FROM contacts WHERE id = 20")
  t.advance("5m")
  t.eq(t.runs("contact-created")[1].result, { contact = 20, ignored = "no longer exists" }, "ignored")
  t.eq(#t.calls("*", "mautic"), 0, "no call")
end)
