#!/usr/bin/env python3
"""Abuse and security tests of the running bridge (issue 7): `graphbridge sandbox --no-bridge` plus
`graphbridge serve` as separate processes (relay_system.Tenant), hostile clients speaking raw bytes over
real loopback sockets, results checked three ways: the bytes the bridge answers, what reached the
emulated tenant (the sandbox's request log and mailboxes read over Graph) and the bridge's own log,
process and state directory. Client sockets are bound to chosen loopback addresses (127.0.0.3, ...) so
that "a stranger", "another host" and "a device on the relay network" are different client addresses.

Usage: abuse.py GRAPHBRIDGE_BINARY SCENARIO
Scenarios: open_relay, spoofing, auth_bruteforce, starttls_injection, smuggling, imap_bombs, slowloris,
tls_versions, header_injection, path_traversal, secrets_in_logs; fd_exhaustion reproduces an open bug
and is not registered in ctest. Exit status 0 = every check held."""
import base64
import email.utils
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_system as rs  # noqa: E402  (the Tenant fixture, check(), wait_for())

check = rs.check
wait_for = rs.wait_for

STRANGER = "127.0.0.3"   # in no [[relay]] network of the generated config
OTHER_HOST = "127.0.0.4"  # a second client address (the legitimate user next to a guesser)
DEVICE = "127.0.0.1"      # the generated config's relay network


# ---- raw protocol clients ---------------------------------------------------------------------------------

class Conn:
    """One client connection speaking raw bytes: everything sent is exactly what is given, every byte
    received is kept (nothing a server sends unasked can hide in a library's buffer)."""

    def __init__(self, port, source=None, timeout=15.0, tls=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buf = b""
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return None
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            chunk = b""
        finally:
            self.sock.settimeout(self.timeout)
        self.buf += chunk
        return chunk

    def line(self, timeout=None):
        """The next CRLF-ended line (with its CRLF); b"" at end of stream; None on timeout."""
        end = time.time() + (timeout if timeout is not None else self.timeout)
        while b"\r\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            chunk = self._fill(left)
            if chunk is None:
                return None
            if chunk == b"":
                rest, self.buf = self.buf, b""
                return rest
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def unasked(self, wait):
        """Whatever arrives within `wait` seconds (b"" when the peer stays quiet; the peer closing is
        not data)."""
        end = time.time() + wait
        got = self.buf
        self.buf = b""
        while time.time() < end:
            chunk = self._fill(end - time.time())
            if not chunk:
                break
            got += self.buf
            self.buf = b""
        return got

    def closed(self, wait):
        """True when the peer closes the connection within `wait` seconds (data before that is dropped)."""
        end = time.time() + wait
        while time.time() < end:
            chunk = self._fill(end - time.time())
            if chunk == b"":
                return True
            if chunk is None:
                return False
            self.buf = b""
        return False

    def starttls(self, ctx):
        """TLS on this connection; anything already received and not yet read is an error of the test."""
        assert not self.buf, self.buf
        self.sock = ctx.wrap_socket(self.sock, server_hostname="127.0.0.1")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Smtp(Conn):
    def __init__(self, port, source=None, timeout=15.0, tls=None, greet=True):
        super().__init__(port, source, timeout, tls)
        self.greeting = self.reply() if greet else None

    def reply(self, timeout=None):
        """(code, text) of one reply, multi-line replies joined; (0, b"") on timeout or close."""
        lines = []
        while True:
            ln = self.line(timeout)
            if not ln:
                return 0, b"".join(lines)
            lines.append(ln)
            if len(ln) < 4 or ln[3:4] != b"-":
                try:
                    return int(ln[:3]), b"".join(lines)
                except ValueError:
                    return 0, b"".join(lines)

    def cmd(self, line, timeout=None):
        self.send(line.encode() if isinstance(line, str) else line)
        return self.reply(timeout)

    def auth_plain(self, login, password):
        blob = base64.b64encode(b"\0" + login.encode() + b"\0" + password.encode()).decode()
        return self.cmd("AUTH PLAIN %s\r\n" % blob)


class Imap(Conn):
    def __init__(self, port, source=None, timeout=15.0, tls=None, greet=True):
        super().__init__(port, source, timeout, tls)
        self.greeting = self.line() if greet else None

    def until(self, tag, timeout=None):
        """Lines up to and including the tagged one (or up to a timeout / close)."""
        out = []
        while True:
            ln = self.line(timeout)
            if not ln:
                return out
            out.append(ln)
            if ln.startswith(tag.encode() + b" "):
                return out

    def cmd(self, tag, text, timeout=None):
        self.send(("%s %s\r\n" % (tag, text)).encode())
        return self.until(tag, timeout)


class Pop3(Conn):
    def __init__(self, port, source=None, timeout=15.0, tls=None, greet=True):
        super().__init__(port, source, timeout, tls)
        self.greeting = self.line() if greet else None

    def cmd(self, line, timeout=None):
        self.send(line.encode() if isinstance(line, str) else line)
        return self.line(timeout)


def tls_ctx(t):
    """A client context that trusts the bridge's (generated) certificate and checks it."""
    return ssl.create_default_context(cafile=t.t + "/state/tls/server.pem")


def tagged(lines, tag):
    return lines[-1] if lines and lines[-1].startswith(tag.encode() + b" ") else b""


def relay_networks(t):
    """The [[relay]] networks of the config the bridge runs with."""
    text = open(t.config).read()
    nets = []
    for block in re.findall(r"\[\[relay\]\](.*?)(?=\n\[|\Z)", text, re.S):
        m = re.search(r"networks\s*=\s*\[(.*?)\]", block, re.S)
        if m:
            nets += [ipaddress.ip_network(n) for n in re.findall(r'"([^"]+)"', m.group(1))]
    return nets


def graph_sends(t):
    """The sandbox's log of Graph requests that send or create mail (sendMail, drafts, send)."""
    return [r for r in t.admin("/sandbox/requests")["requests"]
            if r["method"] == "POST" and (r["route"].endswith("/sendmail") or r["route"].endswith("/messages")
                                          or r["route"].endswith("/send"))]


def messages_sent(t):
    return t.admin("/sandbox/stats")["messages_sent"]


def log_text(t):
    return open(t.bridge_log, errors="replace").read()


def settled(t, qid):
    """The queue's verdict on a message: 'delivered', 'refused' (bounced before sending) or 'failed'."""
    log = log_text(t)
    for word, verdict in (("delivered", "delivered"), ("message refused before sending", "refused"),
                          ("failed", "failed")):
        if re.search(r"\[%s\]: %s" % (re.escape(qid), word), log):
            return verdict
    return None


def queued_id(text):
    m = re.search(rb"queued as (\S+)", text)
    return m.group(1).decode() if m else None


def full_messages(t, mailbox, folder="inbox"):
    out = []
    url = ("/users/%s/mailFolders/%s/messages?$select=subject,from,sender,replyTo,toRecipients,ccRecipients,"
           "bccRecipients&$top=500" % (mailbox, folder))
    while url:
        page = t.graph(url)
        out += page["value"]
        url = page.get("@odata.nextLink")
    return out


def find_subject(t, mailbox, subject, folder="inbox"):
    return [m for m in full_messages(t, mailbox, folder) if m.get("subject") == subject]


def header_block(raw):
    """The top-level header block of a message, unfolded, as (name, value) pairs in order."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0].decode("utf-8", "replace")
    fields = []
    for ln in re.split(r"\r?\n", head):
        if ln[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + ln.strip())
        elif ":" in ln:
            name, value = ln.split(":", 1)
            fields.append((name.strip(), value.strip()))
        else:
            fields.append((ln, None))  # not a header line at all
    return fields


def addresses_in(value):
    return [a.lower() for _, a in email.utils.getaddresses([value]) if a]


def smtp_send_raw(t, port, source, mail_from, rcpts, data, login=None):
    """One transaction over raw SMTP; returns (code, text) of the end-of-data reply."""
    c = Smtp(port, source)
    try:
        c.cmd("EHLO abuse.example\r\n")
        if login:
            code, _ = c.auth_plain(login, t.password(login))
            assert code == 235, code
        code, text = c.cmd("MAIL FROM:<%s>\r\n" % mail_from)
        if code != 250:
            return code, text
        for r in rcpts:
            code, text = c.cmd("RCPT TO:<%s>\r\n" % r)
            if code != 250:
                return code, text
        code, text = c.cmd("DATA\r\n")
        if code != 354:
            return code, text
        return c.cmd(data + b"\r\n.\r\n", timeout=60)
    finally:
        c.close()


def in_threads(fn, items, join=120):
    """fn(*item) for every item, each in its own thread; an exception in one is a failure, not lost."""
    def run(item):
        try:
            fn(*item)
        except Exception as e:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            rs.FAILURES.append("exception in a thread: %r" % e)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for th in threads:
        th.start()
    for th in threads:
        th.join(join)


def vm_rss_kb(pid):
    for ln in open("/proc/%d/status" % pid):
        if ln.startswith("VmRSS:"):
            return int(ln.split()[1])
    return 0


def live_memory_rss():
    """For scenarios that measure the bridge's memory: under AddressSanitizer (CI's second run) freed
    memory sits in a quarantine of up to 256 MB before it is reused, so RSS would count garbage. A small
    quarantine makes RSS mean live memory again. (No effect on a binary built without ASan.) Call
    before start_bridge()."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "quarantine_size_mb=8"


class RssWatch:
    """Samples the bridge's VmRSS every 20 ms in the background: the peak is what a bomb cost."""

    def __init__(self, pid):
        self.pid, self.base, self.peak = pid, vm_rss_kb(pid), 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, vm_rss_kb(self.pid))
            except OSError:
                return
            time.sleep(0.02)

    def grown_mb(self):
        self.peak = max(self.peak, vm_rss_kb(self.pid))
        return (self.peak - self.base) / 1024.0

    def close(self):
        self.stop.set()
        self.thread.join(5)


def stream(c, total, chunk=b"A" * 65536):
    sent = 0
    while sent < total:
        c.send(chunk)
        sent += len(chunk)
    return sent


# ---- scenarios ----------------------------------------------------------------------------------------------

