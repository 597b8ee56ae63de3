"""The connectors (slack, mautic, invoiceninja, docuseal, directus, email)
inside a running rill, against the stand-ins of tests/standins: each
operation sends what the service's API expects (path, method, credentials,
body fields), and its answer comes back to the flow; a settings table
given to NAME.with{} replaces the environment; an error answer fails the
run with an error naming the service, the operation and the status; no
credential appears in rill's log or in a stored error; mail goes over
STARTTLS with its text and HTML parts to the right recipients."""
import email
import email.policy
import json
import os

from lib.harness import Rill, eq, main, temp_dir, test, wait_until
from standins import Directus, DocuSeal, InvoiceNinja, Mautic, Slack, Smtp, make_cert

FAST = {"RILL_POLL_INTERVAL": "0.1s"}


def flow(path, body, mode="sync"):
    """A flow on POST /PATH whose run is body (Lua statements, ctx in scope,
    from line 6 of the file)."""
    return f"""
return {{
  retries = {{ attempts = 1 }},
  triggers = {{ webhook {{ method = "POST", path = "/{path}", mode = "{mode}" }} }},
  run = function(ctx)
{body}
  end,
}}"""


def call_flow(path, expr, mode):
    """A flow whose run calls expr on line 6 (not a tail call: the error then
    names the flow's line) and returns its value."""
    return flow(path, "    local v = " + expr + "\n    return v", mode)


def assert_no_secrets(r, secrets, runs=()):
    """None of the secrets in rill's log lines (nor in the stored errors of runs)."""
    text = json.dumps(r.logs)
    for run in runs:
        text += json.dumps(run)
    for s in secrets:
        assert s not in text, f"secret {s[:6]}... appears in rill's output"
    # the check is not vacuous: the requests were logged
    assert r.log_lines(msg="http") or r.log_lines(msg="email sent") or r.log_lines(msg="email not sent"), \
        "no request was logged at all"


def finished(r, run_id, timeout=15):
    def done():
        run = r.runs("show", run_id)
        return run if run["state"] in ("succeeded", "failed", "dead") else None
    return wait_until(done, timeout, f"run {run_id} to finish")


SLACK = flow("slack", """
    local a = slack.webhook { text = "Quote Q-1 signed", blocks = {
      { type = "section", text = { type = "mrkdwn", text = "*Q-1* signed" } } } }
    local b = slack.post("C0SALES", "hello sales")
    local other = slack.with { token = env.OTHER_SLACK_TOKEN, api_url = env.OTHER_SLACK_API, channel = "C0OPS" }
    local c = other.post { text = "company two", blocks = { { type = "divider" } } }
    local d = other.send("via send: the token is set, so chat.postMessage")
    local ok, err = pcall(slack.post, "C0NOPE", "lost")
    return { webhook = a, post = b, other = c, send = d, err = err }
""")


@test
def slack_webhook_and_chat_post_message_with_blocks():
    with Slack() as s1, Slack(token="xoxb-9999-8888-othercompany00") as s2:
        env = {"SLACK_WEBHOOK_URL": s1.webhook_url, "SLACK_API_URL": s1.api_url, "SLACK_BOT_TOKEN": s1.token,
               "OTHER_SLACK_TOKEN": s2.token, "OTHER_SLACK_API": s2.api_url}
        with Rill({"slack.lua": SLACK}, env=env) as r:
            res = r.request("POST", "/slack", {})
            eq(res.status, 200, f"status ({res.body})")
            out = res.json()
            eq(out["webhook"], True, "webhook result")
            eq(out["post"]["channel"], "C0SALES", "post result channel")
            assert out["post"]["ts"], out
            eq(out["other"]["channel"], "C0OPS", "the other company's default channel")
            assert out["err"].startswith("slack.lua:") or "slack.lua:" in out["err"], out["err"]
            assert "slack: post message to C0NOPE: 200 with ok=false: channel_not_found" in out["err"], out["err"]

            hook = s1.received("POST", r"/services/.*")
            eq(len(hook), 1, "webhook posts")
            eq(hook[0].json["text"], "Quote Q-1 signed", "webhook text")
            eq(hook[0].json["blocks"][0]["text"]["text"], "*Q-1* signed", "webhook blocks")
            assert "channel" not in hook[0].json, hook[0].json
            api = s1.received("POST", r"/api/chat\.postMessage")
            eq(len(api), 2, "chat.postMessage calls on company one (one ok, one channel_not_found)")
            eq(api[0].headers["authorization"], "Bearer " + s1.token, "bot token")
            assert api[0].headers["content-type"].startswith("application/json"), api[0].headers
            eq((api[0].json["channel"], api[0].json["text"]), ("C0SALES", "hello sales"), "post body")
            other = s2.received("POST", r"/api/chat\.postMessage")
            eq(len(other), 2, "calls on company two")
            eq(other[0].headers["authorization"], "Bearer " + s2.token, "company two's token")
            eq(other[0].json["blocks"], [{"type": "divider"}], "blocks")
            eq(other[1].json["channel"], "C0OPS", "send() posts to the default channel")
            eq([m["via"] for m in s2.messages], ["api", "api"], "company two's messages")
            assert_no_secrets(r, [s1.token, s2.token, s1.webhook_path.rsplit("/", 1)[1]])


