"""Event triggers on Postgres: every test of test_events.py (registered when
it is imported) against a real Postgres server, one empty database per test."""
import test_events
from lib.harness import Postgres, main

pg = Postgres()
test_events.new_store = pg.new_database

if __name__ == "__main__":
    main()
