"""Webhook signature verifiers end to end (stdlib/rill/signatures.lua): a
running rill serves async webhooks whose triggers verify with each scheme;
every request here is signed in Python (hmac, hashlib, base64), independently
of rill's code, following each service's documented scheme.

For each scheme: a good signature is accepted and its run succeeds; the
previous secret of a rotation is accepted too, a third is refused; one changed
body byte, a missing header, a malformed or repeated header, and a timestamp
out of the tolerance (either way) are refused with 401; a refused request
leaves no run, and its reason is logged at warn level without the secret.
A delivery id the scheme signs (webhook-id, X-GitHub-Delivery) is the run's
idempotency key. Outbound: what signatures.sign_standard signs, sent with
http.post, verifies with Python's HMAC at a local receiver."""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import time

from lib.harness import ROOT, Rill, eq, main, repo_lib, serve_http, test, wait_until

NEW, OLD, THIRD = "s3cret-new-0123456789", "s3cret-old-9876543210", "s3cret-other-5555555555"
WH_NEW = "whsec_" + base64.b64encode(b"standard-webhooks key, new!").decode()
WH_OLD = "whsec_" + base64.b64encode(b"standard-webhooks key, old!").decode()
WH_THIRD = "whsec_" + base64.b64encode(b"standard-webhooks key, 3rd!").decode()
FAST = {"RILL_POLL_INTERVAL": "0.1s", "RILL_RETRY_BACKOFF": "50ms"}


def flow(path, verify):
    return """
return {
  triggers = { webhook { path = "%s", mode = "async", verify = %s } },
  run = function(ctx) return { got = ctx.payload.n } end,
}""" % (path, verify)


def mac(alg, key, msg):
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, msg, getattr(hashlib, alg)).digest()


def send(r, path, body, headers):
    """POST body (bytes) with headers, a list of (name, value) pairs (a name
    may repeat, as a client may send it twice)."""
    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body)
        res = conn.getresponse()
        return res.status, json.loads(res.read() or b"null")
    finally:
        conn.close()


def body_of(n):
    return json.dumps({"event": "paid", "n": n, "note": "caf\u00e9 {body}"}, ensure_ascii=False).encode()


def changed_byte(body):
    """The same body with one byte changed (still valid JSON)."""
    i = body.index(b'"n": ') + 5
    return body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]


class Scheme:
    """How one sender signs: sign(body, secret, ts, id) -> [(header, value)].
    stamped: it carries a timestamp (unit: 1 for seconds, 1000 for ms)."""

    def __init__(self, flow_name, path, sign, secrets, stamped=False, unit=1, single=(), optional=(),
                 signs_body=True):
        self.flow, self.path, self.sign, self.stamped, self.unit = flow_name, path, sign, stamped, unit
        self.signs_body = signs_body  # False for a shared secret sent as is: the body is not covered
        self.new, self.old, self.third = secrets
        self.single = single  # headers that are single-valued: repeated -> refused
        self.optional = optional  # headers whose absence is no refusal (a delivery id)

    def headers(self, body, secret=None, age=0, id=None):
        ts = int((time.time() - age) * self.unit)
        return self.sign(body, secret or self.new, ts, id or f"msg_{time.time_ns()}")


def refused(r, scheme, body, headers, what):
    status, answer = send(r, scheme.path, body, headers)
    eq((status, answer), (401, {"error": "signature check failed"}), what)


def accepted(r, scheme, body, headers, what):
    status, answer = send(r, scheme.path, body, headers)
    eq(status, 202, what)
    return answer["run_id"]


