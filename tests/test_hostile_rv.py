"""Hostile flows found by the review of issues 13 and 14 (tests/hostile/rv_*.lua):
memory a run leaves behind outside the Lua heap once it has ended."""
import os
import shutil

from lib.harness import Rill, eq, main, temp_dir, test, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
HOSTILE = os.path.join(HERE, "hostile")
RSS_BACK_MB = 64  # like test_hostile.py: RSS comes back within this of where it started


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


@test
def a_big_json_encode_gives_its_c_buffer_back():
    name = "rv_json_encode_keeps_buffer"
    with open(os.path.join(HOSTILE, name + ".lua")) as f:
        src = f.read()
    with Rill({name + ".lua": src}) as r:
        base = rss_mb(r.proc.pid)
        res = r.request("POST", "/hooks/" + name, b"{}", {"Content-Type": "application/json"}, timeout=60)
        eq(res.status, 200, f"status ({res.body[:200]!r})")
        eq(res.json(), 180000002, "the encoded length")
        # liveness bound only: the C buffer is released by the call itself
        wait_until(lambda: rss_mb(r.proc.pid) < base + RSS_BACK_MB, 30,
                   f"RSS back under {base + RSS_BACK_MB:.0f} MB (started at {base:.0f})")


if __name__ == "__main__":
    main()
