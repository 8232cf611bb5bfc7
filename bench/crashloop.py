#!/usr/bin/env python3
"""Crash loop (issue 7, hardening): mixed SMTP + IMAP load against one bridge while it is killed with
SIGKILL at random moments and restarted, then a full audit at the sandbox.

Runs `graphbridge sandbox --no-bridge` and `graphbridge serve` (tests/integration/relay_system.Tenant),
and while the load runs, `--cycles` times: waits a random (seeded) delay, `kill -9`s the bridge, restarts
it. Load:
  SMTP  8 senders: 2 relay-network devices (no AUTH, send as scanner), 2 x AUTH alice, 2 x AUTH bob,
        2 x AUTH scanner; to bob and/or scanner (a quarter of the messages to both, half of those with one
        recipient Bcc-only); 1 KB text up to ~3.2 MB attachments (MIME over 3 MB -> Graph "Large" mode,
        attachments over 2.9 MB -> an upload session). Every message carries a unique token in its
        Subject, Message-ID and body; the sender records the SHA-256 of the text and attachment it sent
        and whether (and when, with which queue id) it was answered 250.
  IMAP  4 clients logged in as alice (her Inbox, seeded with --seed-messages messages, is theirs alone;
        SMTP never delivers to alice): UID FETCH, UID STORE +/-FLAGS (\\Seen, \\Flagged), UID COPY to
        CrashCopies, UID MOVE to CrashMoved, APPEND to INBOX, EXAMINE of the other folders. Each message
        has one owner client for STORE and MOVE, so the flags expected at the end are known. Every
        UIDVALIDITY and UID -> Message-ID the clients were told (SELECT, FETCH, APPENDUID, COPYUID) is
        recorded.
After the last restart the load stops, the queue drains (`graphbridge queue list` says 0 queued) and:
  SMTP  every message answered 250 is in every recipient's Inbox (Graph, `$value` parsed, text and
        attachment hashes equal); more than one copy only for messages whose delivery was in flight at a
        kill (the bridge had not logged it delivered when it was killed); nothing delivered that was not
        sent; no bounces;
  IMAP  UIDVALIDITY of each folder never changed; a UID never named two messages; no duplicate UID in a
        FETCH; every seeded or acknowledged APPENDed message is in exactly one of INBOX / CrashMoved
        (CrashMoved if its MOVE was acknowledged); CrashCopies holds at least the acknowledged COPYs of each
        message and at most those plus the unanswered ones; isRead / flag at Graph equal the last
        acknowledged STORE; and a fresh session's `UID FETCH 1:* (FLAGS ...)` of each folder shows exactly
        Graph's messages with Graph's isRead / flag state.
Prints a summary, writes it as JSON with --json, exits 1 on any failed check.

Usage: bench/crashloop.py BINARY [--cycles 20] [--seed N] [--json FILE] [--keep]"""
import argparse
import collections
import email
import email.policy
import hashlib
import http.client
import imaplib
import json
import os
import random
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
import urllib.parse
from email.message import EmailMessage

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import relay_system as rs  # noqa: E402

MAILBOXES = ("alice@sandbox.test", "bob@sandbox.test", "scanner@sandbox.test")
RECIPIENTS = ("bob@sandbox.test", "scanner@sandbox.test")
IMAP_USER = "alice"
IMAP_MAILBOX = "alice@sandbox.test"
FOLDERS = ("INBOX", "CrashCopies", "CrashMoved")
UPLOAD_SESSION_ATTACHMENT = 2_900_000  # graph/mail/deliverer.h simple_attachment_max
LARGE_MIME = 3_000_000                 # base64 over 4,000,000 bytes (prepare.h max_request_body)

FAILURES = []
_flock = threading.Lock()


def fail(what):
    with _flock:
        FAILURES.append(what)
    print("FAIL  " + what, flush=True)


def note(what):
    print("      " + what, flush=True)


# ---- Graph reads over one kept-alive HTTPS connection -------------------------------------------------

class Graph:
    def __init__(self, t):
        self.t = t
        self.conn = None

    def get(self, path_or_url, raw=False):
        url = path_or_url if path_or_url.startswith("https://") else self.t.base + "/v1.0" + path_or_url
        path = url[len(self.t.base):]
        for attempt in range(4):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection("127.0.0.1", self.t.port, context=self.t.ctx, timeout=120)
                self.conn.request("GET", path, headers={"Authorization": "Bearer " + self.t.token()})
                r = self.conn.getresponse()
                data = r.read()
                if r.status in (401, 403):
                    self.t._token = None
                    continue
                if r.status >= 400:
                    raise RuntimeError("GET %s: %d %s" % (path, r.status, data[:200]))
                return data if raw else json.loads(data)
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 3:
                    raise
                time.sleep(0.5)
        raise RuntimeError("GET %s: unauthorised" % path)

    def pages(self, path):
        out = []
        while path:
            page = self.get(path)
            out += page["value"]
            path = page.get("@odata.nextLink")
        return out

    def folder_ids(self, mailbox):
        return {f["displayName"]: f["id"] for f in self.pages("/users/%s/mailFolders?$top=100" % mailbox)}

    def folder_messages(self, mailbox, folder_id):
        sel = "$select=subject,internetMessageId,isRead,flag,receivedDateTime,createdDateTime&$top=500"
        return self.pages("/users/%s/mailFolders/%s/messages?%s" % (mailbox, urllib.parse.quote(folder_id, safe=""), sel))

    def mime(self, mailbox, message_id):
        return self.get("/users/%s/messages/%s/$value" % (mailbox, urllib.parse.quote(message_id, safe="")), raw=True)


# ---- content hashes ---------------------------------------------------------------------------------

def content_hash(text, attachment):
    h = hashlib.sha256()
    h.update(text.replace("\r\n", "\n").encode())
    h.update(b"\0")
    if attachment is not None:
        h.update(attachment)
    return h.hexdigest()


def delivered_hash(raw):
    """The hash of the first text/plain leaf and the first leaf with a file name. (A Large-mode message comes
    back from Graph as multipart/mixed { multipart/mixed { text/plain }, attachment }: the attachment was
    cut out of the MIME and uploaded on its own.)"""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    text, atts = None, []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_filename():
            atts.append(part.get_payload(decode=True))
        elif text is None and part.get_content_type() == "text/plain":
            text = part.get_content()
    return content_hash(text or "", atts[0] if atts else None), len(atts)


