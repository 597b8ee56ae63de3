"""Event triggers on Postgres: every test of test_events.py (registered when
it is imported) against a real Postgres server, one empty database per test."""
import json

import test_events
from lib.harness import Postgres, eq, main, run_cli, temp_dir, test, wait_until
from test_events import settled_runs

pg = Postgres()
test_events.new_store = pg.new_database


# ---- two instances on one store ----

@test
def two_instances_given_each_event_twice_start_each_subscriber_once():
    import threading
    url = pg.new_database()
    flows = {"owner.lua": test_events.OWNER, "alert.lua": test_events.SUBSCRIBER % ""}
    env = {"RILL_STORE": url}
    a, b = test_events.rill(flows, env=env), test_events.rill(flows, env=env)
    with a, b:
        def sender(k):
            for n in range(k, 60, 3):
                # every event delivered to both instances at once
                both = [threading.Thread(target=r.request, args=("POST", "/hooks/signed", {"n": n}, {"X-Id": f"e{n}"}))
                        for r in (a, b)]
                for t in both:
                    t.start()
                for t in both:
                    t.join()
        threads = [threading.Thread(target=sender, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        runs = settled_runs(a, "alert", 60, timeout=60)
        eq(len(runs), 60, "runs of the subscriber")
        ns = sorted(json.loads(a.runs("show", x["id"])["result"])["n"] for x in runs)
        eq(ns, list(range(60)), "one run per event")


# ---- a database event's emit (Postgres only: the capture trigger) ----

CONFIG = """return { databases = { main = "sqlite:data/app.db", crm = "env:CRM_URL" } }"""

OWNER_DB = """
return {
  triggers = { db_event { table = "quotes", on = "update", database = "crm", emit = "quote.changed" } },
  run = function(ctx) return { owner = ctx.payload.new.id } end,
}"""

SUBSCRIBER_DB = """
return {
  triggers = { event { name = "quote.changed", match = { new = { status = "signed" } } } },
  run = function(ctx) return { id = ctx.payload.new.id, emitted_by = ctx.trigger.emitted_by } end,
}"""


@test
def a_database_event_with_emit_fans_out_once():
    url = pg.new_database()
    pg.sql("CREATE TABLE quotes (id INTEGER PRIMARY KEY, status TEXT)", url)
    pg.sql("INSERT INTO quotes VALUES (1, 'sent'), (2, 'sent')", url)
    d = temp_dir()
    with open(f"{d}/rill.lua", "w") as f:
        f.write(CONFIG)  # for install-events; the Rill below writes it again
    code, _, err = run_cli("db", "install-events", "--config", "rill.lua", "--database", "crm", "quotes",
                           env={"CRM_URL": url}, cwd=d, timeout=30)
    eq(code, 0, f"install-events ({err})")
    flows = {"owner.lua": OWNER_DB, "signed.lua": SUBSCRIBER_DB}
    with test_events.rill(flows, env={"CRM_URL": url}, dir=d, config=CONFIG) as r:
        pg.sql("UPDATE quotes SET status = 'signed' WHERE id = 1", url)
        pg.sql("UPDATE quotes SET status = 'lost' WHERE id = 2", url)
        owners = settled_runs(r, "owner", 2)
        signed = settled_runs(r, "signed", 1)
        wait_until(lambda: pg.sql("SELECT count(*) FROM rill_events", url) == "0", 10, "the outbox emptied")
        eq(len(signed), 1, "runs of the subscriber (only the signed quote matches)")
        result = json.loads(r.runs("show", signed[0]["id"])["result"])
        eq(result["id"], 1, "the subscriber's row")
        assert result["emitted_by"] in [x["id"] for x in owners], (result, owners)


if __name__ == "__main__":
    main()
