"""mautic.py: Mautic's REST API under /api, HTTP basic auth (401 with
{"errors": [{"code": 401, "message": ..., "type": "access_denied"}]}).
Routes: POST /api/contacts/new (201 {"contact": {...}}; 400 on an invalid
email), PATCH|PUT /api/contacts/ID/edit, GET /api/contacts?search=email:X,
POST /api/segments/S/contact/C/add, POST /api/campaigns/C/contact/X/add,
POST /api/contacts/ID/points/plus/N, POST /api/emails/E/contact/C/send
({"success": 1}; 404 {"errors": [...]} for an unknown contact, segment,
campaign or email). State: .contacts (id -> contact), .segments and
.campaigns (id -> set of contact ids), .sent (email id, contact id, tokens),
.points_log."""
import base64
import re
import time

from .base import HttpStandin

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def error(code, message, details=None):
    e = {"code": code, "message": message, "type": None}
    if details:
        e["details"] = details
    return code, {"errors": [e]}


class Mautic(HttpStandin):
    name = "mautic"
    routes = (
        ("POST", r"/api/contacts/new", "create_contact"),
        ("PATCH", r"/api/contacts/(\d+)/edit", "edit_contact"),
        ("PUT", r"/api/contacts/(\d+)/edit", "edit_contact"),
        ("GET", r"/api/contacts", "list_contacts"),
        ("POST", r"/api/segments/(\d+)/contact/(\d+)/add", "add_to_segment"),
        ("POST", r"/api/campaigns/(\d+)/contact/(\d+)/add", "add_to_campaign"),
        ("POST", r"/api/contacts/(\d+)/points/plus/(\d+)", "add_points"),
        ("POST", r"/api/emails/(\d+)/contact/(\d+)/send", "send_email"),
    )

    def __init__(self, user="rill-api", password="mautic-Standin-pass-42", segments=(1, 2, 3),
                 campaigns=(1, 2, 3), emails=(1, 2, 3), port=0):
        super().__init__(port)
        self.user, self.password = user, password
        self.contacts, self.next_id = {}, 1
        self.segments = {int(s): set() for s in segments}
        self.campaigns = {int(c): set() for c in campaigns}
        self.emails = set(int(e) for e in emails)
        self.sent, self.points_log = [], []

    def authorized(self, req):
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return req.headers.get("authorization") == expected

    def unauthorized(self, req):
        return 401, {"errors": [{"code": 401, "message": "API authorization denied.", "type": "access_denied"}]}

    def not_found(self, req):
        return {"errors": [{"code": 404, "message": "Requested URL not found: " + req.path, "type": None}]}

    def _contact(self, cid, fields):
        now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        c = self.contacts.get(cid) or {"id": cid, "dateAdded": now, "points": 0, "fields": {"all": {"id": cid}}}
        c["dateModified"] = now
        c["fields"]["all"].update(fields)
        self.contacts[cid] = c
        return c

    def _validate(self, fields):
        if not isinstance(fields, dict):
            return error(400, "Request body must be a JSON object.")
        email = fields.get("email")
        if email is not None and not EMAIL.fullmatch(str(email)):
            return error(400, "email: A valid email is required.", {"email": ["A valid email is required."]})
        return None

    def create_contact(self, req):
        bad = self._validate(req.json)
        if bad:
            return bad
        cid, self.next_id = self.next_id, self.next_id + 1
        return 201, {"contact": self._contact(cid, req.json)}

    def edit_contact(self, req, cid):
        cid = int(cid)
        bad = self._validate(req.json)
        if bad:
            return bad
        if cid not in self.contacts:
            if req.method == "PATCH":
                return error(404, "Item was not found.")
            return 201, {"contact": self._contact(cid, req.json)}
        return 200, {"contact": self._contact(cid, req.json)}

    def list_contacts(self, req):
        search = (req.query.get("search") or [""])[0]
        found = {}
        for cid, c in self.contacts.items():
            if not search or (search.startswith("email:") and c["fields"]["all"].get("email") == search[6:]):
                found[str(cid)] = c
        return 200, {"total": str(len(found)), "contacts": found or []}

    def add_to_segment(self, req, sid, cid):
        sid, cid = int(sid), int(cid)
        if sid not in self.segments or cid not in self.contacts:
            return error(404, "Item was not found.")
        self.segments[sid].add(cid)
        return 200, {"success": 1}

    def add_to_campaign(self, req, camp, cid):
        camp, cid = int(camp), int(cid)
        if camp not in self.campaigns or cid not in self.contacts:
            return error(404, "Item was not found.")
        self.campaigns[camp].add(cid)
        return 200, {"success": 1}

    def add_points(self, req, cid, points):
        cid = int(cid)
        if cid not in self.contacts:
            return error(404, "Item was not found.")
        self.contacts[cid]["points"] += int(points)
        self.points_log.append({"contact": cid, "points": int(points), **(req.json or {})})
        return 200, {"success": True}

    def send_email(self, req, eid, cid):
        eid, cid = int(eid), int(cid)
        if eid not in self.emails or cid not in self.contacts:
            return error(404, "Item was not found.")
        self.sent.append({"email": eid, "contact": cid, "tokens": (req.json or {}).get("tokens", {})})
        return 200, {"success": 1}