# ---- shared records ---------------------------------------------------------------------------------

class Records:
    def __init__(self):
        self.lock = threading.Lock()
        self.smtp = {}  # token -> dict
        self.smtp_errors = collections.Counter()
        self.smtp_connect_failures = 0
        self.kills = []  # unix times
        # IMAP
        self.uidvalidity = collections.defaultdict(set)       # folder -> values seen
        self.uidmap = {}                                       # (folder, uv, uid) -> msgid
        self.uid_conflicts = []
        self.fetch_dup_uids = []
        self.fetch_dup_msgids = []
        self.owner = {}                                        # msgid -> client index
        self.expected = {}                                     # msgid -> {"seen": bool|None, "flagged": ...}
        self.appended = {}                                     # msgid -> "acked" | "maybe"
        self.moved = {}                                        # msgid -> "acked" | "maybe"
        self.copies_acked = collections.Counter()
        self.copies_maybe = collections.Counter()
        self.imap_ops = collections.Counter()                  # "op:ok" / "op:no" / "op:cut"
        self.imap_no = []
        self.imap_connect_failures = 0

    def saw_uidvalidity(self, folder, uv):
        with self.lock:
            self.uidvalidity[folder].add(int(uv))

    def saw_uid(self, folder, uv, uid, msgid, where):
        key = (folder, int(uv), int(uid))
        with self.lock:
            old = self.uidmap.get(key)
            if old is None:
                self.uidmap[key] = msgid
            elif old != msgid:
                self.uid_conflicts.append({"folder": folder, "uidvalidity": int(uv), "uid": int(uid),
                                           "first": old, "now": msgid, "where": where})


R = Records()


# ---- SMTP load --------------------------------------------------------------------------------------

def make_message(rng, token, frm, to_header):
    r = rng.random()
    if r < 0.65:
        text_size, att = rng.randint(1000, 10000), 0
    elif r < 0.85:
        text_size, att = rng.randint(500, 2000), rng.randint(10_000, 200_000)
    elif r < 0.95:
        text_size, att = rng.randint(500, 2000), rng.randint(200_000, 2_000_000)
    else:
        text_size, att = rng.randint(500, 2000), rng.randint(2_200_000, 3_200_000)
    lines = ["crashloop token %s" % token]
    while sum(len(x) + 1 for x in lines) < text_size:
        lines.append("%08x %s" % (rng.getrandbits(32), rng.getrandbits(256).to_bytes(32, "big").hex()))
    text = "\n".join(lines) + "\n"
    m = EmailMessage()
    m["From"] = frm
    m["To"] = ", ".join(to_header) if to_header else "undisclosed-recipients:;"
    m["Subject"] = "crashloop " + token
    m["Message-ID"] = "<%s@crashloop.test>" % token
    m.set_content(text)
    blob = None
    if att:
        blob = os.urandom(att)
        m.add_attachment(blob, maintype="application", subtype="octet-stream", filename="blob-%s.bin" % token)
    raw = m.as_bytes(policy=email.policy.SMTP)
    return raw, content_hash(text, blob), att


def smtp_worker(t, idx, kind, login, stop, seed):
    rng = random.Random(seed * 1009 + idx)
    frm = "scanner@sandbox.test" if kind == "relay" else "%s@sandbox.test" % login
    conn = None
    n = 0
    while not stop.is_set():
        if conn is None:
            try:
                conn = smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60, source_address=("127.0.0.1", 0))
                conn.ehlo("crashloop-%d.example" % idx)
                if login:
                    conn.login(login, t.password(login))
            except (OSError, smtplib.SMTPException):
                conn = None
                with R.lock:
                    R.smtp_connect_failures += 1
                time.sleep(0.2 + rng.random() * 0.3)
                continue
        n += 1
        token = "s%d-%d-%05d-%04x" % (seed, idx, n, rng.getrandbits(16))
        roll = rng.random()
        if roll < 0.5:
            rcpts, header = ["bob@sandbox.test"], ["bob@sandbox.test"]
        elif roll < 0.75:
            rcpts, header = ["scanner@sandbox.test"], ["scanner@sandbox.test"]
        else:
            rcpts = list(RECIPIENTS)
            rng.shuffle(rcpts)
            header = rcpts if rng.random() < 0.5 else rcpts[:1]  # else the second one is Bcc (envelope only)
        raw, digest, att = make_message(rng, token, frm, header)
        rec = {"token": token, "sender": idx, "kind": kind, "from": frm, "rcpts": rcpts, "hash": digest,
               "size": len(raw), "attachment": att, "start": time.time(), "acked": False}
        with R.lock:
            R.smtp[token] = rec
        try:
            code, text = conn.mail(frm)
            if code != 250:
                raise smtplib.SMTPResponseException(code, text)
            for r in rcpts:
                code, text = conn.rcpt(r)
                if code != 250:
                    raise smtplib.SMTPResponseException(code, text)
            code, text = conn.data(raw)
            if code != 250:
                raise smtplib.SMTPResponseException(code, text)
            m = re.search(rb"queued as (\S+)", text)
            with R.lock:
                rec.update(acked=True, ack=time.time(), qid=m.group(1).decode() if m else None)
        except smtplib.SMTPResponseException as e:
            with R.lock:
                rec["error"] = "%d %s" % (e.smtp_code, e.smtp_error[:80])
                R.smtp_errors["reply %d" % e.smtp_code] += 1
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            continue
        except (OSError, smtplib.SMTPException) as e:
            with R.lock:
                rec["error"] = type(e).__name__
                R.smtp_errors[type(e).__name__] += 1
            try:
                conn.close()
            except Exception:
                pass
            conn = None
            continue
        time.sleep(rng.uniform(0.05, 0.5))
    if conn is not None:
        try:
            conn.quit()
        except Exception:
            pass


# ---- IMAP load --------------------------------------------------------------------------------------

MSGID_RE = re.compile(rb"Message-ID:\s*(<[^>\s]+>)", re.I)
UID_RE = re.compile(rb"UID (\d+)")
FLAGS_RE = re.compile(rb"FLAGS \(([^)]*)\)")


