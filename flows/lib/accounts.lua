-- Each company's own accounts of the services (required as `require "lib.accounts"`).

local accounts = {}

-- client(connector, service, company, keys) -> the connector on the company's own
-- account: companies.<service>_<key>_env names the environment variable holding
-- each key (NULL: the connector's default, INVOICENINJA_TOKEN...). A variable
-- named but not set fails the run: a company's records never go to another account.
function accounts.client(connector, service, c, keys)
  local names = {}
  for _, key in ipairs(keys) do names[key] = c[service .. "_" .. key .. "_env"] end
  return connector.with_env(names, string.format("company %s (%s)", tostring(c.id), tostring(c.name)))
end

-- mautic_contact(mautic_api, contact) -> the client's contact id in the company's
-- Mautic: the one recorded, else found by email, else created (and recorded).
function accounts.mautic_contact(mautic_api, contact)
  if contact.mautic_id then return contact.mautic_id end
  local found = mautic_api.find_contact(contact.email) or mautic_api.create_contact {
    email = contact.email, firstname = contact.first_name, lastname = contact.last_name,
    company = contact.organization,
  }
  -- another flow may have recorded one meanwhile (a quote sent starts two flows): the first one wins
  db.exec("UPDATE contacts SET mautic_id = $1 WHERE id = $2 AND mautic_id IS NULL", found.id, contact.id)
  return db.query("SELECT mautic_id FROM contacts WHERE id = $1", contact.id)[1].mautic_id
end


return accounts
