#!/usr/bin/env python3
"""System tests of the SMTP relay as an admin runs it: `graphbridge sandbox --no-bridge` (the emulated
tenant) and `graphbridge serve` as separate processes, real SMTP clients over real sockets, results read
back from the sandbox over Graph (HTTPS). Each scenario gets its own tenant, spool and ports.

Usage: relay_system.py GRAPHBRIDGE_BINARY SCENARIO
Scenarios: msmtp, large, throttling, crash, sizecap, queue, envelope. Exit status 0 = every check held."""
import email
import email.policy
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage

FAILURES = []


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        FAILURES.append(what)
    return cond


_HANDED_OUT = set()


def free_port():
    """A loopback port the kernel says is free and that this process has not handed out before: the
    kernel may give a just-released ephemeral port again, so two listeners of one config could
    otherwise be given the same port (seen in CI: pop3.tls_listen == smtp.tls_listen)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free loopback port")


def wait_for(pred, timeout, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Tenant:
    """The sandbox tenant plus one bridge process on it."""

    def __init__(self, binary):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="gb_relay_")
        self.port = free_port()
        self.sandbox_out = open(os.path.join(self.dir, "sandbox.out"), "w")
        self.sandbox = subprocess.Popen([binary, "sandbox", "--dir", self.dir + "/t", "--port", str(self.port),
                                         "--no-bridge"], stdout=self.sandbox_out, stderr=subprocess.STDOUT)
        if not wait_for(lambda: "Press Ctrl-C" in open(self.dir + "/sandbox.out").read(), 60):
            raise RuntimeError("sandbox did not start: " + open(self.dir + "/sandbox.out").read())
        self.t = self.dir + "/t"
        self.state = json.load(open(self.t + "/sandbox.json"))
        self.base = "https://127.0.0.1:%d" % self.port
        self.ctx = ssl.create_default_context(cafile=self.t + "/ca.pem")
        self.smtp_port, self.smtps_port = free_port(), free_port()
        cfg = open(self.t + "/graphbridge.toml").read()
        cfg = cfg.replace('listen = ["127.0.0.1:1025"]', 'listen = ["127.0.0.1:%d"]' % self.smtp_port)
        cfg = cfg.replace('tls_listen = ["127.0.0.1:1465"]', 'tls_listen = ["127.0.0.1:%d"]' % self.smtps_port)
        self.imap_port, self.imaps_port = free_port(), free_port()
        cfg = cfg.replace('listen = ["127.0.0.1:1143"]', 'listen = ["127.0.0.1:%d"]' % self.imap_port)
        cfg = cfg.replace('tls_listen = ["127.0.0.1:1993"]', 'tls_listen = ["127.0.0.1:%d"]' % self.imaps_port)
        self.pop3_port, self.pop3s_port = free_port(), free_port()
        cfg = cfg.replace('listen = ["127.0.0.1:1110"]', 'listen = ["127.0.0.1:%d"]' % self.pop3_port)
        cfg = cfg.replace('tls_listen = ["127.0.0.1:1995"]', 'tls_listen = ["127.0.0.1:%d"]' % self.pop3s_port)
        cfg = cfg.replace('listen = "127.0.0.1:1080"', 'listen = "127.0.0.1:%d"' % free_port())
        cfg = cfg.replace("[log]", '[queue]\nretry_initial = "1s"\nretry_max = "4s"\n\n[log]')
        self.config = self.t + "/bridge.toml"
        open(self.config, "w").write(cfg)
        self.bridge = None
        self.bridge_log = self.dir + "/bridge.log"
        self._token = None

    def start_bridge(self):
        log = open(self.bridge_log, "a")
        self.bridge = subprocess.Popen([self.binary, "serve", "--config", self.config], stdout=log,
                                       stderr=subprocess.STDOUT)

        def up():
            try:
                for port in (self.smtp_port, self.imap_port, self.pop3_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        if not wait_for(up, 60, 0.05):
            raise RuntimeError("bridge did not start: " + open(self.bridge_log).read()[-2000:])

    def kill_bridge(self, sig=signal.SIGKILL):
        if self.bridge and self.bridge.poll() is None:
            self.bridge.send_signal(sig)
            self.bridge.wait(60)

    def close(self):
        self.kill_bridge(signal.SIGTERM)
        self.sandbox.send_signal(signal.SIGINT)
        try:
            self.sandbox.wait(30)
        except subprocess.TimeoutExpired:
            self.sandbox.kill()
        if not FAILURES:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("kept for inspection: " + self.dir)

    def password(self, login):
        return [a for a in self.state["accounts"] if a["login"] == login][0]["password"]

    # ---- the sandbox over HTTPS -------------------------------------------------------------------
    def admin(self, path, body=None, method=None, raw=None):
        """The sandbox's admin API over one kept-alive HTTPS connection (a TLS handshake per call is slow)."""
        data = json.dumps(body).encode() if body is not None else raw
        ctype = "application/json" if raw is None else "text/plain"
        method = method or ("POST" if data is not None else "GET")
        for attempt in (1, 2):
            try:
                if getattr(self, "_admin_conn", None) is None:
                    self._admin_conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                                   timeout=30)
                self._admin_conn.request(method, path, body=data, headers={"Content-Type": ctype})
                r = self._admin_conn.getresponse()
                payload = r.read()
                if r.status >= 400:
                    raise urllib.error.HTTPError(self.base + path, r.status, payload.decode(errors="replace"),
                                                 r.headers, None)
                return json.loads(payload) if payload else None
            except (http.client.HTTPException, OSError):
                self._admin_conn = None
                if attempt == 2:
                    raise

    def token(self):
        if not self._token:
            secret = open(self.t + "/client-secret").read().strip()
            body = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": self.state["client_id"],
                                           "scope": self.base + "/.default", "client_secret": secret}).encode()
            url = self.base + "/%s/oauth2/v2.0/token" % self.state["tenant_id"]
            self._token = json.load(urllib.request.urlopen(url, body, context=self.ctx, timeout=30))["access_token"]
        return self._token

    def graph(self, path_or_url, raw=False, retried=False, immutable=False):
        url = path_or_url if path_or_url.startswith("https://") else self.base + "/v1.0" + path_or_url
        headers = {"Authorization": "Bearer " + self.token()}
        if immutable:  # ids as the bridge uses them
            headers["Prefer"] = 'IdType="ImmutableId"'
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=60) as r:
                data = r.read()
                return data if raw else json.loads(data)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403) and not retried:  # tokens revoked or roles changed by the test
                self._token = None
                return self.graph(path_or_url, raw, True, immutable)
            raise

    def faults_hit(self):
        return self.admin("/sandbox/stats")["faults_injected"]

    def delivered(self, queue_id):
        return re.search(r"\[%s\]: delivered " % re.escape(queue_id), open(self.bridge_log).read()) is not None

    def messages(self, mailbox, folder="inbox"):
        out = []
        url = "/users/%s/mailFolders/%s/messages?$select=subject,hasAttachments&$top=500" % (mailbox, folder)
        while url:
            page = self.graph(url)
            out += page["value"]
            url = page.get("@odata.nextLink")
        return out

    def mime(self, mailbox, message_id):
        return self.graph("/users/%s/messages/%s/$value" % (mailbox, message_id), raw=True)

    def by_subject(self, mailbox):
        counts = {}
        for m in self.messages(mailbox):
            counts.setdefault(m.get("subject"), []).append(m["id"])
        return counts