def parse_fetch(data):
    """imaplib FETCH data -> [(uid, flags set, msgid or None)]."""
    out = []
    i = 0
    while i < len(data):
        item = data[i]
        if isinstance(item, tuple):
            meta = item[0]
            lit = item[1] or b""
            if i + 1 < len(data) and isinstance(data[i + 1], bytes) and not re.match(rb"\d+ \(", data[i + 1]):
                meta += data[i + 1]
                i += 1
            m = MSGID_RE.search(lit)
            msgid = m.group(1).decode() if m else ""
        elif isinstance(item, bytes):
            meta, msgid = item, None
        else:
            i += 1
            continue
        u = UID_RE.search(meta)
        f = FLAGS_RE.search(meta)
        if u:
            flags = set(f.group(1).decode().split()) if f else None
            out.append((int(u.group(1)), flags, msgid))
        i += 1
    return out


class Cut(Exception):
    """The connection went away (the bridge was killed)."""


class ImapWorker:
    def __init__(self, t, idx, n_clients, stop, seed, seeded, move_cap):
        self.t, self.idx, self.n, self.stop = t, idx, n_clients, stop
        self.rng = random.Random(seed * 7919 + idx)
        self.m = None
        self.uv = {}
        self.inbox = {}   # uid -> msgid (last FETCH of INBOX)
        self.seeded = seeded
        self.move_cap = move_cap
        self.appends = 0

    def call(self, op, fn, *a):
        try:
            typ, data = fn(*a)
        except imaplib.IMAP4.abort as e:
            raise Cut(str(e))
        except (OSError, EOFError) as e:
            raise Cut(str(e))
        except imaplib.IMAP4.error as e:  # BAD
            with R.lock:
                R.imap_ops[op + ":bad"] += 1
                R.imap_no.append("%s BAD %s" % (op, e))
            return "BAD", [str(e).encode()]
        with R.lock:
            R.imap_ops["%s:%s" % (op, "ok" if typ == "OK" else "no")] += 1
            if typ != "OK":
                R.imap_no.append("%s %s %r" % (op, typ, data[:1]))
        return typ, data

    def connect(self):
        while not self.stop.is_set():
            try:
                m = imaplib.IMAP4("127.0.0.1", self.t.imap_port, timeout=60)
                m.login(IMAP_USER, self.t.password(IMAP_USER))
                self.m = m
                self.select("INBOX")
                return True
            except (OSError, EOFError, imaplib.IMAP4.error, Cut):
                with R.lock:
                    R.imap_connect_failures += 1
                self.m = None
                time.sleep(0.3 + self.rng.random() * 0.3)
        return False

    def select(self, folder, readonly=False):
        self.m.untagged_responses.pop("UIDVALIDITY", None)
        typ, data = self.call("select", self.m.select, folder, readonly)
        if typ != "OK":
            raise Cut("SELECT %s: %s" % (folder, data))
        uv = self.m.untagged_responses.get("UIDVALIDITY", [None])[-1]
        if uv is None:
            fail("SELECT %s answered without UIDVALIDITY" % folder)
            raise Cut("no UIDVALIDITY")
        self.uv[folder] = int(uv)
        R.saw_uidvalidity(folder, uv)
        return int(data[0] or 0)

    def fetch_all(self, folder, where):
        typ, data = self.call("fetch", self.m.uid, "FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        if typ != "OK":
            return None
        rows = [r for r in parse_fetch(data) if r[2] is not None]
        uids = collections.Counter(r[0] for r in rows)
        dup = [u for u, c in uids.items() if c > 1]
        if dup:
            with R.lock:
                R.fetch_dup_uids.append({"folder": folder, "uids": dup[:10], "where": where})
        if folder != "CrashCopies":
            ids = collections.Counter(r[2] for r in rows)
            dupm = [x for x, c in ids.items() if c > 1]
            if dupm:
                with R.lock:
                    R.fetch_dup_msgids.append({"folder": folder, "msgids": dupm[:10], "where": where})
        for uid, _, msgid in rows:
            R.saw_uid(folder, self.uv[folder], uid, msgid, where)
        return {uid: msgid for uid, _, msgid in rows}

    def mine(self):
        with R.lock:
            return [(u, x) for u, x in self.inbox.items() if R.owner.get(x) == self.idx and R.moved.get(x) is None]

    def step(self):
        r = self.rng.random()
        if r < 0.2 or not self.inbox:
            got = self.fetch_all("INBOX", "client fetch")
            if got is not None:
                self.inbox = got
        elif r < 0.5:
            mine = self.mine()
            if not mine:
                return
            uid, msgid = self.rng.choice(mine)
            flag = self.rng.choice(("\\Seen", "\\Flagged"))
            on = self.rng.random() < 0.5
            key = "seen" if flag == "\\Seen" else "flagged"
            with R.lock:
                R.expected.setdefault(msgid, {"seen": None, "flagged": None})[key] = None  # unknown until answered
            try:
                typ, _ = self.call("store", self.m.uid, "STORE", str(uid), ("+" if on else "-") + "FLAGS.SILENT",
                                   "(%s)" % flag)
            except Cut:
                raise
            if typ == "OK":
                with R.lock:
                    R.expected[msgid][key] = on
        elif r < 0.6:
            if not self.inbox:
                return
            uid, msgid = self.rng.choice(list(self.inbox.items()))
            self.m.untagged_responses.pop("COPYUID", None)
            with R.lock:
                R.copies_maybe[msgid] += 1
            typ, _ = self.call("copy", self.m.uid, "COPY", str(uid), "CrashCopies")
            if typ == "OK":
                cu = self.m.untagged_responses.pop("COPYUID", [None])[-1]
                with R.lock:
                    R.copies_maybe[msgid] -= 1
                    moved_away = R.moved.get(msgid) is not None
                    if cu:
                        R.copies_acked[msgid] += 1
                    else:
                        R.imap_ops["copy:ok-nothing"] += 1
                if cu:
                    uv, _, new = cu.decode().split()
                    R.saw_uidvalidity("CrashCopies", uv)
                    R.saw_uid("CrashCopies", uv, new, msgid, "COPYUID")
                elif not moved_away:
                    # RFC 4315: OK without COPYUID when the UID no longer exists (its owner moved it since
                    # this client's last FETCH); otherwise the copy should have been made.
                    fail("UID COPY of %s (UID %d) answered OK without COPYUID, and it was not moved" % (msgid, uid))
            else:
                with R.lock:
                    R.copies_maybe[msgid] -= 1
        elif r < 0.7:
            with R.lock:
                moved = sum(1 for v in R.moved.values())
            mine = self.mine()
            if not mine or moved >= self.move_cap:
                return
            uid, msgid = self.rng.choice(mine)
            self.m.untagged_responses.pop("COPYUID", None)
            with R.lock:
                R.moved[msgid] = "maybe"
            typ, _ = self.call("move", self.m.uid, "MOVE", str(uid), "CrashMoved")
            if typ == "OK":
                cu = self.m.untagged_responses.pop("COPYUID", [None])[-1]
                with R.lock:
                    R.moved[msgid] = "acked"
                self.inbox.pop(uid, None)
                if cu:
                    uv, _, new = cu.decode().split()
                    R.saw_uidvalidity("CrashMoved", uv)
                    R.saw_uid("CrashMoved", uv, new, msgid, "COPYUID (MOVE)")
                else:
                    fail("UID MOVE OK without COPYUID")
            else:
                with R.lock:
                    del R.moved[msgid]
        elif r < 0.85:
            self.appends += 1
            token = "a%d-%04d-%04x" % (self.idx, self.appends, self.rng.getrandbits(16))
            msgid = "<imap-%s@crashloop.test>" % token
            flags = self.rng.choice(((), ("\\Seen",), ("\\Flagged",), ("\\Seen", "\\Flagged")))
            body = ("From: alice@sandbox.test\r\nTo: alice@sandbox.test\r\nSubject: imap-append %s\r\n"
                    "Message-ID: %s\r\nContent-Type: text/plain\r\n\r\n" % (token, msgid))
            body += ("appended line %s\r\n" % token) * self.rng.randint(20, 600)
            with R.lock:
                R.owner[msgid] = self.idx
                R.appended[msgid] = "maybe"
                R.expected[msgid] = {"seen": None, "flagged": None}
            self.m.untagged_responses.pop("APPENDUID", None)
            typ, data = self.call("append", self.m.append, "INBOX", "(%s)" % " ".join(flags), None, body.encode())
            if typ == "OK":
                au = self.m.untagged_responses.pop("APPENDUID", [None])[-1]
                with R.lock:
                    R.appended[msgid] = "acked"
                    R.expected[msgid] = {"seen": "\\Seen" in flags, "flagged": "\\Flagged" in flags}
                if au:
                    uv, uid = au.decode().split()
                    R.saw_uidvalidity("INBOX", uv)
                    R.saw_uid("INBOX", uv, uid, msgid, "APPENDUID")
                    self.inbox[int(uid)] = msgid
                else:
                    fail("APPEND OK without APPENDUID")
        else:
            folder = self.rng.choice(("CrashMoved", "CrashCopies"))
            if self.select(folder, readonly=True):
                self.fetch_all(folder, "client examine")
            got_n = self.select("INBOX")
            if got_n:
                got = self.fetch_all("INBOX", "client fetch")
                if got is not None:
                    self.inbox = got

    def run(self):
        while not self.stop.is_set():
            if self.m is None and not self.connect():
                break
            try:
                self.step()
            except Cut:
                try:
                    self.m.shutdown()
                except Exception:
                    pass
                self.m = None
                with R.lock:
                    R.imap_ops["cut"] += 1
            time.sleep(self.rng.uniform(0.02, 0.2))
        if self.m is not None:
            try:
                self.m.logout()
            except Exception:
                pass


# ---- the run ----------------------------------------------------------------------------------------

def queue_counts(t):
    p = subprocess.run([t.binary, "queue", "list", "--config", t.config], capture_output=True, text=True, timeout=60)
    m = re.search(r"(\d+) queued, (\d+) dead", p.stdout)
    return (int(m.group(1)), int(m.group(2)), p.stdout) if m else (None, None, p.stdout + p.stderr)


def iso_time(text):
    import calendar
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)", text)
    return calendar.timegm(tuple(int(x) for x in m.groups())) if m else None