def scenario_open_relay(t):
    """No open relay: a host outside every [[relay]] network that has not authenticated cannot get any
    mail accepted (external or internal recipients, null sender, one-packet pipelined transactions, plain
    or implicit TLS); nothing reaches Graph or the spool. The checks can see a relay: a relay-network
    device's identical message goes through, and so does an authenticated account's mail to an external
    recipient (authenticated submission is not relaying)."""
    nets = relay_networks(t)
    check(nets and not any(ipaddress.ip_address(STRANGER) in n for n in nets),
          "config: %s is in no relay network (%s)" % (STRANGER, ", ".join(map(str, nets))))
    check(any(ipaddress.ip_address(DEVICE) in n for n in nets), "config: %s is a relay network" % DEVICE)
    t.start_bridge()
    t.admin("/sandbox/requests", method="DELETE")
    sent_before = messages_sent(t)
    ctx = tls_ctx(t)
    for label, port, tls in (("plain", t.smtp_port, None), ("implicit TLS", t.smtps_port, ctx)):
        c = Smtp(port, STRANGER, tls=tls)
        code, _ = c.cmd("EHLO stranger.example\r\n")
        check(code == 250, "%s: EHLO from %s answered 250" % (label, STRANGER))
        for frm, rcpt in (("spammer@external.example", "victim@external.example"),
                          ("scanner@sandbox.test", "victim@external.example"),
                          ("scanner@sandbox.test", "bob@sandbox.test"),
                          ("", "bob@sandbox.test")):
            code, text = c.cmd("MAIL FROM:<%s>\r\n" % frm)
            check(code == 530, "%s: unauthenticated MAIL FROM:<%s> from %s refused 530 (%d %r)"
                  % (label, frm, STRANGER, code, text.strip()))
            code, text = c.cmd("RCPT TO:<%s>\r\n" % rcpt)
            check(500 <= code < 600, "%s: RCPT TO:<%s> without a sender refused 5xx (%d)" % (label, rcpt, code))
            code, _ = c.cmd("DATA\r\n")
            check(500 <= code < 600, "%s: DATA without a transaction refused 5xx (%d)" % (label, code))
        c.close()
        # The whole transaction in one packet, the way spam software pipelines it (a fresh session: the
        # one above has used up most of its allowance of protocol errors).
        c = Smtp(port, STRANGER, tls=tls)
        c.cmd("EHLO stranger.example\r\n")
        subject = "relay attempt " + uuid.uuid4().hex
        c.send(("MAIL FROM:<spammer@external.example>\r\nRCPT TO:<victim@external.example>\r\n"
                "RCPT TO:<bob@sandbox.test>\r\nDATA\r\nSubject: %s\r\n\r\nbuy now\r\n.\r\nQUIT\r\n" % subject).encode())
        codes = []
        while True:
            code, _ = c.reply(timeout=10)
            if not code:
                break
            codes.append(code)
            if code == 221:
                break
        check(codes and codes[0] == 530 and all(cd >= 500 for cd in codes[:-1]) and 354 not in codes
              and codes[-1] == 221, "%s: pipelined transaction refused line by line, never 354/250 (%s)"
              % (label, codes))
        c.close()
    # The HELO (not EHLO) path and a failed AUTH do not open anything either.
    c = Smtp(t.smtp_port, STRANGER)
    c.cmd("HELO stranger.example\r\n")
    code, _ = c.cmd("MAIL FROM:<alice@sandbox.test>\r\n")
    check(code == 530, "after HELO, MAIL FROM still 530 (%d)" % code)
    c.cmd("EHLO stranger.example\r\n")
    code, _ = c.auth_plain("alice", "not-the-password")
    check(code == 535, "wrong password answered 535 (%d)" % code)
    code, _ = c.cmd("MAIL FROM:<alice@sandbox.test>\r\n")
    check(code == 530, "after a failed AUTH, MAIL FROM still 530 (%d)" % code)
    c.close()
    time.sleep(2)  # anything wrongly accepted would be on its way to Graph by now
    check(graph_sends(t) == [], "no sendMail/draft request reached the sandbox (%s)" % graph_sends(t))
    check(messages_sent(t) == sent_before, "sandbox messages_sent unchanged (%d)" % messages_sent(t))
    listed = subprocess.run([t.binary, "queue", "list", "--config", t.config], capture_output=True, text=True)
    check(listed.returncode == 0 and re.search(r"^0 queued, 0 dead$", listed.stdout, re.M) is not None,
          "the spool is empty (%s)" % listed.stdout.strip().splitlines()[-1:])
    log = log_text(t)
    check(re.search(r"sender refused.*ip=%s" % re.escape(STRANGER), log) is not None,
          "the refusals are logged with the client address")

    # Controls: the same message from the relay network, and an account to an external address, do go.
    subject = "device " + uuid.uuid4().hex
    code, text = smtp_send_raw(t, t.smtp_port, DEVICE, "printer@whatever.example", ["bob@sandbox.test"],
                               ("From: printer@whatever.example\r\nTo: bob@sandbox.test\r\nSubject: %s\r\n\r\nscan"
                                % subject).encode())
    check(code == 250, "control: a device on the relay network may send (%d)" % code)
    subject2 = "external " + uuid.uuid4().hex
    code2, text2 = smtp_send_raw(t, t.smtp_port, STRANGER, "alice@sandbox.test", ["partner@external.example"],
                                 ("From: alice@sandbox.test\r\nTo: partner@external.example\r\nSubject: %s\r\n\r\nhi"
                                  % subject2).encode(), login="alice")
    check(code2 == 250, "control: authenticated alice from %s may send to an external recipient (%d)"
          % (STRANGER, code2))
    for qid in (queued_id(text), queued_id(text2)):
        check(qid and wait_for(lambda: settled(t, qid), 30) == "delivered", "control message %s delivered" % qid)
    check(len(graph_sends(t)) >= 2, "the sandbox log does show sends when there are some (%d)" % len(graph_sends(t)))
    check(find_subject(t, "bob@sandbox.test", subject), "control: bob got the device's message")


SPOOF_HEADERS = [
    # (label, header lines naming the sender) -- each sent by alice with MAIL FROM:<alice@sandbox.test>
    ("foreign From", "From: CEO <ceo@sandbox.test>"),
    ("allowed name, foreign address", 'From: "alice@sandbox.test" <ceo@sandbox.test>'),
    ("unquoted @ in the name", "From: alice@sandbox.test <ceo@sandbox.test>"),
    ("two addresses, allowed first", "From: alice@sandbox.test, ceo@sandbox.test"),
    ("two addresses, foreign first", "From: ceo@sandbox.test, alice@sandbox.test"),
    ("group syntax", "From: Board: ceo@sandbox.test;"),
    ("two From fields, allowed first", "From: alice@sandbox.test\r\nFrom: ceo@sandbox.test"),
    ("two From fields, foreign first", "From: ceo@sandbox.test\r\nFrom: alice@sandbox.test"),
    ("foreign Sender", "From: alice@sandbox.test\r\nSender: ceo@sandbox.test"),
    ("folded From", "From:\r\n ceo@sandbox.test"),
    ("lower-case field name", "from: ceo@sandbox.test"),
    ("encoded-word name", "From: =?utf-8?q?alice=40sandbox=2Etest?= <ceo@sandbox.test>"),
    ("comment", "From: ceo@sandbox.test (alice@sandbox.test)"),
    ("no From at all", ""),
]


def sender_fields(raw):
    """Every address in a From or Sender field of the top-level header block."""
    out = []
    for name, value in header_block(raw):
        if value is not None and name.lower() in ("from", "sender"):
            out += addresses_in(value)
    return out


def scenario_spoofing(t):
    """An account sends only as its send_as addresses: a MAIL FROM outside them is refused 553, and
    whatever From/Sender header it writes (foreign, display-name tricks, several addresses, several
    fields, groups, folding, encoded words), the delivered message names no sender outside send_as --
    in its MIME header and in Graph's from/sender. A relay-network device claiming the CEO's address
    arrives as the relay mailbox."""
    t.start_bridge()
    c = Smtp(t.smtp_port, STRANGER)
    c.cmd("EHLO spoof.example\r\n")
    code, _ = c.auth_plain("alice", t.password("alice"))
    check(code == 235, "alice authenticated (%d)" % code)
    for frm in ("ceo@sandbox.test", "bob@sandbox.test", "alice@external.example", "alice@sandbox.test.evil.example",
                '"alice@sandbox.test"@evil.example', "alice%sandbox.test@evil.example"):
        code, text = c.cmd("MAIL FROM:<%s>\r\n" % frm)
        check(code == 553 or (500 <= code < 600 and code != 530),
              "MAIL FROM:<%s> outside alice's send_as refused (%d %r)" % (frm, code, text.strip()))
        if code == 250:
            c.cmd("RSET\r\n")
    code, _ = c.cmd("MAIL FROM:<ALICE@Sandbox.Test>\r\n")
    check(code == 250, "MAIL FROM in another letter case is still alice's (%d)" % code)
    c.cmd("RSET\r\n")
    sent = {}
    for label, hdr in SPOOF_HEADERS:
        subject = "spoof %s %s" % (label, uuid.uuid4().hex[:8])
        msg = ("%sTo: bob@sandbox.test\r\nSubject: %s\r\n\r\nwho sent this?" % (hdr + "\r\n" if hdr else "", subject))
        code, _ = c.cmd("MAIL FROM:<alice@sandbox.test>\r\n")
        code2, _ = c.cmd("RCPT TO:<bob@sandbox.test>\r\n")
        c.cmd("DATA\r\n")
        code3, text = c.cmd(msg.encode() + b"\r\n.\r\n")
        check(code == 250 and code2 == 250 and code3 in (250, 550, 554),
              "%s: answered %d/%d/%d" % (label, code, code2, code3))
        if code3 == 250:
            sent[label] = (subject, queued_id(text))
    c.cmd("QUIT\r\n")
    c.close()
    # A device on the relay network claims to be the CEO in the envelope and in the header.
    dev_subject = "device spoof " + uuid.uuid4().hex[:8]
    code, text = smtp_send_raw(t, t.smtp_port, DEVICE, "ceo@sandbox.test", ["bob@sandbox.test"],
                               ("From: CEO <ceo@sandbox.test>\r\nSender: ceo@sandbox.test\r\nTo: bob@sandbox.test\r\n"
                                "Subject: %s\r\n\r\npay this invoice" % dev_subject).encode())
    check(code == 250, "relay device: accepted (its MAIL FROM is not an identity) (%d)" % code)
    sent["relay device"] = (dev_subject, queued_id(text))
    allowed = {"relay device": {"scanner@sandbox.test"}}
    for label, (subject, qid) in sent.items():
        ok_from = allowed.get(label, {"alice@sandbox.test"})
        verdict = wait_for(lambda: settled(t, qid), 30)
        if label in ("foreign From", "no From at all", "relay device"):
            # Controls: with the default from_policy (rewrite) these are delivered, so the checks below
            # do look at delivered messages.
            check(verdict == "delivered", "%s: delivered (from_policy rewrite) (%s)" % (label, verdict))
        if verdict != "delivered":
            check(verdict in ("refused", "failed"), "%s: not delivered, bounced instead (%s)" % (label, verdict))
            continue
        got = wait_for(lambda: find_subject(t, "bob@sandbox.test", subject), 20)
        if not check(got and len(got) == 1, "%s: bob got it once" % label):
            continue
        raw = t.mime("bob@sandbox.test", got[0]["id"])
        senders = sender_fields(raw)
        check(senders and set(senders) <= ok_from,
              "%s: delivered From/Sender only %s (%s)" % (label, "/".join(sorted(ok_from)), senders))
        graph_from = [(got[0].get(k) or {}).get("emailAddress", {}).get("address", "").lower()
                      for k in ("from", "sender")]
        check(all(a in ok_from for a in graph_from if a),
              "%s: Graph's from/sender %s" % (label, graph_from))


