"""Database event triggers end to end on a real Postgres: rows inserted,
updated and deleted become runs of the flows whose db_event trigger matches
(with the row's new and old values), events written while rill is down run
after it starts, and the outbox is emptied."""
import json
import subprocess
import threading
import time

from lib.harness import Postgres, Rill, eq, main, run_cli, temp_dir, test, wait_until

pg = Postgres()

CONFIG = """return { databases = { main = "sqlite:data/app.db", crm = "env:CRM_URL" } }"""

FLOW = """
return {
  triggers = { db_event { table = "quotes", on = { "insert", "update" }, database = "crm" } },
  run = function(ctx)
    local p = ctx.payload
    return { op = p.op, table = p.table, new = p.new, old = p.old, trigger = ctx.trigger.type }
  end,
}"""


def setup_db():
    url = pg.new_database()
    pg.sql("CREATE TABLE quotes (id INTEGER PRIMARY KEY, status TEXT, total NUMERIC)", url)
    return url


def write_config(d):
    with open(f"{d}/rill.lua", "w") as f:
        f.write(CONFIG)


def install(url, d):
    write_config(d)
    code, out, err = run_cli("db", "install-events", "--config", "rill.lua", "--database", "crm", "quotes",
                             env={"CRM_URL": url}, cwd=d, timeout=30)
    eq(code, 0, f"install-events exit code ({err})")
    assert "quotes" in out, out


def results(r):
    runs = [x for x in r.runs("list", "--flow", "quote-events", "--limit", "100") if x["state"] == "succeeded"]
    return sorted((json.loads(r.runs("show", x["id"])["result"]) for x in runs),
                  key=lambda x: (x["new"] or {}).get("id", 0) * 10 + (x["op"] == "update"))


@test
def row_changes_become_runs_with_new_and_old_values():
    url = setup_db()
    d = temp_dir()
    install(url, d)
    with Rill({"quote-events.lua": FLOW}, env={"CRM_URL": url}, config=CONFIG, dir=d) as r:
        pg.sql("INSERT INTO quotes VALUES (1, 'draft', 100.5)", url)
        pg.sql("UPDATE quotes SET status = 'sent' WHERE id = 1", url)
        pg.sql("DELETE FROM quotes WHERE id = 1", url)
        got = wait_until(lambda: (lambda x: x if len(x) >= 2 else None)(results(r)), 10, "two runs")
        eq(got[0], {"op": "insert", "table": "quotes", "trigger": "db_event",
                    "new": {"id": 1, "status": "draft", "total": 100.5}}, "insert")
        eq((got[1]["op"], got[1]["old"]["status"], got[1]["new"]["status"]), ("update", "draft", "sent"), "update")
        wait_until(lambda: pg.sql("SELECT count(*) FROM rill_events", url) == "0", 10, "the outbox emptied")
        time.sleep(0.5)
        eq(len(results(r)), 2, "runs (the delete is not one of the flow's events)")


@test
def events_written_while_rill_is_down_run_after_it_starts():
    url = setup_db()
    d = temp_dir()
    install(url, d)
    for i in range(2, 5):
        pg.sql(f"INSERT INTO quotes VALUES ({i}, 'draft', {i})", url)
    eq(pg.sql("SELECT count(*) FROM rill_events", url), "3", "events waiting")
    with Rill({"quote-events.lua": FLOW}, env={"CRM_URL": url}, config=CONFIG, dir=d) as r:
        got = wait_until(lambda: (lambda x: x if len(x) >= 3 else None)(results(r)), 10, "three runs")
        eq([x["new"]["id"] for x in got], [2, 3, 4], "one run per event")
    with Rill({"quote-events.lua": FLOW}, env={"CRM_URL": url}, config=CONFIG, dir=d) as r:
        time.sleep(1.5)  # a restart drains nothing twice
        eq(len(results(r)), 3, "runs after a restart")


