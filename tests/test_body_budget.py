"""The webhook listener's budget of request bodies (issue 13): the bytes of
bodies being received, and of requests buffered behind one in flight, are
C memory outside process_memory_limit. max_bodies_in_flight bounds them for
the whole listener: a body that would take the total past it is answered
503 with Retry-After and closed, and every byte is given back when the body
goes to the flow, or its connection ends, however it ends."""
import socket
import struct

from lib.harness import Rill, eq, main, test, wait_until

FLOWS = {
    "slow.lua": """
return {
  deadline = "20s",
  triggers = { webhook { path = "/hooks/slow" } },
  run = function(ctx) sleep(ctx.payload.s) return {} end,
}""",
    "count.lua": """
return {
  triggers = { webhook { path = "/hooks/count" } },
  run = function(ctx) return { n = #(ctx.payload.pad or "") } end,
}""",
}

HEAD = b"POST /hooks/count HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


def in_flight(r):
    """The listener's body bytes in flight, as /metrics says."""
    return r.metric('rill_http_bodies_in_flight_bytes{listener="webhooks"}')


def refused(r):
    return r.metric('rill_http_refused_total{listener="webhooks",reason="max_bodies_in_flight"}') or 0


def body_of(n):
    """A JSON body of exactly n bytes (n >= 10) whose pad the flow counts."""
    return b'{"pad":"' + b"p" * (n - 10) + b'"}'


def begin(r, length, sent, chunked=False):
    """A connection whose request declares length bytes (or is chunked with
    one chunk of that size) and sends the first `sent` of them."""
    s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
    if chunked:
        s.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % length + b"p" * sent)
    else:
        s.sendall(HEAD + b"Content-Length: %d\r\n\r\n" % length + body_of(length)[:sent])
    return s


def slow_request(seconds):
    """A request to the flow that sleeps: in flight that long."""
    body = b'{"s":%d}' % seconds
    return (b"POST /hooks/slow HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def hold(r, n):
    """A connection holding exactly n bytes of a chunked body it never
    finishes (its one chunk is declared 2 MiB long)."""
    return begin(r, 0x200000, n, chunked=True)


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def answer(s):
    """(status, headers, body) of the next answer on s: a socket read for
    one answer, or its makefile("rb") for several (it reads ahead)."""
    f = s.makefile("rb") if isinstance(s, socket.socket) else s
    status = int(f.readline().split(b" ")[1])
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, f.read(int(headers.get("content-length", "0"))).decode()


def closed_by_rill(s):
    """True once rill closed s (EOF or reset), reading what it still sends."""
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return True


@test
def unfinished_bodies_past_max_bodies_in_flight_are_refused_503_and_the_rest_still_flows():
    # 4 MiB for the listener: four senders of 1,000,000-byte bodies that
    # never send the last byte hold 3,999,996 of it; a fifth is refused
    # where its bytes cross the budget, a small body still fits, and
    # /healthz (its own listener) answers
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "4MiB"}) as r:
        holders = [begin(r, 1_000_000, 999_999) for _ in range(4)]
        wait_until(lambda: in_flight(r) == 3_999_996, 20, "3,999,996 bytes in flight")
        fifth = begin(r, 1_000_000, 0)
        try:
            fifth.sendall(body_of(1_000_000))
        except (ConnectionResetError, BrokenPipeError):
            pass
        status, headers, body = answer(fifth)
        eq(status, 503, f"the fifth body's status ({body})")
        assert "max_bodies_in_flight" in body, body
        assert int(headers.get("retry-after", "0")) > 0, headers
        eq(headers.get("connection"), "close", "connection")
        assert closed_by_rill(fifth)
        fifth.close()
        eq(r.admin("GET", "/healthz", timeout=10).status, 200, "/healthz")
        small = r.request("POST", "/hooks/count", {"pad": "abc"}, timeout=10)
        eq((small.status, small.json()), (200, {"n": 3}), "a small body that fits")
        wait_until(lambda: refused(r) >= 1, 10, "the refusal counted")
        r.wait_log(msg_has="max_bodies_in_flight")
        # one sender finishes: its body goes to the flow and its bytes come back
        holders[0].sendall(body_of(1_000_000)[999_999:])
        status, _, body = answer(holders[0])
        eq((status, body), (200, '{"n":999990}'), "the finished body's answer")
        wait_until(lambda: in_flight(r) == 2_999_997, 10, "2,999,997 bytes in flight")
        again = begin(r, 1_000_000, 1_000_000)
        eq(answer(again)[0], 200, "a 1 MB body once there is room")
        again.close()
        reset(holders[1])
        holders[2].close()
        holders[3].shutdown(socket.SHUT_WR)
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once the senders are gone")
        for s in holders:
            s.close()


