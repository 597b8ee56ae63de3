"""harness.py: end-to-end tests against a real, running rill.

A test is a function decorated with @test; main() runs them in order and
prints the closing line "N passed, N failed". Rill(...) starts `rill serve`
on a free loopback port with its own flows directory, collects its JSON log
lines, and stops it (checking it exits cleanly) when the `with` block ends.
"""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RILL = os.environ.get("RILL_BIN", os.path.join(ROOT, "build", "rill"))

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for fn in _tests:
        if only and fn.__name__ not in only:
            continue
        started = time.time()
        try:
            fn()
            passed += 1
            print(f"ok   {fn.__name__} ({time.time() - started:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rss_mb(pid):
    """A process's resident memory in MB (VmRSS), 0 when /proc does not say."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0


def eq(actual, expected, what="value"):
    if actual != expected:
        raise AssertionError(f"{what}: got {actual!r}, expected {expected!r}")


def temp_dir(prefix="rill-test-"):
    """A temporary directory removed when the test process exits."""
    d = tempfile.mkdtemp(prefix=prefix)
    _temp_dirs.append(d)
    return d


_temp_dirs = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _temp_dirs])


def run_cli(*args, env=None, cwd=None, timeout=30):
    """Runs the rill binary; returns (exit code, stdout, stderr)."""
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([RILL, *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def serve_http(handler):
    """A local HTTP server answering with handler (a BaseHTTPRequestHandler
    class) on a free port, in a thread; .server_address[1] is its port."""
    import http.server
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def company_database(pg, config, env_var, tables, before_events=()):
    """A fresh database of pg with the company's schema and demo data (rill
    db apply) and rill's event capture on tables (rill db install-events),
    and a directory holding config as rill.lua, whose main database is
    env:ENV_VAR. before_events: SQL run between the two. Returns (url, dir)."""
    url, d = pg.new_database(), temp_dir()
    with open(os.path.join(d, "rill.lua"), "w") as f:
        f.write(config)
    env = {env_var: url}
    db = os.path.join(ROOT, "db")
    code, out, err = run_cli("db", "apply", "--config", "rill.lua", f"{db}/schema.postgres.sql",
                             f"{db}/demo.sql", f"{db}/demo-sequences.postgres.sql", env=env, cwd=d, timeout=60)
    eq(code, 0, f"db apply ({err})")
    for statement in before_events:
        pg.sql(statement, url)
    code, out, err = run_cli("db", "install-events", "--config", "rill.lua", *tables, env=env, cwd=d, timeout=60)
    eq(code, 0, f"install-events ({err})")
    return url, d


def repo_flows():
    """The repository's flows/*.lua and their shared modules (lib/*.lua),
    {file name: source} (test files are not flows)."""
    out = repo_lib()
    for name in sorted(os.listdir(os.path.join(ROOT, "flows"))):
        if name.endswith(".lua") and not name.endswith(".test.lua"):
            with open(os.path.join(ROOT, "flows", name)) as f:
                out[name] = f.read()
    return out


def repo_lib():
    """The shared modules of the repository's flows, {"lib/NAME.lua": source}."""
    out = {}
    lib = os.path.join(ROOT, "flows", "lib")
    for name in sorted(os.listdir(lib)) if os.path.isdir(lib) else []:
        if name.endswith(".lua"):
            with open(os.path.join(lib, name)) as f:
                out["lib/" + name] = f.read()
    return out