def check_scheme(r, s):
    """Every case for scheme s against the running rill r; returns the ids of
    the runs accepted."""
    runs = []
    b = body_of(1)
    runs.append(accepted(r, s, b, s.headers(b), "good signature"))
    b = body_of(2)
    runs.append(accepted(r, s, b, s.headers(b, s.old), "the previous secret of a rotation"))
    b = body_of(3)
    refused(r, s, b, s.headers(b, s.third), "a secret that is neither")
    if s.signs_body:
        refused(r, s, changed_byte(b), s.headers(b), "one changed body byte")
    good = s.headers(b)
    for name, _ in good:
        if name in s.optional:
            continue
        refused(r, s, b, [(n, v) for n, v in good if n != name], f"without {name}")
    for name in s.single:
        dup = [(n, v) for n, v in good] + [(n, v) for n, v in good if n == name]
        refused(r, s, b, dup, f"{name} sent twice")
    if s.stamped:
        refused(r, s, b, s.headers(b, age=301 + 60), "a stale timestamp")
        refused(r, s, b, s.headers(b, age=-(301 + 60)), "a timestamp in the future")
        b = body_of(4)
        runs.append(accepted(r, s, b, s.headers(b, age=240), "4 minutes old, within the tolerance"))
    for run_id in runs:
        run = wait_until(lambda: (lambda x: x if x["state"] == "succeeded" else None)(r.runs("show", run_id)),
                         10, f"run {run_id}")
        eq(json.loads(run["payload"])["n"] in (1, 2, 4), True, "the run's payload is the body")
        # the stored run (its request headers included) keeps no secret: a shared-secret
        # header is the secret itself, and `runs show` and the admin API show the run
        for secret in (s.new, s.old):
            assert secret not in json.dumps(run), f"a secret reached the stored run {run_id}"
    listed = r.runs("list", "--flow", s.flow)
    eq(sorted(x["id"] for x in listed), sorted(runs), "only accepted requests made runs")
    reasons = [l.get("reason") for l in r.log_lines(msg="webhook refused: signature check failed")
               if l.get("flow") == s.flow]
    assert reasons and all(reasons), reasons
    logs = json.dumps(r.logs)
    for secret in (s.new, s.old, s.third):
        assert secret not in logs, "a secret reached the log"
    return runs


def env_for(prefix, new, old):
    return {prefix: new, prefix + "_PREVIOUS": old}


def rill_with(flows, env):
    return Rill(flows, env={**FAST, **env})


# ---- the schemes, as their senders document them ----

def sign_revolut(body, secret, ts, _id):
    sig = mac("sha256", secret, b"v1." + str(ts).encode() + b"." + body).hex()
    return [("Revolut-Request-Timestamp", str(ts)), ("Revolut-Signature", "v1=" + sig)]


@test
def revolut_flow_of_the_repository_verifies_revolut_signatures():
    with open(os.path.join(ROOT, "flows", "payment-received.lua")) as f:
        source = f.read()
    s = Scheme("payment-received", "/api/revolut/webhook-handler", sign_revolut, (NEW, OLD, THIRD),
               stamped=True, unit=1000, single=("Revolut-Request-Timestamp",))
    with rill_with({"payment-received.lua": source, **repo_lib()}, env_for("REVOLUT_WEBHOOK_SECRET", NEW, OLD)) as r:
        # its run ignores events other than Revolut's transactions: the check_scheme bodies are "paid"
        check_scheme(r, s)
        b = body_of(5)
        ts = str(int(time.time() * 1000))
        both = "v1=" + mac("sha256", THIRD, b"v1." + ts.encode() + b"." + b).hex() + ",v1=" + \
            mac("sha256", NEW, b"v1." + ts.encode() + b"." + b).hex()
        accepted(r, s, b, [("Revolut-Request-Timestamp", ts), ("Revolut-Signature", both)],
                 "two signatures, one of them ours (Revolut during its own rotation)")
        accepted(r, s, b, [("Revolut-Request-Timestamp", ts), ("Revolut-Signature", "v1=" + "ab" * 32),
                           ("Revolut-Signature", both.split(",")[1])],
                 "the signature header sent twice reads as one list")
        refused(r, s, b, [("Revolut-Request-Timestamp", ts + "0"), ("Revolut-Signature", both)],
                "the timestamp changed (ms read as a 10 times later time)")
        refused(r, s, b, [("Revolut-Request-Timestamp", "soon"), ("Revolut-Signature", both)], "a garbled timestamp")
        line = r.log_lines(msg="webhook refused: signature check failed")
        assert any("beyond the 300 s tolerance" in l["reason"] for l in line), line


def sign_mautic(body, secret, _ts, _id):
    return [("Webhook-Signature", base64.b64encode(mac("sha256", secret, body)).decode())]