@test
def a_declared_length_takes_nothing_from_the_budget_before_its_bytes_arrive():
    # 40 connections declaring 1 MB bodies and sending none: were a
    # Content-Length reserved at the headers, 40 header lines (no bandwidth)
    # would hold a 4 MiB budget until request_timeout and every webhook with
    # a body would get 503 meanwhile
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "4MiB"}) as r:
        idle = [begin(r, 1_000_000, 0) for _ in range(40)]
        wait_until(lambda: r.metric('rill_http_connections{listener="webhooks"}') >= 40, 20, "40 connections open")
        eq(in_flight(r), 0, "bytes in flight with only headers received")
        s = begin(r, 1_000_000, 1_000_000)
        status, _, body = answer(s)
        eq((status, body), (200, '{"n":999990}'), "a whole 1 MB body meanwhile")
        s.close()
        half = [begin(r, 1_000_000, 100_000) for _ in range(3)]
        wait_until(lambda: in_flight(r) == 300_000, 10, "what arrived is what counts")
        for x in idle + half:
            x.close()
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once they are gone")
        eq(refused(r), 0, "refusals")


@test
def a_chunked_body_is_counted_as_it_arrives_and_refused_where_it_crosses_the_budget():
    # 3.5 MiB, 3,000,000 of it held: a chunk declared 256 MiB long is not
    # refused for what it declares but for what arrives, once it crosses
    # the 670,016 bytes left (before max_body, 1 MiB, would cut it)
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "3.5MiB"}) as r:
        holders = [hold(r, 1_000_000) for _ in range(3)]
        wait_until(lambda: in_flight(r) == 3_000_000, 20, "3,000,000 bytes in flight")
        big = begin(r, 0x10000000, 0, chunked=True)
        try:
            big.sendall(b"p" * 600_000)
            wait_until(lambda: in_flight(r) == 3_600_000, 10, "the chunk's 600,000 bytes counted")
            big.sendall(b"p" * 200_000)
        except (ConnectionResetError, BrokenPipeError):
            pass
        status, headers, body = answer(big)
        eq(status, 503, f"the chunked body's status ({body})")
        assert "max_bodies_in_flight" in body, body
        assert "retry-after" in headers, headers
        big.close()
        wait_until(lambda: in_flight(r) == 3_000_000, 10, "the refused body's bytes given back")
        s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        s.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"pad\r\n7\r\n\":\"ab\"}\r\n0\r\n\r\n")
        eq(answer(s)[:3:2], (200, '{"n":2}'), "a small chunked body")
        s.close()
        for h in holders:
            reset(h)
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once the senders are gone")


@test
def the_bodies_in_flight_come_back_to_0_however_their_connections_end():
    # every way a body can end, at once, many times: the total must never
    # drift (a leak would refuse every body once the budget is spent)
    with Rill(FLOWS) as r:
        socks = []
        for i in range(20):
            done = begin(r, 200_000, 200_000)  # answered, then kept open, idle
            eq(answer(done)[0], 200, "a whole body")
            socks.append(done)
            reset(begin(r, 300_000, 100_000 + i))  # reset mid-body
            begin(r, 300_000, 150_000).close()  # closed mid-body
            reset(begin(r, 0x100000, 50_000, chunked=True))  # chunked, reset mid-chunk
            # two pipelined requests, the second cut in its body
            p = socket.create_connection(("127.0.0.1", r.port), timeout=30)
            one = HEAD + b"Content-Length: 100000\r\n\r\n" + body_of(100_000)
            p.sendall(one + one[:60_000])
            eq(answer(p)[0], 200, "the first pipelined request")
            p.close() if i % 2 else reset(p)
            socks.append(begin(r, 500_000, 1000 * i))  # still sending
        wait_until(lambda: in_flight(r) == sum(1000 * i for i in range(20)), 20,
                   "what arrived of the 20 bodies still being sent")
        for s in socks:
            s.close()
        wait_until(lambda: in_flight(r) == 0, 20, "nothing in flight once every connection is gone")
        eq(refused(r), 0, "refusals under the default budget")
        res = r.request("POST", "/hooks/count", {"pad": "x" * 1000}, timeout=10)
        eq(res.status, 200, "a webhook after it all")
        assert not [l for l in r.logs if "Sanitizer" in str(l)], "a sanitizer reported an error"


@test
def with_the_budget_spent_pipelined_requests_are_not_kept_and_answered_once_there_is_room():
    # four bodies of max_body hold the whole budget: of requests a client
    # pipelines in one read, the first is answered and the rest, which
    # would be held past the budget, are dropped with the connection (the
    # client sends them again); once there is room, all are answered in order
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "4MiB"}) as r:
        holders = [hold(r, 1024 * 1024) for _ in range(4)]
        wait_until(lambda: in_flight(r) == 4 * 1024 * 1024, 20, "the whole budget in flight")
        get = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        pipelined = get * 50 + HEAD + b"Content-Length: 12\r\n\r\n" + body_of(12)
        s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        s.sendall(pipelined)
        eq(answer(s)[0], 404, "the first GET")
        assert closed_by_rill(s)
        s.close()
        wait_until(lambda: refused(r) >= 1, 10, "the refusal counted")
        eq(in_flight(r), 4 * 1024 * 1024, "bytes in flight")
        for h in holders:
            reset(h)
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once the senders are gone")
        s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        s.sendall(pipelined)
        f = s.makefile("rb")
        for i in range(50):
            eq(answer(f)[0], 404, f"pipelined GET {i}")
        eq(answer(f)[:3:2], (200, '{"n":2}'), "the pipelined body")
        s.close()
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight at the end")
        assert not [l for l in r.logs if "Sanitizer" in str(l)], "a sanitizer reported an error"


