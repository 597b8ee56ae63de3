"""invoiceninja.py: Invoice Ninja v5's API under /api/v1, an API token in
X-API-TOKEN (a wrong or missing token: 403 {"message": "Invalid token"},
as Invoice Ninja's TokenAuth middleware answers). Answers are {"data": ...};
validation errors are 422 {"message": "The given data was invalid.",
"errors": {field: [messages]}}. Routes: POST /api/v1/clients, PUT
/api/v1/clients/ID, POST /api/v1/invoices (?mark_sent=true), GET
/api/v1/invoices (?number=N: the one with that number, InvoiceFilters::number;
?client_id=ID: that client's), PUT
/api/v1/invoices/ID, POST
/api/v1/invoices/bulk {"action": "mark_sent", "ids": [...]}, POST
/api/v1/payments {client_id, amount, invoices: [{invoice_id, amount}]}, GET
/api/v1/payments (?client_id=ID: that client's; ?filter=TEXT: those whose
amount, date, number or transaction_reference contain TEXT, as Invoice
Ninja's PaymentFilters::filter searches; deleted ones left out).
An invoice number is unique (422 for a second one). Ids are hashed-id strings; invoice status_id "1" draft, "2" sent,
"3" partial, "4" paid. State: .clients, .invoices, .payments (id -> record)."""
import time

from .base import HttpStandin, hashed_id


def invalid(errors):
    return 422, {"message": "The given data was invalid.", "errors": errors}