def send_for_id(s, msg, to=("bob@sandbox.test",), frm="scanner@sandbox.test"):
    """Sends on an open smtplib connection; returns the queue id from the 250 reply."""
    s.ehlo_or_helo_if_needed()
    code, _ = s.mail(frm)
    assert code == 250, code
    for r in to:
        code, _ = s.rcpt(r)
        assert code == 250, code
    code, text = s.data(msg.as_bytes(policy=email.policy.SMTP))
    if code != 250:
        raise smtplib.SMTPDataError(code, text)
    return re.search(rb"queued as (\S+)", text).group(1).decode()


def plain_message(subject, text, frm="scanner@sandbox.test", to="bob@sandbox.test"):
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = frm, to, subject
    m.set_content(text)
    return m


def delivered_text(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    part = msg.get_body(("plain",))
    return part.get_content() if part else ""


# ---- scenarios -------------------------------------------------------------------------------------

def scenario_msmtp(t):
    """msmtp (a real sendmail-style client) over STARTTLS and implicit TLS, AUTH with the cert checked."""
    t.start_bridge()
    cert = t.t + "/state/tls/server.pem"
    pw = t.password("alice")
    for mode, port, starttls in (("starttls", t.smtp_port, "on"), ("implicit", t.smtps_port, "off")):
        rc = os.path.join(t.dir, "msmtprc-" + mode)
        with open(rc, "w") as f:
            f.write("account default\nhost 127.0.0.1\nport %d\nfrom alice@sandbox.test\nauth on\nuser alice\n"
                    "password %s\ntls on\ntls_starttls %s\ntls_trust_file %s\n" % (port, pw, starttls, cert))
        os.chmod(rc, 0o600)
        subject = "msmtp %s %s" % (mode, uuid.uuid4().hex)
        body = "Subject: %s\nFrom: alice@sandbox.test\nTo: bob@sandbox.test\n\nsent by msmtp over %s\n" % (subject, mode)
        p = subprocess.run(["msmtp", "-C", rc, "bob@sandbox.test", "scanner@sandbox.test"], input=body.encode(),
                           capture_output=True, timeout=60)
        check(p.returncode == 0, "msmtp %s exits 0 (%s)" % (mode, p.stderr.decode(errors="replace").strip()))
        for mb in ("bob@sandbox.test", "scanner@sandbox.test"):
            found = wait_for(lambda: t.by_subject(mb).get(subject), 30)
            check(found and len(found) == 1, "msmtp %s: %s got it exactly once" % (mode, mb))
    # A MAIL FROM outside alice's send_as is refused, and msmtp reports it.
    rc = os.path.join(t.dir, "msmtprc-starttls")
    p = subprocess.run(["msmtp", "-C", rc, "--from=ceo@sandbox.test", "bob@sandbox.test"],
                       input=b"Subject: spoof\n\nx\n", capture_output=True, timeout=60)
    err = p.stderr.decode(errors="replace")
    check(p.returncode != 0 and "553" in err, "msmtp: MAIL FROM outside send_as refused with 553 (%s)" % err.strip())


def scenario_large(t):
    """A 25 MB scanned PDF from an unauthenticated device on a relay network, byte-identical at the
    recipient (only possible through an upload session: the sandbox refuses Graph requests over 4 MB)."""
    t.start_bridge()
    pdf = b"%PDF-1.4\n" + os.urandom(25 * 1000 * 1000) + b"\n%%EOF\n"
    digest = hashlib.sha256(pdf).hexdigest()
    subject = "Scan " + uuid.uuid4().hex
    m = EmailMessage()
    m["From"] = "Scanner <scanner@sandbox.test>"
    m["To"] = "bob@sandbox.test"
    m["Subject"] = subject
    m.set_content("Scanned document attached.\n")
    m.add_attachment(pdf, maintype="application", subtype="pdf", filename="scan-0001.pdf")
    start = time.time()
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=120) as s:
        s.ehlo("mfp-3f.example")
        size = int(s.esmtp_features.get("size", "0"))
        check(size >= len(m.as_bytes()), "SIZE advertised (%d) covers the 25 MB scan" % size)
        refused = s.send_message(m, to_addrs=["bob@sandbox.test"])
        check(refused == {}, "25 MB scan accepted with 250")
    found = wait_for(lambda: t.by_subject("bob@sandbox.test").get(subject), 180, 0.5)
    check(found and len(found) == 1, "25 MB scan delivered once (%.1f s)" % (time.time() - start))
    if not found:
        return
    raw = t.mime("bob@sandbox.test", found[0])
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    atts = [p for p in msg.walk() if p.get_filename()]
    check(len(atts) == 1 and atts[0].get_filename() == "scan-0001.pdf", "one attachment named scan-0001.pdf")
    if atts:
        got = atts[0].get_payload(decode=True)
        check(hashlib.sha256(got).hexdigest() == digest,
              "attachment byte-identical (%d bytes, sha256 %s...)" % (len(got), digest[:12]))
    log = open(t.bridge_log).read()
    check(re.search(r"delivered .*status=202", log) is not None, "bridge logged the delivery")


