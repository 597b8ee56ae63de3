"""The db module end to end: flows querying the embedded SQLite database
(main) and a real Postgres (crm, its URL from the environment): typed rows,
NULL, affected counts, transactions committed and rolled back (also when a
run is killed inside one), errors at the flow's line, a pool under load."""
import json
import threading
import time

from lib.harness import Postgres, Rill, eq, main, test, wait_until

pg = Postgres()

CONFIG = """return { databases = { main = "sqlite:data/app.db", crm = "env:CRM_URL" }, db_pool = 4 }"""

SQL = """
return {
  deadline = "10s",
  triggers = { webhook { path = "/sql" } },
  run = function(ctx)
    local d = db.use(ctx.payload.db)
    local out = {}
    for i, step in ipairs(ctx.payload.steps) do
      local ok, res = pcall(d[step[1]], step[2], unpack(step, 3))
      if not ok then out[i] = { error = res }
      elseif type(res) == "table" then
        for _, row in ipairs(res) do
          for k, v in pairs(row) do if v == db.null then row[k] = "NULL" end end
        end
        out[i] = res
      else out[i] = res end
    end
    return out
  end,
}"""

TX = """
return {
  deadline = "1s",
  triggers = { webhook { path = "/tx" } },
  run = function(ctx)
    local d = db.use(ctx.payload.db)
    local mode = ctx.payload.mode
    local ok, err = pcall(d.tx, function()
      d.exec("INSERT INTO t (k, n) VALUES ($1, $2)", mode, 1)
      if mode == "fail" then error("changed my mind") end
      if mode == "nested" then d.tx(function() end) end
      if mode == "hang" then sleep(5) end
      if mode == "savepoint" then d.exec("SAVEPOINT s") end
      if mode == "caught" or mode == "savepoint" then pcall(d.query, "SELECT * FROM missing") end
      if mode == "savepoint" then d.exec("ROLLBACK TO SAVEPOINT s") end
      if mode == "lost" then
        pcall(d.query, "SELECT pg_terminate_backend(pg_backend_pid())")
        d.exec("INSERT INTO t (k, n) VALUES ('after-loss', 2)")
      end
      return "done"
    end)
    return { ok = ok, err = not ok and tostring(err) or nil, rows = d.query("SELECT k FROM t ORDER BY k") }
  end,
}"""


BAD = """
return {
  triggers = { webhook { path = "/bad" } },
  run = function(ctx)
    local rows = db.use("crm").query("SELECT * FROM missing")
    return rows
  end,
}"""


COLS = """
return {
  triggers = { webhook { path = "/cols" } },
  run = function(ctx)
    local d = db.use(ctx.payload.db)
    d.exec("CREATE TABLE IF NOT EXISTS quotes (id INTEGER, amount INTEGER, note TEXT)")
    d.exec("DELETE FROM quotes")
    d.exec("INSERT INTO quotes (id, amount, note) VALUES (1, 12000, NULL)")
    local q = d.query("SELECT id, amount, note FROM quotes WHERE id = $1", 1)[1]
    local _, typo = pcall(function() return q.amout end)
    local j = d.query("SELECT q.id, q.amount AS total FROM quotes q JOIN quotes p ON p.id = q.id")[1]
    local _, joined = pcall(function() return j.amount end)
    local n = 0
    for _ in pairs(q) do n = n + 1 end
    return { typo = typo, joined = joined, amount = q.amount, null_is_null = q.note == db.null,
             json = json.encode(q), pairs = n, plain = db.plain(q), raw = rawget(q, "amout") == nil }
  end,
}"""


def sql(r, dbname, *steps):
    res = r.request("POST", "/sql", {"db": dbname, "steps": [list(s) for s in steps]})
    eq(res.status, 200, f"status ({res.body})")
    return res.json()


def rill():
    return Rill({"sql.lua": SQL, "tx.lua": TX, "cols.lua": COLS}, env={"CRM_URL": pg.new_database()}, config=CONFIG)