@test
def mautic_base64_hmac_of_the_body():
    s = Scheme("mautic", "/hooks/mautic", sign_mautic, (NEW, OLD, THIRD), single=("Webhook-Signature",))
    src = flow(s.path, 'signatures.mautic { secret = { "MAUTIC_WEBHOOK_SECRET", "MAUTIC_WEBHOOK_SECRET_PREVIOUS" } }')
    with rill_with({"mautic.lua": src}, env_for("MAUTIC_WEBHOOK_SECRET", NEW, OLD)) as r:
        check_scheme(r, s)
        # no timestamp: the same request again is accepted again (the docs say: lean on idempotency)
        b = body_of(6)
        accepted(r, s, b, s.headers(b), "first")
        accepted(r, s, b, s.headers(b), "the same request replayed")


def sign_docuseal(body, secret, ts, _id):
    return [("X-Docuseal-Signature", f"{ts}." + mac("sha256", secret, str(ts).encode() + b"." + body).hex())]


@test
def docuseal_timestamped_hmac_keyed_with_the_whole_whsec_string():
    s = Scheme("docuseal", "/hooks/docuseal", sign_docuseal, (WH_NEW, WH_OLD, WH_THIRD), stamped=True,
               single=("X-Docuseal-Signature",))
    src = flow(s.path, 'signatures.docuseal { secret = { "DOCUSEAL_WEBHOOK_SECRET", "DOCUSEAL_WEBHOOK_SECRET_PREVIOUS" } }')
    with rill_with({"docuseal.lua": src}, env_for("DOCUSEAL_WEBHOOK_SECRET", WH_NEW, WH_OLD)) as r:
        check_scheme(r, s)
        b = body_of(7)
        ts = str(int(time.time()))
        decoded_key = base64.b64decode(WH_NEW[6:])
        refused(r, s, b, [("X-Docuseal-Signature", ts + "." + mac("sha256", decoded_key, ts.encode() + b"." + b).hex())],
                "keyed with the decoded secret (the Standard Webhooks way), which DocuSeal does not do")


def sign_header(name):
    return lambda body, secret, ts, _id: [(name, secret)]


@test
def docuseal_older_installs_custom_secret_header():
    s = Scheme("docuseal-old", "/hooks/docuseal-old", sign_header("X-Docuseal-Token"), (NEW, OLD, THIRD),
               single=("X-Docuseal-Token",), signs_body=False)
    src = flow(s.path, 'signatures.docuseal { header = "X-Docuseal-Token", secret = { "DS_TOKEN", "DS_TOKEN_PREVIOUS" } }')
    with rill_with({"docuseal-old.lua": src}, env_for("DS_TOKEN", NEW, OLD)) as r:
        check_scheme(r, s)


@test
def invoiceninja_and_a_shared_secret_header_with_a_prefix():
    ninja = Scheme("ninja", "/hooks/ninja", sign_header("X-Ninja-Secret"), (NEW, OLD, THIRD), single=("X-Ninja-Secret",),
                   signs_body=False)
    bearer = Scheme("agency", "/hooks/agency",
                    lambda body, secret, ts, _id: [("Authorization", "Bearer " + secret)], (NEW, OLD, THIRD),
                    single=("Authorization",), signs_body=False)
    flows = {
        "ninja.lua": flow(ninja.path, 'signatures.invoiceninja { header = "X-Ninja-Secret", '
                                      'secret = { "NINJA_SECRET", "NINJA_SECRET_PREVIOUS" } }'),
        "agency.lua": flow(bearer.path, 'signatures.shared_secret { header = "Authorization", prefix = "Bearer ", '
                                        'secret = { "AGENCY_TOKEN", "AGENCY_TOKEN_PREVIOUS" } }'),
    }
    with rill_with(flows, {**env_for("NINJA_SECRET", NEW, OLD), **env_for("AGENCY_TOKEN", NEW, OLD)}) as r:
        check_scheme(r, ninja)
        check_scheme(r, bearer)
        b = body_of(8)
        refused(r, bearer, b, [("Authorization", NEW)], "the secret without its prefix")
        refused(r, ninja, b, [("X-Ninja-Secret", NEW[:-1])], "the secret less its last character")
        refused(r, ninja, b, [("X-Ninja-Secret", NEW + "x")], "the secret and one more character")