def _smtp_attempt(t, source, login, password):
    c = Smtp(t.smtp_port, source, timeout=60)
    c.cmd("EHLO guesser.example\r\n")
    start = time.time()
    code, _ = c.auth_plain(login, password)
    took = time.time() - start
    c.close()
    return code == 235, took


def _imap_attempt(t, source, login, password):
    c = Imap(t.imap_port, source, timeout=60)
    start = time.time()
    lines = c.cmd("a1", "LOGIN %s %s" % (login, password))
    took = time.time() - start
    c.close()
    return tagged(lines, "a1").startswith(b"a1 OK"), took


def _pop3_attempt(t, source, login, password):
    c = Pop3(t.pop3_port, source, timeout=60)
    c.cmd("USER %s\r\n" % login)
    start = time.time()
    ok = (c.cmd("PASS %s\r\n" % password) or b"").startswith(b"+OK")
    took = time.time() - start
    c.close()
    return ok, took


def scenario_auth_bruteforce(t):
    """Password guessing is slowed per client address and locks nobody out: over SMTP AUTH, IMAP LOGIN
    and POP3 PASS, after the free failures (AuthThrottle: 3) each answer from the guessing address comes
    later (1 s, 2 s, 4 s: growing), including the answer to a right password (an early answer would tell
    success from failure, so a guesser could hang up instead of waiting); the right password from another
    address works at once; every failure is logged with the client address. A spray of 48 parallel
    logins from 48 addresses (each within its free failures) costs bounded memory: password checks
    (scrypt, 32 MiB each) run a few at a time, not one per IMAP work thread."""
    live_memory_rss()
    t.start_bridge()
    time.sleep(0.5)
    rss = RssWatch(t.bridge.pid)
    spray = [(_imap_attempt, "127.0.1.%d" % i) for i in range(1, 33)] + \
            [(_smtp_attempt, "127.0.2.%d" % i) for i in range(1, 9)] + \
            [(_pop3_attempt, "127.0.3.%d" % i) for i in range(1, 9)]
    refused = []
    in_threads(lambda attempt, ip: refused.append(not attempt(t, ip, "nobody-" + ip, "wrong")[0]), spray)
    grown = rss.grown_mb()
    rss.close()
    check(len(refused) == len(spray) and all(refused), "login spray: all %d refused" % len(spray))
    check(grown < 200, "login spray: peak RSS +%.0f MB (< 200 MB; one 32 MiB scrypt per IMAP work thread "
          "would be 512 MB)" % grown)
    attempts = {"smtp": _smtp_attempt, "imap": _imap_attempt, "pop3": _pop3_attempt}
    guesser = {"smtp": "127.0.0.5", "imap": "127.0.0.6", "pop3": "127.0.0.7"}

    def guess(proto, attempt):
        ip = guesser[proto]
        took = []
        for i in range(5):
            ok, d = attempt(t, ip, "bob", "guess-%d" % i)
            check(not ok, "%s: wrong password %d from %s refused" % (proto, i + 1, ip))
            took.append(d)
        # Only lower bounds (load can only add latency): 1 s, then 2 s, then (below) 4 s: growing.
        print("      %s reply latencies: %s" % (proto, ", ".join("%.2f s" % d for d in took)))
        check(took[3] >= 0.9 and took[4] >= 1.9,
              "%s: failures 4 and 5 answered after growing delays (%.2f s >= 1 s, %.2f s >= 2 s; the 3 free "
              "ones %.2f s at most)" % (proto, took[3], took[4], max(took[:3])))
        # Someone else, at another address, is not affected: no lockout a guesser could cause. (Throttled,
        # it would wait 4 s or more: a per-account count would be at 15 failures by now.)
        ok, d = attempt(t, OTHER_HOST, "bob", t.password("bob"))
        check(ok and d < 3.0, "%s: the right password from %s works at once while %s is throttled (%.2f s)"
              % (proto, OTHER_HOST, ip, d))
        # The guesser's own address is not locked out either, but it cannot learn early that it hit.
        ok, d = attempt(t, ip, "bob", t.password("bob"))
        check(ok, "%s: the right password from the throttled %s is accepted (no lockout)" % (proto, ip))
        check(d >= 3.5, "%s: ... after the same delay a wrong one would get (%.2f s >= 4 s)" % (proto, d))

    # The three protocols from three addresses at once (each address has its own count; the delays are
    # lower bounds, so running them side by side cannot make a check pass that should fail).
    in_threads(guess, attempts.items())
    log = log_text(t)
    for proto, ip in guesser.items():
        n = len(re.findall(r" %s \[[A-Z]\d+\]: authentication failed.*ip=%s\b" % (proto, re.escape(ip)), log))
        check(n == 5, "%s: the 5 failures from %s are logged with the address (%d)" % (proto, ip, n))


def scenario_starttls_injection(t):
    """CVE-2011-0411 class: commands sent in the same packet as STARTTLS/STLS (in clear, so an attacker
    on the path could have put them there) are never executed, neither before nor after the handshake.
    Injected NOOPs get no answer; an injected MAIL FROM (SMTP) or a login with the right password
    (IMAP, POP3) has no effect in the TLS session: the next command there shows the clean state."""
    t.start_bridge()
    ctx = tls_ctx(t)
    pw = t.password("bob")

    # SMTP, from the relay network so that an executed MAIL FROM would be accepted.
    c = Smtp(t.smtp_port, DEVICE)
    c.cmd("EHLO injector.example\r\n")
    c.send(b"STARTTLS\r\nNOOP\r\nEHLO injected.example\r\nMAIL FROM:<scanner@sandbox.test>\r\n")
    code, text = c.reply()
    check(code == 220, "smtp: STARTTLS answered 220 (%d %r)" % (code, text.strip()))
    extra = c.unasked(0.5)
    check(extra == b"", "smtp: nothing answered in clear to the injected commands (%r)" % extra)
    c.starttls(ctx)
    extra = c.unasked(1.0)
    check(extra == b"", "smtp: nothing answered inside TLS to the injected commands (%r)" % extra)
    code, _ = c.cmd("RCPT TO:<bob@sandbox.test>\r\n")
    check(code == 503, "smtp: RCPT in the TLS session finds no MAIL FROM (503, got %d)" % code)
    code, text = c.cmd("EHLO clean.example\r\n")
    check(code == 250 and b"STARTTLS" not in text, "smtp: the TLS session works (EHLO %d, no STARTTLS)" % code)
    code, _ = c.cmd("NOOP\r\n")
    check(code == 250 and c.unasked(0.5) == b"", "smtp: one NOOP, one answer (%d)" % code)
    c.close()

    # IMAP: "a STARTTLS" + "b NOOP" + "c LOGIN" with the right password, in one packet.
    c = Imap(t.imap_port, STRANGER)
    c.send(("a STARTTLS\r\nb NOOP\r\nc LOGIN bob %s\r\n" % pw).encode())
    first = c.line()
    check(first is not None and first.startswith(b"a OK"), "imap: STARTTLS answered a OK (%r)" % first)
    extra = c.unasked(0.5)
    check(extra == b"", "imap: nothing answered in clear to b NOOP / c LOGIN (%r)" % extra)
    c.starttls(ctx)
    extra = c.unasked(1.0)
    check(extra == b"", "imap: nothing answered inside TLS to b NOOP / c LOGIN (%r)" % extra)
    lines = c.cmd("d", "SELECT INBOX")
    check(tagged(lines, "d").startswith((b"d NO", b"d BAD")),
          "imap: SELECT in the TLS session: not logged in, the injected LOGIN did not run (%r)" % lines[-1:])
    lines = c.cmd("e", "LOGIN bob %s" % pw)
    check(tagged(lines, "e").startswith(b"e OK"), "imap: a LOGIN inside TLS works (%r)" % lines[-1:])
    c.close()

    # POP3: "STLS" + "NOOP" + "USER"/"PASS" with the right password, in one packet.
    c = Pop3(t.pop3_port, STRANGER)
    c.send(("STLS\r\nNOOP\r\nUSER bob\r\nPASS %s\r\n" % pw).encode())
    first = c.line()
    check(first is not None and first.startswith(b"+OK"), "pop3: STLS answered +OK (%r)" % first)
    extra = c.unasked(0.5)
    check(extra == b"", "pop3: nothing answered in clear to NOOP / USER / PASS (%r)" % extra)
    c.starttls(ctx)
    extra = c.unasked(1.0)
    check(extra == b"", "pop3: nothing answered inside TLS to NOOP / USER / PASS (%r)" % extra)
    r = c.cmd("STAT\r\n")
    check(r is not None and r.startswith(b"-ERR"), "pop3: STAT in the TLS session: not logged in (%r)" % r)
    c.cmd("USER bob\r\n")
    r = c.cmd("PASS %s\r\n" % pw)
    check(r is not None and r.startswith(b"+OK"), "pop3: USER/PASS inside TLS works (%r)" % r)
    c.close()


