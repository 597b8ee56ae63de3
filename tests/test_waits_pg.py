"""Waits, events, chains and versions on the Postgres store: every test of
test_waits.py, each on an empty database of a throwaway Postgres."""
import test_waits
from lib.harness import Postgres, main

pg = Postgres()
test_waits.store = lambda: {"RILL_STORE": pg.new_database()}

if __name__ == "__main__":
    main()