@test
def a_secret_url_and_an_ip_allow_list_on_the_real_peer_address():
    """LP Agency's modes: the token in the URL's query (kept out of the stored
    run and the log), and an allow-list checked on the connection's own
    address; X-Forwarded-For counts only from a trusted proxy."""
    bearer = 'header = "Authorization", prefix = "Bearer ", secret = "LP_TOKEN"'
    flows = {
        "lp-url.lua": flow("/hooks/lp-url", 'signatures.shared_secret { query = "token", secret = "LP_TOKEN" }'),
        "lp-local.lua": flow("/hooks/lp-local", 'signatures.shared_secret { %s, allow_from = { "127.0.0.0/8", "::1" } }'
                             % bearer),
        "lp-far.lua": flow("/hooks/lp-far", 'signatures.shared_secret { %s, allow_from = { "203.0.113.0/24" } }' % bearer),
        "lp-proxied.lua": flow("/hooks/lp-proxied", 'signatures.shared_secret { %s, allow_from = { "203.0.113.0/24" }, '
                               'trusted_proxies = { "127.0.0.1", "::1" } }' % bearer),
    }
    auth = [("Authorization", "Bearer " + NEW)]
    with rill_with(flows, {"LP_TOKEN": NEW}) as r:
        b = body_of(1)
        status, answer = send(r, "/hooks/lp-url?token=" + NEW, b, [])
        eq(status, 202, "the token in the URL")
        run = wait_until(lambda: (lambda x: x if x["state"] == "succeeded" else None)(r.runs("show", answer["run_id"])),
                         10, "the URL's run")
        assert NEW not in json.dumps(run), "the URL's token reached the stored run"
        eq(send(r, "/hooks/lp-url?token=" + NEW[:-1], b, [])[0], 401, "a token less its last character")
        eq(send(r, "/hooks/lp-url", b, auth)[0], 401, "no token in the URL (a header does not replace it)")

        eq(send(r, "/hooks/lp-local", b, auth)[0], 202, "from an allowed address (the loopback)")
        eq(send(r, "/hooks/lp-local", b, [("Authorization", "Bearer " + OLD)])[0], 401, "allowed address, wrong token")
        eq(send(r, "/hooks/lp-far", b, auth)[0], 401, "the right token from outside the allow-list")
        eq(send(r, "/hooks/lp-far", b, auth + [("X-Forwarded-For", "203.0.113.9")])[0], 401,
           "X-Forwarded-For is not believed by default")
        reasons = [l.get("reason") for l in r.log_lines(msg="webhook refused: signature check failed")
                   if l.get("flow") == "lp-far"]
        assert reasons and all("is not in allow_from" in x for x in reasons), reasons

        eq(send(r, "/hooks/lp-proxied", b, auth + [("X-Forwarded-For", "203.0.113.9")])[0], 202,
           "the client named by a trusted proxy")
        eq(send(r, "/hooks/lp-proxied", b, auth)[0], 401, "a trusted proxy naming no client")
        eq(send(r, "/hooks/lp-proxied", b, auth + [("X-Forwarded-For", "203.0.113.9, 198.51.100.1")])[0], 401,
           "a spoofed first hop: the rightmost untrusted hop counts")
        assert NEW not in json.dumps(r.logs), "the token reached the log"


def sign_standard(body, secret, ts, id):
    key = base64.b64decode(secret[len("whsec_"):])
    sig = base64.b64encode(mac("sha256", key, f"{id}.{ts}.".encode() + body)).decode()
    return [("webhook-id", id), ("webhook-timestamp", str(ts)), ("webhook-signature", "v1," + sig)]


