"""The company's payment flows end to end: the real flows/ folder in a running
rill, its main database a real Postgres (schema and demo data applied with
`rill db apply`, invoice changes captured with `rill db install-events`),
and the stand-ins for Slack, Mautic, Invoice Ninja, SMTP and LP Agency.
Revolut and Invoice Ninja deliveries, signed as those services sign them
(computed here, independently of rill's code), pay their invoice once; a
bad signature, a stale Revolut timestamp and a malformed body are refused
and store nothing; a redelivery records nothing twice; an unmatched payment
goes to review; a pending Revolut transfer is recorded whichever of its
two deliveries (transfer, state change) comes first; a run waiting for
"payment.received" gets it; the daily reminders, the agency handover, the
agency's "paid" and the weekly report run their SQL on Postgres. (The reminder ladder over weeks is in
flows/payment-reminders.test.lua, with rill test's clock.) Each company's calls carry its own
credentials (companies.*_env): company 2 has its own token in the shared Invoice Ninja account and its
own Mautic, and a variable it names but that is not set is a dead run naming it."""
import hashlib
import hmac
import json
import time

from lib.harness import Postgres, Rill, company_database, eq, main, repo_flows, run_cli, temp_dir, test, wait_until
from standins import InvoiceNinja, LpAgency, Mautic, Slack, Smtp, make_cert

pg = Postgres()

CONFIG = 'return { databases = { main = "env:DATABASE_URL" }, timezone = "Europe/Paris" }'
REVOLUT_SECRET = "wsk_e2e_revolut_secret"
NINJA_SECRET = "ninja-e2e-shared-secret"
NORDWIND_NINJA_TOKEN = "ninja-nordwind-token-fedcba9876543210"

LP_SECRET = "lp-e2e-webhook-secret"

# a flow that waits for the event payment-received emits, as a business flow would
AWAIT = """
return {
  triggers = { webhook { method = "POST", path = "/test/await-payment", mode = "async" } },
  run = function(ctx)
    local ev = wait_for("paid", { event = "payment.received", match = { invoice_id = ctx.payload.invoice_id },
                                  timeout = "1h" })
    return ev.data
  end,
}"""


def company_flows():
    return {**repo_flows(), "await-payment.lua": AWAIT}


class World:
    """A fresh Postgres database with the schema and demo data, the stand-ins,
    and a rill serving the company's flows on them."""

    def __init__(self, before_events=(), unset=()):
        self.url, self.dir = company_database(pg, CONFIG, "DATABASE_URL", ("invoices",), before_events)
        cert, key = make_cert(temp_dir())
        self.slack = Slack(channels=("#lumen-sales", "#nordwind", "#payments-review")).start()
        self.mautic, self.ninja = Mautic().start(), InvoiceNinja(other_tokens=(NORDWIND_NINJA_TOKEN,)).start()
        self.nordwind_mautic = Mautic(user="nordwind-api", password="nordwind-Standin-pass-7").start()
        self.agency, self.smtp = LpAgency().start(), Smtp(cert=cert, key=key).start()
        self.env = {
            "DATABASE_URL": self.url, "RILL_POLL_INTERVAL": "0.1s",
            "REVOLUT_WEBHOOK_SECRET": REVOLUT_SECRET, "INVOICENINJA_WEBHOOK_SECRET": NINJA_SECRET,
            "LP_AGENCY_WEBHOOK_TOKEN": LP_SECRET, "LP_AGENCY_WEBHOOK_ALLOW_FROM": "127.0.0.1/32, ::1",
            "SLACK_API_URL": self.slack.api_url, "SLACK_BOT_TOKEN": self.slack.token,
            "SLACK_CHANNEL": "#payments-review",
            "MAUTIC_URL": self.mautic.url, "MAUTIC_USER": self.mautic.user, "MAUTIC_PASSWORD": self.mautic.password,
            "INVOICENINJA_URL": self.ninja.url, "INVOICENINJA_TOKEN": self.ninja.token,
            "SMTP_URL": self.smtp.url, "SMTP_USER": self.smtp.user, "SMTP_PASSWORD": self.smtp.password,
            "SMTP_CA_FILE": cert, "LP_AGENCY_URL": self.agency.files_url, "LP_AGENCY_TOKEN": self.agency.token,
            # company 2's own credentials, the variables the demo's companies row names
            "NORDWIND_INVOICENINJA_TOKEN": NORDWIND_NINJA_TOKEN, "NORDWIND_MAUTIC_URL": self.nordwind_mautic.url,
            "NORDWIND_MAUTIC_USER": self.nordwind_mautic.user,
            "NORDWIND_MAUTIC_PASSWORD": self.nordwind_mautic.password,
        }
        for name in unset:
            del self.env[name]
        self.rill = Rill(company_flows(), env=self.env, config=CONFIG, dir=self.dir)

    def __enter__(self):
        self.rill.__enter__()
        return self

    def __exit__(self, *exc):
        try:
            return self.rill.__exit__(*exc)
        finally:
            for s in (self.slack, self.mautic, self.nordwind_mautic, self.ninja, self.agency, self.smtp):
                s.stop()

    def sql(self, statement):
        return pg.sql(statement, self.url)

    def finished(self, run_id, timeout=20):
        def done():
            run = self.rill.runs("show", run_id)
            return run if run["state"] in ("succeeded", "failed", "dead") else None
        return wait_until(done, timeout, f"run {run_id} to finish")

    def result(self, run_id):
        run = self.finished(run_id)
        eq(run["state"], "succeeded", f"run {run_id} ({run.get('error')})")
        return json.loads(run["result"])

    def runs(self, flow):
        return self.rill.runs("list", "--flow", flow, "--limit", "100")

    def cli_run(self, flow):
        code, out, err = run_cli("run", flow, "--config", "rill.lua", "--flows", self.rill.flows_dir,
                                 env=self.rill.env, cwd=self.dir, timeout=60)
        eq(code, 0, f"rill run {flow} ({err[-2000:]})")
        return json.loads(out)


