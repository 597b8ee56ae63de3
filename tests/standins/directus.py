"""directus.py: Directus's items API, a static token as a Bearer token
(401 {"errors": [{"message": "Invalid user credentials.", "extensions":
{"code": "INVALID_CREDENTIALS"}}]} otherwise). Routes: GET /items/C (filter
as JSON with _eq, fields, sort, limit), GET /items/C/ID, POST /items/C,
PATCH /items/C/ID; answers {"data": ...}. An unknown collection or item is
403 FORBIDDEN (Directus does not tell missing from forbidden); a missing
required field is 400 FAILED_VALIDATION. collections: {name: [required
fields]}. State: .items (collection -> id -> item)."""
import json

from .base import HttpStandin


def errors(status, message, code, **ext):
    return status, {"errors": [{"message": message, "extensions": {"code": code, **ext}}]}


def forbidden():
    return errors(403, "You don't have permission to access this.", "FORBIDDEN")


class Directus(HttpStandin):
    name = "directus"
    routes = (
        ("GET", r"/items/([\w-]+)", "list_items"),
        ("POST", r"/items/([\w-]+)", "create_item"),
        ("GET", r"/items/([\w-]+)/([^/]+)", "get_item"),
        ("PATCH", r"/items/([\w-]+)/([^/]+)", "update_item"),
    )

    def __init__(self, token="directus-Standin-token-0123456789", collections=None, port=0):
        super().__init__(port)
        self.token = token
        self.collections = collections or {"quotes": ["title"], "leads": ["email"]}
        self.items = {c: {} for c in self.collections}
        self.next_id = 1

    def authorized(self, req):
        return req.headers.get("authorization") == "Bearer " + self.token

    def unauthorized(self, req):
        return errors(401, "Invalid user credentials.", "INVALID_CREDENTIALS")

    def not_found(self, req):
        return {"errors": [{"message": "Route " + req.path + " doesn't exist.", "extensions": {"code": "ROUTE_NOT_FOUND"}}]}

    def _fields(self, req, item):
        fields = (req.query.get("fields") or [""])[0]
        if not fields or fields == "*":
            return item
        return {k: v for k, v in item.items() if k in fields.split(",")}

    def list_items(self, req, coll):
        if coll not in self.collections:
            return forbidden()
        rows = list(self.items[coll].values())
        flt = (req.query.get("filter") or [None])[0]
        if flt:
            try:
                for field, cond in json.loads(flt).items():
                    rows = [r for r in rows if r.get(field) == cond.get("_eq")]
            except (ValueError, AttributeError):
                return errors(400, "Invalid query. Invalid JSON for filter object.", "INVALID_QUERY")
        sort = (req.query.get("sort") or [""])[0]
        for key in reversed([s for s in sort.split(",") if s]):
            rows.sort(key=lambda r: (r.get(key.lstrip("-")) is None, r.get(key.lstrip("-"))),
                      reverse=key.startswith("-"))
        limit = int((req.query.get("limit") or [100])[0])
        return 200, {"data": [self._fields(req, r) for r in rows[:limit if limit >= 0 else None]]}

    def get_item(self, req, coll, iid):
        item = self.items.get(coll, {}).get(str(iid))
        if item is None:
            return forbidden()
        return 200, {"data": self._fields(req, item)}

    def create_item(self, req, coll):
        if coll not in self.collections:
            return forbidden()
        b = req.json if isinstance(req.json, dict) else None
        if b is None:
            return errors(400, "Invalid payload. \"value\" must be of type object.", "INVALID_PAYLOAD")
        for field in self.collections[coll]:
            if b.get(field) in (None, ""):
                return errors(400, f'Validation failed for field "{field}". Value is required.',
                              "FAILED_VALIDATION", field=field, type="required")
        iid, self.next_id = self.next_id, self.next_id + 1
        self.items[coll][str(iid)] = {"id": iid, **b}
        return 200, {"data": self.items[coll][str(iid)]}

    def update_item(self, req, coll, iid):
        item = self.items.get(coll, {}).get(str(iid))
        if item is None:
            return forbidden()
        b = req.json if isinstance(req.json, dict) else None
        if b is None:
            return errors(400, "Invalid payload. \"value\" must be of type object.", "INVALID_PAYLOAD")
        item.update(b)
        item["id"] = int(iid) if str(iid).isdigit() else iid
        return 200, {"data": item}
