-- connectors/invoiceninja: clients, invoices and payments in Invoice Ninja
-- v5 (/api/v1/..., an API token in the X-API-TOKEN header). Ids are Invoice
-- Ninja's hashed ids (strings like "Wpmbk5ezJn"); amounts are numbers.
--   invoiceninja.create_client(fields)          -> the client (client.id)
--   invoiceninja.update_client(id, fields)      -> the client
--   invoiceninja.create_invoice(fields[, { mark_sent = true }]) -> the invoice
--   invoiceninja.update_invoice(id, fields)     -> the invoice
--   invoiceninja.create_deposit_invoice{ client_id, total, percent, quote, ... } -> the invoice
--   invoiceninja.mark_sent(invoice_id)          -> the invoice
--   invoiceninja.record_payment{ client_id, invoice_id, amount, date, transaction_reference, ... }
--                                               -> the payment
--   invoiceninja.find_invoice(number)         -> the invoice with that number, or nil
--   invoiceninja.list_payments{ client_id = id, filter = text } -> the payments (a list); filter
--                                               matches amount, date, number, transaction_reference
--   invoiceninja.with{ url, token }             -> a client with those settings
-- Settings from the environment: INVOICENINJA_URL (the site, without
-- /api/v1), INVOICENINJA_TOKEN.
-- A deposit invoice is an ordinary invoice for a percentage of a quote's
-- total: one line "Deposit of P% on quote Q" for round(total * P / 100, 2).
-- The rest is invoiced later, as its own invoice.
local base = require "rill.connectors.base"

local SPEC = {
  url = { env = "INVOICENINJA_URL" },
  token = { env = "INVOICENINJA_TOKEN", secret = true },
}
-- what calls on the default client need set in the environment (rill check)
base.needs("invoiceninja", SPEC, { ["*"] = { { "url" }, { "token" } } })

-- {"message":"The given data was invalid.","errors":{"client_id":["The client id field is required."]}}
local function message_of(v)
  if type(v) ~= "table" then return nil end
  local parts = { v.message and tostring(v.message) or nil }
  if type(v.errors) == "table" then
    local fields = {}
    for field in pairs(v.errors) do fields[#fields + 1] = tostring(field) end
    table.sort(fields)
    for _, field in ipairs(fields) do
      local list = v.errors[field]
      parts[#parts + 1] = field .. ": " .. (type(list) == "table" and table.concat(list, " ") or tostring(list))
    end
  end
  return table.concat(parts, " ")
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function new(given)
  local c = base.client("invoiceninja", SPEC, given)
  c.message_of = message_of
  local ninja = {}

  local function call(operation, method, path, body, query)
    local v = c:call(operation, {
      method = method, url = c:base_url("url") .. "/api/v1" .. path, json = body, query = query,
      headers = { ["X-API-TOKEN"] = c:setting("token"), ["X-Requested-With"] = "XMLHttpRequest",
        Accept = "application/json" },
    })
    return type(v) == "table" and v.data or v
  end

  local function check_table(what, t)
    base.check(type(t) == "table", "invoiceninja", "%s: expected a table of fields", what)
  end

  function ninja.create_client(fields)
    check_table("create client", fields)
    return call("create client", "POST", "/clients", fields)
  end

  function ninja.update_client(client_id, fields)
    check_table("update client", fields)
    return call("update client " .. tostring(client_id), "PUT",
      "/clients/" .. base.id("invoiceninja", "client id", client_id), fields)
  end

  function ninja.create_invoice(fields, opts)
    check_table("create invoice", fields)
    local query = opts and opts.mark_sent and { mark_sent = "true" } or nil
    return call("create invoice", "POST", "/invoices", fields, query)
  end

  function ninja.update_invoice(invoice_id, fields)
    check_table("update invoice", fields)
    return call("update invoice " .. tostring(invoice_id), "PUT",
      "/invoices/" .. base.id("invoiceninja", "invoice id", invoice_id), fields)
  end

  function ninja.create_deposit_invoice(d)
    check_table("create deposit invoice", d)
    base.check(type(d.total) == "number" and d.total > 0, "invoiceninja",
      "create deposit invoice: total (the quote's total) must be a number above 0")
    base.check(type(d.percent) == "number" and d.percent > 0 and d.percent <= 100, "invoiceninja",
      "create deposit invoice: percent must be a number above 0 and at most 100")
    -- in whole cents and hundredths of a percent: total * percent in floats is off by a
    -- hair below the half cent (128.45 * 30 = 3853.4999...), which rounded a deposit down
    local cents, hundredths = math.floor(d.total * 100 + 0.5), math.floor(d.percent * 100 + 0.5)
    local amount = math.floor(cents * hundredths / 10000 + 0.5) / 100
    local fields = copy(d)
    fields.total, fields.percent, fields.quote, fields.mark_sent = nil, nil, nil, nil
    fields.line_items = { {
      product_key = "deposit", quantity = 1, cost = amount,
      notes = string.format("Deposit of %s%% on quote %s", tostring(d.percent), tostring(d.quote or "")),
    } }
    return ninja.create_invoice(fields, { mark_sent = d.mark_sent })
  end

  function ninja.mark_sent(invoice_id)
    base.id("invoiceninja", "invoice id", invoice_id) -- checked: it travels in the body
    local v = call("mark invoice " .. tostring(invoice_id) .. " sent", "POST", "/invoices/bulk",
      { action = "mark_sent", ids = { invoice_id } })
    return type(v) == "table" and v[1] or v
  end

  function ninja.record_payment(p)
    check_table("record payment", p)
    base.check(type(p.amount) == "number" and p.amount > 0, "invoiceninja",
      "record payment: amount must be a number above 0")
    local fields = copy(p)
    if p.invoice_id ~= nil then
      fields.invoice_id = nil
      fields.invoices = { { invoice_id = p.invoice_id, amount = p.amount } }
    end
    return call("record payment", "POST", "/payments", fields)
  end

  function ninja.find_invoice(number)
    base.check(type(number) == "string" and number ~= "", "invoiceninja", "find invoice: the number is a string")
    local v = call("find invoice " .. number, "GET", "/invoices", nil, { number = number })
    return type(v) == "table" and v[1] or nil
  end

  function ninja.list_payments(query)
    base.check(query == nil or type(query) == "table", "invoiceninja", "list payments: expected a table of filters")
    local v = call("list payments", "GET", "/payments", nil, query)
    return type(v) == "table" and v or {}
  end

  function ninja.with(settings) return new(settings) end
  function ninja.with_env(names, owner) return new(base.from_env("invoiceninja", SPEC, names, owner)) end

  return ninja
end

return new(nil)