def log_times(path):
    """One bridge run's log: queue id -> first 'delivered' time (unix), queue id -> 'queued' time, error lines."""
    out, queued, errors = {}, {}, []
    import calendar
    for line in open(path, errors="replace"):
        m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z \w+ (queue|smtp) (?:\[\w+\] )?"
                     r"\[(\w+)\]: (delivered|queued) ", line)
        if m:
            ts = calendar.timegm(tuple(int(x) for x in m.groups()[:6])) + int(m.group(7)) / 1000.0
            (out if m.group(10) == "delivered" else queued).setdefault(m.group(9), ts)
        if re.match(r"\S+ error ", line):
            errors.append(line.strip()[:300])
    return out, queued, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary")
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--min-delay", type=float, default=0.5, help="shortest run before a kill (s)")
    ap.add_argument("--max-delay", type=float, default=10.0, help="longest run before a kill (s)")
    ap.add_argument("--smtp-senders", type=int, default=8)
    ap.add_argument("--imap-clients", type=int, default=4)
    ap.add_argument("--seed-messages", type=int, default=300)
    ap.add_argument("--drain-timeout", type=float, default=900)
    ap.add_argument("--graph-latency-ms", type=int, default=50,
                    help="the sandbox holds every Graph request this long (a real tenant answers in ~50-200 ms), "
                         "so deliveries and IMAP writes are in flight when the bridge is killed")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the tenant directory")
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 1 << 30)
    rng = random.Random(seed)
    started = time.time()
    print("crashloop: seed %d, %d cycles, %d SMTP senders, %d IMAP clients" % (seed, a.cycles, a.smtp_senders,
                                                                               a.imap_clients), flush=True)
    t = rs.Tenant(os.path.abspath(a.binary))
    graph = Graph(t)
    runs = []
    summary = {"seed": seed, "cycles": a.cycles, "date": time.strftime("%Y-%m-%d"), "dir": t.dir}
    try:
        # alice's Inbox: the IMAP clients' playground, seeded as if mail had arrived.
        seeded = []
        for i in range(a.seed_messages):
            msgid = "<seed-%d-%04d@crashloop.test>" % (seed, i)
            mime = ("From: Carol <carol@example.com>\r\nTo: alice@sandbox.test\r\nSubject: seeded %04d\r\n"
                    "Message-ID: %s\r\nContent-Type: text/plain\r\n\r\n%s" %
                    (i, msgid, ("seeded body line %d\r\n" % i) * (5 + i % 50)))
            t.admin("/sandbox/mailboxes/%s/messages?folder=inbox&read=%s" % (IMAP_MAILBOX, "true" if i % 3 == 0 else "false"),
                    raw=mime.encode())
            seeded.append(msgid)
            R.owner[msgid] = i % a.imap_clients
            R.expected[msgid] = {"seen": i % 3 == 0, "flagged": False}

        def start(label):
            t.bridge_log = os.path.join(t.dir, "bridge-run%02d.log" % len(runs))
            t0 = time.time()
            t.start_bridge()
            runs.append({"run": len(runs), "log": t.bridge_log, "started": time.time(), "startup_s": time.time() - t0,
                         "label": label})

        if a.graph_latency_ms:
            t.admin("/sandbox/settings", {"graph_latency_ms": a.graph_latency_ms})
        summary["graph_latency_ms"] = a.graph_latency_ms
        start("first")
        m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=60)
        m.login(IMAP_USER, t.password(IMAP_USER))
        for f in FOLDERS[1:]:
            m.create(f)
        # Warm-up: the first FETCH of the headers downloads every body once (one $value each, slow with
        # Graph latency); a steady-state mailbox has that behind it. Its UIDs are the first ones recorded.
        m.untagged_responses.pop("UIDVALIDITY", None)
        m.select("INBOX")
        uv = int(m.untagged_responses["UIDVALIDITY"][-1])
        R.saw_uidvalidity("INBOX", uv)
        t0 = time.time()
        typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        rows = [r for r in parse_fetch(data) if r[2] is not None]
        for uid, _, msgid in rows:
            R.saw_uid("INBOX", uv, uid, msgid, "warm-up")
        note("warm-up FETCH of %d seeded messages: %.1f s" % (len(rows), time.time() - t0))
        m.logout()

        stop = threading.Event()
        kinds = [("relay", None), ("auth", "alice"), ("auth", "bob"), ("auth", "scanner")]
        threads = []
        for i in range(a.smtp_senders):
            kind, login = kinds[i % len(kinds)]
            threads.append(threading.Thread(target=smtp_worker, args=(t, i, kind, login, stop, seed), daemon=True))
        move_cap = a.seed_messages // 3
        workers = [ImapWorker(t, i, a.imap_clients, stop, seed, seeded, move_cap) for i in range(a.imap_clients)]
        threads += [threading.Thread(target=w.run, daemon=True) for w in workers]
        for th in threads:
            th.start()

        for cycle in range(a.cycles):
            delay = rng.uniform(a.min_delay, a.max_delay)
            time.sleep(delay)
            if t.bridge.poll() is not None:
                fail("bridge exited on its own before kill %d (status %s)" % (cycle + 1, t.bridge.returncode))
            with R.lock:
                acked = sum(1 for r in R.smtp.values() if r["acked"])
            kill_at = time.time()
            t.bridge.send_signal(signal.SIGKILL)
            t.bridge.wait(60)
            R.kills.append(kill_at)
            runs[-1].update(killed=kill_at, ran_s=kill_at - runs[-1]["started"], delay=delay)
            start("after kill %d" % (cycle + 1))
            note("cycle %2d: killed after %.1f s (%d acknowledged so far), restarted in %.2f s" %
                 (cycle + 1, delay, acked, runs[-1]["startup_s"]))
        # A little load on the last run too, then stop it.
        time.sleep(rng.uniform(a.min_delay, a.max_delay))
        stop.set()
        for th in threads:
            th.join(120)
        load_end = time.time()
        if any(th.is_alive() for th in threads):
            fail("a load thread did not stop within 120 s")

        # ---- drain -----------------------------------------------------------------------------------
        drain_start = time.time()
        acked = {k: r for k, r in R.smtp.items() if r["acked"]}
        queued = dead = None
        while time.time() - drain_start < a.drain_timeout:
            queued, dead, text = queue_counts(t)
            if queued == 0:
                break
            time.sleep(2)
        drain_s = time.time() - drain_start
        if queued != 0:
            fail("queue did not drain in %.0f s: %s queued" % (drain_s, queued))
        if dead:
            fail("%d dead (bounced/failed) entries in the spool" % dead)
        note("queue drained in %.1f s after the load stopped (%s queued, %s dead)" % (drain_s, queued, dead))

        # ---- SMTP audit ------------------------------------------------------------------------------
        rec_by_token = R.smtp
        inbox = {}
        for mb in RECIPIENTS:
            ids = graph.folder_ids(mb)
            inbox[mb] = graph.folder_messages(mb, ids["Inbox"])
        copies = collections.defaultdict(list)  # (token, mailbox) -> [message]
        foreign = []
        bounces = []
        for mb, msgs in inbox.items():
            for msg in msgs:
                subj = msg.get("subject") or ""
                mm = re.match(r"crashloop (\S+)$", subj)
                if mm:
                    copies[(mm.group(1), mb)].append(msg)
                elif "crashloop" in subj:
                    bounces.append({"mailbox": mb, "subject": subj})
                else:
                    foreign.append({"mailbox": mb, "subject": subj})
        # bounces to alice would land in her Inbox: count crashloop-looking subjects there
        alice_ids = graph.folder_ids(IMAP_MAILBOX)
        for fname in ("Inbox", "CrashMoved", "CrashCopies"):
            for msg in graph.folder_messages(IMAP_MAILBOX, alice_ids[fname]):
                if "crashloop s" in (msg.get("subject") or ""):
                    bounces.append({"mailbox": IMAP_MAILBOX, "folder": fname, "subject": msg.get("subject")})
        drafts = {}
        for mb in MAILBOXES:
            ids = graph.folder_ids(mb)
            drafts[mb] = len(graph.folder_messages(mb, ids["Drafts"]))

        # in-flight analysis from each run's log
        delivered_in_run = []
        queued_at = {}
        log_errors = []
        for r in runs:
            times, queued_times, errs = log_times(r["log"])
            delivered_in_run.append(times)
            queued_at.update(queued_times)
            log_errors += errs
        lost, dup_list, mismatched, checked_copies = [], [], [], 0
        expected_copies = 0
        for token, rec in acked.items():
            for mb in rec["rcpts"]:
                expected_copies += 1
                got = copies.get((token, mb), [])
                if not got:
                    lost.append({"token": token, "mailbox": mb, "qid": rec.get("qid"), "ack": rec["ack"],
                                 "size": rec["size"]})
                    continue
                for msg in got:
                    checked_copies += 1
                    h, natt = delivered_hash(graph.mime(mb, msg["id"]))
                    if h != rec["hash"]:
                        mismatched.append({"token": token, "mailbox": mb, "size": rec["size"], "attachments": natt})
                if len(got) > 1:
                    dup_list.append((token, mb, got))
        # classify duplicates
        duplicates = []
        for token, mb, got in dup_list:
            rec = acked[token]
            qid = rec.get("qid")
            runs_logged = [i for i, d in enumerate(delivered_in_run) if qid in d]
            in_flight_kills = []
            accepted = queued_at.get(qid, rec["ack"])  # the bridge's clock of the 250, not the client's thread
            for i, r in enumerate(runs):
                k = r.get("killed")
                if k is None or accepted > k:
                    continue
                # pending at this kill: not logged delivered in this run or an earlier one
                if not any(qid in delivered_in_run[j] for j in range(i + 1)):
                    in_flight_kills.append(i)
                elif i in runs_logged and len(runs_logged) > 1:
                    in_flight_kills.append(i)  # logged, but killed before the spool recorded it
            received = sorted(x.get("createdDateTime") or "" for x in got)
            # ... and Graph already had the first copy when the bridge died (createdDateTime has whole seconds)
            first_copy = iso_time(received[0]) if received and received[0] else None
            in_flight_kills = [i for i in in_flight_kills
                               if first_copy is None or first_copy <= runs[i]["killed"] + 1.0]
            first_kill = runs[in_flight_kills[0]]["killed"] if in_flight_kills else None
            duplicates.append({"token": token, "mailbox": mb, "qid": qid, "copies": len(got),
                               "ack_before_kill_s": round(first_kill - accepted, 3) if first_kill else None,
                               "delivered_logged_in_runs": runs_logged, "in_flight_at_kill": bool(in_flight_kills),
                               "size": rec["size"], "created": received})
        unexplained = [d for d in duplicates if not d["in_flight_at_kill"]]
        unacked_arrived, not_sent = [], []
        for (token, mb), got in copies.items():
            rec = rec_by_token.get(token)
            if rec is None:
                not_sent.append({"token": token, "mailbox": mb})
            elif mb not in rec["rcpts"]:
                not_sent.append({"token": token, "mailbox": mb, "why": "not a recipient"})
            elif not rec["acked"]:
                unacked_arrived.append({"token": token, "mailbox": mb, "copies": len(got), "error": rec.get("error")})
        if lost:
            fail("%d acknowledged deliveries lost: %s" % (len(lost), lost[:5]))
        if mismatched:
            fail("%d delivered copies differ from what was sent: %s" % (len(mismatched), mismatched[:5]))
        if unexplained:
            fail("%d duplicates of messages not in flight at any kill: %s" % (len(unexplained), unexplained[:5]))
        if not_sent:
            fail("%d delivered messages that were never sent: %s" % (len(not_sent), not_sent[:5]))
        if foreign:
            fail("%d unexpected messages in the recipients' Inboxes: %s" % (len(foreign), foreign[:5]))
        if bounces:
            fail("%d bounces / stray crashloop messages: %s" % (len(bounces), bounces[:5]))
        if any(r["acked"] and not r.get("qid") for r in acked.values()):
            fail("250 replies without a queue id")

        # The sandbox counts sendMail calls: every acknowledged message once, plus what arrived without a 250,
        # plus one per extra (duplicate) send.
        per_token = collections.defaultdict(int)
        for (token, mb), got in copies.items():
            per_token[token] = max(per_token[token], len(got))
        sends_seen = sum(per_token.values())
        sent_counter = t.admin("/sandbox/stats")["messages_sent"]
        if sent_counter != sends_seen:
            note("sandbox messages_sent %d != sends found in the Inboxes %d" % (sent_counter, sends_seen))

        attempted = len(R.smtp)
        large = [r for r in acked.values() if r["size"] > LARGE_MIME]
        upload = [r for r in acked.values() if r["attachment"] > UPLOAD_SESSION_ATTACHMENT]
        smtp_summary = {
            "attempted": attempted, "acked": len(acked),
            "acked_by_kind": dict(collections.Counter(r["kind"] + (":" + r["from"].split("@")[0] if r["kind"] == "auth" else "")
                                                      for r in acked.values())),
            "acked_multi_recipient": sum(1 for r in acked.values() if len(r["rcpts"]) > 1),
            "acked_bytes": sum(r["size"] for r in acked.values()),
            "acked_large_mode": len(large), "acked_upload_session": len(upload),
            "max_size": max((r["size"] for r in acked.values()), default=0),
            "not_acked": attempted - len(acked), "errors": dict(R.smtp_errors),
            "connect_failures": R.smtp_connect_failures,
            "expected_copies": expected_copies, "delivered_copies_checked": checked_copies,
            "lost": len(lost), "hash_mismatches": len(mismatched),
            "duplicate_messages": len({d["token"] for d in duplicates}),
            "duplicates": len(duplicates), "duplicates_in_flight": len(duplicates) - len(unexplained),
            "duplicates_unexplained": len(unexplained), "duplicate_detail": duplicates,
            "unacked_arrived": len(unacked_arrived), "not_sent_but_delivered": len(not_sent),
            "bounces": len(bounces), "drafts_left": drafts, "lost_detail": lost[:50],
            "sandbox_sendmail_count": sent_counter, "sends_found_in_inboxes": sends_seen,
        }

        # ---- IMAP audit ------------------------------------------------------------------------------
        imap_summary = imap_audit(t, graph, seeded, alice_ids)

        # ---- bridge health ---------------------------------------------------------------------------
        if t.bridge.poll() is not None:
            fail("bridge not running at the end (status %s)" % t.bridge.returncode)
        recovered = []
        for r in runs:
            mm = re.search(r"recovered=(\d+)", open(r["log"], errors="replace").read())
            recovered.append(int(mm.group(1)) if mm else None)
        stats = t.admin("/sandbox/stats")
        summary.update({
            "elapsed_s": round(time.time() - started, 1), "load_s": round(load_end - runs[0]["started"], 1),
            "drain_s": round(drain_s, 1),
            "kills": len(R.kills), "run_lengths_s": [round(r.get("ran_s", 0), 2) for r in runs],
            "restart_s": [round(r["startup_s"], 2) for r in runs[1:]],
            "recovered_per_restart": recovered[1:], "log_error_lines": len(log_errors),
            "log_errors_sample": log_errors[:10], "sandbox": stats,
            "smtp": smtp_summary, "imap": imap_summary, "failures": FAILURES,
        })
    except Exception as e:
        import traceback
        traceback.print_exc()
        fail("exception: %r" % e)
        summary["failures"] = FAILURES
    finally:
        try:
            t.kill_bridge(signal.SIGTERM)
        except Exception:
            pass
        keep = a.keep or FAILURES
        if keep:
            rs.FAILURES.append("keep")  # Tenant.close() keeps the directory when FAILURES is non-empty
        t.close()
        if keep:
            rs.FAILURES.remove("keep")

    print_summary(summary)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    return 1 if FAILURES else 0