SMUGGLE_ENDINGS = [("LF.LF", b"\n.\n"), ("CR.CRLF", b"\r.\r\n"), ("LF.CRLF", b"\n.\r\n"), ("CRLF.CR", b"\r\n.\r"),
                   ("CRLF.LF", b"\r\n.\n"), ("CR.CR", b"\r.\r"), ("CR.LF", b"\r.\n")]


def scenario_smuggling(t):
    """SMTP smuggling: a DATA body holding a fake end of data (bare LF.LF, CR.CRLF, LF.CRLF and the
    other variants) followed by a smuggled MAIL FROM/RCPT/DATA is one message, and since it contains
    bare CR/LF the bridge rejects it whole at the real CRLF.CRLF with 554 5.6.0: the smuggled commands
    are never answered, nothing reaches the smuggled recipient, the session stays usable (a clean
    message right after is delivered exactly once)."""
    t.start_bridge()
    t.admin("/sandbox/requests", method="DELETE")
    sent_before = messages_sent(t)
    good = []
    for label, fake_end in SMUGGLE_ENDINGS:
        tag = uuid.uuid4().hex[:8]
        c = Smtp(t.smtp_port, DEVICE)
        c.cmd("EHLO smuggler.example\r\n")
        code1, _ = c.cmd("MAIL FROM:<scanner@sandbox.test>\r\n")
        code2, _ = c.cmd("RCPT TO:<bob@sandbox.test>\r\n")
        code3, _ = c.cmd("DATA\r\n")
        check((code1, code2, code3) == (250, 250, 354),
              "%s: transaction opened (%d %d %d)" % (label, code1, code2, code3))
        body = (b"From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: carrier " + tag.encode() +
                b"\r\n\r\nfirst part" + fake_end +
                b"MAIL FROM:<scanner@sandbox.test>\r\nRCPT TO:<alice@sandbox.test>\r\nDATA\r\n"
                b"From: ceo@sandbox.test\r\nTo: alice@sandbox.test\r\nSubject: smuggled " + tag.encode() +
                b"\r\n\r\nwire the money\r\n.\r\n")
        c.send(body)
        code, text = c.reply()
        extra = c.unasked(0.5)
        check(code == 554 and b"5.6.0" in text, "%s: the whole message refused at the real end: %d %r"
              % (label, code, text.strip()))
        check(extra == b"", "%s: no answer to the smuggled MAIL/RCPT/DATA (%r)" % (label, extra))
        # The session goes on: a clean message is accepted and delivered.
        subject = "clean after %s %s" % (label, tag)
        c.cmd("MAIL FROM:<scanner@sandbox.test>\r\n")
        c.cmd("RCPT TO:<bob@sandbox.test>\r\n")
        c.cmd("DATA\r\n")
        code, text = c.cmd(("From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: %s\r\n\r\n"
                            "fine\r\n.\r\n" % subject).encode())
        check(code == 250, "%s: a clean message on the same session accepted (%d)" % (label, code))
        c.cmd("QUIT\r\n")
        c.close()
        good.append((subject, queued_id(text), tag))
    for subject, qid, tag in good:
        check(qid is not None and wait_for(lambda: settled(t, qid), 30) == "delivered", "%s delivered" % subject)
    time.sleep(0.5)
    bob = [m.get("subject") or "" for m in full_messages(t, "bob@sandbox.test")]
    alice = [m.get("subject") or "" for m in full_messages(t, "alice@sandbox.test")]
    for subject, _, tag in good:
        check(bob.count(subject) == 1, "bob has %r exactly once" % subject)
        check(not any(tag in s and s != subject for s in bob), "bob has no carrier/smuggled message %s" % tag)
        check(not any(tag in s for s in alice), "alice (the smuggled recipient) has nothing tagged %s" % tag)
    sends = graph_sends(t)
    check(len(sends) == len(good) and messages_sent(t) - sent_before == len(good),
          "exactly %d messages reached Graph, one per clean message (%d requests, %d sent)"
          % (len(good), len(sends), messages_sent(t) - sent_before))


def scenario_imap_bombs(t):
    """Hostile IMAP input is refused with a clear answer and costs bounded memory: a huge announced
    literal (BAD [TOOBIG], no "+"), literals before login beyond 4 KiB (a stranger cannot make the
    bridge hold megabytes: four 60 MB literals used to cost 240 MB), a LITERAL+ literal too big to accept
    (its octets are skipped, never run as commands), one too big to count (BYE), 100,000 nested '('
    and a 20 MB line without CRLF (BAD when the line ends, the session goes on). The bridge's peak RSS
    stays within 50 MB of where it started, and a new client is served afterwards."""
    live_memory_rss()
    t.start_bridge()
    pw = t.password("bob")
    # The sessions that bomb after login log in first: a password check (scrypt) costs 32 MiB for a
    # moment, and the first login opens the mailbox store; neither is a bomb's cost.
    d = Imap(t.imap_port, STRANGER)
    d.cmd("d0", "LOGIN bob %s" % pw)
    f = Imap(t.imap_port, STRANGER)
    f.cmd("f0", "LOGIN bob %s" % pw)
    f.cmd("f1", "SELECT INBOX")
    time.sleep(0.5)
    rss = RssWatch(t.bridge.pid)
    try:
        # 1. A huge synchronizing literal: refused at once, no continuation, the session recovers.
        c = Imap(t.imap_port, STRANGER)
        c.send(b"a1 LOGIN {999999999999}\r\n")
        ln = c.line()
        check(ln is not None and ln.startswith(b"a1 BAD [TOOBIG]"), "{999999999999}: a1 BAD [TOOBIG] at once (%r)" % ln)
        lines = c.cmd("a2", "NOOP")
        check(tagged(lines, "a2").startswith(b"a2 OK"), "... and the session goes on (a2 NOOP OK)")
        # 2. Before login, even a 60 MB literal is refused: no "+", and bytes sent regardless are
        #    command text (over-long lines), never buffered.
        conns = []
        for i in range(4):
            b = Imap(t.imap_port, STRANGER)
            b.send(b"b1 LOGIN {60000000}\r\n")
            ln = b.line()
            check(ln is not None and ln.startswith(b"b1 BAD [TOOBIG]"),
                  "unauthenticated {60000000} #%d: BAD [TOOBIG], no continuation (%r)" % (i + 1, ln))
            stream(b, 20 * 1000 * 1000)  # a hostile client sends the literal anyway
            conns.append(b)
        time.sleep(0.5)
        check(rss.grown_mb() < 50, "4 unauthenticated 20 MB literals pending: RSS +%.1f MB (< 50)" % rss.grown_mb())
        for b in conns:
            b.send(b"\r\nb2 NOOP\r\n")
            lines = b.until("b2", timeout=15)
            check(tagged(lines, "b2").startswith(b"b2 OK") and any(l.startswith(b"* BAD Line too long")
                                                                    or l.startswith(b"b1 BAD") for l in lines[:-1]),
                  "the bytes were an over-long line, refused, then b2 NOOP answered (%r)" % lines[-2:])
            b.close()
        # 3. LITERAL+ too big to accept: skipped as it streams in; commands inside it never run.
        d.send(b"d1 APPEND INBOX {999999999999+}\r\n")
        payload = b"d2 NOOP\r\nd3 LOGOUT\r\n" + b"B" * 65500 + b"\r\n"
        sent = 0
        while sent < 32 * 1000 * 1000:
            d.send(payload)
            sent += len(payload)
        extra = d.unasked(1.0)
        check(extra == b"", "{999999999999+}: 32 MB of it with command lines inside, nothing answered or run (%r)"
              % extra[:80])
        check(rss.grown_mb() < 50, "... RSS +%.1f MB while it streams (< 50)" % rss.grown_mb())
        d.close()
        # 4. A non-synchronizing literal whose size cannot even be read: BYE, the connection ends.
        e = Imap(t.imap_port, STRANGER)
        e.send(b"e1 LOGIN bob {99999999999999999999999+}\r\ne2 NOOP\r\n")
        ln = e.line()
        check(ln is not None and ln.startswith(b"* BYE"), "{99999999999999999999999+}: * BYE (%r)" % ln)
        check(e.closed(5), "... and the connection is closed")
        e.close()
        # 5. Deep nesting: 100,000 '(' (over the line limit) and 1,000 '(' (over the depth limit).
        for n in (100000, 1000):
            f.send(b"f2 FETCH 1 " + b"(" * n + b"\r\n")
            ln = f.line()
            check(ln is not None and ln.startswith(b"f2 BAD"), "%d nested '(': f2 BAD (%r)" % (n, ln))
        lines = f.cmd("f3", "NOOP")
        check(tagged(lines, "f3").startswith(b"f3 OK"), "... and the session goes on (f3 NOOP OK)")
        # 6. A 20 MB line without CRLF (after login: the widest limits).
        f.send(b"f4 SEARCH TEXT ")
        stream(f, 20 * 1000 * 1000)
        extra = f.unasked(0.5)
        check(rss.grown_mb() < 50, "20 MB line without CRLF: RSS +%.1f MB (< 50)" % rss.grown_mb())
        f.send(b"\r\n")
        ln = f.line()
        check(ln is not None and ln.startswith(b"f4 BAD"), "... f4 BAD when the line ends (%r %r)" % (extra[:60], ln))
        lines = f.cmd("f5", "NOOP")
        check(tagged(lines, "f5").startswith(b"f5 OK"), "... and the session goes on (f5 NOOP OK)")
        f.close()
        grown = rss.grown_mb()
    finally:
        rss.close()
    check(grown < 50, "peak RSS over all the bombs: +%.1f MB (< 50 MB; base %.1f MB)" % (grown, rss.base / 1024.0))
    check(t.bridge.poll() is None, "the bridge is still running")
    g = Imap(t.imap_port, OTHER_HOST)
    lines = g.cmd("g1", "LOGIN bob %s" % pw)
    lines2 = g.cmd("g2", "SELECT INBOX")
    check(tagged(lines, "g1").startswith(b"g1 OK") and tagged(lines2, "g2").startswith(b"g2 OK"),
          "a new client logs in and selects INBOX afterwards")
    g.close()


