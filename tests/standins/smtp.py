"""smtp.py: an SMTP server (RFC 5321) with STARTTLS (RFC 3207) and AUTH
PLAIN / LOGIN (RFC 4954): EHLO/HELO, STARTTLS, AUTH, MAIL FROM, RCPT TO,
DATA (dot-unstuffed), RSET, NOOP, QUIT. With require_tls (the default),
AUTH and MAIL before STARTTLS get 530, and AUTH is advertised only over
TLS; with a user set, MAIL before AUTH gets 530 and bad credentials 535.
Recipients in .reject get 550. .messages records each message accepted:
{"mail_from", "rcpt_to", "data" (bytes, as received after unstuffing),
"tls" (bool), "user"}. make_cert(dir) makes a self-signed certificate for
127.0.0.1 and localhost with `openssl req`."""
import base64
import os
import socket
import ssl
import subprocess
import threading


def make_cert(directory):
    """(cert_file, key_file): a self-signed certificate for localhost and
    127.0.0.1, valid one day; cert_file is also the CA file to trust it."""
    cert, key = os.path.join(directory, "smtp-cert.pem"), os.path.join(directory, "smtp-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class Smtp:
    name = "smtp"

    def __init__(self, cert=None, key=None, user="mailer@example.com", password="smtp-Standin-pass-42",
                 require_tls=True, reject=(), port=0):
        self.cert, self.key, self.user, self.password = cert, key, user, password
        self.require_tls, self.reject = require_tls, set(reject)
        self.messages, self.sessions = [], []
        self.lock = threading.Lock()
        self._port = port
        self.sock = None

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self._port))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.ctx = None
        if self.cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(self.cert, self.key)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def _accept(self):
        while self.sock:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        s = {"conn": conn, "file": conn.makefile("rb"), "tls": False, "user": None, "log": []}
        with self.lock:
            self.sessions.append(s["log"])
        try:
            self._send(s, "220 standin ESMTP ready")
            self._loop(s)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _send(self, s, line):
        s["conn"].sendall(line.encode() + b"\r\n")

    def _line(self, s):
        line = s["file"].readline(4096)
        if not line:
            raise ValueError("closed")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        s["log"].append(text if not text.upper().startswith("AUTH") else text.split(" ")[0] + " " +
                        (text.split(" ")[1] if len(text.split(" ")) > 1 else "") + " ***")
        return text

    def _loop(self, s):
        mail_from, rcpt = None, []
        while True:
            line = self._line(s)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb in ("EHLO", "HELO"):
                mail_from, rcpt = None, []
                if verb == "HELO":
                    self._send(s, "250 standin")
                    continue
                ext = ["standin greets " + arg, "SIZE 10485760", "8BITMIME"]
                if self.ctx and not s["tls"]:
                    ext.append("STARTTLS")
                if self.user and (s["tls"] or not self.require_tls):
                    ext.append("AUTH PLAIN LOGIN")
                for e in ext[:-1]:
                    self._send(s, "250-" + e)
                self._send(s, "250 " + ext[-1])
            elif verb == "STARTTLS":
                if not self.ctx or s["tls"]:
                    self._send(s, "454 TLS not available")
                    continue
                self._send(s, "220 Ready to start TLS")
                s["conn"] = self.ctx.wrap_socket(s["conn"], server_side=True)
                s["file"] = s["conn"].makefile("rb")
                s["tls"] = True
                mail_from, rcpt = None, []
            elif verb == "AUTH":
                self._auth(s, arg)
            elif verb == "MAIL":
                if self.require_tls and not s["tls"]:
                    self._send(s, "530 5.7.0 Must issue a STARTTLS command first")
                elif self.user and not s["user"]:
                    self._send(s, "530 5.7.0 Authentication required")
                elif not arg.upper().startswith("FROM:"):
                    self._send(s, "501 Syntax: MAIL FROM:<address>")
                else:
                    mail_from, rcpt = arg[5:].split(" ")[0].strip().strip("<>"), []
                    self._send(s, "250 OK")
            elif verb == "RCPT":
                if mail_from is None:
                    self._send(s, "503 Need MAIL before RCPT")
                elif not arg.upper().startswith("TO:"):
                    self._send(s, "501 Syntax: RCPT TO:<address>")
                else:
                    addr = arg[3:].split(" ")[0].strip().strip("<>")
                    if addr in self.reject:
                        self._send(s, "550 5.1.1 No such user: " + addr)
                    else:
                        rcpt.append(addr)
                        self._send(s, "250 OK")
            elif verb == "DATA":
                if not rcpt:
                    self._send(s, "503 Need RCPT before DATA")
                    continue
                self._send(s, "354 End data with <CR><LF>.<CR><LF>")
                data = self._data(s)
                with self.lock:
                    self.messages.append({"mail_from": mail_from, "rcpt_to": list(rcpt), "data": data,
                                          "tls": s["tls"], "user": s["user"]})
                mail_from, rcpt = None, []
                self._send(s, "250 OK queued as %d" % len(self.messages))
            elif verb == "RSET":
                mail_from, rcpt = None, []
                self._send(s, "250 OK")
            elif verb == "NOOP":
                self._send(s, "250 OK")
            elif verb == "QUIT":
                self._send(s, "221 Bye")
                return
            else:
                self._send(s, "502 Command not implemented")

    def _data(self, s):
        lines = []
        while True:
            line = s["file"].readline(1 << 20)
            if not line:
                raise ValueError("closed in DATA")
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            lines.append(line[1:] if line.startswith(b".") else line)

    def _auth(self, s, arg):
        if self.require_tls and not s["tls"]:
            self._send(s, "530 5.7.0 Must issue a STARTTLS command first")
            return
        mech, _, initial = arg.partition(" ")
        mech = mech.upper()
        try:
            if mech == "PLAIN":
                if not initial:
                    self._send(s, "334 ")
                    initial = self._line(s)
                _, user, password = base64.b64decode(initial).decode().split("\0")
            elif mech == "LOGIN":
                if initial:
                    user = base64.b64decode(initial).decode()
                else:
                    self._send(s, "334 " + base64.b64encode(b"Username:").decode())
                    user = base64.b64decode(self._line(s)).decode()
                self._send(s, "334 " + base64.b64encode(b"Password:").decode())
                password = base64.b64decode(self._line(s)).decode()
            else:
                self._send(s, "504 5.5.4 Unrecognized authentication type")
                return
        except (ValueError, UnicodeDecodeError):
            self._send(s, "501 5.5.2 Cannot decode the credentials")
            return
        if user == self.user and password == self.password:
            s["user"] = user
            self._send(s, "235 2.7.0 Authentication successful")
        else:
            self._send(s, "535 5.7.8 Authentication credentials invalid")