class Postgres:
    """A throwaway Postgres server for this test process (tools/pg-sandbox.sh:
    a real server on loopback, its own cluster), stopped when the process
    exits. new_database() gives each test an empty database of its own."""

    def __init__(self):
        self.dir = os.path.join(temp_dir("rill-pg-"), "pg")
        p = subprocess.run([os.path.join(ROOT, "tools", "pg-sandbox.sh"), "start", self.dir],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError("cannot start Postgres: " + p.stderr)
        self.url = p.stdout.strip()
        self.count = 0
        atexit.register(self.stop)

    def sql(self, statement, url=None):
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url or self.url,
                            "-c", statement], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError(f"psql: {statement}: {p.stderr}")
        return p.stdout.strip()

    def new_database(self):
        self.count += 1
        name = f"t{self.count}"
        self.sql(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def pause(self):
        """Stops the server, its data kept: the store goes away."""
        subprocess.run([os.path.join(ROOT, "tools", "pg-sandbox.sh"), "pause", self.dir],
                       check=True, capture_output=True, timeout=60)

    def resume(self):
        """Starts the paused server again, on the same port."""
        subprocess.run([os.path.join(ROOT, "tools", "pg-sandbox.sh"), "resume", self.dir],
                       check=True, capture_output=True, timeout=60)

    def stop(self):
        subprocess.run([os.path.join(ROOT, "tools", "pg-sandbox.sh"), "stop", self.dir],
                       capture_output=True, timeout=60)


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


class Disconnected(http.client.RemoteDisconnected):
    """The connection closed without an answer, with what rill was doing."""


class Rill:
    """A running `rill serve` with the flows given as {filename: source}."""

    def __init__(self, flows=None, env=None, config=None, dir=None, preexec_fn=None):
        # dir: a directory kept across several Rill()s (a restart on the same
        # store, data/rill.db under it); by default a fresh one, removed after.
        self.own_dir = dir is None
        self.dir = dir or tempfile.mkdtemp(prefix="rill-test-")
        self.flows_dir = os.path.join(self.dir, "flows")
        os.makedirs(self.flows_dir, exist_ok=True)
        for name, src in (flows or {}).items():
            self.write_flow(name, src)
        self.port = free_port()
        # the admin listener on a port of its own, so that rills run side by side
        self.admin_port = free_port()
        self.env = dict(os.environ)
        self.env.pop("RILL_ADMIN_TOKEN", None)
        self.env.update({"RILL_LOG_FORMAT": "json", "RILL_LOG_LEVEL": "debug",
                         "RILL_RELOAD_DEBOUNCE": "0.05s", "RILL_ADMIN_LISTEN": f"127.0.0.1:{self.admin_port}"})
        self.env.update(env or {})
        self.config = config
        self.preexec_fn = preexec_fn  # runs in the child before rill (e.g. a lower RLIMIT_NOFILE)
        self.logs = []
        self._lock = threading.Lock()

    def write_flow(self, name, src):
        path = os.path.join(self.flows_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)  # lib/NAME.lua: a shared module
        tmp = path + ".tmp~"
        with open(tmp, "w") as f:
            f.write(src)
        os.rename(tmp, path)  # atomic, like an editor's save or a git checkout

    def remove_flow(self, name):
        os.remove(os.path.join(self.flows_dir, name))

    def __enter__(self):
        args = [RILL, "serve", "--flows", self.flows_dir, "--listen", f"127.0.0.1:{self.port}"]
        if self.config:
            cfg = os.path.join(self.dir, "rill.lua")
            with open(cfg, "w") as f:
                f.write(self.config)
            args += ["--config", cfg]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env, cwd=self.dir, text=True, preexec_fn=self.preexec_fn)
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        try:
            wait_until(self._up, 10, "rill to listen")
        except AssertionError:
            self.proc.kill()
            raise AssertionError("rill did not start:\n" + "\n".join(map(str, self.logs)))
        return self

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"rill exited with {self.proc.returncode}: {self.logs}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def _read_logs(self):
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"raw": line}
            with self._lock:
                self.logs.append(entry)

    def wait_exit(self, timeout, what="rill to exit"):
        """Waits for rill to exit, then for the reader to have taken its
        last lines (a test that looked at self.logs as soon as the process
        was gone could miss its last line on a loaded machine). Returns the
        exit code."""
        wait_until(lambda: self.proc.poll() is not None, timeout, what)
        self._reader.join(timeout=10)
        return self.proc.returncode

    def log_lines(self, **match):
        with self._lock:
            lines = list(self.logs)
        return [l for l in lines if all(
            (k == "msg_has" and v in l.get("msg", "")) or l.get(k) == v for k, v in match.items())]

    def wait_log(self, timeout=10.0, **match):
        def found():
            lines = self.log_lines(**match)
            if not lines and self.proc.poll() is not None:
                self._reader.join(timeout=10)  # its last lines, then look once more
                lines = self.log_lines(**match)
                if not lines:
                    raise AssertionError(f"rill exited with {self.proc.returncode} before a log line {match}; "
                                         "its last lines:\n" + "\n".join(map(str, self.logs[-10:])))
            return lines
        return wait_until(found, timeout, f"a log line {match}")[0]

    def reloads(self):
        return len(self.log_lines(msg="flows reloaded"))

    def wait_reload(self, after, timeout=10.0):
        wait_until(lambda: self.reloads() > after, timeout, "a reload")

    def admin(self, method, path, token=None, body=None, headers=None, timeout=30):
        """A request to the admin listener; token: the bearer token to send."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return self.request(method, path, body, h, timeout, port=self.admin_port)

    def metric(self, sample):
        """The value of one sample of /metrics, named as it is printed
        (name{labels}), or None when it is not there."""
        for line in self.admin("GET", "/metrics").body.splitlines():
            name, _, value = line.rpartition(" ")
            if name == sample:
                return float(value)
        return None

    def wait_ready(self, timeout=30.0):
        """Waits for /readyz to answer 200 (a loaded machine may take a while
        to open the store)."""
        wait_until(lambda: self.admin("GET", "/readyz").status == 200, timeout, "/readyz to answer 200")

    def request(self, method, path, body=None, headers=None, timeout=30, port=None):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
                headers = {"Content-Type": "application/json", **(headers or {})}
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
        except ConnectionRefusedError:
            # A refused connection means no socket listens on the port: rill
            # is gone, or going (its sockets close before the process is
            # reaped), or closed a listener it should not have. What a test
            # failing here needs to say is which, and rill's last lines.
            try:
                self.proc.wait(timeout=2)
                state = f"rill exited with {self.proc.returncode}"
            except subprocess.TimeoutExpired:
                state = f"rill is running but nothing listens on port {port or self.port}"
            with self._lock:
                tail = self.logs[-15:]
            raise AssertionError(f"{method} {path}: connection refused: {state}; its last lines:\n"
                                 + "\n".join(map(str, tail))) from None
        except http.client.RemoteDisconnected as e:
            # Some tests expect it (rill exiting with the request open): still
            # a RemoteDisconnected, saying whether rill is alive and its last lines
            code = self.proc.poll()
            with self._lock:
                tail = self.logs[-15:]
            raise Disconnected(f"{method} {path}: {e}: rill "
                               + ("is running" if code is None else f"exited with {code}")
                               + "; its last lines:\n" + "\n".join(map(str, tail))) from None
        finally:
            conn.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        """SIGKILL: the process dies with whatever it was doing."""
        self.proc.kill()
        self.proc.wait()

    def runs(self, *args):
        """`rill runs ARGS --json` on this instance's store: the parsed JSON."""
        code, out, err = run_cli("runs", *args, "--json", env=self.env, cwd=self.dir)
        if code != 0:
            raise AssertionError(f"rill runs {' '.join(args)} exited {code}: {err}")
        return json.loads(out)

    def runs_cli(self, *args):
        """`rill runs ARGS` on this instance's store: (exit code, stdout, stderr)."""
        return run_cli("runs", *args, env=self.env, cwd=self.dir)

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("rill did not stop within 15 s of SIGTERM")
            if exc[0] is None and code != 0:
                raise AssertionError(f"rill exited with {code} after SIGTERM")
        self._reader.join(timeout=5)
        if self.own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False