def scenario_throttling(t):
    """429 storms with Retry-After and 503 bursts without it delay mail but deliver all of it, once."""
    t.start_bridge()
    # Faults hit any Graph request, so this test reads Graph only once every fault has been consumed by
    # the bridge, and follows deliveries through the bridge's log (queue id from the 250 reply).
    before = t.faults_hit()
    t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 429, "retry_after": 2, "count": 10})
    subjects = ["429 storm %d %s" % (i, uuid.uuid4().hex) for i in range(12)]
    t0 = time.time()
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
        ids = [send_for_id(s, plain_message(subj, "throttled but delivered\n")) for subj in subjects]
    ok = wait_for(lambda: all(t.delivered(i) for i in ids), 120, 0.2)
    took = time.time() - t0
    check(ok, "all 12 messages delivered through a storm of 10 x 429 (%.1f s)" % took)
    after = t.faults_hit()
    check(after - before == 10, "all 10 injected 429s were hit")
    counts = t.by_subject("bob@sandbox.test")
    check(all(len(counts.get(x, [])) == 1 for x in subjects), "each exactly once in bob's inbox")
    # Retry-After 2 s obeyed: 10 throttled answers with at most 4 in flight need >= 3 pauses of 2 s.
    check(took >= 4.0, "Retry-After waited for (%.1f s >= 4 s)" % took)
    log = open(t.bridge_log).read()
    check(len(re.findall(r"deferred .*status=429", log)) == 10, "each 429 logged as deferred with its status")

    t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 503, "count": 6})
    t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 504, "count": 2})
    t.admin("/sandbox/faults", {"target": "graph", "kind": "reset", "count": 2})
    subjects = ["5xx burst %d %s" % (i, uuid.uuid4().hex) for i in range(8)]
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
        ids = [send_for_id(s, plain_message(subj, "5xx but delivered\n")) for subj in subjects]
    ok = wait_for(lambda: all(t.delivered(i) for i in ids), 120, 0.2)
    check(ok, "all 8 messages delivered through 503, 504 and connection resets")
    check(t.faults_hit() - after == 10, "all 10 faults were hit")
    counts = t.by_subject("bob@sandbox.test")
    check(all(len(counts.get(x, [])) == 1 for x in subjects), "each exactly once after 5xx")