def imap_audit(t, graph, seeded, alice_ids):
    out = {"ops": dict(R.imap_ops), "connect_failures": R.imap_connect_failures, "no_or_bad": R.imap_no[:20]}
    # Graph's view of alice's three folders
    g = {}
    for f in FOLDERS:
        gname = "Inbox" if f == "INBOX" else f
        g[f] = graph.folder_messages(IMAP_MAILBOX, alice_ids[gname])

    def graph_rows(f):
        return collections.Counter((x.get("internetMessageId"), bool(x.get("isRead")),
                                    (x.get("flag") or {}).get("flagStatus") == "flagged") for x in g[f])

    # A fresh session's view, until it matches Graph (or 120 s pass).
    deadline = time.time() + 120
    final = {}
    while True:
        m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=120)
        m.login(IMAP_USER, t.password(IMAP_USER))
        final = {}
        for f in FOLDERS:
            m.untagged_responses.pop("UIDVALIDITY", None)
            typ, data = m.select(f, readonly=True)
            uv = int(m.untagged_responses.get("UIDVALIDITY", [b"0"])[-1])
            exists = int(data[0] or 0)
            rows = []
            if exists:
                typ, data = m.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
                rows = [r for r in parse_fetch(data) if r[2] is not None]
            final[f] = {"uidvalidity": uv, "rows": rows, "exists": exists}
        m.logout()
        same = all(collections.Counter((r[2], "\\Seen" in r[1], "\\Flagged" in r[1]) for r in final[f]["rows"])
                   == graph_rows(f) for f in FOLDERS)
        if same or time.time() > deadline:
            break
        time.sleep(3)
        for f in FOLDERS:
            gname = "Inbox" if f == "INBOX" else f
            g[f] = graph.folder_messages(IMAP_MAILBOX, alice_ids[gname])
    out["imap_matches_graph"] = same
    if not same:
        for f in FOLDERS:
            a_ = collections.Counter((r[2], "\\Seen" in r[1], "\\Flagged" in r[1]) for r in final[f]["rows"])
            b_ = graph_rows(f)
            if a_ != b_:
                fail("IMAP view of %s differs from Graph: only IMAP %s; only Graph %s" %
                     (f, list((a_ - b_).items())[:5], list((b_ - a_).items())[:5]))
    # UIDVALIDITY
    for f in FOLDERS:
        R.uidvalidity[f].add(final[f]["uidvalidity"])
    out["uidvalidity"] = {f: sorted(v) for f, v in R.uidvalidity.items()}
    for f, vals in R.uidvalidity.items():
        if len(vals) != 1:
            fail("UIDVALIDITY of %s changed: %s" % (f, sorted(vals)))
    # UIDs: the final view against everything the clients were told
    conflicts = list(R.uid_conflicts)
    final_dup_uids = {}
    for f in FOLDERS:
        uv = final[f]["uidvalidity"]
        by_uid = {}
        for uid, _, msgid in final[f]["rows"]:
            if uid in by_uid:
                final_dup_uids.setdefault(f, []).append(uid)
            by_uid[uid] = msgid
        by_msgid = collections.defaultdict(list)
        for uid, msgid in by_uid.items():
            by_msgid[msgid].append(uid)
        for (ff, v, uid), msgid in R.uidmap.items():
            if ff != f or v != uv:
                continue
            if uid in by_uid and by_uid[uid] != msgid:
                conflicts.append({"folder": f, "uid": uid, "told": msgid, "now": by_uid[uid], "where": "final"})
            if f != "CrashCopies" and uid not in by_uid and msgid in by_msgid:
                conflicts.append({"folder": f, "uid": uid, "told": msgid, "now_uids": by_msgid[msgid],
                                  "where": "final: message renumbered"})
    uids_told = len(R.uidmap)
    out.update({"uids_recorded": uids_told, "uid_conflicts": len(conflicts), "uid_conflict_detail": conflicts[:20],
                "duplicate_uids_in_fetch": len(R.fetch_dup_uids) + sum(len(v) for v in final_dup_uids.values()),
                "duplicate_msgids_in_fetch": R.fetch_dup_msgids[:10]})
    if conflicts:
        fail("%d UIDs named a different message than the client was told: %s" % (len(conflicts), conflicts[:3]))
    if R.fetch_dup_uids or final_dup_uids:
        fail("duplicate UIDs in a FETCH: %s %s" % (R.fetch_dup_uids[:3], final_dup_uids))
    if R.fetch_dup_msgids:
        fail("one message twice in a FETCH of INBOX/CrashMoved: %s" % R.fetch_dup_msgids[:3])
    # Where each message is (Graph)
    where = collections.defaultdict(collections.Counter)
    for f in FOLDERS:
        for x in g[f]:
            where[x.get("internetMessageId")][f] += 1
    known = set(seeded) | set(R.appended)
    unknown = [x for x in where if x not in known]
    if unknown:
        fail("%d messages in alice's folders that nobody put there: %s" % (len(unknown), unknown[:5]))
    loc_bad, app_lost, app_maybe_present = [], [], 0
    for msgid in known:
        n_in = where[msgid]["INBOX"]
        n_mv = where[msgid]["CrashMoved"]
        state = R.appended.get(msgid)
        if state == "maybe":
            if n_in + n_mv > 1:
                loc_bad.append({"msgid": msgid, "inbox": n_in, "moved": n_mv, "append": "unanswered"})
            app_maybe_present += n_in + n_mv
            continue
        if n_in + n_mv != 1:
            loc_bad.append({"msgid": msgid, "inbox": n_in, "moved": n_mv, "move": R.moved.get(msgid),
                            "append": state})
            if state == "acked" and n_in + n_mv == 0:
                app_lost.append(msgid)
        elif R.moved.get(msgid) == "acked" and n_mv != 1:
            loc_bad.append({"msgid": msgid, "inbox": n_in, "moved": n_mv, "move": "acked"})
        elif R.moved.get(msgid) is None and n_mv:
            loc_bad.append({"msgid": msgid, "inbox": n_in, "moved": n_mv, "move": "never asked"})
    if loc_bad:
        fail("%d messages not exactly once where INBOX/MOVE put them: %s" % (len(loc_bad), loc_bad[:5]))
    copy_bad = []
    for msgid in set(where) | set(R.copies_acked):
        have = where[msgid]["CrashCopies"]
        lo, hi = R.copies_acked[msgid], R.copies_acked[msgid] + R.copies_maybe[msgid]
        if not lo <= have <= hi:
            copy_bad.append({"msgid": msgid, "copies": have, "acked": lo, "unanswered": hi - lo})
    if copy_bad:
        fail("%d messages with a wrong number of copies in CrashCopies: %s" % (len(copy_bad), copy_bad[:5]))
    # Flags at Graph against the last acknowledged STORE / APPEND
    flag_bad = []
    uncertain = 0
    for f in ("INBOX", "CrashMoved"):
        for x in g[f]:
            msgid = x.get("internetMessageId")
            exp = R.expected.get(msgid)
            if not exp:
                continue
            got = {"seen": bool(x.get("isRead")), "flagged": (x.get("flag") or {}).get("flagStatus") == "flagged"}
            for k in ("seen", "flagged"):
                if exp[k] is None:
                    uncertain += 1
                elif exp[k] != got[k]:
                    flag_bad.append({"msgid": msgid, "folder": f, "flag": k, "expected": exp[k], "graph": got[k]})
    if flag_bad:
        fail("%d flags at Graph differ from the last acknowledged STORE/APPEND: %s" % (len(flag_bad), flag_bad[:5]))
    out.update({
        "folders_at_end": {f: len(g[f]) for f in FOLDERS},
        "appends_acked": sum(1 for v in R.appended.values() if v == "acked"),
        "appends_unanswered": sum(1 for v in R.appended.values() if v == "maybe"),
        "appends_unanswered_present": app_maybe_present, "appends_lost": len(app_lost),
        "moves_acked": sum(1 for v in R.moved.values() if v == "acked"),
        "moves_unanswered": sum(1 for v in R.moved.values() if v == "maybe"),
        "copies_acked": sum(R.copies_acked.values()), "copies_unanswered": sum(R.copies_maybe.values()),
        "location_violations": len(loc_bad), "copy_count_violations": len(copy_bad),
        "flag_mismatches": len(flag_bad), "flags_unknown_after_cut_store": uncertain,
        "unknown_messages": len(unknown), "flag_mismatch_detail": flag_bad[:20], "location_detail": loc_bad[:20],
        "copy_detail": copy_bad[:20],
    })
    return out