class InvoiceNinja(HttpStandin):
    name = "invoiceninja"
    routes = (
        ("POST", r"/api/v1/clients", "create_client"),
        ("PUT", r"/api/v1/clients/([^/]+)", "update_client"),
        ("POST", r"/api/v1/invoices", "create_invoice"),
        ("GET", r"/api/v1/invoices", "list_invoices"),
        ("POST", r"/api/v1/invoices/bulk", "bulk_invoices"),
        ("PUT", r"/api/v1/invoices/([^/]+)", "update_invoice"),
        ("POST", r"/api/v1/payments", "create_payment"),
        ("GET", r"/api/v1/payments", "list_payments"),
    )

    def __init__(self, token="ninja-Standin-token-0123456789abcdef", port=0, other_tokens=()):
        # other_tokens: one account holding several companies, each with its own API token (in
        # Invoice Ninja v5 a token belongs to one company of the account); any other is refused
        super().__init__(port)
        self.token = token
        self.tokens = {token, *other_tokens}
        self.clients, self.invoices, self.payments = {}, {}, {}
        self.invoice_number = 0

    def authorized(self, req):
        return req.headers.get("x-api-token") in self.tokens

    def tokens_of(self, method, path):
        """The API tokens the requests received on method and path carried, in order."""
        return [r.headers.get("x-api-token") for r in self.received(method, path)]

    def unauthorized(self, req):
        return 403, {"message": "Invalid token", "errors": []}

    def not_found(self, req):
        return {"message": "Not found"}

    def _body(self, req):
        return req.json if isinstance(req.json, dict) else {}

    def create_client(self, req):
        b = self._body(req)
        if not b.get("name") and not b.get("contacts"):
            return invalid({"name": ["The name field is required."]})
        cid = hashed_id()
        self.clients[cid] = {"id": cid, "balance": 0, "paid_to_date": 0, "contacts": [], **b}
        self.clients[cid]["id"] = cid
        return 200, {"data": self.clients[cid]}

    def update_client(self, req, cid):
        if cid not in self.clients:
            return 404, {"message": "Record with hashed id " + cid + " not found"}
        self.clients[cid].update(self._body(req))
        self.clients[cid]["id"] = cid
        return 200, {"data": self.clients[cid]}

    def create_invoice(self, req):
        b = self._body(req)
        if not b.get("client_id"):
            return invalid({"client_id": ["The client id field is required."]})
        if b["client_id"] not in self.clients:
            return invalid({"client_id": ["The selected client id is invalid."]})
        if b.get("number") and any(i["number"] == b["number"] for i in self.invoices.values()):
            return invalid({"number": ["The number has already been taken."]})
        items = b.get("line_items") or []
        amount = round(sum(float(i.get("cost", 0)) * float(i.get("quantity", 1)) for i in items), 2)
        self.invoice_number += 1
        iid = hashed_id()
        inv = {**b, "id": iid, "number": b.get("number") or f"{self.invoice_number:04d}", "amount": amount,
               "balance": 0, "paid_to_date": 0, "status_id": "1", "line_items": items,
               "date": b.get("date") or time.strftime("%Y-%m-%d", time.gmtime())}
        self.invoices[iid] = inv
        if (req.query.get("mark_sent") or [""])[0] == "true":
            self._mark_sent(inv)
        return 200, {"data": inv}

    def update_invoice(self, req, iid):
        if iid not in self.invoices:
            return 404, {"message": "Record with hashed id " + iid + " not found"}
        b = self._body(req)
        inv = self.invoices[iid]
        if b.get("number") and any(i["number"] == b["number"] and k != iid for k, i in self.invoices.items()):
            return invalid({"number": ["The number has already been taken."]})
        inv.update({k: v for k, v in b.items() if k not in ("id", "balance", "paid_to_date", "status_id")})
        if "line_items" in b:
            items = b.get("line_items") or []
            amount = round(sum(float(i.get("cost", 0)) * float(i.get("quantity", 1)) for i in items), 2)
            if inv["status_id"] != "1":
                inv["balance"] = round(inv["balance"] + amount - inv["amount"], 2)
            inv["amount"] = amount
        return 200, {"data": inv}

    def _mark_sent(self, inv):
        if inv["status_id"] == "1":
            inv["status_id"], inv["balance"] = "2", inv["amount"]
            self.clients[inv["client_id"]]["balance"] += inv["amount"]

    def bulk_invoices(self, req):
        b = self._body(req)
        ids = b.get("ids") or []
        if b.get("action") not in ("mark_sent", "mark_paid", "email", "archive"):
            return invalid({"action": ["The selected action is invalid."]})
        if not ids or any(i not in self.invoices for i in ids):
            return invalid({"ids": ["The ids field is required." if not ids else "The selected ids is invalid."]})
        for i in ids:
            if b["action"] == "mark_sent":
                self._mark_sent(self.invoices[i])
        return 200, {"data": [self.invoices[i] for i in ids]}

    def create_payment(self, req):
        b = self._body(req)
        errors = {}
        if not b.get("client_id"):
            errors["client_id"] = ["The client id field is required."]
        elif b["client_id"] not in self.clients:
            errors["client_id"] = ["The selected client id is invalid."]
        amount = b.get("amount")
        if not isinstance(amount, (int, float)) or amount <= 0:
            errors["amount"] = ["The amount must be a number above 0."]
        for n, line in enumerate(b.get("invoices") or []):
            inv = self.invoices.get(line.get("invoice_id"))
            if inv is None or inv.get("client_id") != b.get("client_id"):
                errors[f"invoices.{n}.invoice_id"] = ["The selected invoice is invalid."]
            elif float(line.get("amount", 0)) > inv["balance"] + 1e-9:
                errors[f"invoices.{n}.amount"] = ["Amount cannot be greater than invoice balance."]
        if errors:
            return invalid(errors)
        applied = 0
        for line in b.get("invoices") or []:
            inv, part = self.invoices[line["invoice_id"]], float(line["amount"])
            inv["balance"] = round(inv["balance"] - part, 2)
            inv["paid_to_date"] = round(inv["paid_to_date"] + part, 2)
            inv["status_id"] = "4" if inv["balance"] == 0 else "3"
            applied += part
        pid = hashed_id()
        self.payments[pid] = {**b, "id": pid, "number": f"{len(self.payments) + 1:04d}", "applied": applied,
                              "date": b.get("date") or time.strftime("%Y-%m-%d", time.gmtime())}
        return 200, {"data": self.payments[pid]}

    def list_payments(self, req):
        client = (req.query.get("client_id") or [""])[0]
        text = (req.query.get("filter") or [""])[0].lower()
        out = []
        for p in self.payments.values():
            if p.get("is_deleted") or (client and p.get("client_id") != client):
                continue
            fields = (p.get("amount"), p.get("date"), p.get("number"), p.get("transaction_reference"))
            if text and not any(f is not None and text in str(f).lower() for f in fields):
                continue
            out.append(p)
        return 200, {"data": out}

    def list_invoices(self, req):
        number = (req.query.get("number") or [None])[0]
        client = (req.query.get("client_id") or [""])[0]
        out = [i for i in self.invoices.values()
               if (number is None or i.get("number") == number) and (not client or i.get("client_id") == client)]
        return 200, {"data": out}