def scenario_crash(t):
    """kill -9 of the bridge during a 500-message burst, then restart: every message answered 250
    reaches the sandbox with the same content; duplicates only among deliveries in flight at the kill."""
    t.start_bridge()
    total, clients = 500, 8
    kill_at = random.randint(150, 350)
    acked = {}  # subject -> sha256 of the text sent
    lock = threading.Lock()
    counter = iter(range(total))
    killed = threading.Event()

    def client():
        try:
            s = smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30)
        except OSError:
            return
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            subject = "burst %03d %s" % (i, uuid.uuid4().hex)
            text = "message %d\n%s\n" % (i, os.urandom(3000).hex())
            try:
                s.send_message(plain_message(subject, text))
            except (smtplib.SMTPException, OSError):
                break  # no 250: not acknowledged
            with lock:
                acked[subject] = hashlib.sha256(text.encode()).hexdigest()
                if len(acked) >= kill_at and not killed.is_set():
                    killed.set()
                    t.bridge.send_signal(signal.SIGKILL)
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    t.bridge.wait(30)
    n_acked = len(acked)
    check(killed.is_set(), "bridge killed with SIGKILL after %d acknowledgements" % kill_at)
    t.start_bridge()
    check("recovered=" in open(t.bridge_log).read(), "restarted bridge reports what it recovered")

    def all_there():
        counts = t.by_subject("bob@sandbox.test")
        return counts if all(s in counts for s in acked) else None

    counts = wait_for(all_there, 240, 1.0)
    counts = counts or t.by_subject("bob@sandbox.test")
    missing = [s for s in acked if s not in counts]
    check(not missing, "all %d acknowledged messages delivered (%d missing)" % (n_acked, len(missing)))
    dups = [s for s, ids in counts.items() if s in acked and len(ids) > 1]
    # At most per_mailbox (4) deliveries of the relay mailbox were in flight when the process died.
    check(len(dups) <= 4, "duplicates only for deliveries in flight at the kill (%d)" % len(dups))
    bad = 0
    for s, h in acked.items():
        for mid in counts.get(s, []):
            text = delivered_text(t.mime("bob@sandbox.test", mid)).replace("\r\n", "\n")
            if hashlib.sha256(text.encode()).hexdigest() != h:
                bad += 1
    check(bad == 0, "content hashes of all %d delivered copies match what was sent (%d differ)" %
          (sum(len(counts.get(s, [])) for s in acked), bad))
    extra = [s for s in counts if s and s.startswith("burst ") and s not in acked]
    print("      %d sent without 250 arrived anyway (client cut off after the commit): allowed" % len(extra))