MAUTIC = flow("mautic", """
    local c = mautic.create_contact { email = "ada@example.com", firstname = "Ada", company = "Acme" }
    local u = mautic.update_contact(c.id, { lastname = "Lovelace" })
    local found = mautic.find_contact("ada@example.com")
    local missing = mautic.find_contact("nobody@example.com")
    mautic.add_to_segment(2, c.id)
    mautic.add_to_campaign(3, c.id)
    mautic.add_points(c.id, 15, { event_name = "quote signed", action_name = "rill" })
    mautic.send_email(1, c.id, { quote_number = "Q-7" })
    return { id = c.id, lastname = u.fields.all.lastname, found = found.id, missing = missing == nil }
""")


@test
def mautic_contacts_segments_campaigns_points_and_emails():
    with Mautic() as m:
        env = {"MAUTIC_URL": m.url, "MAUTIC_USER": m.user, "MAUTIC_PASSWORD": m.password}
        with Rill({"mautic.lua": MAUTIC}, env=env) as r:
            res = r.request("POST", "/mautic", {})
            eq(res.status, 200, f"status ({res.body})")
            eq(res.json(), {"id": 1, "lastname": "Lovelace", "found": 1, "missing": True}, "result")
            calls = [(q.method, q.path) for q in m.received()]
            eq(calls, [("POST", "/api/contacts/new"), ("PATCH", "/api/contacts/1/edit"), ("GET", "/api/contacts"),
                       ("GET", "/api/contacts"), ("POST", "/api/segments/2/contact/1/add"),
                       ("POST", "/api/campaigns/3/contact/1/add"), ("POST", "/api/contacts/1/points/plus/15"),
                       ("POST", "/api/emails/1/contact/1/send")], "requests")
            for q in m.received():
                assert q.headers["authorization"].startswith("Basic "), q.headers
            first = m.received()[0]
            eq(first.json, {"email": "ada@example.com", "firstname": "Ada", "company": "Acme"}, "contact fields")
            eq(m.received()[2].query["search"], ["email:ada@example.com"], "search")
            eq(m.contacts[1]["fields"]["all"]["lastname"], "Lovelace", "updated contact")
            eq((m.segments[2], m.campaigns[3]), ({1}, {1}), "segment and campaign membership")
            eq(m.points_log, [{"contact": 1, "points": 15, "eventName": "quote signed", "actionName": "rill"}],
               "points")
            eq(m.sent, [{"email": 1, "contact": 1, "tokens": {"quote_number": "Q-7"}}], "template email")
            assert_no_secrets(r, [m.password])