def _open_many(port, n, source, greeting_prefix):
    """n connections that each got their greeting (so the server has them all as active sessions)."""
    out = []
    for _ in range(n):
        c = Conn(port, source, timeout=15)
        ln = c.line()
        if not ln or not ln.startswith(greeting_prefix):
            c.close()
            break
        out.append(c)
    return out


def _served(t, source):
    """A newcomer's full session on each protocol; returns {proto: seconds} for those that worked."""
    took = {}
    start = time.time()
    code, _ = smtp_send_raw(t, t.smtp_port, source, "alice@sandbox.test", ["bob@sandbox.test"],
                            b"Subject: newcomer\r\n\r\nhello", login="alice")
    if code == 250:
        took["smtp"] = time.time() - start
    start = time.time()
    c = Imap(t.imap_port, source)
    if tagged(c.cmd("n1", "LOGIN bob %s" % t.password("bob")), "n1").startswith(b"n1 OK") and \
            tagged(c.cmd("n2", "SELECT INBOX"), "n2").startswith(b"n2 OK"):
        took["imap"] = time.time() - start
    c.close()
    start = time.time()
    p = Pop3(t.pop3_port, source)
    p.cmd("USER bob\r\n")
    if (p.cmd("PASS %s\r\n" % t.password("bob")) or b"").startswith(b"+OK") and \
            (p.cmd("STAT\r\n") or b"").startswith(b"+OK"):
        took["pop3"] = time.time() - start
    p.close()
    return took


def scenario_slowloris(t):
    """Slow and silent clients cannot starve others. The idle timeouts (SMTP 5 min, POP3 10 min, IMAP
    30 min between two reads, not configurable) are too long to wait for here, so this proves the
    rest: while 200 SMTP clients dribble a command one byte per second and 200 IMAP and 200 POP3
    clients sit silent, a newcomer completes SMTP, IMAP and POP3 sessions promptly, and each dribbled
    command is answered once complete. At the connection cap (SMTP 1000, POP3 1000, IMAP 2000 per
    server) the next client gets the protocol's refusal line and a close, not a hang, and is served
    again once a slot frees. (The caps need 4,000 descriptors in this process and in the bridge: the
    soft limit is raised to what the hard limit allows; below that the cap part is not tested.)"""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4000 + 1000  # the connections held at the caps, plus the bridge's own files and sockets
    if soft < need and (hard == resource.RLIM_INFINITY or hard > soft):
        soft = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # the bridge inherits it
    t.start_bridge()
    dribblers = _open_many(t.smtp_port, 200, STRANGER, b"220 ")
    silent_imap = _open_many(t.imap_port, 200, STRANGER, b"* OK")
    silent_pop3 = _open_many(t.pop3_port, 200, STRANGER, b"+OK")
    check(len(dribblers) == 200 and len(silent_imap) == 200 and len(silent_pop3) == 200,
          "200 SMTP, 200 IMAP and 200 POP3 slow clients connected (%d, %d, %d)"
          % (len(dribblers), len(silent_imap), len(silent_pop3)))
    command = b"NOOP\r\n"
    stop = threading.Event()

    def dribble():
        for i in range(len(command)):
            if stop.is_set():
                return
            for c in dribblers:
                try:
                    c.send(command[i:i + 1])
                except OSError:
                    pass
            time.sleep(1.0)

    th = threading.Thread(target=dribble)
    th.start()
    time.sleep(1.5)  # mid-command for every dribbler
    took = _served(t, OTHER_HOST)
    check(set(took) == {"smtp", "imap", "pop3"} and max(took.values()) < 5,
          "while they dribble, a newcomer is served: %s" % ", ".join("%s %.2f s" % kv for kv in sorted(took.items())))
    th.join(30)
    answered = 0
    for c in dribblers:
        ln = c.line(timeout=5)
        answered += bool(ln and ln.startswith(b"250"))
    check(answered == len(dribblers), "each dribbled NOOP answered 250 once complete (%d of %d)"
          % (answered, len(dribblers)))

    # The caps: fill each server to its limit, the next one is refused with a line, not left hanging.
    if soft < need:
        print("      RLIMIT_NOFILE %d < %d: the connection caps are not tested" % (soft, need))
    for proto, port, cap, held, greet, refusal in () if soft < need else (
            ("smtp", t.smtp_port, 1000, dribblers, b"220 ", b"421 4.3.2 "),
            ("pop3", t.pop3_port, 1000, silent_pop3, b"+OK", b"-ERR [SYS/TEMP] Too many connections"),
            ("imap", t.imap_port, 2000, silent_imap, b"* OK", b"* BYE Too many connections")):
        more = _open_many(port, cap - len(held), STRANGER, greet)
        held += more
        check(len(held) == cap, "%s: %d connections held open by one address" % (proto, len(held)))
        start = time.time()
        c = Conn(port, OTHER_HOST, timeout=10)
        ln = c.line(timeout=10)
        closed = c.closed(5)
        c.close()
        check(ln is not None and ln.startswith(refusal) and closed and time.time() - start < 5,
              "%s: connection %d refused at once with %r and closed (%r, %.2f s)"
              % (proto, cap + 1, refusal.decode(), ln, time.time() - start))
        held.pop().close()

        def greeted():
            c = Conn(port, OTHER_HOST, timeout=10)
            ln = c.line(timeout=10)
            c.close()
            return ln if ln and ln.startswith(greet) else None

        ln = wait_for(greeted, 10, 0.2)  # the server notices the close asynchronously
        check(ln is not None, "%s: served again once a slot is free (%r)" % (proto, ln))
    for c in dribblers + silent_imap + silent_pop3:
        c.close()
    time.sleep(1.0)
    took = _served(t, OTHER_HOST)
    check(set(took) == {"smtp", "imap", "pop3"}, "after the flood, everything is served (%s)" % sorted(took))
    check(t.bridge.poll() is None, "the bridge is still running")


def _legacy_ctx(tls_max):
    """A client context that offers only TLS 1.0..tls_max (1.0 or 1.1), with the ciphers those need."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = tls_max
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    return ctx


def _modern_ctx(t, version):
    ctx = tls_ctx(t)
    ctx.minimum_version = ctx.maximum_version = version
    return ctx


def _client_can_offer(t, ctx):
    """Control: does this client context complete a handshake with a server that allows TLS 1.0/1.1?
    (If not, a refusal by the bridge would prove nothing.) Returns the version negotiated or None."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv.minimum_version = ssl.TLSVersion.TLSv1
    srv.set_ciphers("DEFAULT@SECLEVEL=0")
    srv.load_cert_chain(t.t + "/server.pem", t.t + "/server.key.pem")
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    result = {}

    def serve():
        conn, _ = lst.accept()
        try:
            with srv.wrap_socket(conn, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError):
            pass

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with ctx.wrap_socket(socket.create_connection(lst.getsockname(), timeout=10)) as c:
            result["v"] = c.version()
            c.sendall(b"x")
    except (ssl.SSLError, OSError) as e:
        result["err"] = str(e)
    th.join(5)
    lst.close()
    return result.get("v")


def _starttls_prelude(proto, c):
    """Brings a plaintext connection to the point where the TLS handshake starts; True if it did."""
    if proto == "smtp":
        c.cmd("EHLO tls.example\r\n")
        return c.cmd("STARTTLS\r\n")[0] == 220
    if proto == "imap":
        return tagged(c.cmd("s1", "STARTTLS"), "s1").startswith(b"s1 OK")
    return (c.cmd("STLS\r\n") or b"").startswith(b"+OK")


def _after_handshake(proto, c, implicit):
    """One exchange over the TLS session: the greeting on an implicit TLS port, a command after STARTTLS."""
    if implicit:
        ln = c.line()
        return bool(ln) and ln[:1] in (b"2", b"*", b"+")
    if proto == "smtp":
        return c.cmd("EHLO tls.example\r\n")[0] == 250
    if proto == "imap":
        return tagged(c.cmd("s2", "NOOP"), "s2").startswith(b"s2 OK")
    return (c.cmd("NOOP\r\n") or b"").startswith((b"+OK", b"-ERR"))


def _openssl_refused(port, starttls=None):
    """TLS 1.1 with `openssl s_client` (where Python's OpenSSL cannot offer it): (refused by the server,
    output)."""
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]
    if starttls:
        cmd += ["-starttls", starttls]
    p = subprocess.run(cmd, input=b"", capture_output=True, timeout=30)
    out = (p.stdout + p.stderr).decode(errors="replace")
    return "alert protocol version" in out or "tlsv1 alert protocol version" in out.lower(), out