LOOP = """
return {
  triggers = { db_event { table = "quotes", on = "insert", database = "crm"IGNORE } },
  run = function(ctx)
    local id = ctx.payload.new.id
    db.use("crm").exec("INSERT INTO quotes VALUES ($1, 'copy', 0)", id + 1)
    return id
  end,
}"""


@test
def a_flow_triggering_itself_through_its_writes_is_stopped_at_max_depth():
    url = setup_db()
    d = temp_dir()
    install(url, d)
    flow = LOOP.replace("IGNORE", ", ignore_own_writes = false")
    with Rill({"loop.lua": flow}, env={"CRM_URL": url}, config=CONFIG, dir=d) as r:
        pg.sql("INSERT INTO quotes VALUES (100, 'draft', 1)", url)
        dead = wait_until(lambda: r.runs("list", "--flow", "loop", "--state", "dead"), 15, "a run refused")
        eq(len(dead), 1, "one run refused")
        row = r.runs("show", dead[0]["id"])
        msg = json.loads(row["error"])["message"]
        assert "deeper than 8" in msg and msg.endswith(" > ".join(["loop"] * 9)), msg
        eq(row["depth"], 8, "its depth")
        ok = r.runs("list", "--flow", "loop", "--state", "succeeded", "--limit", "100")
        eq(len(ok), 8, "runs before the limit")
        eq(sorted(x["depth"] for x in (r.runs("show", o["id"]) for o in ok)), list(range(8)), "their depths")
        # every run knows its parent: the refused one's is the depth-7 run
        parent = r.runs("show", row["parent"])
        eq((parent["depth"], parent["flow"]), (7, "loop"), "the refused run's parent")
        # and its sequence diagram shows the run its write started, from the store
        code, out, err = r.runs_cli("show", row["parent"], "--diagram")
        eq(code, 0, err)
        for want in ["  participant R1 as loop", f"  F-)R1: starts run {row['id']}", "  Note over R1: dead"]:
            assert want in out.splitlines(), f"{want!r} not in:\n{out}"
        eq(pg.sql("SELECT count(*) FROM quotes", url), "9", "rows written (the refused run wrote none)")


@test
def a_flow_ignores_its_own_writes_by_default():
    url = setup_db()
    d = temp_dir()
    install(url, d)
    with Rill({"loop.lua": LOOP.replace("IGNORE", "")}, env={"CRM_URL": url}, config=CONFIG, dir=d) as r:
        pg.sql("INSERT INTO quotes VALUES (200, 'draft', 1)", url)
        wait_until(lambda: r.runs("list", "--flow", "loop", "--state", "succeeded"), 10, "the first run")
        wait_until(lambda: pg.sql("SELECT count(*) FROM rill_events", url) == "0", 10, "the outbox emptied")
        time.sleep(1.2)
        eq(len(r.runs("list", "--flow", "loop")), 1, "runs (its own insert started none)")
        eq(pg.sql("SELECT count(*) FROM quotes", url), "2", "rows")


@test
def install_events_reports_bad_input():
    d = temp_dir()
    write_config(d)
    code, _, err = run_cli("db", "install-events", "--config", "rill.lua", "--database", "crm", "quotes; drop",
                           env={"CRM_URL": pg.url}, cwd=d)
    eq(code, 1, "a bad table name")
    assert "is not a table name" in err, err
    code, _, err = run_cli("db", "install-events", "--config", "rill.lua", "quotes", cwd=d)
    eq(code, 1, "main is SQLite")
    assert "not a Postgres database" in err, err


ORIGIN_CONFIG = """return { databases = { main = "sqlite:data/app.db", crm = "env:CRM_URL" }, db_pool = 1 }"""

# block: holds the one connection of crm's pool until the test lets it go;
# write: a run's insert; verified: an insert made by a webhook's verify
# function, which belongs to no run
ORIGIN_FLOWS = {
    "block.lua": """
return {
  triggers = { webhook { path = "/hooks/block" } },
  run = function() return db.use("crm").query("SELECT 1 AS ok FROM (SELECT pg_advisory_xact_lock(43)) l") end,
}""",
    "write.lua": """
return {
  triggers = { webhook { path = "/hooks/write" } },
  run = function()
    log.info("run writes")
    db.use("crm").exec("INSERT INTO notes (who) VALUES ('run')")
    return "ok"
  end,
}""",
    "verified.lua": """
return {
  triggers = { webhook { path = "/hooks/verified", verify = function(req)
    log.info("verify writes")
    db.use("crm").exec("INSERT INTO notes (who) VALUES ('verify')")
    return true
  end } },
  run = function() return "ok" end,
}""",
}