NINJA = flow("ninja", """
    local client = invoiceninja.create_client { name = "Acme SA",
      contacts = { { first_name = "Ada", email = "ada@example.com" } } }
    local updated = invoiceninja.update_client(client.id, { vat_number = "FR123" })
    local inv = invoiceninja.create_invoice({ client_id = client.id,
      line_items = { { product_key = "design", notes = "Logo", cost = 500, quantity = 2 } } }, { mark_sent = true })
    local deposit = invoiceninja.create_deposit_invoice { client_id = client.id, total = 1234.50, percent = 30,
      quote = "Q-12", po_number = "Q-12" }
    local sent = invoiceninja.mark_sent(deposit.id)
    local pay = invoiceninja.record_payment { client_id = client.id, invoice_id = inv.id, amount = 400,
      date = "2026-11-27", transaction_reference = "REV-1" }
    local by_number = invoiceninja.find_invoice(inv.number)
    local no_such = invoiceninja.find_invoice("NO-SUCH-1")
    local found = invoiceninja.list_payments { client_id = client.id, filter = "REV-1" }
    local none = invoiceninja.list_payments { client_id = client.id, filter = "REV-2" }
    local _, dup = pcall(invoiceninja.create_invoice, { client_id = client.id, number = inv.number })
    return { dup = dup, client = client.id, found = #found, found_id = found[1] and found[1].id, none = #none,
      by_number = by_number and by_number.id, no_such = no_such == nil, vat = updated.vat_number, invoice = inv.id, invoice_status = inv.status_id,
      deposit = deposit.id, deposit_amount = deposit.amount, deposit_status = sent.status_id, payment = pay.id,
      applied = pay.applied }
""")


@test
def invoiceninja_clients_invoices_deposit_mark_sent_and_payment():
    with InvoiceNinja() as n:
        env = {"INVOICENINJA_URL": n.url, "INVOICENINJA_TOKEN": n.token}
        with Rill({"ninja.lua": NINJA}, env=env) as r:
            res = r.request("POST", "/ninja", {})
            eq(res.status, 200, f"status ({res.body})")
            out = res.json()
            eq((out["vat"], out["invoice_status"], out["deposit_amount"], out["deposit_status"], out["applied"]),
               ("FR123", "2", 370.35, "2", 400), "results")
            calls = [(q.method, q.path) for q in n.received()]
            eq(calls, [("POST", "/api/v1/clients"), ("PUT", f"/api/v1/clients/{out['client']}"),
                       ("POST", "/api/v1/invoices"), ("POST", "/api/v1/invoices"), ("POST", "/api/v1/invoices/bulk"),
                       ("POST", "/api/v1/payments"), ("GET", "/api/v1/invoices"), ("GET", "/api/v1/invoices"),
                       ("GET", "/api/v1/payments"), ("GET", "/api/v1/payments"),
                       ("POST", "/api/v1/invoices")], "requests")
            eq((out["found"], out["found_id"], out["none"]), (1, out["payment"], 0), "list_payments finds the payment")
            eq((out["by_number"], out["no_such"]), (out["invoice"], True), "find_invoice by number, or nil")
            eq(n.received("GET", "/api/v1/invoices")[0].query["number"], [n.invoices[out["invoice"]]["number"]],
               "find_invoice asks for the number")
            eq(n.received("GET", "/api/v1/payments")[0].query, {"client_id": [out["client"]], "filter": ["REV-1"]},
               "list_payments' filters in the query")
            for q in n.received():
                eq((q.headers.get("x-api-token"), q.headers.get("x-requested-with")), (n.token, "XMLHttpRequest"),
                   f"headers of {q.path}")
            inv_req, dep_req, _ = n.received("POST", "/api/v1/invoices")
            eq(inv_req.query, {"mark_sent": ["true"]}, "create invoice ?mark_sent=true")
            eq(dep_req.query, {}, "deposit invoice created as a draft")
            eq(dep_req.json["line_items"], [{"product_key": "deposit", "quantity": 1, "cost": 370.35,
                                             "notes": "Deposit of 30% on quote Q-12"}], "deposit line")
            eq(dep_req.json["po_number"], "Q-12", "other fields passed on")
            assert "total" not in dep_req.json and "percent" not in dep_req.json, dep_req.json
            assert out["dup"].endswith("invoiceninja: create invoice: 422 Unprocessable: The given data was invalid. "
                                       "number: The number has already been taken."), out["dup"]
            eq(n.received("POST", "/api/v1/invoices/bulk")[0].json, {"action": "mark_sent", "ids": [out["deposit"]]},
               "bulk mark_sent")
            pay = n.received("POST", "/api/v1/payments")[0].json
            eq(pay["invoices"], [{"invoice_id": out["invoice"], "amount": 400}], "payment applied to the invoice")
            eq((pay["client_id"], pay["amount"], pay["transaction_reference"]), (out["client"], 400, "REV-1"),
               "payment")
            assert "invoice_id" not in pay, pay
            eq((n.invoices[out["invoice"]]["balance"], n.invoices[out["invoice"]]["status_id"]), (600, "3"),
               "the invoice is partially paid")
            assert_no_secrets(r, [n.token])