@test
def standard_webhooks_and_its_webhook_id_as_idempotency_key():
    s = Scheme("standard", "/hooks/standard", sign_standard, (WH_NEW, WH_OLD, WH_THIRD), stamped=True,
               single=("webhook-timestamp",))
    src = flow(s.path, 'signatures.standard_webhooks { secret = { "STD_SECRET", "STD_SECRET_PREVIOUS" } }')
    with rill_with({"standard.lua": src}, env_for("STD_SECRET", WH_NEW, WH_OLD)) as r:
        check_scheme(r, s)
        b = body_of(9)
        first = accepted(r, s, b, s.headers(b, id="msg_delivery_1"), "a delivery")
        status, answer = send(r, s.path, b, s.headers(b, age=30, id="msg_delivery_1"))
        eq((status, answer), (200, {"run_id": first, "duplicate": True}), "the same webhook-id again")
        h = s.headers(b, id="msg_delivery_1")
        refused(r, s, b, [(n, "msg_delivery_2" if n == "webhook-id" else v) for n, v in h], "another id than signed")
        ts = str(int(time.time()))
        key = base64.b64decode(WH_NEW[6:])
        good = base64.b64encode(mac("sha256", key, f"msg_x.{ts}.".encode() + b)).decode()
        other = base64.b64encode(mac("sha256", b"another key", f"msg_x.{ts}.".encode() + b)).decode()
        accepted(r, s, b, [("webhook-id", "msg_x"), ("webhook-timestamp", ts),
                           ("webhook-signature", f"v1,{other} v2,{good} v1,{good}")], "a list of signatures")
        refused(r, s, b, [("webhook-id", "msg_y"), ("webhook-timestamp", ts),
                          ("webhook-signature", f"v2,{good}")], "only an unknown version")
        eq(len(r.runs("list", "--flow", "standard")), 5, "runs: 3 checks, one delivery, one list")


def sign_stripe(body, secret, ts, _id):
    return [("Stripe-Signature", f"t={ts},v1=" + mac("sha256", secret, str(ts).encode() + b"." + body).hex())]


@test
def stripe_timestamped_header_with_several_v1():
    s = Scheme("stripe", "/hooks/stripe", sign_stripe, ("whsec_" + NEW, "whsec_" + OLD, "whsec_" + THIRD),
               stamped=True, single=("Stripe-Signature",))
    src = flow(s.path, 'signatures.stripe { secret = { "STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET_PREVIOUS" } }')
    with rill_with({"stripe.lua": src}, env_for("STRIPE_WEBHOOK_SECRET", "whsec_" + NEW, "whsec_" + OLD)) as r:
        check_scheme(r, s)
        b = body_of(10)
        ts = str(int(time.time()))
        sig = mac("sha256", "whsec_" + NEW, ts.encode() + b"." + b).hex()
        accepted(r, s, b, [("Stripe-Signature", f"t={ts},v1={'0' * 64},v1={sig},v0={'1' * 64}")], "several v1, one good")
        refused(r, s, b, [("Stripe-Signature", f"t={ts},v0={sig}")], "only a v0 signature")
        refused(r, s, b, [("Stripe-Signature", f"v1={sig}")], "no timestamp")
        refused(r, s, b, [("Stripe-Signature", f"t={ts},t={ts},v1={sig}")], "two timestamps")


def sign_github(body, secret, _ts, id):
    return [("X-Hub-Signature-256", "sha256=" + mac("sha256", secret, body).hex()), ("X-GitHub-Delivery", id)]


@test
def github_signature_and_its_delivery_id_as_idempotency_key():
    s = Scheme("github", "/hooks/github", sign_github, (NEW, OLD, THIRD), single=("X-Hub-Signature-256",),
               optional=("X-GitHub-Delivery",))
    src = flow(s.path, 'signatures.github { secret = { "GITHUB_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET_PREVIOUS" } }')
    with rill_with({"github.lua": src}, env_for("GITHUB_WEBHOOK_SECRET", NEW, OLD)) as r:
        check_scheme(r, s)
        # without X-GitHub-Delivery the signature still holds: only the signature header is required
        b = body_of(1)
        good = s.headers(b)
        accepted(r, s, b, [h for h in good if h[0] == "X-Hub-Signature-256"], "no delivery id")
        b = body_of(11)
        first = accepted(r, s, b, s.headers(b, id="72d3162e-cc78-11e3-81ab-4c9367dc0958"), "a delivery")
        status, answer = send(r, s.path, b, s.headers(b, id="72d3162e-cc78-11e3-81ab-4c9367dc0958"))
        eq((status, answer), (200, {"run_id": first, "duplicate": True}), "the redelivery")
        refused(r, s, b, [("X-Hub-Signature-256", "sha1=" + mac("sha1", NEW, b).hex())], "the old sha1 header form")