def revolut_headers(body, ts_ms=None):
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    sig = hmac.new(REVOLUT_SECRET.encode(), b"v1." + ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "Revolut-Request-Timestamp": ts, "Revolut-Signature": "v1=" + sig}


def transfer(tx_id, amount, reference, state="completed", currency="EUR"):
    return json.dumps({"event": "TransactionCreated", "timestamp": "2026-11-25T09:59:59Z", "data": {
        "id": tx_id, "type": "transfer", "state": state, "request_id": "req-" + tx_id, "reference": reference,
        "created_at": "2026-11-25T09:59:58Z", "updated_at": "2026-11-25T09:59:59Z",
        "completed_at": "2026-11-25T09:59:59Z",
        "legs": [{"leg_id": tx_id + "-0", "account_id": "acc-eur", "amount": amount, "currency": currency,
                  "description": "From Boulangerie Martin",
                  "counterparty": {"id": "cp-1", "account_type": "external", "account_id": "ext-1"}}]}}).encode()


@test
def a_signed_revolut_payment_pays_its_invoice_once_and_reaches_every_service():
    # invoice 1 (F-2026-041, 1500 EUR, Atelier Lumen) is already in Invoice Ninja
    ninja_ids = ["UPDATE invoices SET invoiceninja_id = 'INV-F041' WHERE id = 1",
                 "UPDATE contacts SET invoiceninja_client_id = 'CLI-MARTIN' WHERE id = 1"]
    with World(before_events=ninja_ids) as w:
        w.ninja.clients["CLI-MARTIN"] = {"id": "CLI-MARTIN", "name": "Boulangerie Martin", "balance": 1500,
                                         "paid_to_date": 0, "contacts": []}
        w.ninja.invoices["INV-F041"] = {"id": "INV-F041", "client_id": "CLI-MARTIN", "number": "F-2026-041",
                                        "amount": 1500, "balance": 1500, "paid_to_date": 0, "status_id": "2"}
        waiting = w.rill.request("POST", "/test/await-payment", {"invoice_id": 1}).json()["run_id"]
        wait_until(lambda: w.rill.runs("show", waiting)["state"] == "waiting", 10, "a run waiting for the payment")

        body = transfer("tx-e2e-1", 1500, "F-2026-041")
        headers = revolut_headers(body)
        r = w.rill.request("POST", "/api/revolut/webhook-handler", body, headers)
        eq(r.status, 202, f"accepted ({r.body})")
        result = w.result(r.json()["run_id"])
        eq((result["status"], result["invoice"], result["invoice_status"]), ("matched", "F-2026-041", "paid"),
           "the run's result")

        eq(w.sql("SELECT status, amount_paid, paid_at IS NOT NULL FROM invoices WHERE id = 1"), "paid|1500.00|t",
           "the invoice row")
        eq(w.sql("SELECT source, external_id, invoice_id, owner_company, status, amount, currency FROM payments"),
           "revolut|tx-e2e-1|1|1|matched|1500.00|EUR", "the payment row")
        eq(w.sql("SELECT recorded_by FROM payments"), r.json()["run_id"], "the run that recorded it (its retry goes on)")
        payments = list(w.ninja.payments.values())
        eq(len(payments), 1, "one payment recorded in Invoice Ninja")
        eq((payments[0]["client_id"], payments[0]["invoices"]), ("CLI-MARTIN", [{"invoice_id": "INV-F041",
                                                                                "amount": 1500}]), "applied")
        eq(payments[0]["transaction_reference"], "revolut tx-e2e-1", "the Revolut transaction named")
        eq(set(r.headers.get("x-api-token") for r in w.ninja.requests), {w.ninja.token},
           "company 1's calls carry the default token")
        eq(w.nordwind_mautic.requests, [], "nothing to company 2's Mautic")
        eq(w.ninja.invoices["INV-F041"]["status_id"], "4", "paid in Invoice Ninja")
        contacts = list(w.mautic.contacts.values())
        eq(len(contacts), 1, "one Mautic contact")
        eq((contacts[0]["fields"]["all"]["email"], contacts[0]["points"]), ("claire.martin@client.example", 10),
           "Atelier Lumen's 10 points to its client")
        eq(w.sql("SELECT mautic_id FROM contacts WHERE id = 1"), str(contacts[0]["id"]), "the Mautic id kept")
        told = [m for m in w.slack.messages if "F-2026-041" in m.get("text", "")]
        eq([m["channel"] for m in told], ["#lumen-sales"], "Slack: the company's channel, once")

        got = w.result(waiting)
        eq((got["invoice_id"], got["status"], got["source"]), (1, "matched", "revolut"),
           "the waiting run got payment.received")

        # the invoice row changed: invoice-changed mirrors it in Invoice Ninja and audits it
        wait_until(lambda: w.sql("SELECT count(*) FROM audit_log WHERE table_name = 'invoices' AND record_id = 1 "
                                 "AND action = 'invoice_update'") == "1", 20, "the invoice change audited")
        eq(len(w.ninja.received("PUT", "/api/v1/invoices/INV-F041")), 1, "the invoice updated in Invoice Ninja")

        again = w.rill.request("POST", "/api/revolut/webhook-handler", body, headers)
        eq((again.status, again.json().get("duplicate")), (200, True), "a redelivery is a duplicate")
        eq(w.sql("SELECT count(*) FROM payments"), "1", "one payment")
        eq(len(w.ninja.payments), 1, "one payment in Invoice Ninja")

        bad = dict(headers, **{"Revolut-Signature": "v1=" + "0" * 64})
        eq(w.rill.request("POST", "/api/revolut/webhook-handler", body, bad).status, 401, "a bad signature")
        stale_body = transfer("tx-e2e-stale", 820, "F-2026-042")
        stale = revolut_headers(stale_body, int((time.time() - 600) * 1000))
        eq(w.rill.request("POST", "/api/revolut/webhook-handler", stale_body, stale).status, 401,
           "signed ten minutes ago")
        broken = b'{"event": "TransactionCreated", "data": {'
        r = w.rill.request("POST", "/api/revolut/webhook-handler", broken, revolut_headers(broken))
        eq(r.status, 400, "malformed JSON, signed")
        assert "malformed JSON" in r.body, r.body
        eq(len(w.runs("payment-received")), 1, "none of those stored a run")
        eq(w.sql("SELECT status FROM invoices WHERE id = 2"), "sent", "invoice 2 untouched")