DOCUSEAL = flow("docuseal", """
    if ctx.payload.read then return docuseal.get_submission(ctx.payload.read) end
    return docuseal.create_submission { template_id = 1, send_email = true,
      submitters = { { role = "Client", email = "ada@example.com", name = "Ada",
        values = { { field = "Quote", value = "Q-12" } } } },
      message = { subject = "Your quote Q-12", body = "Please sign: {{submitter.link}}" } }
""")


@test
def docuseal_submission_from_template_and_its_state():
    with DocuSeal() as d:
        env = {"DOCUSEAL_URL": d.api_url, "DOCUSEAL_TOKEN": d.token}
        with Rill({"docuseal.lua": DOCUSEAL}, env=env) as r:
            res = r.request("POST", "/docuseal", {})
            eq(res.status, 200, f"status ({res.body})")
            created = res.json()
            eq(created["id"], 1, "submission id")
            eq([(s["email"], s["status"]) for s in created["submitters"]], [("ada@example.com", "sent")], "submitters")
            req = d.received("POST", "/api/submissions")[0]
            eq(req.headers["x-auth-token"], d.token, "X-Auth-Token")
            eq((req.json["template_id"], req.json["send_email"], req.json["submitters"][0]["role"]),
               (1, True, "Client"), "body")
            eq(r.request("POST", "/docuseal", {"read": 1}).json()["status"], "pending", "state before signing")
            d.complete(1)
            after = r.request("POST", "/docuseal", {"read": 1}).json()
            eq((after["status"], after["submitters"][0]["status"]), ("completed", "completed"), "state after")
            eq([q.path for q in d.received("GET")], ["/api/submissions/1"] * 2, "reads")
            assert_no_secrets(r, [d.token])


DIRECTUS = flow("directus", """
    local a = directus.create("quotes", { title = "Website", total = 1200, status = "draft" })
    local b = directus.create("quotes", { title = "Logo", total = 300, status = "sent" })
    local u = directus.update("quotes", a.id, { status = "sent" })
    local one = directus.item("quotes", b.id, { fields = { "id", "title" } })
    local sent = directus.items("quotes", { filter = { status = { _eq = "sent" } }, sort = { "-total" },
      fields = { "id", "total" }, limit = 10 })
    return { a = a.id, status = u.status, one = one, sent = sent }
""")


@test
def directus_read_create_update_items():
    with Directus() as d:
        env = {"DIRECTUS_URL": d.url, "DIRECTUS_TOKEN": d.token}
        with Rill({"directus.lua": DIRECTUS}, env=env) as r:
            res = r.request("POST", "/directus", {})
            eq(res.status, 200, f"status ({res.body})")
            out = res.json()
            eq(out["status"], "sent", "updated")
            eq(out["one"], {"id": 2, "title": "Logo"}, "one item, its fields")
            eq(out["sent"], [{"id": 1, "total": 1200}, {"id": 2, "total": 300}], "filtered, sorted")
            calls = [(q.method, q.path) for q in d.received()]
            eq(calls, [("POST", "/items/quotes"), ("POST", "/items/quotes"), ("PATCH", "/items/quotes/1"),
                       ("GET", "/items/quotes/2"), ("GET", "/items/quotes")], "requests")
            for q in d.received():
                eq(q.headers["authorization"], "Bearer " + d.token, "static token")
            q = d.received("GET", "/items/quotes")[0].query
            eq((json.loads(q["filter"][0]), q["sort"], q["fields"], q["limit"]),
               ({"status": {"_eq": "sent"}}, ["-total"], ["id,total"], ["10"]), "query")
            eq(d.received("PATCH")[0].json, {"status": "sent"}, "PATCH body: the fields changed only")
            assert_no_secrets(r, [d.token])


