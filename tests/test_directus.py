"""rill beside a real Directus 11 (directus/, `make directus-deps`), on a
throwaway Postgres, as the company runs it (docs/directus.md):
- the one schema: directus/snapshot.json (what Directus shows and edits)
  and db/schema.postgres.sql (what the flows use) have the same tables,
  columns, types, nullability and foreign keys;
- the company's database made by rill (db apply, install-events on quotes,
  leads and invoices), then Directus bootstrapped on it and the snapshot
  applied (Directus adopts the tables: nothing of them changes);
- a quote created and sent through Directus's REST API starts quote-sent:
  the DocuSeal, Mautic and Invoice Ninja stand-ins get their calls; the
  signed DocuSeal webhook to rill signs it; Directus's REST API then reads
  the quote `signed` and its deposit invoice, which rill created through
  Directus (its activity names rill's Directus user);
- a lead created and an invoice updated through Directus start lead-created
  and invoice-changed, and invoice-changed's audit entry is in Directus.
Skips, saying so, only when node is missing."""
import atexit
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from lib.harness import ROOT, Postgres, Rill, company_database, eq, free_port, main, repo_flows, run_cli, temp_dir, test, wait_until

DIRECTUS_DIR = os.path.join(ROOT, "directus")
SNAPSHOT = os.path.join(DIRECTUS_DIR, "snapshot.json")
CONFIG = 'return { databases = { main = "env:APP_DB" }, timezone = "Europe/Paris" }'
DOCUSEAL_SECRET = "whsec_directus_e2e_secret"
DOCUSEAL_PATH = "/api/integrations/docuseal/webhook"
ANALYST_TOKEN = "analyst-static-token-0123456789"
RILL_TOKEN = "rill-static-token-9876543210"
TABLES = ("companies", "contacts", "leads", "quotes", "invoices", "payments", "payment_reminders", "tasks",
          "audit_log", "analytics_events")

if not shutil.which("node"):
    print("test_directus: SKIPPED: node is missing (Debian: apt-get install nodejs npm; then make directus-deps)")
    print("0 passed, 0 failed")
    sys.exit(0)
if not os.path.isdir(os.path.join(DIRECTUS_DIR, "node_modules")):
    raise SystemExit("test_directus: directus/node_modules is missing: run `make directus-deps`")

from standins import DocuSeal, InvoiceNinja, Mautic, Slack, Smtp, make_cert  # noqa: E402

pg = Postgres()