def scenario_sizecap(t):
    """An app without Mail.ReadWrite can only send one-request MIME: bigger mail gets 552 up front."""
    t.start_bridge()
    cid = t.state["client_id"]
    t.admin("/sandbox/apps/" + cid, {"roles": ["Mail.Send"]})
    t.admin("/sandbox/tokens/revoke", {})
    # The next delivery meets 401, refreshes the token and learns the narrower roles.
    # (The test's own Graph reads use the same app, so while it lacks Mail.ReadWrite deliveries are
    # followed through the bridge's log.)
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
        qid = send_for_id(s, plain_message("refresh " + uuid.uuid4().hex, "small\n"))
    check(wait_for(lambda: t.delivered(qid), 30), "small message still delivered")
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
        s.ehlo()
        code, text = s.mail("scanner@sandbox.test", ["SIZE=5000000"])
        check(code == 552 and b"Mail.ReadWrite" in text, "SIZE=5000000 refused at MAIL FROM: %d %s" % (code, text))
        s.rset()
        big = plain_message("big " + uuid.uuid4().hex, "x" * 100 + "\n")
        big.add_attachment(os.urandom(3_500_000), maintype="application", subtype="pdf", filename="big.pdf")
        try:
            send_for_id(s, big)  # no SIZE= parameter: refused when the data exceeds the cap
            check(False, "3.5 MB message without SIZE refused at end of data")
        except smtplib.SMTPDataError as e:
            check(e.smtp_code == 552 and b"Mail.ReadWrite" in e.smtp_error,
                  "3.5 MB message without SIZE refused at end of data: %d %s" % (e.smtp_code, e.smtp_error))
        qid = send_for_id(s, plain_message("still fine " + uuid.uuid4().hex, "after a 552 the session goes on\n"))
    check(wait_for(lambda: t.delivered(qid), 30), "the session went on after 552")
    # Granted again: the cap goes away with the next token.
    t.admin("/sandbox/apps/" + cid, {"roles": ["Mail.Send", "Mail.ReadWrite"]})
    t.admin("/sandbox/tokens/revoke", {})
    subj3 = "refresh again " + uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
        s.send_message(plain_message(subj3, "small\n"))
    check(wait_for(lambda: subj3 in t.by_subject("bob@sandbox.test"), 30), "delivered after the grant")
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
        s.ehlo()
        code, _ = s.mail("scanner@sandbox.test", ["SIZE=5000000"])
        check(code == 250, "SIZE=5000000 accepted once Mail.ReadWrite is granted (%d)" % code)