def scenario_tls_versions(t):
    """TLS 1.0 and 1.1 are refused by the server (a protocol_version alert from the bridge, checked
    against a control server that accepts them, so the refusal is not the client's) on the implicit
    TLS ports (SMTPS, IMAPS, POP3S) and after STARTTLS/STLS; TLS 1.2 and 1.3 are accepted and the
    session works."""
    t.start_bridge()
    implicit_ports = {"smtp": t.smtps_port, "imap": t.imaps_port, "pop3": t.pop3s_port}
    plain_ports = {"smtp": t.smtp_port, "imap": t.imap_port, "pop3": t.pop3_port}
    classes = {"smtp": Smtp, "imap": Imap, "pop3": Pop3}
    legacy = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1}
    for name, top in legacy.items():
        ctx = _legacy_ctx(top)
        offered = _client_can_offer(t, ctx)
        if offered == name:
            check(True, "control: this client negotiates %s with a server that allows it" % name)
            for proto in ("smtp", "imap", "pop3"):
                for implicit in (True, False):
                    where = "%s %s" % (proto, "implicit TLS" if implicit else "STARTTLS")
                    port = implicit_ports[proto] if implicit else plain_ports[proto]
                    c = classes[proto](port, STRANGER, greet=not implicit)
                    if not implicit and not check(_starttls_prelude(proto, c), "%s: STARTTLS accepted" % where):
                        continue
                    try:
                        c.starttls(ctx)
                        check(False, "%s: %s refused (negotiated %s)" % (where, name, c.sock.version()))
                    except ssl.SSLError as e:
                        check("TLSV1_ALERT_PROTOCOL_VERSION" in str(e),
                              "%s: %s refused by the server with a protocol_version alert (%s)" % (where, name, e))
                    except OSError as e:
                        check(False, "%s: %s: connection dropped without an alert (%r)" % (where, name, e))
                    c.close()
        elif name == "TLSv1.1":
            # Python's OpenSSL cannot offer TLS 1.1 here: use the openssl command line instead.
            print("      Python's OpenSSL cannot offer %s (%s); using openssl s_client" % (name, offered))
            for proto in ("smtp", "imap", "pop3"):
                for where, port, starttls in (("implicit TLS", implicit_ports[proto], None),
                                              ("STARTTLS", plain_ports[proto], proto)):
                    refused, out = _openssl_refused(port, starttls)
                    if "no protocols available" in out:
                        print("      openssl s_client cannot offer TLS 1.1 either: %s %s not tested" % (proto, where))
                        continue
                    check(refused, "%s %s: TLS 1.1 refused with a protocol_version alert (s_client: %s)"
                          % (proto, where, out.strip().splitlines()[-1:]))
        else:
            print("      TLS 1.0 cannot be offered by this client (%s): not tested" % offered)
    for name, version in (("TLSv1.2", ssl.TLSVersion.TLSv1_2), ("TLSv1.3", ssl.TLSVersion.TLSv1_3)):
        ctx = _modern_ctx(t, version)
        for proto in ("smtp", "imap", "pop3"):
            for implicit in (True, False):
                where = "%s %s" % (proto, "implicit TLS" if implicit else "STARTTLS")
                port = implicit_ports[proto] if implicit else plain_ports[proto]
                try:
                    c = classes[proto](port, STRANGER, greet=not implicit)
                    if not implicit and not _starttls_prelude(proto, c):
                        check(False, "%s: STARTTLS accepted" % where)
                        continue
                    c.starttls(ctx)
                    got = c.sock.version()
                    works = _after_handshake(proto, c, implicit)
                    check(got == name and works, "%s: %s accepted, certificate verified, session works (%s)"
                          % (where, name, got))
                    c.close()
                except (ssl.SSLError, OSError) as e:
                    check(False, "%s: %s accepted (%r)" % (where, name, e))


# (label, commands before MAIL, MAIL line, RCPT lines, what the first refused step must answer or None).
# Every marker "X-Injected-<n>" must never become a header line of what is delivered.
INJECTIONS = [
    ("EHLO name + CRLF + header", [b"EHLO evil.example\r\nX-Injected-1: yes\r\n"], None, None, None),
    ("EHLO name + bare LF + header", [b"EHLO evil.example\nX-Injected-2: yes\r\n"], None, None, 500),
    ("EHLO name + bare CR + header", [b"EHLO evil.example\rX-Injected-3: yes\r\n"], None, None, 500),
    ("EHLO name that looks like a header", [b"EHLO X-Injected-4: yes\r\n"], None, None, None),
    ("MAIL ENVID= with encoded CRLF", [], b"MAIL FROM:<alice@sandbox.test> ENVID=x+0D+0AX-Injected-5:+yes\r\n",
     None, 555),
    ("MAIL RET=", [], b"MAIL FROM:<alice@sandbox.test> RET=HDRS\r\n", None, 555),
    ("MAIL SIZE= with encoded CRLF", [], b"MAIL FROM:<alice@sandbox.test> SIZE=10+0D+0AX-Injected-7:+yes\r\n",
     None, 501),
    ("MAIL AUTH= with encoded CRLF", [], b"MAIL FROM:<alice@sandbox.test> AUTH=<x+0D+0AX-Injected-8:+yes>\r\n",
     None, None),
    ("MAIL AUTH= naming another sender", [], b"MAIL FROM:<alice@sandbox.test> AUTH=ceo@sandbox.test\r\n", None, None),
    ("MAIL with a CRLF inside the address", [], b"MAIL FROM:<alice@sandbox.test\r\nX-Injected-10: yes>\r\n", None, 501),
    ("RCPT ORCPT= with encoded CRLF", [], None,
     [b"RCPT TO:<bob@sandbox.test> ORCPT=rfc822;x+0D+0AX-Injected-11:+yes\r\n"], 555),
    ("RCPT NOTIFY=", [], None, [b"RCPT TO:<bob@sandbox.test> NOTIFY=NEVER\r\n"], 555),
    ("quoted local part with a header", [], None,
     [b"RCPT TO:<bob@sandbox.test>\r\n", b'RCPT TO:<"X-Injected-13: yes"@external.example>\r\n'], None),
    ("quoted local part with a comma and an address", [], None,
     [b"RCPT TO:<bob@sandbox.test>\r\n", b'RCPT TO:<"x,mallory@evil.example"@external.example>\r\n'], None),
    ("quoted local part with quote and angle", [], None,
     [b"RCPT TO:<bob@sandbox.test>\r\n", b'RCPT TO:<"a\\">,<mallory2@evil.example"@external.example>\r\n'], None),
    ("UTF-8 local part with NEL and LINE SEPARATOR", [],
     b"MAIL FROM:<alice@sandbox.test> SMTPUTF8\r\n",
     [b"RCPT TO:<bob@sandbox.test>\r\n",
      "RCPT TO:<x\u0085X-Injected-16:yes\u2028X-Injected-16b:yes@external.example>\r\n".encode()], 501),
    ("quoted UTF-8 local part with NEL and LINE SEPARATOR", [],
     b"MAIL FROM:<alice@sandbox.test> SMTPUTF8\r\n",
     [b"RCPT TO:<bob@sandbox.test>\r\n",
      'RCPT TO:<"x\u0085X-Injected-17: yes\u2028X-Injected-17b: yes"@external.example>\r\n'.encode()], 501),
    # In the message itself: a From the bridge rewrites (from_policy rewrite), its display name an encoded
    # word that decodes to CRLF + a header.
    ("rewritten From with an encoded CRLF in its name", [], None, None, None,
     "From: =?utf-8?b?%s?= <ceo@sandbox.test>" % base64.b64encode(b"CEO\r\nX-Injected-18: yes").decode()),
    ("rewritten From with an encoded NEL in its name", [], None, None, None,
     "From: =?utf-8?q?CEO=C2=85X-Injected-19=3A_yes?= <ceo@sandbox.test>"),
]


