-- Small helpers the company's flows share (required as `require "lib.util"`).

local util = {}

-- present(v): a value that says something: not nil, not a database NULL,
-- not a JSON null and not an empty string.
function util.present(v) return v ~= nil and v ~= db.null and v ~= json.null and v ~= "" end

-- full_name(contact) -> "First Last" (either may be missing), trimmed.
function util.full_name(contact)
  return ((contact.first_name or "") .. " " .. (contact.last_name or "")):match("^%s*(.-)%s*$")
end

-- sender(company) -> the From of the company's mails: "Name <address>".
function util.sender(company)
  return string.format("%s <%s>", company.sender_name or company.name, company.sender_email)
end

return util