def print_summary(s):
    print("\n==== crashloop summary ====")
    print("seed %s, cycles %s, kills %s, elapsed %s s (load %s s, drain %s s)" %
          (s.get("seed"), s.get("cycles"), s.get("kills"), s.get("elapsed_s"), s.get("load_s"), s.get("drain_s")))
    if "restart_s" in s:
        rs_ = s["restart_s"]
        print("restart to listening: median %.2f s, max %.2f s; recovered per restart: %s" %
              (sorted(rs_)[len(rs_) // 2] if rs_ else 0, max(rs_ or [0]), s.get("recovered_per_restart")))
    m = s.get("smtp")
    if m:
        print("SMTP: %d attempted, %d answered 250 (%s; %d multi-recipient; %.1f MB; %d Large-mode, %d via upload "
              "session; largest %d bytes), %d not answered 250 (%s)" %
              (m["attempted"], m["acked"], m["acked_by_kind"], m["acked_multi_recipient"], m["acked_bytes"] / 1e6,
               m["acked_large_mode"], m["acked_upload_session"], m["max_size"], m["not_acked"], m["errors"]))
        print("      %d deliveries expected, %d copies fetched and hashed; lost %d, content mismatches %d" %
              (m["expected_copies"], m["delivered_copies_checked"], m["lost"], m["hash_mismatches"]))
        print("      duplicate copies %d of %d messages (in flight at a kill: %d, unexplained: %d); not answered 250 "
              "but delivered: %d; delivered but never sent: %d; bounces %d; drafts left %s" %
              (m["duplicates"], m["duplicate_messages"], m["duplicates_in_flight"], m["duplicates_unexplained"],
               m["unacked_arrived"],
               m["not_sent_but_delivered"], m["bounces"], m["drafts_left"]))
        for d in m["duplicate_detail"][:20]:
            print("        dup %s at %s: %d copies, queue id %s, acked %s s before the kill, delivered logged in runs %s, "
                  "in flight: %s" % (d["token"], d["mailbox"], d["copies"], d["qid"], d["ack_before_kill_s"],
                                     d["delivered_logged_in_runs"], d["in_flight_at_kill"]))
    i = s.get("imap")
    if i:
        print("IMAP: ops %s" % i["ops"])
        print("      UIDVALIDITY per folder %s; %d UID->message mappings recorded, %d conflicts, %d duplicate UIDs" %
              (i["uidvalidity"], i["uids_recorded"], i["uid_conflicts"], i["duplicate_uids_in_fetch"]))
        print("      APPEND acked %d (lost %d), unanswered %d (%d present); MOVE acked %d, unanswered %d; COPY acked %d, "
              "unanswered %d" % (i["appends_acked"], i["appends_lost"], i["appends_unanswered"],
                                 i["appends_unanswered_present"], i["moves_acked"], i["moves_unanswered"],
                                 i["copies_acked"], i["copies_unanswered"]))
        print("      location violations %d, copy-count violations %d, flag mismatches %d (%d flags unknown after a "
              "cut STORE), unknown messages %d, IMAP view == Graph: %s; folders %s" %
              (i["location_violations"], i["copy_count_violations"], i["flag_mismatches"],
               i["flags_unknown_after_cut_store"], i["unknown_messages"], i["imap_matches_graph"], i["folders_at_end"]))
    if "log_error_lines" in s:
        print("bridge log: %d error lines %s" % (s["log_error_lines"], s.get("log_errors_sample", [])[:3]))
    print("sandbox: %s" % s.get("sandbox"))
    print("RESULT: %s" % ("PASS" if not s.get("failures") else "FAIL (%d): %s" % (len(s["failures"]),
                                                                                  s["failures"][:5])))


if __name__ == "__main__":
    sys.exit(main())
