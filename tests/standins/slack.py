"""slack.py: Slack's incoming webhooks and the Web API's chat.postMessage.
Webhook: POST /services/T.../B.../SECRET with a JSON body; 200 "ok", or a
status with a plain-text code (404 no_service for an unknown URL, 400
invalid_payload for a body that is not JSON, 400 no_text without text or
blocks). chat.postMessage: POST /api/chat.postMessage with
"Authorization: Bearer xoxb-..." and a JSON (or form) body; always 200,
{"ok": true, "channel", "ts", "message"} or {"ok": false, "error":
"not_authed" | "invalid_auth" | "channel_not_found" | "no_text"}.
.messages lists what was posted: {"via": "webhook" | "api", "channel", ...}."""
import json
import time
from urllib.parse import parse_qs

from .base import HttpStandin


class Slack(HttpStandin):
    name = "slack"
    routes = (
        ("POST", r"/services/([^/]+)/([^/]+)/([^/]+)", "webhook"),
        ("POST", r"/api/chat\.postMessage", "post_message"),
    )

    def __init__(self, token="xoxb-1111-2222-standin0token", channels=("C0SALES", "C0OPS"),
                 webhook_path="/services/T0STANDIN/B0STANDIN/wHk5ecretStandin0123456", port=0):
        super().__init__(port)
        self.token, self.channels, self.webhook_path = token, set(channels), webhook_path
        self.messages = []
        self._ts = 0

    def start(self):
        super().start()
        self.webhook_url = self.url + self.webhook_path
        self.api_url = self.url + "/api"
        return self

    def webhook(self, req, team, bot, secret):
        if req.path != self.webhook_path:
            return 404, "no_service"
        if req.json is None or not isinstance(req.json, dict):
            return 400, "invalid_payload"
        if not req.json.get("text") and not req.json.get("blocks"):
            return 400, "no_text"
        self.messages.append({"via": "webhook", **req.json})
        return 200, "ok"

    def post_message(self, req):
        auth = req.headers.get("authorization", "")
        if not auth:
            return 200, {"ok": False, "error": "not_authed"}
        if auth != "Bearer " + self.token:
            return 200, {"ok": False, "error": "invalid_auth"}
        if req.json is not None:
            args = req.json
        else:
            args = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
            if isinstance(args.get("blocks"), str):
                args["blocks"] = json.loads(args["blocks"])
        channel = args.get("channel")
        if channel not in self.channels:
            return 200, {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return 200, {"ok": False, "error": "no_text"}
        self._ts += 1
        ts = f"{int(time.time())}.{self._ts:06d}"
        self.messages.append({"via": "api", **args, "ts": ts})
        return 200, {"ok": True, "channel": channel, "ts": ts,
                     "message": {"type": "message", "text": args.get("text", ""), "ts": ts,
                                 "blocks": args.get("blocks", [])}}