def state_changed(tx_id, new_state="completed"):
    return json.dumps({"event": "TransactionStateChanged", "timestamp": "2026-11-25T10:00:00Z", "data": {
        "id": tx_id, "request_id": "req-" + tx_id, "old_state": "pending", "new_state": new_state}}).encode()


@test
def a_pending_revolut_transfer_is_recorded_whichever_of_its_two_deliveries_comes_first():
    with World() as w:
        # the usual order: the transfer pending, then its state change to completed
        body = transfer("tx-e2e-pending", 500, "F-2026-041", state="pending")
        r = w.rill.request("POST", "/api/revolut/webhook-handler", body, revolut_headers(body))
        eq(r.status, 202, f"the pending transfer ({r.body})")
        first = r.json()["run_id"]
        wait_until(lambda: w.rill.runs("show", first)["state"] == "waiting", 10, "the transfer waiting")
        change = state_changed("tx-e2e-pending")
        eq(w.rill.request("POST", "/api/revolut/webhook-handler", change, revolut_headers(change)).status, 202,
           "its state change")
        eq(w.result(first)["invoice_status"], "partially_paid", "recorded once completed")
        # Revolut retried the transfer's failed delivery after delivering its state change
        change = state_changed("tx-e2e-late")
        r = w.rill.request("POST", "/api/revolut/webhook-handler", change, revolut_headers(change))
        eq(r.status, 202, "the state change first")
        eq(w.result(r.json()["run_id"])["state"], "completed", "its run done before the transfer arrives")
        body = transfer("tx-e2e-late", 1000, "F-2026-041", state="pending")
        r = w.rill.request("POST", "/api/revolut/webhook-handler", body, revolut_headers(body))
        eq(r.status, 202, f"the transfer after it ({r.body})")
        eq(w.result(r.json()["run_id"])["invoice_status"], "paid", "recorded without waiting")
        eq(w.sql("SELECT status, amount_paid FROM invoices WHERE id = 1"), "paid|1500.00", "the invoice paid")
        eq(w.sql("SELECT external_id FROM payments ORDER BY id"), "tx-e2e-pending\ntx-e2e-late", "two payments")


