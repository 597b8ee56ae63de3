"""How the Directus app shows the company's tables: the metadata that
tools/directus-snapshot.sh gives the collections Directus adopted from
db/schema.postgres.sql before it writes directus/snapshot.json. The tables
and columns themselves come from the SQL only (one schema: the snapshot is
generated from it, and tests/test_directus.py checks they agree).

Usage: python3 directus/meta.py DIRECTUS_URL ADMIN_TOKEN"""
import json
import sys
import urllib.request

COLLECTIONS = {
    # collection: (icon, note, display template)
    "companies": ("domain", "The companies of the group; business settings per company", "{{name}}"),
    "contacts": ("contacts", "The companies' clients", "{{first_name}} {{last_name}} <{{email}}>"),
    "leads": ("person_add", "Leads: creating one starts rill's lead-created", "{{status}} lead from {{source}}"),
    "quotes": ("request_quote", "Quotes: status sent starts rill's quote-sent", "{{number}} {{title}}"),
    "invoices": ("receipt_long", "Invoices: every change starts rill's invoice-changed", "{{number}} ({{status}})"),
    "payments": ("payments", "Payments received (rill's payment-received records them)", "{{source}} {{amount}}"),
    "payment_reminders": ("notifications", "Reminders sent, per invoice and step (rill)", "{{invoice_id}} {{step}}"),
    "tasks": ("task_alt", "Tasks for the team (a converted lead's kick-off)", "{{title}}"),
    "audit_log": ("history", "What rill's flows did, for people to read", "{{table_name}} {{action}}"),
    "analytics_events": ("insights", "Analytics events recorded by rill", "{{name}}"),
}

STATUSES = {
    ("quotes", "status"): ["draft", "sent", "signed", "expired", "cancelled"],
    ("invoices", "status"): ["draft", "sent", "partially_paid", "paid", "collection", "cancelled"],
    ("invoices", "kind"): ["standard", "deposit"],
    ("leads", "status"): ["new", "qualified", "converted", "lost"],
    ("payments", "status"): ["matched", "partial", "review"],
    ("tasks", "status"): ["open", "done"],
}

# Columns only rill writes (the services' ids, the reminders' bookkeeping): shown, not edited.
WRITTEN_BY_RILL = {"mautic_id", "invoiceninja_client_id", "docuseal_submission_id", "invoiceninja_invoice_id",
                   "invoiceninja_id", "expiry_warned_at", "recorded_by", "collection_status",
                   "collection_updated_at"}


def call(base, token, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}").get("data")


def field_meta(collection, field, schema):
    meta = {"width": "half"}
    if schema.get("is_primary_key"):
        meta.update(readonly=True, hidden=True)
    elif schema.get("foreign_key_table"):
        meta.update(interface="select-dropdown-m2o", special=["m2o"], display="related-values")
    elif (collection, field) in STATUSES:
        meta.update(interface="select-dropdown", display="labels",
                    options={"choices": [{"text": s, "value": s} for s in STATUSES[(collection, field)]]})
    if field == "created_at":
        meta.update(special=["date-created"], readonly=True)
    elif field == "updated_at":
        meta.update(special=["date-updated"], readonly=True)
    elif field in WRITTEN_BY_RILL:
        meta.update(readonly=True, note="written by rill")
    return meta


def main(base, token):
    for name, (icon, note, template) in COLLECTIONS.items():
        call(base, token, "PATCH", f"/collections/{name}",
             {"meta": {"icon": icon, "note": note, "display_template": template}})
        for f in call(base, token, "GET", f"/fields/{name}"):
            call(base, token, "PATCH", f"/fields/{name}/{f['field']}",
                 {"meta": field_meta(name, f["field"], f["schema"])})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
