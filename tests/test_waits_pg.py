"""Waits, events, chains and versions on the Postgres store: every test of
test_waits.py, each on an empty database of a throwaway Postgres."""
import subprocess

import test_waits
from lib.harness import Postgres, Rill, eq, main, test, wait_until
from test_waits import QUOTE, SIGNED, result

pg = Postgres()
test_waits.store = lambda: {"RILL_STORE": pg.new_database()}


# Two locks the test holds to stop each side of a race at the worst moment:
# a run's parking (its UPDATE to 'waiting') and an event's delivery (its
# UPDATE to delivered = 1), each just before its transaction commits.
HOLD_TRIGGERS = """
CREATE FUNCTION hold_parking() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  IF OLD.state = 'running' AND NEW.state = 'waiting' THEN PERFORM pg_advisory_xact_lock(42, 1); END IF;
  RETURN NEW; END $$;
CREATE TRIGGER hold_parking BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION hold_parking();
CREATE FUNCTION hold_delivery() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  IF NEW.delivered = 1 THEN PERFORM pg_advisory_xact_lock(42, 2); END IF;
  RETURN NEW; END $$;
CREATE TRIGGER hold_delivery BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION hold_delivery();
"""


@test
def an_event_delivered_by_another_instance_while_the_run_parks_wakes_it():
    url = pg.new_database()
    flows = {"quote.lua": QUOTE, "signed.lua": SIGNED}
    with Rill(flows, env={"RILL_STORE": url}) as a, Rill(flows, env={"RILL_STORE": url}) as b:
        pg.sql(HOLD_TRIGGERS, url)
        holder = subprocess.Popen(["psql", "-X", "-q", url], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                  text=True)
        try:
            def say(statement):
                holder.stdin.write(statement + "\n")
                holder.stdin.flush()

            def held():
                return int(pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 42 "
                                  "AND granted", url))

            def blocked():
                return int(pg.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                  "AND datname = current_database()", url))

            say("SELECT pg_advisory_lock(42, 1), pg_advisory_lock(42, 2);")
            wait_until(lambda: held() == 2, 10, "the test's locks")
            # instance a runs the quote to its wait; its parking is held back
            rid = a.request("POST", "/hooks/quote", {"id": 1}).json()["run_id"]
            wait_until(lambda: pg.sql("SELECT count(*) FROM run_waits", url) == "1" and blocked() == 1, 10,
                       "the wait registered and the parking held")
            # instance b stores the event and delivers it while the run is still 'running'
            eq(b.request("POST", "/hooks/signed", {"quote": 1, "by": "Ada"}, {"X-Delivery": "d1"}).status, 202,
               "event")
            wait_until(lambda: blocked() == 2, 10, "the delivery held before its commit")
            # the parking commits first, then the delivery
            say("SELECT pg_advisory_unlock(42, 1);")
            wait_until(lambda: result(a, rid)[0] == "waiting", 10, "the run parked")
            say("SELECT pg_advisory_unlock(42, 2);")
            wait_until(lambda: pg.sql("SELECT delivered FROM events", url) == "1", 10, "the event delivered")
            wait_until(lambda: result(a, rid)[0] == "succeeded", 10, "the run woken by its event")
            eq(result(a, rid)[1]["by"], "Ada", "the event's data")
        finally:
            holder.stdin.close()
            holder.wait(10)


if __name__ == "__main__":
    main()