@test
def an_invoice_ninja_payment_with_its_shared_secret_pays_its_invoice_and_is_not_sent_back():
    with World(before_events=["UPDATE invoices SET invoiceninja_id = 'INV-F042' WHERE id = 2"]) as w:
        body = json.dumps({"id": "NP-1", "amount": 820, "transaction_reference": "bank transfer 5531",
                           "date": "2026-11-24", "client_id": "CLI-B",
                           "invoices": [{"id": "INV-F042", "number": "F-2026-042"}]}).encode()
        hook = "/api/invoice-ninja/webhook"
        wrong = w.rill.request("POST", hook, body, {"Content-Type": "application/json", "X-Ninja-Secret": "guess"})
        eq(wrong.status, 401, "a wrong shared secret")
        eq(w.rill.request("POST", hook, body, {"Content-Type": "application/json"}).status, 401, "no header")
        headers = {"Content-Type": "application/json", "X-Ninja-Secret": NINJA_SECRET}
        r = w.rill.request("POST", hook, body, headers)
        eq(r.status, 202, f"accepted ({r.body})")
        eq(w.result(r.json()["run_id"])["invoice_status"], "paid", "paid")
        eq(w.sql("SELECT status, amount_paid FROM invoices WHERE id = 2"), "paid|820.00", "the invoice row")
        eq(w.sql("SELECT source, external_id, status FROM payments"), "invoiceninja|NP-1|matched", "the payment")
        eq(w.ninja.received("POST", "/api/v1/payments"), [], "not recorded back in Invoice Ninja")

        # Invoice Ninja sends no delivery id: the redelivery runs, and records nothing
        again = w.rill.request("POST", hook, body, headers)
        eq(again.status, 202, "a redelivery is accepted")
        eq(w.result(again.json()["run_id"])["duplicate"], True, "and finds the payment recorded")
        eq(w.sql("SELECT count(*) FROM payments"), "1", "one payment")
        eq(w.sql("SELECT amount_paid FROM invoices WHERE id = 2"), "820.00", "not counted twice")

        missing = w.rill.request("POST", hook, b'{"id": "NP-2"}', headers)
        run = w.finished(missing.json()["run_id"])
        eq(run["state"], "dead", "a payment without an amount is dead at once")
        assert "needs an id and a numeric amount" in run["error"], run["error"]
        r = w.rill.request("POST", hook, b"amount=820", headers)
        eq(r.status, 400, "not JSON, though it says it is")
        assert "malformed JSON" in r.body, r.body