class Directus:
    """`directus start` (directus/cli.mjs) on its own port, on the database given."""

    def __init__(self, db):
        self.dir = temp_dir("rill-directus-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        for d in ("extensions", "uploads"):
            os.makedirs(os.path.join(self.dir, d))
        self.env = dict(os.environ, DB_CLIENT="pg", DB_CONNECTION_STRING=db, KEY="rill-test",
                        SECRET="rill-test-secret-" + os.urandom(8).hex(), ADMIN_EMAIL="analyst@example.com",
                        ADMIN_PASSWORD="analyst-" + os.urandom(8).hex(), ADMIN_TOKEN=ANALYST_TOKEN,
                        HOST="127.0.0.1", PORT=str(self.port), PUBLIC_URL=self.url, TELEMETRY="false",
                        LOG_LEVEL="warn", EXTENSIONS_PATH=os.path.join(self.dir, "extensions"),
                        STORAGE_LOCAL_ROOT=os.path.join(self.dir, "uploads"), CACHE_ENABLED="false",
                        # rill's outbox is rill's: not shown, and never dropped by a schema apply
                        DB_EXCLUDE_TABLES="spatial_ref_sys,sysdiagrams,rill_events")
        self.proc = None

    def cli(self, *args):
        p = subprocess.run(["node", "cli.mjs", *args], cwd=DIRECTUS_DIR, env=self.env, capture_output=True,
                           text=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError(f"directus {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p.stdout

    def start(self):
        self.log = open(os.path.join(self.dir, "directus.log"), "w")
        self.proc = subprocess.Popen(["node", "cli.mjs", "start"], cwd=DIRECTUS_DIR, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self.healthy, 120, "Directus to answer /server/health")
        return self

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"directus exited with {self.proc.returncode}: " + open(self.log.name).read())
        try:
            return self.call("GET", "/server/health", token=None) is not None
        except OSError:
            return False

    def call(self, method, path, body=None, token=ANALYST_TOKEN):
        """A REST call; the answer's data (an error answer raises, naming it)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = "Bearer " + token
        req = urllib.request.Request(self.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                if not raw:
                    return None
                v = json.loads(raw)
        except urllib.error.HTTPError as e:
            raise AssertionError(f"Directus {method} {path}: {e.code} {e.read()[:500]!r}")
        return v.get("data", v) if isinstance(v, dict) else v

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def snapshot_columns():
    with open(SNAPSHOT) as f:
        snap = json.load(f)
    out = {}
    for fd in snap["fields"]:
        s = fd["schema"]
        out[(fd["collection"], fd["field"])] = (s["data_type"], s["is_nullable"], s.get("foreign_key_table"))
    return snap, out


def sql_columns(db):
    rows = pg.sql("SELECT c.table_name || '|' || c.column_name || '|' || c.data_type || '|' || c.is_nullable || '|' "
                  "|| COALESCE(ccu.table_name, '') FROM information_schema.columns c "
                  "LEFT JOIN information_schema.key_column_usage k ON k.table_name = c.table_name "
                  "  AND k.column_name = c.column_name AND k.constraint_name LIKE '%fkey' "
                  "LEFT JOIN information_schema.constraint_column_usage ccu ON ccu.constraint_name = k.constraint_name "
                  "WHERE c.table_schema = 'public' AND c.table_name NOT LIKE 'directus%' "
                  "AND c.table_name NOT LIKE 'rill%'", db)
    out = {}
    for line in rows.splitlines():
        table, column, dtype, nullable, fk = line.split("|")
        out[(table, column)] = (dtype, nullable == "YES", fk or None)
    return out


class World:
    """Postgres with the company's schema and demo data (rill db apply), rill's
    event capture on quotes, leads and invoices, Directus adopting the tables
    (bootstrap, schema apply), the stand-ins, and rill with the repo's flows."""

    def __init__(self):
        self.db, self.dir = company_database(pg, CONFIG, "APP_DB", ("quotes", "leads", "invoices"))
        self.directus = Directus(self.db)
        started = time.time()
        self.directus.cli("bootstrap")
        bootstrapped = time.time()
        self.directus.cli("schema", "apply", "--yes", SNAPSHOT)
        applied = time.time()
        self.directus.start()
        print(f"     directus: bootstrap {bootstrapped - started:.1f}s, schema apply {applied - bootstrapped:.1f}s, "
              f"start {time.time() - applied:.1f}s", flush=True)
        # rill's own Directus user: its writes are its own in Directus's activity and revisions
        admin_role = self.directus.call("GET", "/users/me?fields=role")["role"]
        self.directus.call("POST", "/users", {"email": "rill@example.com", "first_name": "rill",
                                              "token": RILL_TOKEN, "role": admin_role})
        self.slack = Slack(channels=("#lumen-sales", "#nordwind")).start()
        self.mautic = Mautic(segments=(21, 22), campaigns=(11, 12, 13, 14), emails=(31, 32)).start()
        self.ninja = InvoiceNinja().start()
        self.docuseal = DocuSeal(templates=(41, 42)).start()
        cert, key = make_cert(self.dir)
        self.smtp = Smtp(cert=cert, key=key).start()
        self.env = {
            "APP_DB": self.db, "RILL_POLL_INTERVAL": "0.1s",
            "DIRECTUS_URL": self.directus.url, "DIRECTUS_TOKEN": RILL_TOKEN,
            "SLACK_API_URL": self.slack.api_url, "SLACK_BOT_TOKEN": self.slack.token,
            "MAUTIC_URL": self.mautic.url, "MAUTIC_USER": self.mautic.user, "MAUTIC_PASSWORD": self.mautic.password,
            "INVOICENINJA_URL": self.ninja.url, "INVOICENINJA_TOKEN": self.ninja.token,
            "DOCUSEAL_URL": self.docuseal.api_url, "DOCUSEAL_TOKEN": self.docuseal.token,
            "DOCUSEAL_WEBHOOK_SECRET": DOCUSEAL_SECRET,
            "SMTP_URL": self.smtp.url, "SMTP_USER": self.smtp.user, "SMTP_PASSWORD": self.smtp.password,
            "SMTP_CA_FILE": cert,
        }

    def rill(self):
        return Rill(repo_flows(), env=self.env, config=CONFIG, dir=self.dir)

    def stop(self):
        self.directus.stop()
        for s in (self.slack, self.mautic, self.ninja, self.docuseal, self.smtp):
            s.stop()


def runs_of(r, flow, states=None):
    return [x for x in r.runs("list", "--flow", flow, "--limit", "100") if states is None or x["state"] in states]


def wait_run(r, flow, states=("succeeded",), count=1, timeout=30):
    return wait_until(lambda: (lambda x: x if len(x) >= count else None)(runs_of(r, flow, states)), timeout,
                      f"{count} {flow} run(s) in {states}")


def result(r, run):
    v = r.runs("show", run["id"])["result"]
    return json.loads(v) if isinstance(v, str) else v


def docuseal_request(r, payload):
    body = json.dumps(payload)
    ts = str(int(time.time()))
    sig = hmac.new(DOCUSEAL_SECRET.encode(), f"{ts}.{body}".encode(), hashlib.sha256).hexdigest()
    return r.request("POST", DOCUSEAL_PATH, body=body, headers={
        "Content-Type": "application/json", "X-Docuseal-Signature": f"{ts}.{sig}"})


@test
def the_snapshot_and_the_sql_schema_describe_the_same_tables_and_columns():
    db = pg.new_database()
    d = temp_dir()
    with open(os.path.join(d, "rill.lua"), "w") as f:
        f.write(CONFIG)
    code, out, err = run_cli("db", "apply", "--config", "rill.lua", os.path.join(ROOT, "db", "schema.postgres.sql"),
                             env={"APP_DB": db}, cwd=d)
    eq(code, 0, f"db apply ({err})")
    snap, from_snapshot = snapshot_columns()
    from_sql = sql_columns(db)
    eq(sorted(set(from_snapshot) - set(from_sql)), [], "columns in directus/snapshot.json only")
    eq(sorted(set(from_sql) - set(from_snapshot)), [],
       "columns in db/schema.postgres.sql only (tools/directus-snapshot.sh regenerates the snapshot)")
    differ = {k: (from_snapshot[k], from_sql[k]) for k in from_sql if from_snapshot[k] != from_sql[k]}
    eq(differ, {}, "(type, nullable, foreign key) in the snapshot vs the SQL")
    eq(sorted(c["collection"] for c in snap["collections"]), sorted(TABLES), "the collections")
    eq(all(c["meta"] for c in snap["collections"]), True, "every collection is managed by Directus (has meta)")
    with open(os.path.join(DIRECTUS_DIR, "package.json")) as f:
        locked = json.load(f)["dependencies"]["directus"]
    eq(snap["directus"], locked, "the snapshot was made by the Directus of directus/package.json")


_world = None


def world():
    """One World for the tests below (Directus's bootstrap, schema apply and
    start take most of this file's time); stopped when the process exits."""
    global _world
    if _world is None:
        _world = World()
        atexit.register(_world.stop)
    return _world


@test
def a_quote_sent_and_signed_through_directus_runs_the_flows_and_directus_reads_the_result():
    w = world()
    dx = w.directus
    # nothing of the tables changed when Directus adopted them
    eq(dx.call("POST", "/schema/diff?force=true", json.load(open(SNAPSHOT))), None, "the diff after apply")
    with w.rill() as r:
        quote = dx.call("POST", "/items/quotes", {"owner_company": 1, "contact_id": 1, "number": "DX-2026-001",
                                                   "title": "Shop front", "amount": 2000, "currency": "EUR"})
        eq((quote["status"], quote["number"]), ("draft", "DX-2026-001"), "the quote created in Directus")
        dx.call("PATCH", f"/items/quotes/{quote['id']}", {"status": "sent"})
        waiting = wait_run(r, "quote-sent", states=("waiting",))[0]
        # the stand-ins got what sending a quote does
        sub = w.docuseal.submissions[1]
        eq((sub["template"]["id"], sub["submitters"][0]["email"]), (41, "claire.martin@client.example"),
           "DocuSeal: the signature request")
        contact = dx.call("GET", "/items/contacts/1?fields=mautic_id")["mautic_id"]
        eq(w.mautic.campaigns[11], {contact}, "Mautic: the quote-sent campaign")
        draft = [i for i in w.ninja.invoices.values() if i["number"] == "DX-2026-001"]
        eq((len(draft), draft[0]["amount"]), (1, 2000.0), "Invoice Ninja: the quote")
        eq(dx.call("GET", f"/items/quotes/{quote['id']}?fields=docuseal_submission_id")["docuseal_submission_id"],
           "1", "the submission id, read in Directus")

        # the client signs: DocuSeal's signed webhook to rill
        w.docuseal.complete(1)
        res = docuseal_request(r, {
            "event_type": "form.completed", "timestamp": "2026-12-04T09:00:00Z",
            "data": {"id": 1, "submission_id": 1, "email": "claire.martin@client.example", "status": "completed",
                     "external_id": f"quote-{quote['id']}", "submission": {"id": 1, "status": "completed"}}})
        eq(res.status, 202, f"the signed webhook ({res.body})")
        signed = wait_run(r, "quote-signed")[0]
        eq(result(r, signed), {"signed": "DX-2026-001", "deposit_invoice": "DX-2026-001-DEP", "deposit": 600},
           "30% deposit of 2000")
        wait_until(lambda: r.runs("show", waiting["id"])["state"] == "succeeded", 15, "quote-sent's wait ended")

        # what an analyst sees in Directus
        eq(dx.call("GET", f"/items/quotes/{quote['id']}?fields=status")["status"], "signed", "the quote")
        deposits = dx.call("GET", f"/items/invoices?filter[quote_id][_eq]={quote['id']}"
                                  "&fields=id,number,kind,amount,status,invoiceninja_id")
        eq([(i["number"], i["kind"], i["amount"], i["status"]) for i in deposits],
           [("DX-2026-001-DEP", "deposit", "600.00", "sent")], "the deposit invoice")
        dep = [i for i in w.ninja.invoices.values() if i["number"] == "DX-2026-001-DEP"]
        eq(deposits[0]["invoiceninja_id"], dep[0]["id"], "its Invoice Ninja id")
        # rill made it through Directus: its activity says rill did
        made = dx.call("GET", "/activity?filter[collection][_eq]=invoices&filter[action][_eq]=create"
                              "&fields=item,user.email")
        eq([(a["user"]["email"], a["item"]) for a in made], [("rill@example.com", str(deposits[0]["id"]))],
           "who made the deposit invoice")
        # and invoice-changed audited it, also through Directus
        audit = wait_until(lambda: dx.call("GET", "/items/audit_log?filter[table_name][_eq]=invoices"
                                                  "&fields=record_id,action,actor"), 30, "the deposit's audit entry")
        eq([(a["record_id"], a["action"]) for a in audit], [(deposits[0]["id"], "invoice_insert")],
           "the audit log, read in Directus")
        eq([a["user"]["email"] for a in dx.call("GET", "/activity?filter[collection][_eq]=audit_log"
                                                       "&fields=user.email")], ["rill@example.com"],
           "the audit entry's author in Directus's activity")


@test
def a_lead_created_and_an_invoice_updated_through_directus_start_their_flows():
    w = world()
    dx = w.directus
    with w.rill() as r:
        lead = dx.call("POST", "/items/leads", {"owner_company": 1, "contact_id": 2, "source": "referral",
                                                 "notes": "Met at the trade fair"})
        run = wait_run(r, "lead-created")[0]
        eq(result(r, run)["welcomed"], [int(lead["id"])], "lead-created welcomed the lead made in Directus")
        eq(len([m for m in w.smtp.messages if "Hugo" in m["data"].decode(errors="replace")]), 1,
           "the sales team's email about it")

        dx.call("PATCH", "/items/invoices/3", {"amount": 700, "due_date": "2027-01-31"})
        changed = wait_until(lambda: [x for x in runs_of(r, "invoice-changed", ("succeeded",))
                                      if result(r, x).get("op") == "update"], 30, "invoice-changed on the update")
        got = result(r, changed[0])
        eq((got["invoice"], got["changed"]), ("F-2026-043", ["amount", "due_date"]), "what changed")
        audit = dx.call("GET", "/items/audit_log?filter[record_id][_eq]=3&filter[action][_eq]=invoice_update"
                               "&fields=details")
        eq(json.loads(audit[0]["details"])["after"], {"amount": 700, "due_date": "2027-01-31"},
           "the audit entry, read in Directus")


if __name__ == "__main__":
    main()