@test
def a_row_knows_its_columns_on_sqlite_and_postgres():
    """issue 15: a column the query did not return is an error naming the
    table and the columns it has, not nil; NULL is still db.null, and the
    row encodes and iterates as before."""
    with rill() as r:
        for dbname in ("main", "crm"):
            res = r.request("POST", "/cols", {"db": dbname})
            eq(res.status, 200, f"{dbname}: status ({res.body})")
            out = res.json()
            assert out["typo"].endswith("quotes row has no column amout (columns: id, amount, note)"), out
            assert out["typo"].startswith(r.flows_dir + "/cols.lua:10: "), out
            assert out["joined"].endswith("row has no column amount (columns: id, total)"), out
            eq(out["amount"], 12000, f"{dbname}: a column read")
            eq(out["null_is_null"], True, f"{dbname}: a NULL column reads db.null, no error")
            eq(json.loads(out["json"]), {"id": 1, "amount": 12000, "note": None}, f"{dbname}: json.encode(row)")
            eq(out["pairs"], 3, f"{dbname}: pairs sees the columns")
            eq(out["plain"], {"id": 1, "amount": 12000}, f"{dbname}: db.plain")
            eq(out["raw"], True, f"{dbname}: rawget reads without the check")


@test
def rows_are_typed_on_sqlite_and_postgres():
    with rill() as r:
        for dbname in ("main", "crm"):
            out = sql(r, dbname,
                      ("exec", "CREATE TABLE t (k TEXT, n INTEGER, f REAL, note TEXT)"),
                      ("exec", "INSERT INTO t (k, n, f, note) VALUES ($1, $2, $3, $4), ($5, $6, $7, NULL)",
                       "a", 1, 1.5, "x'; DROP TABLE t; --", "b", 2, 2.5),
                      ("query", "SELECT k, n, f, note FROM t WHERE n >= $1 ORDER BY k", 1),
                      ("exec", "UPDATE t SET n = n + 10"))
            eq(out[1], 2, f"{dbname}: rows inserted")
            eq(out[2], [{"k": "a", "n": 1, "f": 1.5, "note": "x'; DROP TABLE t; --"},
                        {"k": "b", "n": 2, "f": 2.5, "note": "NULL"}], f"{dbname}: rows")
            eq(out[3], 2, f"{dbname}: rows updated")


@test
def postgres_types_booleans_timestamps_and_json():
    with rill() as r:
        out = sql(r, "crm", ("query", "SELECT true AS yes, TIMESTAMPTZ '2026-11-25 09:30:00+01' AS at, "
                                      "'{\"a\": [1, 2]}'::jsonb AS doc, 12345678901::bigint AS big, "
                                      "1.25::numeric AS price, NULL::int AS nothing"))
        eq(out[0], [{"yes": True, "at": "2026-11-25T08:30:00Z", "doc": {"a": [1, 2]}, "big": 12345678901,
                     "price": 1.25, "nothing": "NULL"}], "row")


EXACT = """
return {
  triggers = { webhook { path = "/exact" } },
  run = function(ctx)
    -- each value as its Lua type and every digit (JSON and tostring keep 14)
    local row, out = db.use(ctx.payload.db).query(ctx.payload.sql)[1], {}
    for k, v in pairs(row) do
      out[k] = type(v) == "number" and string.format("number %.17g", v) or (type(v) .. " " .. tostring(v))
    end
    return out
  end,
}"""


@test
def integers_past_2_to_the_53_and_long_decimals_keep_every_digit():
    # a double holds integers up to 2^53 and 15 significant decimal digits:
    # beyond, values come back as their exact text
    with Rill({"exact.lua": EXACT}, env={"CRM_URL": pg.new_database()}, config=CONFIG) as r:
        res = r.request("POST", "/exact", {"db": "crm", "sql":
                        "SELECT 9007199254740992::bigint AS edge, 9007199254740993::bigint AS past, "
                        "(-9223372036854775808)::bigint AS least, 12345678901234567.891::numeric AS long, "
                        "123456789012345::numeric AS fits, 0.1::numeric AS tenth"})
        eq(res.json(), {"edge": "number 9007199254740992", "past": "string 9007199254740993",
                        "least": "string -9223372036854775808", "long": "string 12345678901234567.891",
                        "fits": "number 123456789012345", "tenth": "number 0.10000000000000001"}, "postgres row")
        res = r.request("POST", "/exact", {"db": "main", "sql":
                        "SELECT 9007199254740992 AS edge, 9007199254740993 AS past, -9223372036854775808 AS least"})
        eq(res.json(), {"edge": "number 9007199254740992", "past": "string 9007199254740993",
                        "least": "string -9223372036854775808"}, "sqlite row")