def injected_lines(raw):
    """Header lines of a delivered message that come from a marker, splitting lines the way the most
    lenient parsers do (CR, LF, NEL, LINE/PARAGRAPH SEPARATOR...)."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0].decode("utf-8", "replace")
    return [ln for ln in head.splitlines() if re.match(r"\s*X-Injected", ln, re.I)]


def scenario_header_injection(t):
    """SMTP parameters carrying CR/LF (raw, bare, or xtext-encoded +0D+0A) or header-looking text --
    EHLO names, ENVID/RET/SIZE/AUTH on MAIL, ORCPT/NOTIFY on RCPT, CRLF inside an address, quoted and
    UTF-8 local parts (NEL, U+2028), and a From display name (rewritten by the bridge) whose encoded word
    decodes to CRLF or NEL -- are refused (500/501/555) or neutralised: no delivered message
    (the recipient's copy, and the sender's Sent copy carrying the Bcc the bridge adds for envelope-only
    recipients) has a header line that came from them, and a quoted local part never splits into an
    extra recipient."""
    t.start_bridge()
    delivered = []
    for n, (label, pre, mail, rcpts, refused_with, *from_field) in enumerate(INJECTIONS, 1):
        from_field = from_field[0] if from_field else "From: alice@sandbox.test"
        subject = "inject %d %s" % (n, uuid.uuid4().hex[:8])
        c = Smtp(t.smtp_port, STRANGER)
        codes = []
        for line in pre:
            c.send(line)
            for _ in range(line.count(b"\r\n")):
                codes.append(c.reply()[0])
        if not pre or codes[0] != 250:
            c.cmd("EHLO injector.example\r\n")
        code, _ = c.auth_plain("alice", t.password("alice"))
        first_refusal = next((cd for cd in codes if cd >= 400), None)
        mail_code, _ = c.cmd(mail or b"MAIL FROM:<alice@sandbox.test>\r\n")
        codes.append(mail_code)
        if mail_code != 250:
            first_refusal = first_refusal or mail_code
            while c.unasked(0.3):
                pass  # the rest of a split line gets its own error
            mail_code, _ = c.cmd("MAIL FROM:<alice@sandbox.test>\r\n")
        for r in rcpts or [b"RCPT TO:<bob@sandbox.test>\r\n"]:
            rc, _ = c.cmd(r)
            codes.append(rc)
            if rc != 250:
                first_refusal = first_refusal or rc
        if refused_with is not None:
            check(first_refusal == refused_with, "%s: refused %d (%s)" % (label, refused_with, codes))
        c.cmd("RCPT TO:<bob@sandbox.test>\r\n")  # the transaction goes on with a sane recipient
        c.cmd("DATA\r\n")
        dc, text = c.cmd(("%s\r\nTo: bob@sandbox.test\r\nSubject: %s\r\n\r\nbody\r\n.\r\n"
                          % (from_field, subject)).encode())
        c.cmd("QUIT\r\n")
        c.close()
        if check(dc == 250 and mail_code == 250, "%s: a message still goes through after (%d)" % (label, dc)):
            delivered.append((label, subject, queued_id(text)))
    for label, subject, qid in delivered:
        check(wait_for(lambda: settled(t, qid), 30) == "delivered", "%s: delivered" % label)
    time.sleep(0.5)
    inbox = {m["subject"]: m for m in full_messages(t, "bob@sandbox.test")}
    sent = {m["subject"]: m for m in full_messages(t, "alice@sandbox.test", "sentitems")}
    for label, subject, _ in delivered:
        for where, box, mailbox in (("bob's copy", inbox, "bob@sandbox.test"),
                                    ("Sent copy", sent, "alice@sandbox.test")):
            if not check(subject in box, "%s: %s exists" % (label, where)):
                continue
            raw = t.mime(mailbox, box[subject]["id"])
            bad = injected_lines(raw)
            check(not bad, "%s: %s has no injected header line (%s)" % (label, where, bad))
            names = [name for name, value in header_block(raw) if value is None]
            check(not names, "%s: %s header block has no broken line (%s)" % (label, where, names))
        m = sent.get(subject)
        if m:
            bcc = [r["emailAddress"]["address"].lower() for r in m.get("bccRecipients", [])]
            to = [r["emailAddress"]["address"].lower() for r in m.get("toRecipients", [])]
            check(not any("mallory" in a and not a.endswith("@external.example") for a in bcc + to),
                  "%s: no recipient split out of a quoted local part (%s)" % (label, bcc + to))
    log = log_text(t)
    check(not re.search(r"^\s*X-Injected", log, re.M | re.I), "the bridge log has no line that is an injected header")


def _tree(root):
    """Every path under root (relative), directories marked with a trailing slash."""
    out = set()
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        for n in dirs:
            out.add(os.path.normpath(os.path.join(rel, n)) + "/")
        for n in files:
            out.add(os.path.normpath(os.path.join(rel, n)))
    return out


def scenario_path_traversal(t):
    """Names a client or an admin supplies never become file-system paths: IMAP CREATE/SELECT/APPEND/
    RENAME/DELETE with "../../../../tmp/x"-style names, logins like "../x" over IMAP and POP3, and
    `graphbridge queue retry/delete` with "../../etc/passwd", absolute paths and ".." fail with a clear
    error (the queue commands exit non-zero naming the bad id) and create, change or remove nothing
    outside the state directory -- and inside it only the bridge's own kinds of file."""
    t.start_bridge()
    tag = "gbabuse" + uuid.uuid4().hex[:8]
    state = os.path.join(t.t, "state")
    sentinel_dir = os.path.join(t.dir, "victim")
    os.makedirs(sentinel_dir)
    sentinel = os.path.join(sentinel_dir, "keep-me")
    open(sentinel, "w").write("precious\n")
    tmp_before = set(os.listdir("/tmp"))
    passwd_stat = os.stat("/etc/passwd")
    state_before = _tree(state)
    names = ["../../../../tmp/%s" % tag, "../%s" % tag, "/tmp/%s" % tag, "..", "../../victim/keep-me",
             "INBOX/../../%s" % tag, "%s/../../.." % tag]
    c = Imap(t.imap_port, STRANGER)
    c.cmd("a0", "LOGIN bob %s" % t.password("bob"))
    answers = []
    for i, name in enumerate(names):
        q = '"%s"' % name
        for cmd in ("CREATE %s" % q, "SELECT %s" % q, "RENAME %s \"%s-renamed-%d\"" % (q, tag, i),
                    "DELETE %s" % q, "STATUS %s (MESSAGES)" % q):
            tagname = "c%d" % len(answers)
            lines = c.cmd(tagname, cmd)
            answers.append((cmd, tagged(lines, tagname)))
        lit = b"Subject: traversal\r\n\r\nx\r\n"
        c.send(b"p%d APPEND %s {%d+}\r\n" % (i, q.encode(), len(lit)) + lit + b"\r\n")
        answers.append(("APPEND " + q, tagged(c.until("p%d" % i), "p%d" % i)))
    c.cmd("z", "LOGOUT")
    c.close()
    untagged = [a for a in answers if not re.match(rb"\w+ (OK|NO|BAD) ", a[1])]
    check(not untagged, "IMAP: every command with a traversal name got a tagged answer (%s)" % untagged[:3])
    print("      IMAP answers: %s" % "; ".join("%s -> %s" % (cmd, ans.decode(errors="replace").strip()[:60])
                                             for cmd, ans in answers[:6]))
    # Logins that look like paths.
    for i, login in enumerate(("../x", "../../etc/passwd", "/etc/passwd", "bob/../alice", "..\\bob")):
        source = "127.0.4.%d" % (i + 1)  # each from its own address: the failed-login throttle is not tested here
        c = Imap(t.imap_port, source)
        lines = c.cmd("l1", 'LOGIN "%s" "%s"' % (login.replace("\\", "\\\\"), t.password("bob")))
        check(tagged(lines, "l1").startswith(b"l1 NO"), "IMAP LOGIN %r refused NO" % login)
        c.close()
        p = Pop3(t.pop3_port, source)
        p.cmd("USER %s\r\n" % login)
        r = p.cmd("PASS %s\r\n" % t.password("bob"))
        check(r is not None and r.startswith(b"-ERR"), "POP3 USER %r refused -ERR" % login)
        p.close()
    # The queue commands.
    for verb in ("retry", "delete"):
        for bad_id in ("../../etc/passwd", "../x", "..", "/etc/passwd", "../../victim/keep-me",
                       "%s/../../../tmp/%s" % ("1" * 16, tag), "."):
            r = subprocess.run([t.binary, "queue", verb, bad_id, "--config", t.config], capture_output=True,
                               text=True, timeout=60)
            check(r.returncode != 0 and "is not a queue id" in r.stderr and r.stdout == "",
                  "queue %s %r: exit %d, %r" % (verb, bad_id, r.returncode, r.stderr.strip()))
    # A well-formed id that does not exist: an error, not a crash, nothing created for it.
    r = subprocess.run([t.binary, "queue", "delete", "0000000000000000", "--config", t.config], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode != 0 and r.stderr.strip(),
          "queue delete of an unknown id fails with a reason (%r)" % r.stderr.strip())
    time.sleep(1.0)  # let the bridge settle whatever it does after the commands
    check(os.path.exists(sentinel) and open(sentinel).read() == "precious\n",
          "the file outside the state dir is intact")
    check(os.listdir(sentinel_dir) == ["keep-me"], "nothing was added next to it (%s)" % os.listdir(sentinel_dir))
    new_tmp = [n for n in set(os.listdir("/tmp")) - tmp_before if tag in n]
    check(not new_tmp, "nothing named after the test's names appeared in /tmp (%s)" % new_tmp)
    check(os.stat("/etc/passwd").st_mtime == passwd_stat.st_mtime, "/etc/passwd untouched")
    created = _tree(state) - state_before
    odd = [p for p in created if tag in p or ".." in p or "passwd" in p or "keep-me" in p]
    check(not odd, "no file in the state dir is named after a client-supplied name (%s)" % odd)
    outside = [p for p in _tree(t.dir) if tag in p]
    check(not outside, "no path under the test directory carries the test's names (%s)" % outside)
    check(t.bridge.poll() is None, "the bridge is still running")


