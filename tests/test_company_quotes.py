"""The company's quote and lead flows end to end: the real flows/ folder in a
running rill, the company's schema and demo data on a real Postgres (rill db
apply, rill db install-events on quotes and leads), and the stand-ins for
Slack, Mautic, Invoice Ninja, DocuSeal and SMTP. Asserts on what each
service received and on the rows written:
- a quote sent: signature request, campaign, Invoice Ninja, the client's
  Mautic email, Slack; the run waits; DocuSeal's signed webhook ends the wait,
  the quote is signed with its deposit invoice, once even when delivered
  twice; bad signatures, stale timestamps and malformed bodies are refused;
- the timeout path: a quote valid until the past is expired at once, with
  its follow-up and no reminder of a date already gone, and the daily scan
  (quote-expiry) does not do it again; a quote valid
  5 days is reminded, then expired, across restarts with RILL_CLOCK_OFFSET;
- leads: a signed Mautic form creates contact and lead, welcomed once (its
  replay only updates); a lead inserted in SQL is welcomed; a conversion gives
  the project manager one task;
- each company's own credentials (companies.*_env): company 2's quote goes to
  its own DocuSeal and Mautic and to Invoice Ninja with its own token, from
  the signature request to the deposit invoice; a variable it names but that
  is not set is a dead run naming it, and nothing goes to company 1's
  accounts."""
import base64
import hashlib
import hmac
import json
import os
import time

from lib.harness import ROOT, Postgres, Rill, company_database, eq, main, repo_flows, run_cli, test, wait_until
from standins import DocuSeal, InvoiceNinja, Mautic, Slack, Smtp, make_cert

pg = Postgres()

CONFIG = 'return { databases = { main = "env:APP_DB" }, timezone = "Europe/Paris" }'
DOCUSEAL_SECRET = "whsec_e2e_docuseal_secret"
MAUTIC_SECRET = "e2e-mautic-webhook-secret"
DOCUSEAL_PATH = "/api/integrations/docuseal/webhook"
MAUTIC_PATH = "/api/mautic/webhook"
NORDWIND_NINJA_TOKEN = "ninja-nordwind-token-fedcba9876543210"




class World:
    """Postgres with the schema and demo data, the stand-ins, and the
    environment that points the connectors at them."""

    def __init__(self):
        self.db, self.dir = company_database(pg, CONFIG, "APP_DB", ("quotes", "leads"))
        cert, key = make_cert(self.dir)
        self.slack = Slack(channels=("#lumen-sales", "#nordwind")).start()
        self.mautic = Mautic(segments=(21, 22), campaigns=(11, 12, 13, 14), emails=(31, 32)).start()
        self.ninja = InvoiceNinja(other_tokens=(NORDWIND_NINJA_TOKEN,)).start()
        self.docuseal = DocuSeal(templates=(41, 42)).start()
        # company 2's own DocuSeal and Mautic (its DocuSeal numbers its submissions from 1 too)
        self.nordwind_docuseal = DocuSeal(token="docuseal-nordwind-key-9876543210", templates=(42,)).start()
        self.nordwind_mautic = Mautic(user="nordwind-api", password="nordwind-Standin-pass-7", segments=(22,),
                                      campaigns=(13, 14), emails=(32,)).start()
        self.smtp = Smtp(cert=cert, key=key).start()
        self.env = {
            "APP_DB": self.db, "RILL_POLL_INTERVAL": "0.1s",
            "SLACK_API_URL": self.slack.api_url, "SLACK_BOT_TOKEN": self.slack.token,
            "MAUTIC_URL": self.mautic.url, "MAUTIC_USER": self.mautic.user, "MAUTIC_PASSWORD": self.mautic.password,
            "INVOICENINJA_URL": self.ninja.url, "INVOICENINJA_TOKEN": self.ninja.token,
            "DOCUSEAL_URL": self.docuseal.api_url, "DOCUSEAL_TOKEN": self.docuseal.token,
            "SMTP_URL": self.smtp.url, "SMTP_USER": self.smtp.user, "SMTP_PASSWORD": self.smtp.password,
            "SMTP_CA_FILE": cert,
            "DOCUSEAL_WEBHOOK_SECRET": DOCUSEAL_SECRET, "MAUTIC_WEBHOOK_SECRET": MAUTIC_SECRET,
            # company 2's own credentials, the variables the demo's companies row names
            "NORDWIND_INVOICENINJA_TOKEN": NORDWIND_NINJA_TOKEN,
            "NORDWIND_DOCUSEAL_URL": self.nordwind_docuseal.api_url,
            "NORDWIND_DOCUSEAL_TOKEN": self.nordwind_docuseal.token,
            "NORDWIND_MAUTIC_URL": self.nordwind_mautic.url, "NORDWIND_MAUTIC_USER": self.nordwind_mautic.user,
            "NORDWIND_MAUTIC_PASSWORD": self.nordwind_mautic.password,
        }

    def rill(self, unset=(), **extra):
        env = {k: v for k, v in {**self.env, **extra}.items() if k not in unset}
        return Rill(repo_flows(), env=env, config=CONFIG, dir=self.dir)

    def sql(self, statement):
        return pg.sql(statement, self.db)

    def stop(self):
        for s in (self.slack, self.mautic, self.ninja, self.docuseal, self.smtp, self.nordwind_docuseal,
                  self.nordwind_mautic):
            s.stop()

    def mails_to(self, address, about=None):
        """Mails to address (whose headers name `about`): other flows' cron ticks (payment reminders)
        may mail the same demo clients."""
        return [m for m in self.smtp.messages if address in m["rcpt_to"]
                and (about is None or about.encode() in m["data"].split(b"\r\n\r\n")[0])]

    def slack_texts(self, channel):
        return [m.get("text", "") for m in self.slack.messages if m.get("channel") == channel]