@test
def transactions_commit_or_roll_back():
    with rill() as r:
        for dbname in ("main", "crm"):
            sql(r, dbname, ("exec", "CREATE TABLE t (k TEXT, n INTEGER)"))
            res = r.request("POST", "/tx", {"db": dbname, "mode": "ok"}).json()
            eq((res["ok"], [x["k"] for x in res["rows"]]), (True, ["ok"]), f"{dbname}: committed")
            res = r.request("POST", "/tx", {"db": dbname, "mode": "fail"}).json()
            assert not res["ok"] and "changed my mind" in res["err"], res
            eq([x["k"] for x in res["rows"]], ["ok"], f"{dbname}: rolled back")
            res = r.request("POST", "/tx", {"db": dbname, "mode": "nested"}).json()
            assert "already in a transaction" in res["err"], res
            eq([x["k"] for x in res["rows"]], ["ok"], f"{dbname}: nested refused, rolled back")


@test
def a_transaction_an_error_aborted_is_never_reported_committed():
    """Postgres aborts a transaction at its first error, and answers its
    COMMIT with ROLLBACK, no error: db.tx raises then, naming the error, even
    when the flow caught it. A savepoint the flow rolled back to recovers it;
    on SQLite a failed statement ends only itself."""
    with rill() as r:
        for dbname in ("main", "crm"):
            sql(r, dbname, ("exec", "CREATE TABLE t (k TEXT, n INTEGER)"))
            res = r.request("POST", "/tx", {"db": dbname, "mode": "caught"}).json()
            if dbname == "crm":
                # before: ok = true, and nothing committed
                assert res["ok"] is False, res
                assert "the transaction was rolled back, not committed: a statement in it failed" in res["err"], res
                assert 'relation "missing" does not exist' in res["err"], res
                eq(len(res["rows"]), 0, "crm: rows committed")
            else:
                eq((res["ok"], [x["k"] for x in res["rows"]]), (True, ["caught"]), "main: committed")
            sql(r, dbname, ("exec", "DELETE FROM t"))
            res = r.request("POST", "/tx", {"db": dbname, "mode": "savepoint"}).json()
            eq((res["ok"], [x["k"] for x in res["rows"]]), (True, ["savepoint"]), f"{dbname}: recovered, committed")


@test
def a_transaction_whose_connection_is_lost_fails_and_commits_nothing():
    with rill() as r:
        sql(r, "crm", ("exec", "CREATE TABLE t (k TEXT, n INTEGER)"))
        res = r.request("POST", "/tx", {"db": "crm", "mode": "lost"}).json()
        assert not res["ok"] and "connection lost" in res["err"], res
        eq(len(res["rows"]), 0, "rows committed, even after the loss")
        res = r.request("POST", "/tx", {"db": "crm", "mode": "ok"}).json()
        eq((res["ok"], [x["k"] for x in res["rows"]]), (True, ["ok"]), "the next transaction")


@test
def a_run_killed_inside_a_transaction_rolls_it_back():
    with rill() as r:
        for dbname in ("main", "crm"):
            sql(r, dbname, ("exec", "CREATE TABLE t (k TEXT, n INTEGER)"))
            res = r.request("POST", "/tx", {"db": dbname, "mode": "hang"})
            eq(res.status, 504, f"{dbname}: the run passed its deadline")
            out = sql(r, dbname, ("query", "SELECT count(*) AS n FROM t"), ("exec", "INSERT INTO t VALUES ('after', 1)"))
            eq(out, [[{"n": 0}], 1], f"{dbname}: rolled back, and the database still writable")
            res = r.request("POST", "/tx", {"db": dbname, "mode": "ok"}).json()
            eq(res["ok"], True, f"{dbname}: a transaction after that one")


