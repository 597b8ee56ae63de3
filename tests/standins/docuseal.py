"""docuseal.py: DocuSeal's API (a self-hosted install's /api), an API key in
X-Auth-Token (401 {"error": "Not authenticated"} otherwise). POST
/api/submissions {template_id, submitters: [{email, name, role, values}],
send_email} answers the list of submitters created, each with its
submission_id (422 {"error": ...} without template_id or submitters, or a
submitter without email; 404 for an unknown template). GET
/api/submissions/ID answers the submission with its status ("pending",
then "completed" once every submitter signed). complete(id) plays the
signers signing. State: .submissions (id -> submission)."""
import time
import uuid

from .base import HttpStandin, hashed_id


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class DocuSeal(HttpStandin):
    name = "docuseal"
    routes = (
        ("POST", r"/api/submissions", "create_submission"),
        ("GET", r"/api/submissions/(\d+)", "get_submission"),
    )

    def __init__(self, token="docuseal-Standin-key-0123456789", templates=(1, 2), port=0):
        super().__init__(port)
        self.token, self.templates = token, set(int(t) for t in templates)
        self.submissions, self.next_id, self.next_submitter = {}, 1, 1

    def start(self):
        super().start()
        self.api_url = self.url + "/api"
        return self

    def authorized(self, req):
        return req.headers.get("x-auth-token") == self.token

    def unauthorized(self, req):
        return 401, {"error": "Not authenticated"}

    def not_found(self, req):
        return {"error": "Not found"}

    def create_submission(self, req):
        b = req.json if isinstance(req.json, dict) else {}
        if b.get("template_id") is None:
            return 422, {"error": "template_id is required"}
        if int(b["template_id"]) not in self.templates:
            return 404, {"error": "Template not found"}
        subs = b.get("submitters")
        if not isinstance(subs, list) or not subs:
            return 422, {"error": "submitters are required"}
        for s in subs:
            if not s.get("email") and not s.get("phone"):
                return 422, {"error": "submitter email is required"}
        sid, self.next_id = self.next_id, self.next_id + 1
        send = b.get("send_email", True) is not False
        submitters = []
        for s in subs:
            slug = hashed_id(14)
            submitters.append({
                "id": self.next_submitter, "submission_id": sid, "uuid": str(uuid.uuid4()),
                "email": s.get("email"), "name": s.get("name"), "phone": s.get("phone"), "role": s.get("role"),
                "slug": slug, "status": "sent" if send else "awaiting", "values": s.get("values") or [],
                "external_id": s.get("external_id"), "metadata": s.get("metadata") or {},
                "sent_at": now() if send else None, "opened_at": None, "completed_at": None,
                "declined_at": None, "created_at": now(), "updated_at": now(),
                "embed_src": f"{self.url}/s/{slug}", "preferences": {},
            })
            self.next_submitter += 1
        self.submissions[sid] = {
            "id": sid, "source": "api", "slug": hashed_id(14), "status": "pending",
            "submitters_order": b.get("order", "preserved"), "audit_log_url": None,
            "combined_document_url": None, "created_at": now(), "updated_at": now(), "archived_at": None,
            "completed_at": None, "expire_at": b.get("expire_at"), "submitters": submitters,
            "template": {"id": int(b["template_id"]), "name": f"Template {b['template_id']}"},
            "documents": [], "message": b.get("message"),
        }
        return 200, submitters

    def get_submission(self, req, sid):
        s = self.submissions.get(int(sid))
        if s is None:
            return 404, {"error": "Not found"}
        return 200, s

    def complete(self, sid):
        """Every submitter of submission sid signs."""
        with self.lock:
            s = self.submissions[int(sid)]
            for sub in s["submitters"]:
                sub["status"], sub["completed_at"] = "completed", now()
            s["status"], s["completed_at"] = "completed", now()
            s["combined_document_url"] = f"{self.url}/file/{s['slug']}.pdf"