def scenario_queue(t):
    """`graphbridge queue list / retry` against a running bridge: a message held by a long Retry-After
    is listed, and retry makes the running bridge send it at once."""
    t.start_bridge()
    t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 429, "retry_after": 600, "count": 1})
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
        qid = send_for_id(s, plain_message("held " + uuid.uuid4().hex, "held by Retry-After 600\n"))
    check(wait_for(lambda: re.search(r"\[%s\]: deferred .*status=429" % qid, open(t.bridge_log).read()), 30),
          "first attempt deferred by 429 Retry-After 600")
    listed = subprocess.run([t.binary, "queue", "list", "--config", t.config], capture_output=True, text=True)
    check(listed.returncode == 0 and qid in listed.stdout, "queue list shows %s" % qid)
    time.sleep(2)
    check(not t.delivered(qid), "not retried before Retry-After")
    start = time.time()
    r = subprocess.run([t.binary, "queue", "retry", qid, "--config", t.config], capture_output=True, text=True)
    check(r.returncode == 0, "queue retry exits 0 (%s)" % r.stderr.strip())
    check(wait_for(lambda: t.delivered(qid), 20, 0.1), "running bridge delivered it after queue retry (%.1f s)"
          % (time.time() - start))
    listed = subprocess.run([t.binary, "queue", "list", "--config", t.config], capture_output=True, text=True)
    check(qid not in listed.stdout, "gone from queue list once delivered")