def _secret_config(t):
    """The bridge config for secrets_in_logs: debug logging; the certificate in a password-protected
    PKCS#12 keystore; a second app with the client secret (both credential kinds fetch tokens); an
    account 'carol' on that app. Returns (carol's password, keystore password)."""
    keystore_pw = "Ks-" + uuid.uuid4().hex
    carol_pw = "Carol-" + uuid.uuid4().hex
    pw_file = os.path.join(t.t, "keystore-password")
    open(pw_file, "w").write(keystore_pw + "\n")
    os.chmod(pw_file, 0o600)
    p12 = os.path.join(t.t, "app.p12")
    r = subprocess.run(["openssl", "pkcs12", "-export", "-inkey", t.t + "/app.pem", "-in", t.t + "/app.pem",
                        "-out", p12, "-passout", "file:" + pw_file, "-name", "graphbridge"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    h = subprocess.run([t.binary, "passwd"], input=carol_pw + "\n", capture_output=True, text=True)
    hash_line = h.stdout.strip().splitlines()[-1]
    hash_value = re.search(r"\$scrypt\$[^\"'\s]+", hash_line).group(0)
    cfg = open(t.config).read()
    cfg = re.sub(r'(\[app\.sandbox\.certificate\]\n)keystore = "[^"]*"',
                 lambda m: m.group(1) + 'keystore = "%s"\npassword_file = "%s"\nalias = "graphbridge"' % (p12, pw_file),
                 cfg)
    app = re.search(r"\[app\.sandbox\]\n(.*?)\n\n", cfg, re.S).group(1)
    app_secret = "[app.secret]\n" + app + '\nclient_secret_file = "%s"\n\n' % (t.t + "/client-secret")
    carol = ('[[account]]\nlogin = "carol"\npassword_hash = "%s"\napp = "secret"\nmailbox = "bob@sandbox.test"\n'
             'send_as = ["bob@sandbox.test"]\n\n' % hash_value)
    cfg = cfg.replace("[[account]]", app_secret + carol + "[[account]]", 1)
    cfg = re.sub(r'(\[log\]\n)level = "[a-z]+"', r'\1level = "debug"', cfg)
    open(t.config, "w").write(cfg)
    return carol_pw, keystore_pw


def scenario_secrets_in_logs(t):
    """With [log] level = "debug" the bridge log never holds a secret: after SMTP AUTH PLAIN (initial
    response and 334 continuation) and AUTH LOGIN, IMAP LOGIN and AUTHENTICATE PLAIN, POP3 USER/PASS,
    each right and wrong, mail sent through a certificate app (PKCS#12 keystore with a password) and a
    client-secret app, a token endpoint error and a revoked token (so tokens are fetched again), the log
    contains no account password, no wrong password tried, no base64 AUTH payload, no client secret, no
    keystore password, no private key material, no JWT (access token or client assertion) and no
    "Bearer"."""
    carol_pw, keystore_pw = _secret_config(t)
    r = subprocess.run([t.binary, "config", "check", t.config], capture_output=True, text=True)
    check(r.returncode == 0, "the edited config is valid (%s)" % (r.stdout + r.stderr).strip()[-300:])
    t.start_bridge()
    secrets = {"client secret": open(t.t + "/client-secret").read().strip(), "keystore password": keystore_pw,
               "carol's password": carol_pw}
    for a in t.state["accounts"]:
        secrets["%s's password" % a["login"]] = a["password"]
    wrong = {"wrong password %d" % i: "Wrong-%d-%s" % (i, uuid.uuid4().hex) for i in range(8)}
    payloads = {}

    def b64(x):
        return base64.b64encode(x.encode()).decode()

    # SMTP: AUTH PLAIN with an initial response and with a continuation, AUTH LOGIN; right and wrong.
    for login, pw in (("alice", t.password("alice")), ("alice", wrong["wrong password 0"]),
                      ("carol", carol_pw), ("bob", wrong["wrong password 1"])):
        for style in ("ir", "continuation", "login"):
            c = Smtp(t.smtp_port, DEVICE)
            c.cmd("EHLO secrets.example\r\n")
            plain = b64("\0%s\0%s" % (login, pw))
            payloads["AUTH PLAIN %s/%s" % (login, style)] = plain
            if style == "ir":
                code, _ = c.cmd("AUTH PLAIN %s\r\n" % plain)
            elif style == "continuation":
                c.cmd("AUTH PLAIN\r\n")
                code, _ = c.cmd(plain + "\r\n")
            else:
                c.cmd("AUTH LOGIN\r\n")
                c.cmd(b64(login) + "\r\n")
                payloads["AUTH LOGIN password %s" % login] = b64(pw)
                code, _ = c.cmd(b64(pw) + "\r\n")
            check(code == (235 if pw in (t.password("alice"), carol_pw) else 535),
                  "smtp AUTH %s as %s: %d" % (style, login, code))
            c.close()
    # Mail through both apps; a token endpoint error and a revoked token on the way.
    t.admin("/sandbox/faults", {"target": "token", "kind": "aadsts", "code": 7000215, "count": 1})
    ids = []
    for login, frm in (("alice", "alice@sandbox.test"), ("carol", "bob@sandbox.test")):
        pw = t.password(login) if login != "carol" else carol_pw
        c = Smtp(t.smtp_port, DEVICE)
        c.cmd("EHLO secrets.example\r\n")
        c.auth_plain(login, pw)
        c.cmd("MAIL FROM:<%s>\r\n" % frm)
        c.cmd("RCPT TO:<bob@sandbox.test>\r\n")
        c.cmd("DATA\r\n")
        code, text = c.cmd(("From: %s\r\nTo: bob@sandbox.test\r\nSubject: secrets %s\r\n\r\nhi\r\n.\r\n"
                            % (frm, login)).encode())
        ids.append(queued_id(text))
        c.close()
    for qid in ids:
        check(qid and wait_for(lambda: settled(t, qid), 60) == "delivered", "message %s delivered" % qid)
    t.admin("/sandbox/tokens/revoke", {})
    code, text = smtp_send_raw(t, t.smtp_port, DEVICE, "scanner@sandbox.test", ["bob@sandbox.test"],
                               b"Subject: after revoke\r\n\r\nhi")
    qid = queued_id(text)
    check(qid and wait_for(lambda: settled(t, qid), 60) == "delivered", "delivered after the tokens were revoked")
    stats = t.admin("/sandbox/stats")
    check(stats["token_requests"] >= 3 and stats["faults_injected"] == 1,
          "tokens were fetched by both apps, one refused with AADSTS7000215, again after the revocation "
          "(%d token requests)" % stats["token_requests"])
    # IMAP: LOGIN and AUTHENTICATE PLAIN (SASL-IR and continuation), right and wrong.
    for i, (login, pw) in enumerate((("bob", t.password("bob")), ("bob", wrong["wrong password 2"]),
                                     ("carol", carol_pw), ("alice", wrong["wrong password 3"]))):
        ok_expected = pw in (t.password("bob"), carol_pw)
        c = Imap(t.imap_port, "127.0.5.%d" % (i + 1))
        lines = c.cmd("a1", 'LOGIN %s "%s"' % (login, pw))
        check(tagged(lines, "a1").startswith(b"a1 OK" if ok_expected else b"a1 NO"), "imap LOGIN %s" % login)
        c.close()
        plain = b64("\0%s\0%s" % (login, pw))
        payloads["AUTHENTICATE PLAIN %s" % login] = plain
        c = Imap(t.imap_port, "127.0.5.%d" % (i + 1))
        lines = c.cmd("a2", "AUTHENTICATE PLAIN %s" % plain)
        check(tagged(lines, "a2").startswith(b"a2 OK" if ok_expected else b"a2 NO"),
              "imap AUTHENTICATE (SASL-IR) %s" % login)
        c.close()
        c = Imap(t.imap_port, "127.0.5.%d" % (i + 1))
        c.send(b"a3 AUTHENTICATE PLAIN\r\n")
        c.line()
        c.send(plain.encode() + b"\r\n")
        lines = c.until("a3")
        check(tagged(lines, "a3").startswith(b"a3 OK" if ok_expected else b"a3 NO"),
              "imap AUTHENTICATE (continuation) %s" % login)
        c.close()
    # POP3: USER/PASS, right and wrong.
    for i, (login, pw) in enumerate((("bob", t.password("bob")), ("bob", wrong["wrong password 4"]),
                                     ("carol", carol_pw), ("alice", wrong["wrong password 5"]))):
        p = Pop3(t.pop3_port, "127.0.6.%d" % (i + 1))
        p.cmd("USER %s\r\n" % login)
        r = p.cmd("PASS %s\r\n" % pw)
        check(r is not None and r.startswith(b"+OK" if pw in (t.password("bob"), carol_pw) else b"-ERR"),
              "pop3 USER/PASS %s" % login)
        p.close()
    time.sleep(1.0)
    log = log_text(t)
    check(re.search(r" debug (smtp|imap|pop3) \[", log) is not None, "the log is at debug level")
    check("authentication failed" in log and "authenticated" in log, "the logins are logged")
    for what, value in list(secrets.items()) + list(wrong.items()) + list(payloads.items()):
        check(value not in log, "the log holds no %s (%s...)" % (what, value[:4]))
    key_lines = [ln for ln in open(t.t + "/app.pem").read().split("-----END PRIVATE KEY-----")[0].splitlines()
                 if ln and not ln.startswith("-----")]
    check(not any(ln in log for ln in key_lines) and "PRIVATE KEY" not in log, "the log holds no private key material")
    jwts = re.findall(r"eyJ[A-Za-z0-9_-]{10,}", log)
    check(not jwts, "the log holds no JWT (token or client assertion) (%s)" % [j[:20] for j in jwts[:3]])
    check("bearer" not in log.lower(), "the log never says Bearer")
    check(t.token() not in log, "the log holds no access token the sandbox issues")


def scenario_fd_exhaustion(t):
    """Under the common soft limit of 1024 open files (systemd's default for services), one stranger
    holding 1,000 IMAP connections -- half the IMAP cap -- must not stop the bridge from accepting mail
    from others, nor make it spin: the bridge raises its soft RLIMIT_NOFILE to the hard limit at start.
    Then with a hard limit it cannot raise (600): the descriptors run out, accept() fails with EMFILE,
    and the accept loops must back off (no core spinning) and serve newcomers again as soon as
    descriptors are free. (Before the fix: a core at 100% and no greeting for anyone, on any protocol.)"""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, soft), hard))
    t.start_bridge()  # inherits the limit
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    held = _open_many(t.imap_port, 1000, STRANGER, b"* OK")
    print("      %d IMAP connections held by %s" % (len(held), STRANGER))

    def cpu_seconds():
        fields = open("/proc/%d/stat" % t.bridge.pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu_seconds()
    time.sleep(3)
    busy = cpu_seconds() - before
    check(busy < 0.5, "the bridge is idle while the connections sit there (%.2f s of CPU in 3 s)" % busy)
    try:
        code, text = smtp_send_raw(t, t.smtp_port, DEVICE, "scanner@sandbox.test", ["bob@sandbox.test"],
                                   b"Subject: under descriptor pressure\r\n\r\nscan")
    except OSError as e:
        code, text = 0, repr(e).encode()
    check(code == 250, "a device's message is still accepted (%d %r)" % (code, text.strip()))
    qid = queued_id(text)
    check(qid is not None and wait_for(lambda: settled(t, qid), 30) == "delivered", "... and delivered")
    for c in held:
        c.close()

    # A hard limit the bridge cannot lift: exhaust it.
    resource.prlimit(t.bridge.pid, resource.RLIMIT_NOFILE, (600, 600))
    held = _open_many(t.imap_port, 700, STRANGER, b"* OK")
    print("      %d IMAP connections got a greeting under a hard limit of 600 descriptors" % len(held))
    check(len(held) < 600, "the limit was reached (%d connections)" % len(held))
    before = cpu_seconds()
    time.sleep(3)
    busy = cpu_seconds() - before
    check(busy < 0.5, "out of descriptors, the accept loops back off instead of spinning (%.2f s of CPU in 3 s)" % busy)
    check(wait_for(lambda: "out of file descriptors" in open(t.bridge_log).read(), 5),
          "the stall is logged with what to do")
    for c in held[: len(held) // 2]:
        c.close()
    try:
        code, text = smtp_send_raw(t, t.smtp_port, DEVICE, "scanner@sandbox.test", ["bob@sandbox.test"],
                                   b"Subject: after descriptors came back\r\n\r\nscan")
    except OSError as e:
        code, text = 0, repr(e).encode()
    check(code == 250, "once descriptors are free again a device is served at once (%d %r)" % (code, text.strip()))
    for c in held[len(held) // 2:]:
        c.close()
    check(t.bridge.poll() is None, "the bridge kept running")


# ---- main -------------------------------------------------------------------------------------------------

SCENARIOS = {name[len("scenario_"):]: f for name, f in list(globals().items()) if name.startswith("scenario_")}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(__doc__)
        return 2
    # Each run in a directory of its own (the tenant's is made inside it), apart from other runs' dirs.
    import tempfile
    tempfile.tempdir = tempfile.mkdtemp(prefix="gb_abuse_")
    try:
        t = rs.Tenant(sys.argv[1])
    except Exception:
        print("kept for inspection: " + tempfile.tempdir)
        raise
    started = time.time()
    try:
        SCENARIOS[sys.argv[2]](t)
    except Exception as e:  # an unexpected error is a failure with its reason, not a hang
        import traceback
        traceback.print_exc()
        rs.FAILURES.append("exception: %r" % e)
    finally:
        if rs.FAILURES:
            try:
                print("---- bridge log (tail) ----\n" + open(t.bridge_log, errors="replace").read()[-4000:])
            except OSError:
                pass
        t.close()
        try:
            os.rmdir(tempfile.tempdir)  # empty unless the tenant's directory was kept for inspection
        except OSError:
            pass
    print("%s: %d failure(s) in %.1f s" % (sys.argv[2], len(rs.FAILURES), time.time() - started))
    return 1 if rs.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