@test
def a_connection_with_a_request_in_flight_reads_nothing_past_a_spent_budget():
    # what a client sends behind a request in flight is buffered: once the
    # others have spent the budget, not one more byte of it is read (it
    # waits in the kernel, the client is held back by TCP)
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "4MiB"}) as r:
        x = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        x.sendall(slow_request(5))
        wait_until(lambda: r.metric("rill_runs_running") == 1, 20, "the slow request in flight")
        holders = [hold(r, 1024 * 1024) for _ in range(4)]
        wait_until(lambda: in_flight(r) == 4 * 1024 * 1024, 20, "the whole budget in flight")
        x.sendall(HEAD + b"Content-Length: 150000\r\n\r\n" + body_of(150_000))
        wait_until(lambda: refused(r) >= 1, 20, "reading the connection held back")
        eq(in_flight(r), 4 * 1024 * 1024, "bytes in flight once it is held back")
        # (still in flight: else the POST was parsed and refused, which proves nothing here)
        eq(r.metric("rill_runs_running"), 1, "the slow request still in flight")
        reset(x)
        for h in holders:
            reset(h)
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once the clients are gone")


@test
def requests_pipelined_in_the_read_of_one_in_flight_past_a_spent_budget_are_not_kept():
    # one read brings a request and, behind it, 60 KB of the next: the
    # first is dispatched, and the rest, past the budget, was kept all the
    # same (a read per connection over the budget). Now it is dropped and
    # the answer in flight closes the connection: the client sends it again
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "4MiB"}) as r:
        budget = 4 * 1024 * 1024
        holders = [hold(r, 1024 * 1024) for _ in range(3)] + [hold(r, 1024 * 1024 - 100)]
        wait_until(lambda: in_flight(r) == budget - 100, 20, "all but 100 bytes of the budget in flight")
        x = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        x.sendall(slow_request(3) + HEAD + b"Content-Length: 60000\r\n\r\n" + body_of(60_000))
        wait_until(lambda: refused(r) >= 1, 20, "the pipelined bytes held back")
        got = in_flight(r)
        assert got <= budget, f"{got} bytes in flight, over the budget ({budget})"
        # (still in flight: else the POST was parsed and refused, which proves nothing here)
        eq(r.metric("rill_runs_running"), 1, "the slow request still in flight")
        status, headers, _ = answer(x)
        eq((status, headers.get("connection")), (200, "close"), "the answer in flight, closing")
        assert closed_by_rill(x)
        x.close()
        for h in holders:
            reset(h)
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once the clients are gone")


@test
def a_request_timed_out_mid_body_gives_its_body_back_with_its_408():
    # the 408 used to leave the body with its connection while it lingered
    # (up to 2 s, or until the client's EOF): released with the answer now
    with Rill(FLOWS, env={"RILL_REQUEST_TIMEOUT": "1s"}) as r:
        socks = [begin(r, 1_000_000, 600_000) for _ in range(5)]
        for s in socks:
            status, _, body = answer(s)
            eq(status, 408, f"status ({body})")
        # the clients are still connected, sending nothing: rill holds nothing for them
        eq(in_flight(r), 0, "bytes in flight right after the 408s")
        for s in socks:
            s.close()


@test
def a_request_parsed_from_the_pipelined_bytes_is_not_charged_twice():
    # a 1 MiB budget; a client sends a slow request and, behind it, a POST
    # with a 600,000-byte body: those bytes are held (pending) while the
    # first is in flight, and fit. Parsed from there, they used to be
    # charged again as they moved to the body (600,000 held, 1,200,000
    # counted) and the POST was refused 503, although a direct parse of the
    # same bytes passes. Once all is answered the total is 0 again, not
    # less (the bytes are given back once)
    with Rill(FLOWS, env={"RILL_MAX_BODIES_IN_FLIGHT": "1MiB"}) as r:
        post = HEAD + b"Content-Length: 600000\r\n\r\n" + body_of(600_000)
        s = socket.create_connection(("127.0.0.1", r.port), timeout=30)
        s.sendall(slow_request(3) + post)
        wait_until(lambda: in_flight(r) == len(post), 20, "the POST held behind the slow request")
        eq(r.metric("rill_runs_running"), 1, "the slow request still in flight")
        f = s.makefile("rb")
        eq(answer(f)[0], 200, "the slow request")
        status, _, body = answer(f)
        eq((status, body), (200, '{"n":599990}'), "the POST parsed from the pipelined bytes")
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight once both are answered")
        # the same again on the same connection, and a direct one: the budget is whole
        s.sendall(slow_request(1) + post)
        eq(answer(f)[0], 200, "the second slow request")
        eq(answer(f)[:3:2], (200, '{"n":599990}'), "the second POST")
        wait_until(lambda: in_flight(r) == 0, 10, "nothing in flight at the end")
        eq(refused(r), 0, "refusals")
        s.close()


if __name__ == "__main__":
    main()