def scenario_envelope(t):
    """Over SMTP end to end: the split-transaction case reaches each recipient exactly once; an 8-bit
    UTF-8 body and a UTF-8 envelope address (SMTPUTF8) arrive intact; BDAT chunks make it through."""
    t.start_bridge()
    # One message whose headers name bob and alice, split by an upstream MTA into two transactions.
    subject = "split " + uuid.uuid4().hex
    m = EmailMessage()
    m["From"], m["To"], m["Cc"], m["Subject"] = "scanner@sandbox.test", "bob@sandbox.test", "alice@sandbox.test", subject
    m.set_content("one message, two transactions\n")
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
        send_for_id(s, m, to=("bob@sandbox.test",))
        send_for_id(s, m, to=("alice@sandbox.test",))
    for mb in ("bob@sandbox.test", "alice@sandbox.test"):
        got = wait_for(lambda: t.by_subject(mb).get(subject), 30)
        time.sleep(0.5)
        got = t.by_subject(mb).get(subject)
        check(got is not None and len(got) == 1, "split transaction: %s got it exactly once (%s)" %
              (mb, len(got or [])))

    # 8-bit UTF-8 body and header, an envelope-only UTF-8 recipient.
    subject = "Grüße " + uuid.uuid4().hex
    body = "Sehr geehrte Damen und Herren,\nanbei die Rechnung für März: 1.234,56 €\n"
    raw = ("From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: %s\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n%s" %
           (subject, body.replace("\n", "\r\n"))).encode("utf-8")
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
        s.ehlo()
        check(s.has_extn("smtputf8") and s.has_extn("8bitmime"), "SMTPUTF8 and 8BITMIME advertised")
        code, _ = s.mail("scanner@sandbox.test", ["BODY=8BITMIME", "SMTPUTF8"])
        check(code == 250, "MAIL with BODY=8BITMIME SMTPUTF8: %d" % code)
        for r in ("bob@sandbox.test", "jürgen@example.com"):
            code, _ = s.rcpt(r)
            check(code == 250, "RCPT %s: %d" % (r, code))
        code, text = s.data(raw)
        check(code == 250, "8-bit message accepted: %d %s" % (code, text))
    got = wait_for(lambda: t.by_subject("bob@sandbox.test").get(subject), 30)
    check(got is not None and len(got) == 1, "8-bit message delivered to bob once (UTF-8 subject intact)")
    if got:
        text = delivered_text(t.mime("bob@sandbox.test", got[0])).replace("\r\n", "\n")
        check(text == body, "8-bit UTF-8 body intact")
    sent = [x for x in t.messages("scanner@sandbox.test", "sentitems") if x.get("subject") == subject]
    if check(len(sent) == 1, "sender's Sent Items has the copy"):
        full = t.graph("/users/scanner@sandbox.test/messages/%s?$select=bccRecipients" % sent[0]["id"])
        bcc = [r["emailAddress"]["address"] for r in full.get("bccRecipients", [])]
        check("jürgen@example.com" in bcc, "the UTF-8 envelope-only recipient was sent as Bcc (%s)" % bcc)

    # BDAT (CHUNKING) through the whole chain, on a raw socket.
    subject = "bdat " + uuid.uuid4().hex
    msg = ("From: scanner@sandbox.test\r\nTo: bob@sandbox.test\r\nSubject: %s\r\n\r\nchunk one, "
           % subject).encode()
    tail = b"chunk two\r\n.leading dot stays\r\n"
    with socket.create_connection(("127.0.0.1", t.smtp_port), timeout=30) as c:
        f = c.makefile("rb")

        def reply():
            lines = []
            while True:
                line = f.readline()
                lines.append(line)
                if len(line) < 4 or line[3:4] != b"-":
                    return b"".join(lines)

        reply()
        c.sendall(b"EHLO bdat.example\r\n")
        reply()
        c.sendall(b"MAIL FROM:<scanner@sandbox.test>\r\nRCPT TO:<bob@sandbox.test>\r\n")
        reply(), reply()
        c.sendall(b"BDAT %d\r\n" % len(msg) + msg)
        r1 = reply()
        c.sendall(b"BDAT %d LAST\r\n" % len(tail) + tail)
        r2 = reply()
        check(r1.startswith(b"250") and r2.startswith(b"250 2.0.0"), "BDAT chunks accepted (%r)" % r2.strip())
        c.sendall(b"QUIT\r\n")
    got = wait_for(lambda: t.by_subject("bob@sandbox.test").get(subject), 30)
    if check(got is not None and len(got) == 1, "BDAT message delivered"):
        text = delivered_text(t.mime("bob@sandbox.test", got[0])).replace("\r\n", "\n")
        check(text == "chunk one, chunk two\n.leading dot stays\n", "BDAT body intact, no dot-unstuffing (%r)" % text)


SCENARIOS = {"envelope": scenario_envelope, "queue": scenario_queue, "msmtp": scenario_msmtp, "large": scenario_large, "throttling": scenario_throttling,
             "crash": scenario_crash, "sizecap": scenario_sizecap}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(__doc__)
        return 2
    t = Tenant(sys.argv[1])
    try:
        SCENARIOS[sys.argv[2]](t)
    except Exception as e:  # an unexpected error is a failure with its reason, not a hang
        import traceback
        traceback.print_exc()
        FAILURES.append("exception: %r" % e)
    finally:
        if FAILURES:
            try:
                print("---- bridge log (tail) ----\n" + open(t.bridge_log).read()[-4000:])
            except OSError:
                pass
        t.close()
    print("%s: %d failure(s)" % (sys.argv[2], len(FAILURES)))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