EMAIL = flow("email", """
    local sent = email.send { to = { "Ada Lovelace <ada@example.com>", "bob@example.com" },
      cc = "Zoë <zoe@example.com>", bcc = "audit@example.com",
      subject = "Devis Q-12 signé ✓ — merci pour votre confiance, l'équipe vous recontacte très vite",
      text = "Hello Ada,\\nyour quote is signed.\\n.\\nA line with a lone dot above.",
      html = "<p>Hello Ada,</p><p>your quote is <b>signed</b>.</p>", reply_to = "sales@example.com" }
    local other = email.with { url = env.OTHER_SMTP, user = env.SMTP_USER, password = env.SMTP_PASSWORD,
      from = "Company Two <two@example.org>", ca_file = env.SMTP_CA_FILE }
    local plain = other.send { to = "carol@example.com", subject = "Plain", text = "only text" }
    local _, injected = pcall(email.send, { to = "ada@example.com", subject = "x\\r\\nBcc: evil@example.com", text = "y" })
    local _, bad_to = pcall(email.send, { to = "ada@example.com>\\r\\nBcc: <evil@example.com", text = "y" })
    return { sent = sent, plain = plain, injected = injected, bad_to = bad_to }
""")


@test
def email_over_starttls_with_text_and_html_to_the_right_recipients():
    d = temp_dir()
    cert, key = make_cert(d)
    with Smtp(cert=cert, key=key) as s1, Smtp(cert=cert, key=key) as s2:
        env = {"SMTP_URL": s1.url, "SMTP_USER": s1.user, "SMTP_PASSWORD": s1.password, "SMTP_CA_FILE": cert,
               "MAIL_FROM": "Rill Notifications <rill@example.com>", "OTHER_SMTP": s2.url}
        with Rill({"email.lua": EMAIL}, env=env) as r:
            res = r.request("POST", "/email", {})
            eq(res.status, 200, f"status ({res.body})")
            out = res.json()
            eq(out["sent"]["recipients"], ["ada@example.com", "bob@example.com", "zoe@example.com",
                                           "audit@example.com"], "recipients")
            eq(len(s1.messages), 1, "messages on server one")
            m = s1.messages[0]
            eq((m["tls"], m["user"], m["mail_from"]), (True, s1.user, "rill@example.com"), "STARTTLS, AUTH, sender")
            eq(m["rcpt_to"], ["ada@example.com", "bob@example.com", "zoe@example.com", "audit@example.com"],
               "envelope recipients (bcc included)")
            msg = email.message_from_bytes(m["data"], policy=email.policy.default)
            eq(str(msg["subject"]), "Devis Q-12 signé ✓ — merci pour votre confiance, l'équipe vous recontacte "
               "très vite", "subject (RFC 2047)")
            eq([a.addr_spec for a in msg["to"].addresses], ["ada@example.com", "bob@example.com"], "To")
            eq(msg["to"].addresses[0].display_name, "Ada Lovelace", "display name")
            eq(msg["cc"].addresses[0].display_name, "Zoë", "Cc name (RFC 2047)")
            assert msg["bcc"] is None and b"audit@example.com" not in m["data"], "Bcc must not be in the message"
            eq(str(msg["from"]), "Rill Notifications <rill@example.com>", "From")
            eq(str(msg["reply-to"]), "sales@example.com", "Reply-To")
            eq(msg["message-id"], out["sent"]["message_id"], "Message-ID returned")
            eq(msg.get_content_type(), "multipart/alternative", "type")
            parts = [(p.get_content_type(), p.get_content()) for p in msg.iter_parts()]
            eq(parts, [("text/plain", "Hello Ada,\r\nyour quote is signed.\r\n.\r\nA line with a lone dot above."),
                       ("text/html", "<p>Hello Ada,</p><p>your quote is <b>signed</b>.</p>")], "parts")
            eq(len(s2.messages), 1, "messages on server two")
            p = email.message_from_bytes(s2.messages[0]["data"], policy=email.policy.default)
            eq((str(p["from"]), p.get_content_type(), p.get_content()),
               ("Company Two <two@example.org>", "text/plain", "only text"), "plain message via with{}")
            eq(s2.messages[0]["tls"], True, "server two over STARTTLS")
            assert out["injected"].endswith("email: subject must be one line (it has a line break)"), out["injected"]
            assert "email: to must be one line" in out["bad_to"], out["bad_to"]
            eq(len(s1.messages), 1, "nothing sent for the refused messages")
            assert_no_secrets(r, [s1.password])


REFUSED = call_flow("refused", 'email.send { to = "ada@example.com", subject = "x", text = "y" }', "async")