@test
def company_2s_payment_goes_to_invoice_ninja_with_its_own_token_and_to_its_own_mautic():
    # invoice 5 (R-2026-202, 2750 EUR, Nordwind, contact 5) is in Invoice Ninja, in company 2's books
    ninja_ids = ["UPDATE invoices SET invoiceninja_id = 'INV-R202' WHERE id = 5",
                 "UPDATE contacts SET invoiceninja_client_id = 'CLI-SCHULZ' WHERE id = 5"]
    with World(before_events=ninja_ids) as w:
        w.ninja.clients["CLI-SCHULZ"] = {"id": "CLI-SCHULZ", "name": "Schulz & Partner", "balance": 2750,
                                         "paid_to_date": 0, "contacts": []}
        w.ninja.invoices["INV-R202"] = {"id": "INV-R202", "client_id": "CLI-SCHULZ", "number": "R-2026-202",
                                        "amount": 2750, "balance": 2750, "paid_to_date": 0, "status_id": "2"}
        body = transfer("tx-e2e-nw", 2750, "R-2026-202")
        r = w.rill.request("POST", "/api/revolut/webhook-handler", body, revolut_headers(body))
        eq(r.status, 202, f"accepted ({r.body})")
        result = w.result(r.json()["run_id"])
        eq((result["invoice"], result["invoice_status"], result["owner_company"]), ("R-2026-202", "paid", 2), "paid")
        eq(w.ninja.tokens_of("GET", "/api/v1/payments") + w.ninja.tokens_of("POST", "/api/v1/payments"),
           [NORDWIND_NINJA_TOKEN] * 2, "looked for and recorded with company 2's token")
        eq(w.ninja.invoices["INV-R202"]["status_id"], "4", "paid in Invoice Ninja")
        contacts = list(w.nordwind_mautic.contacts.values())
        eq([(c["fields"]["all"]["email"], c["points"]) for c in contacts], [("maja@schulz.example", 5)],
           "Nordwind's 5 points, in its own Mautic")
        eq(w.mautic.requests, [], "nothing to company 1's Mautic")
        # the invoice row changed: invoice-changed mirrors it with company 2's token too
        wait_until(lambda: w.ninja.received("PUT", "/api/v1/invoices/INV-R202"), 20, "the invoice mirrored")
        eq(w.ninja.tokens_of("PUT", "/api/v1/invoices/INV-R202"), [NORDWIND_NINJA_TOKEN], "with company 2's token")
        eq(set(r.headers.get("x-api-token") for r in w.ninja.requests), {NORDWIND_NINJA_TOKEN},
           "no call of company 2's with the default token")


@test
def a_company_whose_token_variable_is_not_set_gets_a_dead_run_naming_it_and_no_call():
    ninja_ids = ["UPDATE invoices SET invoiceninja_id = 'INV-R202' WHERE id = 5",
                 "UPDATE contacts SET invoiceninja_client_id = 'CLI-SCHULZ' WHERE id = 5"]
    with World(before_events=ninja_ids, unset=["NORDWIND_INVOICENINJA_TOKEN"]) as w:
        body = transfer("tx-e2e-nw2", 2750, "R-2026-202")
        r = w.rill.request("POST", "/api/revolut/webhook-handler", body, revolut_headers(body))
        eq(r.status, 202, f"accepted ({r.body})")
        run = w.finished(r.json()["run_id"])
        eq(run["state"], "dead", "dead at once: a setting to fix")
        assert "company 2 (Nordwind Consulting): NORDWIND_INVOICENINJA_TOKEN is not set" in run["error"], run["error"]
        eq(w.sql("SELECT status FROM invoices WHERE id = 5"), "paid", "the payment itself recorded here")
        eq(w.ninja.requests, [], "nothing sent to Invoice Ninja with the default token")


