"""Durable steps and sleeps on the Postgres store: every test of
test_steps.py, each on an empty database of a throwaway Postgres."""
import test_steps
from lib.harness import Postgres, main

pg = Postgres()
test_steps.store = lambda: {"RILL_STORE": pg.new_database()}

if __name__ == "__main__":
    main()