@test
def generic_hmac_with_template_timestamp_in_ms_prefix_base64_and_id():
    def sign(body, secret, ts, id):
        msg = f"{ts}:{id}:acme:".encode() + body
        return [("X-Sig", "sha512=" + base64.b64encode(mac("sha512", secret, msg)).decode()),
                ("X-Time", str(ts)), ("X-Id", id), ("X-Tenant", "acme")]
    s = Scheme("generic", "/hooks/generic", sign, (NEW, OLD, THIRD), stamped=True, unit=1000,
               single=("X-Sig", "X-Time"))
    src = flow(s.path, '''signatures.hmac { header = "X-Sig", secret = { "LP_SECRET", "LP_SECRET_PREVIOUS" },
        algorithm = "sha512", encoding = "base64", prefix = "sha512=",
        signed = "{timestamp}:{id}:{header:X-Tenant}:{body}",
        timestamp_header = "X-Time", timestamp_unit = "ms", tolerance = "5m", id_header = "X-Id" }''')
    with rill_with({"generic.lua": src}, env_for("LP_SECRET", NEW, OLD)) as r:
        check_scheme(r, s)
        b = body_of(12)
        h = s.headers(b, id="d-1")
        first = accepted(r, s, b, h, "a delivery")
        status, answer = send(r, s.path, b, h)
        eq((status, answer), (200, {"run_id": first, "duplicate": True}), "the same X-Id again")
        refused(r, s, b, [(n, "other" if n == "X-Tenant" else v) for n, v in s.headers(b)], "a signed header changed")


@test
def an_unset_secret_or_a_mistaken_option_is_refused_and_said():
    flows = {
        "unset.lua": flow("/hooks/unset", 'signatures.github { secret = "NOT_SET_ANYWHERE_SECRET" }'),
        "typo.lua": flow("/hooks/typo", 'signatures.stripe { secret = "X", tolerence = 10 }'),
    }
    with rill_with(flows, {}) as r:
        b = body_of(1)
        status, _ = send(r, "/hooks/unset", b, sign_github(b, "", 0, "id"))
        eq(status, 401, "no secret configured: refused")
        line = r.wait_log(msg="webhook refused: signature check failed")
        assert "NOT_SET_ANYWHERE_SECRET not set" in line["reason"], line
        status, _ = send(r, "/hooks/typo", b, [])
        eq(status, 404, "the flow with a mistaken option did not load")
        # the load error names the file, line and option (read from rill's log as it comes)
        r.wait_log(msg_has='typo.lua:3: signatures.stripe: unknown option "tolerence"')


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@test
def outbound_webhooks_are_signed_the_standard_webhooks_way():
    server = serve_http(Receiver)
    src = """
return {
  triggers = { webhook { path = "/hooks/notify" } },
  run = function(ctx)
    local body = json.encode({ type = "invoice.paid", id = ctx.payload.id })
    local headers = signatures.sign_standard({ env.PARTNER_SECRET, env.PARTNER_SECRET_PREVIOUS }, body,
      "msg_" .. ctx.payload.id)
    headers["content-type"] = "application/json"
    return http.post(env.PARTNER_URL, { body = body, headers = headers }).status
  end,
}"""
    env = {**env_for("PARTNER_SECRET", WH_NEW, WH_OLD), "PARTNER_URL": f"http://127.0.0.1:{server.server_port}/in"}
    try:
        with rill_with({"notify.lua": src}, env) as r:
            before = time.time()
            res = r.request("POST", "/hooks/notify", {"id": "inv-7"})
            eq((res.status, res.body), (200, "204"), "the partner answered")
            headers, body = Receiver.got[-1]
            eq(json.loads(body), {"type": "invoice.paid", "id": "inv-7"}, "body sent")
            eq(headers["webhook-id"], "msg_inv-7", "webhook-id")
            ts = int(headers["webhook-timestamp"])
            assert int(before) <= ts <= time.time(), (before, ts)
            sigs = headers["webhook-signature"].split(" ")
            eq(len(sigs), 2, "one signature per secret")
            for secret, sig in zip((WH_NEW, WH_OLD), sigs):
                expected = sign_standard(body, secret, ts, "msg_inv-7")[2][1]
                assert hmac.compare_digest(sig, expected), (sig, expected)
            logs = json.dumps(r.logs)
            assert WH_NEW not in logs and WH_OLD not in logs, "a secret reached the log"
    finally:
        server.shutdown()


if __name__ == "__main__":
    os.chdir(os.path.dirname(os.path.abspath(__file__)))
    main()