@test
def email_is_never_sent_in_clear_and_bad_credentials_fail_the_run():
    d = temp_dir()
    cert, key = make_cert(d)
    with Smtp(require_tls=False) as clear, Smtp(cert=cert, key=key) as tls:
        base = {**FAST, "SMTP_USER": tls.user, "MAIL_FROM": "rill@example.com", "SMTP_CA_FILE": cert}
        with Rill({"refused.lua": REFUSED}, env={**base, "SMTP_URL": clear.url, "SMTP_PASSWORD": "whatever-pw"}) as r:
            run = finished(r, r.request("POST", "/refused", {}).json()["run_id"])
            eq(run["state"], "dead", "state")
            err = json.loads(run["error"])["message"]
            assert "refused.lua:6: email: send to ada@example.com: STARTTLS not supported" in err, err
            eq(clear.messages, [], "nothing sent without TLS")
        with Rill({"refused.lua": REFUSED}, env={**base, "SMTP_URL": tls.url, "SMTP_PASSWORD": "wrong-Pass-123"}) as r:
            run = finished(r, r.request("POST", "/refused", {}).json()["run_id"])
            err = json.loads(run["error"])["message"]
            assert "refused.lua:6: email: send to ada@example.com: Login denied" in err, err
            eq(tls.messages, [], "nothing sent with bad credentials")
            assert_no_secrets(r, ["wrong-Pass-123"], [run])


ERRORS = {
    "ninja422.lua": call_flow("ninja422", "invoiceninja.create_invoice { line_items = {} }", "async"),
    "ninja403.lua": call_flow("ninja403", "invoiceninja.with { url = env.INVOICENINJA_URL, token = "
                         "'not-the-token-0123' }.create_client { name = 'x' }", "async"),
    "docuseal401.lua": call_flow("docuseal401", "docuseal.with { url = env.DOCUSEAL_URL, token = "
                            "env.WRONG_TOKEN }.create_submission { template_id = 1, submitters = "
                            "{ { email = 'a@b.c' } } }", "async"),
    "docuseal404.lua": call_flow("docuseal404", "docuseal.create_submission { template_id = 99, submitters = "
                            "{ { email = 'a@b.c' } } }", "async"),
    "mautic401.lua": call_flow("mautic401", "mautic.with { url = env.MAUTIC_URL, user = 'rill-api', "
                          "password = env.WRONG_PASSWORD }.create_contact { email = 'a@b.co' }", "async"),
    "mautic400.lua": call_flow("mautic400", "mautic.create_contact { email = 'not an email' }", "async"),
    "directus400.lua": call_flow("directus400", "directus.create('quotes', { total = 5 })", "async"),
    "directus401.lua": call_flow("directus401", "directus.with { url = env.DIRECTUS_URL, token = "
                            "env.WRONG_TOKEN }.items('quotes')", "async"),
    "slack404.lua": call_flow("slack404", "slack.with { webhook_url = env.OTHER_SLACK .. "
                         "'/services/T0/B0/unknownHook0123456789' }.webhook('x')", "async"),
    "slack503.lua": call_flow("slack503", "slack.webhook('x')", "async"),
    "echo500.lua": call_flow("echo500", "docuseal.with { url = env.ECHO_URL, token = env.DOCUSEAL_TOKEN }"
                             ".create_submission { template_id = 1, submitters = { { email = 'a@b.c' } } }", "async"),
}
UNSET = call_flow("unset", "directus.with { token = 'x-123456' }.items('quotes')", "async")
DOWN = call_flow("down", "directus.with { url = env.DIRECTUS_DOWN, token = 'x-123456' }.items('quotes')", "async")

EXPECTED = {
    "ninja422": "invoiceninja: create invoice: 422 Unprocessable: The given data was invalid. client_id: "
                "The client id field is required.",
    "ninja403": "invoiceninja: create client: 403 Forbidden: Invalid token",
    "docuseal401": "docuseal: create submission from template 1: 401 Unauthorized: Not authenticated",
    "docuseal404": "docuseal: create submission from template 99: 404 Not Found: Template not found",
    "mautic401": "mautic: create contact: 401 Unauthorized: API authorization denied.",
    "mautic400": "mautic: create contact: 400 Bad Request: email: A valid email is required.",
    "directus400": 'directus: create quotes: 400 Bad Request: Validation failed for field "title". Value is '
                   'required. (FAILED_VALIDATION)',
    "directus401": "directus: read quotes: 401 Unauthorized: Invalid user credentials. (INVALID_CREDENTIALS)",
    "slack404": "slack: post message (webhook): 404 Not Found: no_service",
    "echo500": "docuseal: create submission from template 1: 500 Internal Server Error: upstream rejected the "
               "key ***",
    "slack503": "slack: post message (webhook): 503 Service Unavailable (retry after 30 s): maintenance",
    "unset": "directus: DIRECTUS_URL is not set (give url = ... to directus.with{...})",
}