def runs_of(r, flow, state=None):
    runs = r.runs("list", "--flow", flow, "--limit", "100")
    return [x for x in runs if state is None or x["state"] == state]


def wait_run(r, flow, states=("succeeded",), count=1, timeout=15):
    return wait_until(lambda: (lambda x: x if len(x) >= count else None)(
        [x for x in runs_of(r, flow) if x["state"] in states]), timeout, f"{count} {flow} run(s) in {states}")


def result(r, run):
    v = r.runs("show", run["id"])["result"]
    return json.loads(v) if isinstance(v, str) else v


def docuseal_request(r, payload, secret=DOCUSEAL_SECRET, at=None):
    body = payload if isinstance(payload, str) else json.dumps(payload)
    ts = str(int(at if at is not None else time.time()))
    sig = hmac.new(secret.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return r.request("POST", DOCUSEAL_PATH, body=body, headers={
        "Content-Type": "application/json", "X-Docuseal-Signature": f"{ts}.{sig}"})


def mautic_request(r, payload, secret=MAUTIC_SECRET):
    body = payload if isinstance(payload, str) else json.dumps(payload)
    sig = base64.b64encode(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()).decode()
    return r.request("POST", MAUTIC_PATH, body=body, headers={
        "Content-Type": "application/json", "Webhook-Signature": sig})


def completed(submission_id, email, quote_id):
    """DocuSeal's form.completed: the signer, with the external_id quote-sent gave it."""
    return {"event_type": "form.completed", "timestamp": "2026-11-27T09:00:00Z",
            "data": {"id": 1, "submission_id": submission_id, "email": email, "status": "completed",
                     "external_id": f"quote-{quote_id}",
                     "submission": {"id": submission_id, "status": "completed"}}}


@test
def a_quote_sent_waits_for_its_signature_and_the_docuseal_webhook_signs_it_once():
    w = World()
    try:
        with w.rill() as r:
            w.sql("UPDATE quotes SET status = 'sent' WHERE id = 1")
            waiting = wait_run(r, "quote-sent", states=("waiting",))[0]
            # what sending did
            sub = w.docuseal.submissions[1]
            eq((sub["template"]["id"], sub["submitters"][0]["email"]), (41, "claire.martin@client.example"),
               "DocuSeal: company 1's template, the client signs")
            eq(w.sql("SELECT docuseal_submission_id FROM quotes WHERE id = 1"), "1", "submission id stored")
            contact = int(w.sql("SELECT mautic_id FROM contacts WHERE id = 1"))
            eq(w.mautic.campaigns[11], {contact}, "Mautic: company 1's quote-sent campaign")
            draft = [i for i in w.ninja.invoices.values() if i["number"] == "D-2026-001"]
            eq((len(draft), draft[0]["amount"], draft[0]["status_id"]), (1, 4800.0, "1"),
               "Invoice Ninja: the quote as a draft")
            wait_run(r, "quote-changed")
            eq([s["email"] for s in w.mautic.sent], [31], "the client's quote email, company 1's template")
            wait_until(lambda: any("draft → sent: D-2026-001" in t for t in w.slack_texts("#lumen-sales")), 10,
                       "the team told")

            # refused before the flow: a wrong secret, a stale timestamp, not JSON
            eq(docuseal_request(r, completed(1, "x", 1), secret="whsec_wrong").status, 401, "wrong secret")
            eq(docuseal_request(r, completed(1, "x", 1), at=time.time() - 600).status, 401, "ten minutes old")
            eq(docuseal_request(r, "{not json").status, 400, "not JSON")
            eq(len(runs_of(r, "quote-signed")), 0, "nothing stored")

            # the client signs
            w.docuseal.complete(1)
            res = docuseal_request(r, completed(1, "claire.martin@client.example", 1))
            eq(res.status, 202, f"signed webhook ({res.body})")
            signed = wait_run(r, "quote-signed")[0]
            eq(result(r, signed), {"signed": "D-2026-001", "deposit_invoice": "D-2026-001-DEP", "deposit": 1440},
               "30% deposit of 4800")
            done = wait_until(lambda: r.runs("show", waiting["id"])["state"] == "succeeded", 10, "the wait ended")
            assert done
            eq(result(r, waiting), {"signed": True, "submission_id": 1}, "quote-sent's result")
            eq(w.sql("SELECT status FROM quotes WHERE id = 1"), "signed", "quote signed")
            dep = [i for i in w.ninja.invoices.values() if i["number"] == "D-2026-001-DEP"]
            eq((len(dep), dep[0]["amount"], dep[0]["status_id"]), (1, 1440.0, "2"), "deposit invoice, sent")
            eq(w.sql("SELECT kind || ' ' || amount || ' ' || status FROM invoices WHERE number = 'D-2026-001-DEP'"),
               "deposit 1440.00 sent", "deposit recorded")
            eq(w.mautic.campaigns[12], {contact}, "Mautic: company 1's signed campaign")
            eq(set(x.headers.get("x-api-token") for x in w.ninja.requests), {w.ninja.token},
               "company 1's Invoice Ninja calls carry the default token")
            eq((w.nordwind_docuseal.requests, w.nordwind_mautic.requests), ([], []), "nothing to company 2's")

            # DocuSeal delivers it again: nothing more
            eq(docuseal_request(r, completed(1, "claire.martin@client.example", 1)).status, 202, "redelivery")
            again = wait_run(r, "quote-signed", count=2)
            eq(sorted(json.dumps(result(r, x), sort_keys=True) for x in again)[0],
               json.dumps({"already": "signed", "quote": "D-2026-001"}, sort_keys=True), "the second finds it done")
            eq(len([i for i in w.ninja.invoices.values() if i["number"].endswith("-DEP")]), 1, "one deposit")
            eq(len([t for t in w.slack_texts("#lumen-sales") if "signed by" in t]), 1, "one Slack message")
            eq(len(w.mails_to("claire.martin@client.example", "D-2026-001")), 0, "no reminder, no follow-up")
    finally:
        w.stop()


@test
def a_quote_valid_until_the_past_is_expired_once_without_a_reminder_whichever_flow_comes():
    w = World()
    try:
        with w.rill() as r:
            w.sql("INSERT INTO quotes (owner_company, contact_id, number, title, amount, status, valid_until) "
                  "VALUES (2, 4, 'Q-2026-150', 'Workshop', 1500, 'draft', current_date - 1)")
            qid = w.sql("SELECT id FROM quotes WHERE number = 'Q-2026-150'")
            w.sql(f"UPDATE quotes SET status = 'sent' WHERE id = {qid}")
            # (the draft's insert ran it too, and was skipped)
            done = wait_until(lambda: [result(r, x) for x in runs_of(r, "quote-sent", "succeeded")
                                       if "skipped" not in result(r, x)], 15, "the quote-sent run")
            eq(done, [{"expired": True, "reminded": False}], "expired at once, not reminded")
            mails = w.mails_to("j.keller@kunde.example", "Q-2026-150")
            eq(len(mails), 1, "the follow-up only")
            eq(mails[0]["mail_from"], "quotes@nordwind.example", "company 2's sender")
            assert b"Subject: Quote Q-2026-150 has expired" in mails[0]["data"], mails[0]["data"][:400]
            eq(w.sql(f"SELECT expiry_warned_at IS NULL FROM quotes WHERE id = {qid}"), "t", "no reminder claimed")
            eq(w.sql(f"SELECT status FROM quotes WHERE id = {qid}"), "expired", "expired")
            assert any("Q-2026-150" in t and "expired unsigned" in t for t in w.slack_texts("#nordwind")), \
                w.slack.messages
        # the daily scan, by hand: the demo's quotes 2 (ending soon) and 3 (past validity) are its
        # work; Q-2026-150 is done already
        code, out, err = run_cli("run", "quote-expiry", "--config", "rill.lua", "--flows", os.path.join(ROOT, "flows"),
                                 env=w.env, cwd=w.dir)
        eq(code, 0, f"rill run quote-expiry ({err[-2000:]})")
        got = json.loads(out)
        eq(got["companies"], [{"company": 1, "reminded": ["D-2026-002"], "expired": ["D-2026-003"]}], "the scan")
        eq(len(w.mails_to("j.keller@kunde.example", "Q-2026-150")), 1, "nothing more for Q-2026-150")
        eq(len(w.mails_to("hugo@bernard-archi.example", "D-2026-002")), 1, "quote 2's reminder")
        eq(w.sql("SELECT status FROM quotes WHERE id = 3"), "expired", "quote 3 expired by the scan")
        assert any("expired, client followed up: D-2026-003" in t for t in w.slack_texts("#lumen-sales"))
    finally:
        w.stop()


@test
def a_waiting_quote_is_reminded_then_expired_across_restarts_with_the_clock_moved_on():
    w = World()
    try:
        with w.rill() as r:
            w.sql("UPDATE quotes SET valid_until = current_date + 5, status = 'sent' WHERE id = 1")
            run = wait_run(r, "quote-sent", states=("waiting",))[0]
        eq(len(w.mails_to("claire.martin@client.example", "D-2026-001")), 0, "no reminder yet")
        # 3 days on: within company 1's 3 days' warning
        with w.rill(RILL_CLOCK_OFFSET="3d") as r:
            wait_until(lambda: w.mails_to("claire.martin@client.example", "D-2026-001"), 15, "the reminder")
            wait_until(lambda: r.runs("show", run["id"])["state"] == "waiting", 10, "waiting again")
            assert w.sql("SELECT expiry_warned_at IS NOT NULL FROM quotes WHERE id = 1") == "t"
        # 7 days on: past validity
        with w.rill(RILL_CLOCK_OFFSET="7d") as r:
            wait_until(lambda: r.runs("show", run["id"])["state"] == "succeeded", 15, "the run's end")
            eq(result(r, run), {"expired": True, "reminded": True}, "result")
        eq(len(w.mails_to("claire.martin@client.example", "D-2026-001")), 2, "one reminder, one follow-up")
        eq(w.sql("SELECT status FROM quotes WHERE id = 1"), "expired", "expired")
    finally:
        w.stop()


@test
def company_2s_quote_goes_to_its_own_docuseal_and_mautic_and_to_invoice_ninja_with_its_own_token():
    w = World()
    try:
        with w.rill() as r:
            # company 1's quote 2 waits for its submission 1, in company 1's DocuSeal
            w.sql("UPDATE quotes SET docuseal_submission_id = '1' WHERE id = 2")
            w.sql("INSERT INTO quotes (owner_company, contact_id, number, title, amount, status, valid_until) "
                  "VALUES (2, 4, 'Q-2026-160', 'Training', 1500, 'draft', current_date + 10)")
            qid = w.sql("SELECT id FROM quotes WHERE number = 'Q-2026-160'")
            w.sql(f"UPDATE quotes SET status = 'sent' WHERE id = {qid}")
            waiting = wait_run(r, "quote-sent", states=("waiting",))[0]
            eq(list(w.nordwind_docuseal.submissions), [1], "the signature request, in company 2's DocuSeal")
            eq(w.nordwind_docuseal.submissions[1]["template"]["id"], 42, "company 2's template")
            eq(w.docuseal.requests, [], "nothing to company 1's DocuSeal")
            contact = int(w.sql("SELECT mautic_id FROM contacts WHERE id = 4"))
            eq(w.nordwind_mautic.campaigns[13], {contact}, "company 2's quote-sent campaign, in its Mautic")
            wait_until(lambda: w.nordwind_mautic.sent, 10, "quote-changed's email")
            eq([m["email"] for m in w.nordwind_mautic.sent], [32], "company 2's template, from its Mautic")
            draft = [i for i in w.ninja.invoices.values() if i["number"] == "Q-2026-160"]
            eq(len(draft), 1, "the quote mirrored in Invoice Ninja")

            w.nordwind_docuseal.complete(1)
            eq(docuseal_request(r, completed(1, "j.keller@kunde.example", qid)).status, 202, "signed webhook")
            signed = wait_run(r, "quote-signed")[0]
            eq(result(r, signed), {"signed": "Q-2026-160", "deposit_invoice": "Q-2026-160-DEP", "deposit": 600},
               "company 2's 40% deposit")
            eq(w.sql("SELECT status FROM quotes WHERE id = 2"), "sent", "company 1's quote with a submission 1 too: not signed")
            wait_until(lambda: r.runs("show", waiting["id"])["state"] == "succeeded", 10, "company 2's wait ended")
            eq(w.nordwind_mautic.campaigns[14], {contact}, "company 2's signed campaign, in its Mautic")
            eq(w.mautic.requests, [], "nothing to company 1's Mautic")
            tokens = set(x.headers.get("x-api-token") for x in w.ninja.requests)
            eq(tokens, {NORDWIND_NINJA_TOKEN}, "every Invoice Ninja call with company 2's token")
            eq(len(w.ninja.received("POST", "/api/v1/invoices")), 2, "the draft and the deposit invoice")
    finally:
        w.stop()


@test
def company_2_without_its_docuseal_key_set_gets_a_dead_run_naming_it_and_nothing_is_sent():
    w = World()
    try:
        with w.rill(unset=["NORDWIND_DOCUSEAL_TOKEN"]) as r:
            w.sql("INSERT INTO quotes (owner_company, contact_id, number, title, amount, status, valid_until) "
                  "VALUES (2, 4, 'Q-2026-170', 'Audit', 900, 'sent', current_date + 10)")
            dead = wait_run(r, "quote-sent", states=("dead",))[0]
            error = r.runs("show", dead["id"])["error"]
            assert "company 2 (Nordwind Consulting): NORDWIND_DOCUSEAL_TOKEN is not set" in error, error
            eq((w.docuseal.requests, w.nordwind_docuseal.requests), ([], []), "no signature request anywhere")
            eq(w.ninja.requests, [], "nothing in Invoice Ninja")
            eq(w.sql("SELECT docuseal_submission_id IS NULL FROM quotes WHERE number = 'Q-2026-170'"), "t",
               "no submission recorded")
    finally:
        w.stop()


def form(company, email, submission=31, mautic_contact=444, message="A quote for a shop, please"):
    results = {"email": email, "firstname": "Léa", "lastname": "Roux", "company": "Roux SARL", "message": message}
    form_id = {1: 2, 2: 5}[company]  # the demo companies' forms (companies.mautic_forms)
    return {"mautic.form_on_submit": [{"submission": {"id": submission, "form": {"id": form_id, "name": "Contact us"},
                                                      "lead": {"id": mautic_contact}, "results": results},
                                       "timestamp": "2026-11-27T09:00:00+00:00"}],
            "timestamp": "2026-11-27T09:00:00+00:00"}


@test
def leads_from_a_mautic_form_and_from_sql_are_welcomed_once_and_a_conversion_makes_one_task():
    w = World()
    w.mautic._contact(444, {"email": "lea.roux@example.com"})  # Mautic knows the person who filled its form
    w.mautic.next_id = 445
    try:
        with w.rill() as r:
            eq(mautic_request(r, form(1, "lea.roux@example.com"), secret="wrong").status, 401, "bad signature")
            eq(mautic_request(r, "{oops").status, 400, "not JSON")
            res = mautic_request(r, form(1, "lea.roux@example.com"))
            eq(res.status, 202, f"accepted ({res.body})")
            first = wait_run(r, "lead-created")[0]
            lead = w.sql("SELECT l.id || ' ' || l.source || ' ' || l.status || ' ' || c.mautic_id FROM leads l "
                         "JOIN contacts c ON c.id = l.contact_id WHERE c.email = 'lea.roux@example.com'")
            lead_id = lead.split()[0]
            eq(lead.split()[1:], ["mautic", "new", "444"], "contact and lead created")
            got = result(r, first)
            eq((got["welcomed"], got["updated"] or [], got["refused"] or []), ([int(lead_id)], [], []), "welcomed")
            eq(w.mautic.segments[21], {444}, "company 1's nurturing segment")
            eq(len(w.mails_to("ventes@lumen.example")), 1, "company 1's sales team mailed")
            eq(len([t for t in w.slack_texts("#lumen-sales") if "New lead" in t]), 1, "Slack")
            # Mautic signs no timestamp: the same delivery replayed is accepted, and changes only the lead
            eq(mautic_request(r, form(1, "lea.roux@example.com", message="Any news?")).status, 202, "replay")
            replay = [x for x in wait_run(r, "lead-created", count=2) if x["id"] != first["id"]][0]
            got = result(r, replay)
            eq((got["welcomed"] or [], got["updated"]), ([], [int(lead_id)]), "the replay updated the lead")
            eq(w.sql(f"SELECT notes FROM leads WHERE id = {lead_id}"), "Mautic form: Contact us: Any news?", "notes")
            eq(len(w.mails_to("ventes@lumen.example")), 1, "no second email")
            eq(w.sql("SELECT count(*) FROM analytics_events WHERE name = 'lead_created'"), "1", "one analytics event")

            # a lead typed into the database (Directus): welcomed through its database event
            w.sql("INSERT INTO leads (owner_company, contact_id, source) VALUES (2, 4, 'phone')")
            wait_run(r, "lead-created", count=3)
            # the outbox is drained in order: an event of the form's own insert would have come first
            eq(len(runs_of(r, "lead-created")), 3, "the form's own insert started no run")
            wait_until(lambda: w.mails_to("sales@nordwind.example"), 10, "company 2's sales team mailed")
            assert any("New lead from phone: Jonas Keller" in t for t in w.slack_texts("#nordwind"))
            keller = int(w.sql("SELECT mautic_id FROM contacts WHERE id = 4"))
            eq(w.nordwind_mautic.segments[22], {keller}, "company 2's lead nurtured in its own Mautic")
            eq(w.nordwind_mautic.contacts[keller]["fields"]["all"]["email"], "j.keller@kunde.example", "its contact")

            # converted: the project manager's task, once, due the company's pm_task_days later (its timezone's days)
            w.sql("UPDATE companies SET pm_task_days = 4, timezone = 'Pacific/Honolulu' WHERE id = 1")
            w.sql(f"UPDATE leads SET status = 'converted' WHERE id = {lead_id}")
            # (the lead's earlier updates ran it too, and were skipped)
            conv = wait_until(lambda: [result(r, x) for x in runs_of(r, "lead-converted", "succeeded")
                                       if "converted" in result(r, x)], 10, "the conversion run")
            eq(conv, [{"converted": int(lead_id), "task": True}], "converted, once")
            eq(w.sql("SELECT title || ' ' || assignee_email FROM tasks WHERE related_table = 'leads'"),
               "Kick-off: Léa Roux (Roux SARL) projets@lumen.example", "the task")
            eq(w.sql("SELECT t.due_date = (l.converted_at AT TIME ZONE 'Pacific/Honolulu')::date + 4 FROM tasks t "
                     "JOIN leads l ON l.id = t.related_id WHERE t.related_table = 'leads'"), "t",
               "due 4 days after the conversion's day in Honolulu")
            eq(len(w.mails_to("projets@lumen.example")), 1, "the project manager mailed")
            eq(w.mautic.contacts[444]["fields"]["all"].get("tags"), ["client"], "tagged in Mautic")
    finally:
        w.stop()


if __name__ == "__main__":
    main()