@test
def errors_name_the_database_the_reason_and_the_flow_line():
    with rill() as r:
        out = sql(r, "crm", ("query", "SELECT * FROM missing"), ("query", "SELECT $1", {"a": 1}))
        assert "db crm:" in out[0]["error"] and 'relation "missing" does not exist' in out[0]["error"], out
        assert "db crm: a parameter must be" in out[1]["error"], out
        r.write_flow("bad.lua", BAD)
        wait_until(lambda: r.request("POST", "/bad", {}).status == 500, 10, "the flow to load and fail")
        r.wait_log(msg_has='run failed: ' + r.flows_dir + '/bad.lua:5: db crm: ERROR:  relation "missing"')
        out = sql(r, "main", ("query", "SELECT * FROM missing"))
        assert "db main:" in out[0]["error"] and "no such table: missing" in out[0]["error"], out
        res = r.request("POST", "/sql", {"db": "nope", "steps": []})
        eq(res.status, 500, "an unknown database fails the run")
        r.wait_log(msg_has='no database "nope" (databases: crm, main)')
        # rill's own store is not a flows' database (it was "rill": any flow
        # read every run, and stored runs that skipped a webhook's verify)
        eq(r.request("POST", "/sql", {"db": "rill", "steps": []}).status, 500, "the store as db.use('rill')")
        r.wait_log(msg_has='no database "rill" (databases: crm, main)')


@test
def many_runs_share_the_postgres_pool():
    with rill() as r:
        sql(r, "crm", ("exec", "CREATE TABLE hits (i INTEGER)"))
        errors = []

        def hit(i):
            out = sql(r, "crm", ("exec", "INSERT INTO hits VALUES ($1)", i),
                      ("query", "SELECT pg_sleep(0.05), count(*) AS n FROM hits"))
            if not isinstance(out[0], int):
                errors.append(out)

        threads = [threading.Thread(target=hit, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        eq(errors, [], "errors")
        eq(sql(r, "crm", ("query", "SELECT count(*) AS n FROM hits"))[0], [{"n": 40}], "rows")
        conns = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
                       r.env["CRM_URL"])
        assert int(conns) <= 1 + 4 + 1, f"connections: {conns} (pool of 4)"


TURN = """
return {
  deadline = "DEADLINE",
  triggers = { webhook { path = "/PATH" } },
  run = function(ctx)
    local d = db.use("crm")
    return d.tx(function()
      d.exec("INSERT INTO turns VALUES ($1)", ctx.payload.i)
      d.query("SELECT pg_sleep(0.2)")
      return ctx.payload.i
    end)
  end,
}"""


@test
def transactions_beyond_the_pool_wait_in_line_and_one_stopped_in_line_blocks_nobody():
    with rill() as r:
        r.write_flow("turn.lua", TURN.replace("DEADLINE", "10s").replace("PATH", "turn"))
        r.write_flow("hasty.lua", TURN.replace("DEADLINE", "0.3s").replace("PATH", "hasty"))
        r.wait_log(msg="flow loaded", file=f"{r.flows_dir}/hasty.lua")
        sql(r, "crm", ("exec", "CREATE TABLE turns (i INTEGER)"))
        out = {}

        def go(path, i):
            out[i] = r.request("POST", path, {"i": i})

        threads = [threading.Thread(target=go, args=("/turn", i)) for i in range(12)]
        for t in threads:
            t.start()
        # the pool of 4 is busy and 8 wait: the hasty ones join the end of the line
        wait_until(lambda: r.metric('rill_db_pool_waiting{database="crm"}') == 8, 10, "8 transactions in line")
        hasty = [threading.Thread(target=go, args=("/hasty", 100 + i)) for i in range(2)]
        for t in hasty:
            t.start()
        for t in threads + hasty:
            t.join()
        eq(sorted(i for i in range(12) if out[i].status == 200), list(range(12)), "every patient transaction ran")
        eq([out[100].status, out[101].status], [504, 504], "the hasty runs ran out of time waiting in line")
        rows = sql(r, "crm", ("query", "SELECT count(*) AS n FROM turns WHERE i < 100"))[0]
        eq(rows, [{"n": 12}], "rows of the patient transactions")
        eq(r.request("POST", "/turn", {"i": 50}).status, 200, "a transaction after them")


if __name__ == "__main__":
    main()