@test
def an_unmatched_payment_goes_to_review_and_to_slack():
    with World() as w:
        body = transfer("tx-e2e-2", 432.10, "thanks for the lamps")
        r = w.rill.request("POST", "/api/revolut/webhook-handler", body, revolut_headers(body))
        result = w.result(r.json()["run_id"])
        eq(result["status"], "review", "to review")
        eq(w.sql("SELECT status, invoice_id IS NULL, review_reason FROM payments"),
           'review|t|no invoice has the reference "thanks for the lamps"', "the payment row")
        eq(w.sql("SELECT count(*) FROM invoices WHERE amount_paid > 0 AND status <> 'paid'"), "0", "no invoice paid")
        review = [m for m in w.slack.messages if m["channel"] == "#payments-review"]
        eq(len(review), 1, "posted for review")
        assert "432.10 EUR" in review[0]["text"] and "no invoice" in review[0]["text"], review[0]
        eq(w.mautic.requests, [], "nothing to Mautic")
        eq(w.ninja.received("POST", "/api/v1/payments"), [], "nothing to Invoice Ninja")


@test
def reminders_agency_handover_and_agency_paid_on_postgres():
    # invoice 2 (F-2026-042) reaches the last step of Lumen's ladder (30 days) today
    with World(before_events=["UPDATE invoices SET due_date = CURRENT_DATE - 30 WHERE id = 2"]) as w:
        result = w.cli_run("payment-reminders")
        eq(sorted((x["invoice"], x["step"], x["final"]) for x in result["reminders"]),
           [("F-2026-041", 1, False), ("F-2026-042", 3, True), ("R-2026-202", 2, False)], "the reminders sent")
        by_rcpt = {m["rcpt_to"][0]: m for m in w.smtp.messages}
        eq(sorted(by_rcpt), ["claire.martin@client.example", "hugo@bernard-archi.example", "maja@schulz.example"],
           "one mail per overdue invoice")
        eq(by_rcpt["maja@schulz.example"]["mail_from"], "quotes@nordwind.example", "Nordwind's sender")
        eq(by_rcpt["hugo@bernard-archi.example"]["mail_from"], "devis@lumen.example", "Lumen's sender")
        assert b"Final notice" in by_rcpt["hugo@bernard-archi.example"]["data"], "the last step's mail"
        eq(w.sql("SELECT invoice_id, step FROM payment_reminders ORDER BY invoice_id"), "1|1\n2|3\n5|2",
           "the reminders claimed")
        files = list(w.agency.files.values())
        eq([(f["client_reference"], f["invoice_number"], f["amount_due"]) for f in files],
           [("2", "F-2026-042", 820)], "handed to the agency")
        eq(w.sql("SELECT status, collection_status FROM invoices WHERE id = 2"), "collection|handed_over",
           "in collection")

        again = w.cli_run("payment-reminders")
        eq(len(again["reminders"]), 0, "the same day again: nothing")  # ({} : an empty Lua table)
        eq(len(w.smtp.messages), 3, "no mail twice")

        url = f"http://127.0.0.1:{w.rill.port}/api/collection/lp/webhook"
        update = {"event_id": "lp-1", "client_reference": "2", "status": "paid",
                  "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "amount_collected": 820}
        status, _ = w.agency.send_update(url, "not-the-token", update)
        eq(status, 401, "a wrong token")
        status, body = w.agency.send_update(url, LP_SECRET, update)
        eq(status, 202, f"accepted ({body})")
        eq(w.result(json.loads(body)["run_id"])["paid"], True, "paid")
        eq(w.sql("SELECT status, collection_status, amount_paid FROM invoices WHERE id = 2"), "paid|paid|820.00",
           "the agency's paid pays the invoice")
        status, body = w.agency.send_update(url, LP_SECRET, update)
        eq((status, json.loads(body).get("duplicate")), (200, True), "the same event again")


@test
def the_weekly_report_reads_each_companys_figures_on_postgres():
    with World() as w:
        result = w.cli_run("reports")
        eq([x["channel"] for x in result["reports"]], ["#lumen-sales", "#nordwind"], "one report per company")
        texts = {m["channel"]: m["text"] for m in w.slack.messages}
        assert "• Open invoices: 3 (2960.00 EUR)" in texts["#lumen-sales"], texts["#lumen-sales"]
        assert "• Overdue: 2 (2320.00 EUR)" in texts["#lumen-sales"], texts["#lumen-sales"]
        assert "• Overdue: 1 (2750.00 EUR)" in texts["#nordwind"], texts["#nordwind"]
        assert "• Quotes sent: 1 (9600.00 EUR)" in texts["#nordwind"], texts["#nordwind"]


if __name__ == "__main__":
    main()