@test
def error_answers_fail_the_run_naming_service_operation_and_status():
    with InvoiceNinja() as n, DocuSeal() as d, Mautic() as m, Directus() as dx, Slack() as s, Slack() as s2, \
            DocuSeal() as echo:
        s.fail_next(503, "maintenance", {"Retry-After": "30"})
        # a service that repeats the credential in its error: the stored error masks it
        echo.fail_next(500, {"error": "upstream rejected the key " + d.token})
        env = {**FAST, "INVOICENINJA_URL": n.url, "INVOICENINJA_TOKEN": n.token, "DOCUSEAL_URL": d.api_url,
               "DOCUSEAL_TOKEN": d.token, "MAUTIC_URL": m.url, "MAUTIC_USER": m.user, "MAUTIC_PASSWORD": m.password,
               "DIRECTUS_TOKEN": dx.token, "SLACK_WEBHOOK_URL": s.webhook_url, "OTHER_SLACK": s2.url,
               "DIRECTUS_URL": dx.url, "ECHO_URL": echo.api_url, "WRONG_TOKEN": "wrong-Token-0123456789",
               "WRONG_PASSWORD": "wrong-Password-0123"}
        with Rill(ERRORS, env=env) as r:
            ids = {name[:-4]: r.request("POST", "/" + name[:-4], {}).json()["run_id"] for name in ERRORS}
            runs = []
            for name, run_id in ids.items():
                run = finished(r, run_id)
                runs.append(run)
                eq(run["state"], "dead", f"{name}: state")
                err = json.loads(run["error"])["message"]
                assert err.endswith(f"{name}.lua:6: {EXPECTED[name]}"), f"{name}: {err}"
            assert_no_secrets(r, [n.token, d.token, m.password, dx.token, "wrong-Token-0123456789",
                                  "wrong-Password-0123", "not-the-token-0123", "unknownHook0123456789",
                                  s.webhook_path.rsplit("/", 1)[1]], runs)
        with Rill({"unset.lua": UNSET, "down.lua": DOWN}, env={**FAST, "DIRECTUS_DOWN": "http://127.0.0.1:1"}) as r:
            run = finished(r, r.request("POST", "/unset", {}).json()["run_id"])
            err = json.loads(run["error"])["message"]
            assert err.endswith("unset.lua:6: " + EXPECTED["unset"]), err
            run = finished(r, r.request("POST", "/down", {}).json()["run_id"])
            err = json.loads(run["error"])["message"]
            assert "down.lua:6: directus: read quotes: http: GET http://127.0.0.1:1/items/quotes: " in err \
                and "Couldn't connect to server" in err, err


STEP = flow("step", """
    return step("notify", function() return slack.webhook("deposit paid") end, { retries = 2, backoff = 0.01 })
""", mode="async")


@test
def a_step_retries_a_failed_call_with_the_same_idempotency_key():
    # Slack ignores Idempotency-Key: what keeps the message from being posted
    # twice is that the step's result is recorded once it succeeded
    with Slack() as s:
        s.fail_next(500, "internal_error")
        with Rill({"step.lua": STEP}, env={**FAST, "SLACK_WEBHOOK_URL": s.webhook_url}) as r:
            run = finished(r, r.request("POST", "/step", {}).json()["run_id"])
            eq((run["state"], json.loads(run["result"])), ("succeeded", True), "run")
            posts = s.received("POST", r"/services/.*")
            eq(len(posts), 2, "the failed post and its retry")
            keys = [p.headers.get("idempotency-key") for p in posts]
            assert keys[0] and keys[0] == keys[1], keys
            eq(len(s.messages), 1, "one message posted")


if __name__ == "__main__":
    main()