@test
def a_write_outside_a_run_carries_no_run_origin_even_committed_with_a_runs_write():
    url = pg.new_database()
    pg.sql("CREATE TABLE notes (who TEXT, origin TEXT); "
           "CREATE FUNCTION note_origin() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
           "NEW.origin := NULLIF(current_setting('rill.origin', true), ''); RETURN NEW; END $$; "
           "CREATE TRIGGER note_origin BEFORE INSERT ON notes FOR EACH ROW EXECUTE FUNCTION note_origin()", url)
    holder = subprocess.Popen(["psql", "-X", "-q", url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    threads = []
    try:
        holder.stdin.write("SELECT pg_advisory_lock(43);\n")
        holder.stdin.flush()
        wait_until(lambda: pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 43 "
                                  "AND granted", url) == "1", 10, "the test's lock")
        with Rill(ORIGIN_FLOWS, env={"CRM_URL": url}, config=ORIGIN_CONFIG) as r:
            def post(path):
                t = threading.Thread(target=r.request, args=("POST", path, {}))
                t.start()
                threads.append(t)
            post("/hooks/block")
            wait_until(lambda: pg.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                      "AND datname = current_database()", url) == "1", 10, "the pool held")
            # both inserts wait for the one connection: they go out together
            post("/hooks/write")
            r.wait_log(msg="run writes")
            post("/hooks/verified")
            r.wait_log(msg="verify writes")
            holder.stdin.write("SELECT pg_advisory_unlock(43);\n")
            holder.stdin.flush()
            for t in threads:
                t.join(30)
            rows = dict(tuple(line.split("|")) for line in pg.sql("SELECT who, origin FROM notes", url).splitlines())
    finally:
        holder.stdin.close()
        holder.wait(10)
    eq(sorted(rows), ["run", "verify"], "both inserts")
    eq(rows["verify"], "", "the verify's insert: no origin")
    eq(rows["run"].split(" ")[1:], ["0", "write"], "the run's insert: its origin (id, depth, chain)")


@test
def a_verify_function_may_write_in_a_transaction_on_postgres():
    url = pg.new_database()
    pg.sql("CREATE TABLE notes (who TEXT)", url)
    flow = """
return {
  triggers = { webhook { path = "/hooks/tx", verify = function(req)
    db.use("crm").tx(function() db.use("crm").exec("INSERT INTO notes (who) VALUES ('verify')") end)
    return true
  end } },
  run = function() return "ok" end,
}"""
    with Rill({"tx.lua": flow}, env={"CRM_URL": url}, config=CONFIG) as r:
        res = r.request("POST", "/hooks/tx", {})
        eq(res.status, 200, f"answer ({res.body}, {[l.get('error') for l in r.log_lines(level='error')]})")
    eq(pg.sql("SELECT who FROM notes", url), "verify", "the verify's write")


@test
def db_apply_on_postgres_sends_each_statement_alone():
    url = pg.new_database()
    d = temp_dir()
    with open(f"{d}/rill.lua", "w") as f:
        f.write('return { databases = { main = "env:APP_URL" } }')
    with open(f"{d}/schema.sql", "w") as f:
        f.write("CREATE TABLE t (a INT);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n")
    code, out, err = run_cli("db", "apply", "--config", "rill.lua", "schema.sql", env={"APP_URL": url}, cwd=d)
    eq((code, err), (0, ""), "db apply")
    eq(pg.sql("SELECT indexname FROM pg_indexes WHERE tablename = 't'", url), "t_a", "the index")


if __name__ == "__main__":
    main()
