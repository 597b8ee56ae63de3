"""lpagency.py: the collection agency LP Agency, as the company's flows use it.
LP Agency publishes no public API; this is the contract agreed with it and
written down in docs/company-flows.md, independent of rill's code:
- we hand a file over with POST /api/files, "Authorization: Bearer TOKEN",
  a JSON body {client_reference, invoice_number, creditor, debtor_email,
  amount_due (number > 0), currency (3 letters), due_date, days_overdue};
  201 {"id": "LP-0001", "status": "received"}; a wrong or missing token is
  401 {"error": "unauthorized"}; a missing field 422 {"error": ..., "fields":
  [...]}; the same client_reference twice is 409 {"error": "already
  handed over", "id": the first file}.
- it tells us where a file stands by POSTing to our webhook: a JSON body
  {event_id, client_reference, status, occurred_at, ...} with
  "Authorization: Bearer <webhook token>": the agency signs nothing, a fixed
  header is all it can send (docs/webhooks.md): send_update().
State: .files (id -> file)."""
import http.client
import json
import urllib.parse

from .base import HttpStandin

REQUIRED = ("client_reference", "invoice_number", "creditor", "amount_due", "currency")


class LpAgency(HttpStandin):
    name = "lpagency"
    routes = (("POST", r"/api/files", "create_file"),)

    def __init__(self, token="lp-Standin-token-0123456789", port=0):
        super().__init__(port)
        self.token = token
        self.files = {}

    def start(self):
        super().start()
        self.files_url = self.url + "/api/files"
        return self

    def authorized(self, req):
        return req.headers.get("authorization") == "Bearer " + self.token

    def unauthorized(self, req):
        return 401, {"error": "unauthorized"}

    def create_file(self, req):
        b = req.json if isinstance(req.json, dict) else {}
        missing = [f for f in REQUIRED if b.get(f) in (None, "")]
        if not isinstance(b.get("amount_due"), (int, float)) or b.get("amount_due", 0) <= 0:
            missing.append("amount_due")
        if missing:
            return 422, {"error": "invalid file", "fields": sorted(set(missing))}
        for f in self.files.values():
            if f["client_reference"] == b["client_reference"]:
                return 409, {"error": "already handed over", "id": f["id"]}
        fid = f"LP-{len(self.files) + 1:04d}"
        self.files[fid] = {**b, "id": fid, "status": "received"}
        return 201, {"id": fid, "status": "received"}

    def send_update(self, webhook_url, token, update):
        """POSTs a status update to our webhook with its Bearer token; returns (status, body)."""
        body = json.dumps(update).encode()
        u = urllib.parse.urlsplit(webhook_url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            conn.request("POST", u.path, body=body, headers={"Content-Type": "application/json",
                                                            "Authorization": "Bearer " + token})
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()
