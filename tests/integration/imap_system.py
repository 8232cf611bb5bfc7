#!/usr/bin/env python3
"""System tests of IMAP (and POP3) with real clients: `graphbridge sandbox --no-bridge` plus
`graphbridge serve` as separate processes, messages filed in the sandbox through its admin endpoint (as
if they arrived or were changed in Outlook), read with Python's imaplib, curl and mbsync. The write
scenarios (writes, mbsync_push) check each change three ways: the IMAP responses, the mailbox read back
over Graph, and the exact Graph calls the bridge made (the sandbox's request log).

Usage: imap_system.py GRAPHBRIDGE_BINARY SCENARIO
Scenarios: imaplib, curl, restart, mbsync, pop3, throttle, writes, mbsync_push. Exit status 0 = every
check held."""
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
import imaplib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_system as rs  # noqa: E402  (the Tenant fixture and check())

check = rs.check


def file_message(t, mailbox, subject, body="hello\r\n", folder="inbox", read=False, extra=""):
    mime = ("From: Alice <alice@sandbox.test>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@sandbox.test>\r\n%s"
            "Content-Type: text/plain; charset=utf-8\r\n\r\n%s" % (mailbox, subject, uuid.uuid4().hex, extra, body))
    r = t.admin("/sandbox/mailboxes/%s/messages?folder=%s&read=%s" % (mailbox, folder, "true" if read else "false"),
                raw=mime.encode())
    return r["id"]


def imap_login(t, login="bob"):
    ctx = ssl.create_default_context(cafile=t.t + "/state/tls/server.pem")
    m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=30)
    m.starttls(ssl_context=ctx)
    m.login(login, t.password(login))
    return m


def scenario_imaplib(t):
    for i in range(5):
        file_message(t, "bob@sandbox.test", "pre %d" % i, "body %d\r\n" % i, read=(i == 0))
    t.start_bridge()
    m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=30)
    caps = m.capabilities
    check("STARTTLS" in caps and "IDLE" in caps and "LITERAL+" in caps and "AUTH=PLAIN" in caps,
          "STARTTLS, IDLE, LITERAL+, AUTH=PLAIN (loopback) advertised: %s" % " ".join(caps))
    m.starttls(ssl_context=ssl.create_default_context(cafile=t.t + "/state/tls/server.pem"))
    try:
        m.login("bob", "not the password")
        check(False, "wrong password refused")
    except imaplib.IMAP4.error as e:
        check("AUTHENTICATIONFAILED" in str(e), "wrong password refused with [AUTHENTICATIONFAILED]")
    m.logout()
    m = imap_login(t)
    typ, data = m.list()
    names = [d.decode() for d in data]
    check(typ == "OK" and any(n.endswith(' "/" INBOX') for n in names), "LIST shows INBOX")
    check(any("\\Sent" in n for n in names) and any("\\Trash" in n for n in names), "SPECIAL-USE on Sent and Trash")
    typ, data = m.select("INBOX", readonly=True)
    check(typ == "OK" and int(data[0]) == 5, "SELECT INBOX: 5 messages (%s)" % data)
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE INTERNALDATE)")
    check(typ == "OK" and len([d for d in data if d]) == 5, "UID FETCH 1:* answers for 5 messages")
    check(b"\\Seen" in data[0], "the read message is \\Seen")
    typ, data = m.fetch("2", "(BODY.PEEK[])")
    raw = data[0][1]
    check(b"Subject: pre 1\r\n" in raw and raw.endswith(b"body 1\r\n"), "BODY[] is the message, CRLF lines")
    typ, data = m.search(None, "UNSEEN")
    check(data[0].split() == [b"2", b"3", b"4", b"5"], "SEARCH UNSEEN: %s" % data)
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"pre 3"')
    check(len(data[0].split()) == 1, "UID SEARCH SUBJECT finds one message")

    # IDLE: a message filed in the sandbox reaches the idling client within the poll interval.
    tag = m._new_tag().decode()
    m.send(("%s IDLE\r\n" % tag).encode())
    check(m.readline().startswith(b"+"), "IDLE continuation")
    start = time.time()
    file_message(t, "bob@sandbox.test", "during idle")
    m.sock.settimeout(20)
    line = m.readline()
    took = time.time() - start
    check(re.match(rb"\* 6 EXISTS", line) is not None, "IDLE pushed '* 6 EXISTS' after %.1f s (%r)" % (took, line))
    # Flagged and read in Outlook (a PATCH through Graph), then deleted: FETCH FLAGS and EXPUNGE pushed.
    listing = t.messages("bob@sandbox.test")
    target = [x for x in listing if x.get("subject") == "pre 2"][0]["id"]
    body = json.dumps({"isRead": True, "flag": {"flagStatus": "flagged"}}).encode()
    req = urllib.request.Request(t.base + "/v1.0/users/bob@sandbox.test/messages/" + target, data=body,
                                 method="PATCH", headers={"Authorization": "Bearer " + t.token(),
                                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, context=t.ctx, timeout=30).read()
    line = m.readline()
    check(re.match(rb"\* 3 FETCH \(UID 3 FLAGS \(\\Seen \\Flagged\)\)", line) is not None,
          "IDLE pushed the flag change made in Outlook (%r)" % line)
    req = urllib.request.Request(t.base + "/v1.0/users/bob@sandbox.test/messages/" + target, method="DELETE",
                                 headers={"Authorization": "Bearer " + t.token()})
    urllib.request.urlopen(req, context=t.ctx, timeout=30).read()
    line = m.readline()
    check(line == b"* 3 EXPUNGE\r\n", "IDLE pushed the deletion made in Outlook (%r)" % line)
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if line.startswith(tag.encode()):
            break
    check(b"OK" in line, "IDLE terminated with OK")
    typ, data = m.search(None, "ALL")
    check(data[0].split() == [b"1", b"2", b"3", b"4", b"5"], "after the pushed EXPUNGE, 5 messages remain (%s)" % data)
    m.logout()


def scenario_curl(t):
    file_message(t, "alice@sandbox.test", "for curl", "curl reads this\r\n")
    t.start_bridge()
    url = "imap://127.0.0.1:%d/INBOX" % t.imap_port
    p = subprocess.run(["curl", "-s", "--user", "alice:" + t.password("alice"), url + ";MAILINDEX=1"],
                       capture_output=True, timeout=60)
    out = p.stdout.decode(errors="replace")
    check(p.returncode == 0 and "Subject: for curl" in out and "curl reads this" in out,
          "curl imap:// fetches message 1 (rc %d)" % p.returncode)
    p = subprocess.run(["curl", "-s", "--user", "alice:" + t.password("alice"), "-X", "SEARCH ALL", url],
                       capture_output=True, timeout=60)
    check(p.returncode == 0 and "SEARCH 1" in p.stdout.decode(), "curl SEARCH ALL: %r" % p.stdout[:80])
    p = subprocess.run(["curl", "-s", "--user", "alice:wrong", url + ";MAILINDEX=1"], capture_output=True, timeout=60)
    check(p.returncode != 0, "curl with a wrong password fails (rc %d)" % p.returncode)


def scenario_restart(t):
    for i in range(20):
        file_message(t, "bob@sandbox.test", "keep %d" % i)
    t.start_bridge()
    m = imap_login(t)
    typ, data = m.select("INBOX", readonly=True)
    validity = m.untagged_responses.get("UIDVALIDITY", [b"?"])[0]
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    before = {re.search(rb"UID (\d+)", d[0]).group(1): d[1] for d in data if isinstance(d, tuple)}
    m.logout()
    t.kill_bridge()  # SIGKILL: no clean shutdown
    t.start_bridge()
    m = imap_login(t)
    m.select("INBOX", readonly=True)
    validity2 = m.untagged_responses.get("UIDVALIDITY", [b"!"])[0]
    typ, data = m.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    after = {re.search(rb"UID (\d+)", d[0]).group(1): d[1] for d in data if isinstance(d, tuple)}
    check(validity == validity2, "UIDVALIDITY unchanged across kill -9 and restart (%s)" % validity)
    check(before == after and len(after) == 20, "all 20 UIDs map to the same messages after the restart")
    m.logout()


def scenario_mbsync(t):
    n = int(os.environ.get("GB_MBSYNC_MESSAGES", "1000"))
    sizes = {}
    for i in range(n):
        body = ("line %d of message %d\r\n" % (i, i)) * (1 + i % 7)
        file_message(t, "bob@sandbox.test", "mbsync %04d" % i, body, read=(i % 2 == 0))
    t.start_bridge()
    maildir = os.path.join(t.dir, "Maildir")
    os.makedirs(maildir)
    rc = os.path.join(t.dir, "mbsyncrc")
    with open(rc, "w") as f:
        f.write("IMAPAccount gb\nHost 127.0.0.1\nPort %d\nUser bob\nPass %s\nSSLType STARTTLS\n"
                "CertificateFile %s\n\nIMAPStore remote\nAccount gb\n\n"
                "MaildirStore local\nPath %s/\nInbox %s/INBOX\n\n"
                "Channel inbox\nFar :remote:INBOX\nNear :local:INBOX\nSync Pull\nCreate Near\n"
                "SyncState *\n" % (t.imap_port, t.password("bob"), t.t + "/state/tls/server.pem", maildir, maildir))
    start = time.time()
    p = subprocess.run(["mbsync", "-c", rc, "inbox"], capture_output=True, timeout=600)
    took = time.time() - start
    check(p.returncode == 0, "mbsync pulled the Inbox in %.1f s (rc %d: %s)" % (took, p.returncode,
                                                                                 p.stderr.decode()[-300:]))
    files = []
    for sub in ("cur", "new"):
        d = os.path.join(maildir, "INBOX", sub)
        if os.path.isdir(d):
            files += [os.path.join(d, x) for x in os.listdir(d)]
    check(len(files) == n, "%d messages in the Maildir (%d)" % (n, len(files)))
    # Byte for byte: every Maildir file equals the sandbox's MIME for that message (CRLF -> LF as
    # mbsync stores it, minus the X-TUID header line mbsync adds to messages it stores).
    by_subject = {}
    for path in files:
        data = re.sub(rb"(?m)^X-TUID: [^\n]*\n", b"", open(path, "rb").read(), count=1)
        s = re.search(rb"^Subject: (.*)$", data, re.M)
        by_subject[s.group(1).strip().decode() if s else path] = data
    listing = t.messages("bob@sandbox.test")
    mismatched = 0
    for msg in listing:
        want = t.mime("bob@sandbox.test", msg["id"]).replace(b"\r\n", b"\n")
        got = by_subject.get(msg["subject"])
        if got is None or got.replace(b"\r\n", b"\n") != want:
            mismatched += 1
    check(mismatched == 0, "Maildir files match the sandbox's MIME byte for byte (%d differ)" % mismatched)
    seen = sum(1 for pth in files if re.search(r":2,[A-Z]*S", pth))
    check(seen == (n + 1) // 2, "\\Seen carried into Maildir flags (%d of %d)" % (seen, n))


def scenario_pop3(t):
    import poplib
    subjects = ["pop %d %s" % (i, uuid.uuid4().hex) for i in range(4)]
    for i, subj in enumerate(subjects):
        file_message(t, "bob@sandbox.test", subj, "pop body %d\r\n" % i)
    t.start_bridge()
    ctx = ssl.create_default_context(cafile=t.t + "/state/tls/server.pem")
    p = poplib.POP3("127.0.0.1", t.pop3_port, timeout=30)
    p.stls(context=ctx)
    p.user("bob")
    p.pass_(t.password("bob"))
    count, size = p.stat()
    check(count == 4, "STAT: 4 messages (%d, %d octets)" % (count, size))
    listing = p.list()[1]
    uidl = [u.split()[1] for u in p.uidl()[1]]
    check(len(set(uidl)) == 4, "UIDL: 4 distinct ids %s" % uidl[:2])
    resp, lines, octets = p.retr(2)
    raw = b"\r\n".join(lines) + b"\r\n"
    want = [int(x.split()[1]) for x in listing][1]
    check(b"Subject: " + subjects[1].encode() in raw and b"pop body 1" in raw, "RETR 2 returns message 2")
    check(len(raw) == want, "LIST size equals the octets RETR sent (%d vs %d)" % (want, len(raw)))
    top = p.top(1, 0)[1]
    check(any(l.startswith(b"Subject: ") for l in top) and not any(b"pop body" in l for l in top), "TOP 1 0: headers only")
    p.dele(1)
    p.quit()
    # DELE moved message 1 to Deleted Items in the mailbox (as Outlook's delete does).
    moved = wait_for_subject(t, "bob@sandbox.test", subjects[0], "deleteditems")
    check(moved, "DELE + QUIT moved the message to Deleted Items")
    check(subjects[0] not in [m.get("subject") for m in t.messages("bob@sandbox.test")], "and out of the Inbox")
    # A restart keeps the UIDL of every message left.
    t.kill_bridge()
    t.start_bridge()
    p = poplib.POP3_SSL("127.0.0.1", t.pop3s_port, context=ctx, timeout=30)
    p.user("bob")
    p.pass_(t.password("bob"))
    uidl2 = [u.split()[1] for u in p.uidl()[1]]
    check(uidl2 == uidl[1:], "UIDL stable across kill -9 and restart (POP3S)")
    p.quit()
    r = subprocess.run(["curl", "-s", "--user", "bob:" + t.password("bob"), "pop3://127.0.0.1:%d/1" % t.pop3_port],
                       capture_output=True, timeout=60)
    check(r.returncode == 0 and subjects[1].encode() in r.stdout, "curl pop3:// retrieves message 1")


def scenario_throttle(t):
    """Failed logins count per client address across SMTP, IMAP and POP3: a guesser cannot switch
    protocols for fresh attempts, and nobody is locked out."""
    import poplib
    import smtplib
    t.start_bridge()
    m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=30)
    start = time.time()
    try:
        m.login("bob", "wrong")
    except imaplib.IMAP4.error:
        pass
    fresh = time.time() - start
    m.logout()
    # Two more failures over SMTP (smtplib tries AUTH PLAIN, then AUTH LOGIN): 3, the free allowance.
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
        try:
            s.login("bob", "wrong")
        except smtplib.SMTPAuthenticationError:
            pass
    m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=60)
    start = time.time()
    try:
        m.login("bob", "still wrong")
        check(False, "wrong IMAP password refused")
    except imaplib.IMAP4.error:
        pass
    delayed = time.time() - start
    m.logout()
    check(delayed >= 0.9 and delayed > fresh + 0.5,
          "after 3 failures (1 IMAP, 2 SMTP) the next IMAP failure is answered late: %.2f s (first: %.2f s)"
          % (delayed, fresh))
    p = poplib.POP3("127.0.0.1", t.pop3_port, timeout=60)
    p.user("bob")
    start = time.time()
    try:
        p.pass_("wrong again")
    except poplib.error_proto:
        pass
    later = time.time() - start
    check(later >= 1.8, "and the POP3 one after it later still: %.2f s (the delay doubles)" % later)
    m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=60)
    typ, _ = m.login("bob", t.password("bob"))
    check(typ == "OK", "the right password still works: no lockout")
    m.logout()


# ---- the write path ------------------------------------------------------------------------------------

GRAPH_FIELDS = ("$select=subject,isRead,flag,categories,isDraft,internetMessageId&$expand="
                "singleValueExtendedProperties($filter=id%20eq%20'Integer%200x1081')")


def q(s):
    return urllib.parse.quote(s, safe="")


def set_poll_interval(t, seconds):
    """Before start_bridge(): a short [imap] poll_interval, so the tests see delta rounds run over their writes."""
    cfg = open(t.config).read()
    check("[imap]\n" in cfg, "the generated config has an [imap] section")
    open(t.config, "w").write(cfg.replace("[imap]\n", '[imap]\npoll_interval = "%ds"\n' % seconds, 1))


def graph_folder(t, mailbox, folder):
    """A folder's messages over Graph (with read state, flag, categories, draft, Message-ID and Exchange's
    last verb, 0x1081), as {subject: [message, ...]}."""
    out = {}
    url = "/users/%s/mailFolders/%s/messages?$top=200&%s" % (mailbox, q(folder), GRAPH_FIELDS)
    while url:
        page = t.graph(url)
        for m in page["value"]:
            props = m.get("singleValueExtendedProperties") or []
            m["verb"] = props[0]["value"] if props else None
            out.setdefault(m.get("subject"), []).append(m)
        url = page.get("@odata.nextLink")
    return out


def gmsg(t, mailbox, folder, subject):
    """The one message with `subject` in a folder over Graph, or None (two of them is a failed check)."""
    found = graph_folder(t, mailbox, folder).get(subject, [])
    if len(found) > 1:
        check(False, "at most one '%s' in %s (%d)" % (subject, folder, len(found)))
    return found[0] if found else None


def graph_post(t, path, body):
    req = urllib.request.Request(t.base + "/v1.0" + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": "Bearer " + t.token(), "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, context=t.ctx, timeout=30).read())


def graph_status(t, path):
    """The HTTP status of a Graph GET (404 for something deleted)."""
    try:
        t.graph(path)
        return 200
    except urllib.error.HTTPError as e:
        return e.code


def clear_log(t):
    t.admin("/sandbox/requests", method="DELETE")


def graph_log(t, mailbox):
    """The sandbox's request log for one mailbox: [(method, route, status)]."""
    return [(r["method"], r["route"], r["status"]) for r in t.admin("/sandbox/requests")["requests"]
            if r["mailbox"] == mailbox]


def graph_writes(t, mailbox):
    """Every Graph call that was not a read (the sync engine's polls are GETs), as "METHOD route"."""
    return ["%s %s" % (m, r) for m, r, _ in graph_log(t, mailbox) if m != "GET"]


def creates(calls):
    """Message uploads among Graph calls: POST /mailfolders/{id}/messages (also under a well-known name)."""
    return [c for c in calls if re.match(r"POST /mailfolders/[^/]+/messages$", c)]


def tx(m, command, literal=None):
    """One tagged command on an imaplib connection, read up to its tagged response. Returns (tagged line,
    [untagged lines]) as text without CRLF, literals inlined, so the checks see the protocol lines exactly.
    `literal` (bytes) is sent as a non-synchronizing literal (LITERAL+) at the end of the command."""
    tag = m._new_tag().decode()
    m.tagged_commands.pop(tag, None)
    data = ("%s %s" % (tag, command)).encode()
    if literal is not None:
        data += b" {%d+}\r\n" % len(literal) + literal
    m.send(data + b"\r\n")
    lines = []
    while True:
        line = m.readline()
        if not line:
            raise RuntimeError("connection closed during %r" % command)
        while True:
            mo = re.search(rb"\{(\d+)\}\r\n$", line)
            if not mo:
                break
            line += m.read(int(mo.group(1)))
            line += m.readline()
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if text.startswith(tag + " "):
            status = text[len(tag) + 1:]
            if re.match(r"(SELECT|EXAMINE) ", command, re.I) and status.startswith("OK"):
                m.state = "SELECTED"  # imaplib's own methods (fetch, append, ...) may follow
            return status, lines
        lines.append(text)


def fetch_lines(lines):
    return [x for x in lines if re.match(r"\* \d+ FETCH ", x)]


def flags_of(line):
    mo = re.search(r"FLAGS \(([^)]*)\)", line)
    return set(mo.group(1).split()) if mo else None


def uid_map(m):
    """{subject: (sequence number, UID)} of the selected folder."""
    _, lines = tx(m, "UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = {}
    for x in fetch_lines(lines):
        seq = int(re.match(r"\* (\d+) FETCH", x).group(1))
        uid = int(re.search(r"UID (\d+)", x).group(1))
        subj = re.search(r"Subject: ([^\r\n]*)", x)
        out[subj.group(1).strip() if subj else "?%d" % uid] = (seq, uid)
    return out


def expunged_uids(uids, lines):
    """The UIDs that a run of "* n EXPUNGE" lines removes from a view listing `uids` in sequence order
    (each n counts in the view as left by the EXPUNGEs before it), sorted; None if one is out of range."""
    view, gone = list(uids), []
    for x in lines:
        n = int(re.match(r"\* (\d+) EXPUNGE", x).group(1))
        if not 1 <= n <= len(view):
            return None
        gone.append(view.pop(n - 1))
    return sorted(gone)


def expand(uid_set):
    """"1:3,7" -> [1, 2, 3, 7]."""
    out = []
    for part in uid_set.split(","):
        a, _, b = part.partition(":")
        out += list(range(int(a), int(b or a) + 1))
    return out


def scenario_writes(t):
    """Every IMAP write command with imaplib, each checked three ways: the IMAP response, the mailbox read
    back over Graph, and the exact Graph calls the bridge made (the sandbox's request log)."""
    import smtplib
    bob = "bob@sandbox.test"
    poll = 2
    set_poll_interval(t, poll)
    tagid = uuid.uuid4().hex[:8]
    subjects = ["w%02d-%s" % (i, tagid) for i in range(10)]
    for i, s in enumerate(subjects):
        file_message(t, bob, s, "body of %s\r\n" % s, read=(i == 1))
    t.start_bridge()
    m = imap_login(t)
    status, lines = tx(m, "CAPABILITY")
    caps = " ".join(lines).split()
    check(all(c in caps for c in ("UIDPLUS", "MOVE", "CONDSTORE", "QRESYNC")), "CAPABILITY has UIDPLUS MOVE CONDSTORE QRESYNC: %s"
          % " ".join(lines))
    status, lines = tx(m, "SELECT INBOX")
    check(status.startswith("OK [READ-WRITE]"), "SELECT INBOX is read-write: %r" % status)
    perm = [x for x in lines if "[PERMANENTFLAGS" in x]
    pflags = set(re.search(r"PERMANENTFLAGS \(([^)]*)\)", perm[0]).group(1).split()) if perm else set()
    check({"\\Seen", "\\Flagged", "\\Deleted", "\\Answered", "$Forwarded", "\\*"} <= pflags,
          "PERMANENTFLAGS has \\Seen \\Flagged \\Deleted \\Answered $Forwarded \\*: %s" % perm)
    inbox_validity = re.search(r"UIDVALIDITY (\d+)", " ".join(lines)).group(1)
    ids = uid_map(m)
    check(sorted(ids) == sorted(subjects), "the 10 filed messages are in INBOX (%d)" % len(ids))
    first_ids = dict(ids)
    first_view = [uid for _, (_, uid) in sorted(ids.items(), key=lambda kv: kv[1][0])]
    # A second client on the same folder.
    m2 = imap_login(t)
    typ, _ = m2.select("INBOX")
    check(typ == "OK", "second connection SELECTs INBOX")

    # ---- STORE -------------------------------------------------------------------------------------
    s0 = subjects[0]
    seq0, uid0 = ids[s0]
    clear_log(t)
    status, lines = tx(m, "STORE %d +FLAGS (\\Seen \\Flagged Work)" % seq0)
    f = fetch_lines(lines)
    check(status.startswith("OK") and len(f) == 1 and f[0].startswith("* %d FETCH" % seq0) and
          flags_of(f[0]) == {"\\Seen", "\\Flagged", "Work"},
          "STORE +FLAGS (\\Seen \\Flagged Work): %r / %r" % (f, status))
    calls = graph_writes(t, bob)
    check(calls == ["PATCH /messages/{id}"], "exactly one PATCH /messages/{id}: %s" % calls)
    g = gmsg(t, bob, "inbox", s0)
    check(g is not None and g["isRead"] is True and g["flag"]["flagStatus"] == "flagged" and
          g["categories"] == ["Work"], "Graph: isRead, flagged, categories [Work] (%s)" %
          ((g and (g["isRead"], g["flag"], g["categories"])),))
    status, lines = tx(m2, "NOOP")
    f = fetch_lines(lines)
    check(len(f) == 1 and f[0].startswith("* %d FETCH" % seq0) and flags_of(f[0]) == {"\\Seen", "\\Flagged", "Work"},
          "the second connection gets the change as an untagged FETCH on NOOP: %r" % lines)

    clear_log(t)
    status, lines = tx(m, "STORE %d +FLAGS (\\Answered)" % seq0)
    f = fetch_lines(lines)
    check(status.startswith("OK") and len(f) == 1 and "\\Answered" in flags_of(f[0]), "STORE +FLAGS (\\Answered): %r" % f)
    g = gmsg(t, bob, "inbox", s0)
    check(g is not None and g["verb"] == "102", "Graph: \\Answered is last verb 0x1081 = 102 (%s)" % (g and g["verb"]))
    check(graph_writes(t, bob) == ["PATCH /messages/{id}"], "one PATCH for \\Answered")
    clear_log(t)
    status, lines = tx(m, "STORE %d +FLAGS ($Forwarded)" % seq0)
    f = fetch_lines(lines)
    check(status.startswith("OK") and len(f) == 1 and "$Forwarded" in flags_of(f[0]), "STORE +FLAGS ($Forwarded): %r" % f)
    g = gmsg(t, bob, "inbox", s0)
    check(g is not None and g["verb"] == "104", "Graph: $Forwarded is last verb 0x1081 = 104 (%s)" % (g and g["verb"]))
    check(graph_writes(t, bob) == ["PATCH /messages/{id}"], "one PATCH for $Forwarded")

    clear_log(t)
    status, lines = tx(m, "STORE %d -FLAGS.SILENT (\\Flagged)" % seq0)
    check(status.startswith("OK") and not fetch_lines(lines), "STORE -FLAGS.SILENT: OK and no FETCH (%r %r)" %
          (lines, status))
    g = gmsg(t, bob, "inbox", s0)
    check(g is not None and g["flag"]["flagStatus"] == "notFlagged" and g["isRead"] is True,
          "Graph: flag removed, still read (%s)" % (g and g["flag"]))
    check(graph_writes(t, bob) == ["PATCH /messages/{id}"], "one PATCH for -FLAGS.SILENT")
    _, lines = tx(m, "UID FETCH %d (FLAGS)" % uid0)
    check(flags_of(fetch_lines(lines)[0]) == {"\\Seen", "$Forwarded", "Work"},
          "FETCH FLAGS after the silent STORE: %r" % lines)

    # UID STORE on three messages, one of them already \Seen: a PATCH only for the two that change.
    s1, s2, s3 = subjects[1:4]
    clear_log(t)
    status, lines = tx(m, "UID STORE %s +FLAGS (\\Seen)" % ",".join(str(ids[s][1]) for s in (s1, s2, s3)))
    f = fetch_lines(lines)
    check(status.startswith("OK") and len(f) == 3 and all("\\Seen" in flags_of(x) for x in f),
          "UID STORE on 3 messages: 3 FETCH with \\Seen (%r)" % f)
    calls = graph_writes(t, bob)
    check(calls == ["PATCH /messages/{id}"] * 2, "one PATCH per message that changed, none for the one already "
                                                    "\\Seen: %s" % calls)
    gf = graph_folder(t, bob, "inbox")
    check(all(gf[s][0]["isRead"] for s in (s1, s2, s3)), "Graph: all three read")
    check(not gf[subjects[6]][0]["isRead"], "Graph: an untouched message is still unread")

    # FETCH BODY[] (not PEEK) sets \Seen: one PATCH, and the FLAGS travel in the same FETCH response.
    s8 = subjects[8]
    clear_log(t)
    typ, data = m.fetch(str(ids[s8][0]), "(BODY[])")
    # imaplib: [(b'n (BODY[] {size}', body), b' FLAGS (\\Seen))']
    envelope = b"".join(x[0] if isinstance(x, tuple) else x for x in data if x)
    check(typ == "OK" and isinstance(data[0], tuple) and re.search(rb"FLAGS \(\\Seen\)\)$", envelope) is not None and
          data[0][1].endswith(("body of %s\r\n" % s8).encode()), "FETCH BODY[]: the body and FLAGS (\\Seen) (%r)"
          % envelope)
    calls = graph_writes(t, bob)
    check(calls == ["PATCH /messages/{id}"], "FETCH BODY[]: one PATCH /messages/{id}: %s" % calls)
    g = gmsg(t, bob, "inbox", s8)
    check(g is not None and g["isRead"] is True, "Graph: read after FETCH BODY[]")

    # ---- \Deleted, EXPUNGE, UID EXPUNGE --------------------------------------------------------------
    s4, s5 = subjects[4], subjects[5]
    clear_log(t)
    status, lines = tx(m, "UID STORE %d,%d +FLAGS (\\Deleted)" % (ids[s4][1], ids[s5][1]))
    f = fetch_lines(lines)
    check(status.startswith("OK") and len(f) == 2 and all("\\Deleted" in flags_of(x) for x in f),
          "STORE +FLAGS (\\Deleted): %r" % f)
    calls = graph_writes(t, bob)
    check(calls == [], "\\Deleted makes no Graph call: %s" % calls)
    gf = graph_folder(t, bob, "inbox")
    check(s4 in gf and s5 in gf, "both still in the Inbox in Graph before EXPUNGE")
    clear_log(t)
    status, lines = tx(m, "UID EXPUNGE %d" % ids[s4][1])
    check(status.startswith("OK") and lines == ["* %d EXPUNGE" % ids[s4][0]],
          "UID EXPUNGE expunges only the UID given: %r %r" % (lines, status))
    calls = graph_writes(t, bob)
    check(calls == ["POST /messages/{id}/move"], "UID EXPUNGE: one POST /messages/{id}/move: %s" % calls)
    gf = graph_folder(t, bob, "inbox")
    check(s4 not in gf and s5 in gf, "Graph: %s gone from the Inbox, %s (also \\Deleted) still there" % (s4, s5))
    check(gmsg(t, bob, "deleteditems", s4) is not None, "Graph: %s is in Deleted Items" % s4)
    clear_log(t)
    status, lines = tx(m, "EXPUNGE")
    exp = [x for x in lines if x.endswith(" EXPUNGE")]
    check(status.startswith("OK") and exp == ["* %d EXPUNGE" % (ids[s5][0] - 1)], "EXPUNGE: %r %r" % (lines, status))
    calls = graph_writes(t, bob)
    check(calls == ["POST /messages/{id}/move"], "EXPUNGE: one POST /messages/{id}/move: %s" % calls)
    check(s5 not in graph_folder(t, bob, "inbox") and gmsg(t, bob, "deleteditems", s5) is not None,
          "Graph: %s moved to Deleted Items" % s5)

    # In Deleted Items, \Deleted + EXPUNGE is permanent.
    _, lines = tx(m, 'LIST "" "*"')
    trash = [re.search(r'"/" (.*)$', x).group(1).strip('"') for x in lines if "\\Trash" in x]
    check(len(trash) == 1, "one \\Trash folder in LIST: %s" % trash)
    status, _ = tx(m, 'SELECT "%s"' % trash[0])
    check(status.startswith("OK [READ-WRITE]"), "SELECT %s: %s" % (trash[0], status))
    tids = uid_map(m)
    check(s4 in tids and s5 in tids, "both expunged messages are in %s over IMAP (%s)" % (trash[0], sorted(tids)))
    tx(m, "UID STORE %d +FLAGS.SILENT (\\Deleted)" % tids[s4][1])
    clear_log(t)
    status, lines = tx(m, "EXPUNGE")
    check(status.startswith("OK") and lines == ["* %d EXPUNGE" % tids[s4][0]], "EXPUNGE in Deleted Items: %r" % lines)
    calls = graph_writes(t, bob)
    check(calls == ["POST /messages/{id}/permanentdelete"], "one POST /messages/{id}/permanentdelete: %s" % calls)
    gf = graph_folder(t, bob, "deleteditems")
    check(s4 not in gf and s5 in gf, "Graph: %s permanently gone, %s still in Deleted Items" % (s4, s5))

    # ---- CREATE, COPY, MOVE -------------------------------------------------------------------------
    clear_log(t)
    status, lines = tx(m, 'CREATE "Projects/2026"')
    check(status.startswith("OK"), "CREATE Projects/2026: %s" % status)
    calls = graph_writes(t, bob)
    check(calls == ["POST /mailfolders", "POST /mailfolders/{id}/childfolders"],
          "CREATE with a missing parent: the parent, then the child: %s" % calls)
    top = [f for f in t.graph("/users/%s/mailFolders?$top=100" % bob)["value"] if f["displayName"] == "Projects"]
    check(len(top) == 1, "Graph: a top-level folder Projects")
    projects_id = top[0]["id"] if top else ""
    kids = t.graph("/users/%s/mailFolders/%s/childFolders" % (bob, q(projects_id)))["value"] if top else []
    check([k["displayName"] for k in kids] == ["2026"], "Graph: Projects has the child 2026 (%s)" %
          [k["displayName"] for k in kids])
    p2026_id = kids[0]["id"] if kids else ""
    _, lines = tx(m, 'LIST "" "Projects*"')
    check(any(x.endswith('"/" Projects') for x in lines) and any(x.endswith('"/" Projects/2026') for x in lines),
          "LIST shows Projects and Projects/2026: %r" % lines)
    _, lines = tx(m, 'STATUS "Projects/2026" (UIDVALIDITY MESSAGES)')
    dest_validity = re.search(r"UIDVALIDITY (\d+)", " ".join(lines)).group(1)

    status, lines = tx(m, "SELECT INBOX")
    ids = uid_map(m)
    check(s4 not in ids and s5 not in ids and len(ids) == 8, "INBOX has 8 messages after the expunges (%d)" % len(ids))
    copied = [subjects[0], subjects[1]]
    clear_log(t)
    status, lines = tx(m, 'COPY %s "Projects/2026"' % ",".join(str(ids[s][0]) for s in copied))
    mo = re.match(r"OK \[COPYUID (\d+) (\S+) (\S+)\]", status)
    check(mo is not None and mo.group(1) == dest_validity and
          expand(mo.group(2)) == sorted(ids[s][1] for s in copied) and len(expand(mo.group(3))) == 2,
          "COPY answers [COPYUID %s <source uids> <2 new uids>]: %r" % (dest_validity, status))
    copy_map = dict(zip(expand(mo.group(2)), expand(mo.group(3)))) if mo else {}
    calls = graph_writes(t, bob)
    check(calls == ["POST /messages/{id}/copy"] * 2, "exactly one POST /messages/{id}/copy per message: %s" % calls)
    gd = graph_folder(t, bob, p2026_id)
    gi = graph_folder(t, bob, "inbox")
    check(sorted(gd) == sorted(copied) and all(s in gi for s in copied),
          "Graph: copies in Projects/2026, originals still in the Inbox (%s)" % sorted(gd))
    moved = [subjects[2], subjects[3]]
    clear_log(t)
    status, lines = tx(m, 'UID MOVE %s "Projects/2026"' % ",".join(str(ids[s][1]) for s in moved))
    cu = [re.match(r"\* OK \[COPYUID (\d+) (\S+) (\S+)\]", x) for x in lines]
    cu = [x for x in cu if x]
    exp = [x for x in lines if x.endswith(" EXPUNGE")]
    before = [uid for _, (_, uid) in sorted(ids.items(), key=lambda kv: kv[1][0])]
    cu_at = [i for i, x in enumerate(lines) if x.startswith("* OK [COPYUID")]
    exp_at = [i for i, x in enumerate(lines) if x.endswith(" EXPUNGE")]
    check(status.startswith("OK") and len(cu) == 1 and cu[0].group(1) == dest_validity and
          expand(cu[0].group(2)) == sorted(ids[s][1] for s in moved) and len(expand(cu[0].group(3))) == 2 and
          expunged_uids(before, exp) == sorted(ids[s][1] for s in moved) and cu_at[0] < exp_at[0],
          "UID MOVE: * OK [COPYUID ...] before the EXPUNGEs: %r %r" % (lines, status))
    if cu:
        copy_map.update(dict(zip(expand(cu[0].group(2)), expand(cu[0].group(3)))))
    calls = graph_writes(t, bob)
    check(sorted(calls) == ["POST /messages/{id}/move"] * 2 and not creates(calls),
          "UID MOVE: one POST /messages/{id}/move per message, no re-upload: %s" % calls)
    gd = graph_folder(t, bob, p2026_id)
    gi = graph_folder(t, bob, "inbox")
    check(sorted(gd) == sorted(copied + moved) and not any(s in gi for s in moved),
          "Graph: moved messages are in Projects/2026 only (%s)" % sorted(gd))
    # The second connection, still on INBOX, hears of the expunges and moves at its next command.
    status, lines = tx(m2, "NOOP")
    exp = [x for x in lines if x.endswith(" EXPUNGE")]
    gone = sorted(u for s, (_, u) in first_ids.items() if s in (s2, s3, s4, s5))
    check(status.startswith("OK") and expunged_uids(first_view, exp) == gone and
          not any("EXISTS" in x for x in lines),
          "second connection's NOOP: EXPUNGEs for the 2 expunged and 2 moved messages: %r" % lines)
    # What COPYUID said is what the destination shows, also after delta rounds have seen the new messages.
    by_uid = {ids[s][1]: s for s in copied + moved}
    want = {copy_map[u]: by_uid[u] for u in copy_map}
    status, lines = tx(m, 'SELECT "Projects/2026"')
    check(status.startswith("OK") and "* 4 EXISTS" in lines, "SELECT Projects/2026: 4 EXISTS (%r)" % lines)
    got = {uid: subj for subj, (_, uid) in uid_map(m).items()}
    check(got == want, "UID FETCH in Projects/2026 matches COPYUID: %s vs %s" % (got, want))
    clear_log(t)
    time.sleep(poll * 2.5)
    deltas = [r for m_, r, s in graph_log(t, bob) if m_ == "GET" and r.endswith("/messages/delta") and s == 200]
    check(len(deltas) >= 2, "delta rounds ran meanwhile (%d delta requests)" % len(deltas))
    status, lines = tx(m, "NOOP")
    check(not any("EXISTS" in x or "EXPUNGE" in x for x in lines),
          "after %d s of polling, NOOP reports no new or vanished messages: %r" % (poll * 2.5, lines))
    _, lines = tx(m, "UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    got = {}
    for x in fetch_lines(lines):
        got[int(re.search(r"UID (\d+)", x).group(1))] = re.search(r"Subject: ([^\r\n]*)", x).group(1).strip()
    check(got == want and len(fetch_lines(lines)) == 4,
          "after the delta rounds: the same UIDs, no duplicates, nothing vanished: %s" % got)
    f0 = [x for x in fetch_lines(lines) if subjects[0] in x]
    check(f0 and flags_of(f0[0]) == {"\\Seen", "$Forwarded", "Work"}, "the copy kept its flags: %r" % f0)

    # ---- APPEND --------------------------------------------------------------------------------------
    status, _ = tx(m, "SELECT INBOX")
    app_subject = "appended-" + tagid
    app_mid = "<app-%s@sandbox.test>" % tagid
    msg = ("From: Alice <alice@sandbox.test>\r\nTo: Bob <bob@sandbox.test>\r\nSubject: %s\r\n"
           "Date: Wed, 01 Nov 2023 10:00:00 +0000\r\nMessage-ID: %s\r\n"
           "In-Reply-To: <orig-%s@sandbox.test>\r\nReferences: <root-%s@sandbox.test> <orig-%s@sandbox.test>\r\n"
           "Content-Type: text/plain; charset=utf-8\r\n\r\nappended body\r\n"
           % (app_subject, app_mid, tagid, tagid, tagid)).encode()
    clear_log(t)
    typ, data = m.append("INBOX", "(\\Seen)", '"01-Nov-2023 11:00:00 +0100"', msg)
    mo = re.match(rb"\[APPENDUID (\d+) (\d+)\]", data[0] or b"")
    check(typ == "OK" and mo is not None and mo.group(1).decode() == inbox_validity,
          "APPEND (\\Seen) date to INBOX: [APPENDUID %s uid] (%r)" % (inbox_validity, data))
    app_uid = int(mo.group(2)) if mo else 0
    calls = graph_writes(t, bob)
    check(len(creates(calls)) == 1 and calls == creates(calls), "APPEND: one POST .../messages, nothing else: %s" % calls)
    g = gmsg(t, bob, "inbox", app_subject)
    check(g is not None and g["isDraft"] is False and g["isRead"] is True and g["internetMessageId"] == app_mid,
          "Graph: not a draft, read, internetMessageId %s (%s)" %
          (app_mid, (g and (g["isDraft"], g["isRead"], g["internetMessageId"]))))
    if g:
        raw = t.mime(bob, g["id"])
        check(("In-Reply-To: <orig-%s@sandbox.test>" % tagid).encode() in raw and
              ("References: <root-%s@sandbox.test> <orig-%s@sandbox.test>" % (tagid, tagid)).encode() in raw,
              "Graph's MIME has the In-Reply-To and References sent")
    _, lines = tx(m, "UID FETCH %d (FLAGS INTERNALDATE)" % app_uid)
    f = fetch_lines(lines)
    check(len(f) == 1 and flags_of(f[0]) == {"\\Seen"} and 'INTERNALDATE "01-Nov-2023 10:00:00 +0000"' in f[0],
          "UID FETCH of the APPENDUID: \\Seen and the date given (%r)" % f)

    draft = ("From: bob@sandbox.test\r\nTo: carol@example.com\r\nSubject: draft-%s\r\nX-Odd:  kept   as is\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhalf written\r\n\r\n-- \r\nBob\r\n"
             % tagid).encode()
    status, lines = tx(m, "APPEND Drafts (\\Draft)", literal=draft)
    check(re.match(r"OK \[APPENDUID \d+ \d+\]", status) is not None, "APPEND (\\Draft) to Drafts: %r" % status)
    g = gmsg(t, bob, "drafts", "draft-" + tagid)
    check(g is not None and g["isDraft"] is True, "Graph: the draft is a draft")
    if g:
        got = t.mime(bob, g["id"]).replace(b"\r\n", b"\n")
        check(got == draft.replace(b"\r\n", b"\n"), "Graph's MIME of the draft is byte-identical (%r)" % got[:200])

    # A message the bridge just sent over SMTP, appended to Sent Items by the client: no second copy.
    sent_subject = "sent-" + tagid
    sent_mid = "<sent-%s@sandbox.test>" % tagid
    sent = ("From: Bob <bob@sandbox.test>\r\nTo: Alice <alice@sandbox.test>\r\nSubject: %s\r\n"
            "Date: Thu, 02 Nov 2023 09:00:00 +0000\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nsent through the bridge\r\n" % (sent_subject, sent_mid)).encode()
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
        s.starttls(context=ssl.create_default_context(cafile=t.t + "/state/tls/server.pem"))
        s.login("bob", t.password("bob"))
        refused = s.sendmail("bob@sandbox.test", ["alice@sandbox.test"], sent)
        check(refused == {}, "bob sent a message over SMTP")
    check(wait_for_subject(t, bob, sent_subject, "sentitems", 30), "sendMail saved it in bob's Sent Items")
    _, lines = tx(m, 'LIST "" "*"')
    sent_box = [re.search(r'"/" (.*)$', x).group(1).strip('"') for x in lines if "\\Sent" in x]
    clear_log(t)
    status, lines = tx(m, 'APPEND "%s" (\\Seen)' % sent_box[0], literal=sent)
    mo = re.match(r"OK \[APPENDUID \d+ (\d+)\]", status)
    check(mo is not None, "APPEND to %s of the sent message: %r" % (sent_box[0], status))
    calls = graph_writes(t, bob)
    check(not creates(calls), "no POST .../messages for it: %s" % calls)
    check(len(graph_folder(t, bob, "sentitems").get(sent_subject, [])) == 1, "Graph: exactly one copy in Sent Items")
    time.sleep(poll * 1.5)
    status, lines = tx(m, 'SELECT "%s"' % sent_box[0])
    smap = [x for x in fetch_lines(tx(m, "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]) if sent_subject in x]
    check(len(smap) == 1 and mo is not None and ("UID %s " % mo.group(1)) in smap[0] + " ",
          "IMAP: one message in %s with that subject, at the APPENDUID (%r)" % (sent_box[0], smap))

    # The usual case: the client APPENDs right after the SMTP 250, before Graph has sent (let alone saved)
    # the message (every Graph request held 300 ms to widen that window). Still exactly one copy.
    imm_subject = "sent-now-" + tagid
    imm = ("From: Bob <bob@sandbox.test>\r\nTo: Alice <alice@sandbox.test>\r\nSubject: %s\r\n"
           "Message-ID: <now-%s@sandbox.test>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           "appended at once\r\n" % (imm_subject, tagid)).encode()
    t.admin("/sandbox/settings", {"graph_latency_ms": 300})
    try:
        clear_log(t)
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
            s.starttls(context=ssl.create_default_context(cafile=t.t + "/state/tls/server.pem"))
            s.login("bob", t.password("bob"))
            check(s.sendmail("bob@sandbox.test", ["alice@sandbox.test"], imm) == {}, "bob sent another message")
        status, _ = tx(m, 'APPEND "%s" (\\Seen)' % sent_box[0], literal=imm)
        check(status.startswith("OK"), "APPEND right after the 250: %r" % status)
        check(wait_for_subject(t, bob, imm_subject, "sentitems", 30), "sendMail saved it in Sent Items")
    finally:
        t.admin("/sandbox/settings", {"graph_latency_ms": 0})
    time.sleep(1)
    check(not creates(graph_writes(t, bob)), "no POST .../messages for the immediate APPEND")
    check(len(graph_folder(t, bob, "sentitems").get(imm_subject, [])) == 1,
          "Graph: exactly one copy of the immediately appended message in Sent Items")

    # ---- RENAME, SUBSCRIBE, DELETE ------------------------------------------------------------------
    tx(m, "SELECT INBOX")
    clear_log(t)
    status, _ = tx(m, "RENAME Projects Clients")
    check(status.startswith("OK"), "RENAME Projects Clients: %s" % status)
    calls = graph_writes(t, bob)
    check(calls == ["PATCH /mailfolders/{id}"], "RENAME: one PATCH /mailfolders/{id}: %s" % calls)
    gf = t.graph("/users/%s/mailFolders/%s" % (bob, q(projects_id)))
    check(gf.get("displayName") == "Clients", "Graph: the same folder id is now named Clients (%s)" % gf.get("displayName"))
    names = [f["displayName"] for f in t.graph("/users/%s/mailFolders?$top=100" % bob)["value"]]
    check("Projects" not in names and names.count("Clients") == 1, "Graph: no Projects left")
    _, lines = tx(m, 'LIST "" "*"')
    check(any(x.endswith('"/" Clients/2026') for x in lines) and not any("Projects" in x for x in lines),
          "LIST shows Clients/2026 and no Projects")
    _, lines = tx(m, 'STATUS "Clients/2026" (UIDVALIDITY MESSAGES)')
    check("UIDVALIDITY %s" % dest_validity in " ".join(lines) and "MESSAGES 4" in " ".join(lines),
          "Clients/2026 kept its UIDVALIDITY and 4 messages: %r" % lines)

    clear_log(t)
    status, _ = tx(m, 'UNSUBSCRIBE "Clients/2026"')
    _, lines = tx(m, 'LSUB "" "Clients*"')
    check(status.startswith("OK") and any(x.endswith('"/" Clients') for x in lines) and
          not any(x.endswith("Clients/2026") for x in lines), "UNSUBSCRIBE: LSUB shows Clients only: %r" % lines)
    status, _ = tx(m, 'SUBSCRIBE "Clients/2026"')
    _, lines = tx(m, 'LSUB "" "Clients*"')
    check(status.startswith("OK") and any(x.endswith('"/" Clients/2026') for x in lines),
          "SUBSCRIBE: LSUB shows Clients/2026 again: %r" % lines)
    check(graph_writes(t, bob) == [], "SUBSCRIBE/UNSUBSCRIBE make no Graph call")

    clear_log(t)
    status, _ = tx(m, "DELETE Clients")
    check(status.startswith("NO") and "[INUSE]" in status, "DELETE of a folder with subfolders: %s" % status)
    check(graph_writes(t, bob) == [] and graph_status(t, "/users/%s/mailFolders/%s" % (bob, q(projects_id))) == 200,
          "nothing deleted in Graph")
    s1_, _ = tx(m, 'DELETE "Clients/2026"')
    s2_, _ = tx(m, "DELETE Clients")
    check(s1_.startswith("OK") and s2_.startswith("OK"), "DELETE the leaf, then the parent: %s / %s" % (s1_, s2_))
    calls = graph_writes(t, bob)
    check(calls == ["DELETE /mailfolders/{id}"] * 2, "two DELETE /mailfolders/{id}: %s" % calls)
    check(graph_status(t, "/users/%s/mailFolders/%s" % (bob, q(projects_id))) == 404 and
          graph_status(t, "/users/%s/mailFolders/%s" % (bob, q(p2026_id))) == 404, "Graph: both folders gone")
    names = [f["displayName"] for f in t.graph("/users/%s/mailFolders?$top=100" % bob)["value"]]
    check("Clients" not in names, "Graph's folder list has no Clients")
    _, lines = tx(m, 'LIST "" "Clients*"')
    check(lines == [], "LIST Clients*: nothing (%r)" % lines)

    # ---- CONDSTORE -----------------------------------------------------------------------------------
    status, lines = tx(m, "SELECT INBOX (CONDSTORE)")
    mo = re.search(r"HIGHESTMODSEQ (\d+)", " ".join(lines + [status]))
    check(mo is not None, "SELECT (CONDSTORE) answers HIGHESTMODSEQ: %r" % lines)
    hms = int(mo.group(1)) if mo else 0
    ids = uid_map(m)
    s6, s7 = subjects[6], subjects[7]
    status, lines = tx(m, "STORE %d +FLAGS (\\Flagged)" % ids[s6][0])
    f = fetch_lines(lines)
    mo = re.search(r"MODSEQ \((\d+)\)", f[0]) if f else None
    m6 = int(mo.group(1)) if mo else 0
    check(status.startswith("OK") and m6 > hms, "STORE raises the MODSEQ above %d: %r" % (hms, f))
    _, lines = tx(m, "STATUS INBOX (HIGHESTMODSEQ)")
    mo = re.search(r"HIGHESTMODSEQ (\d+)", " ".join(lines))
    check(mo is not None and int(mo.group(1)) >= m6, "STATUS HIGHESTMODSEQ raised: %r" % lines)
    _, lines = tx(m, "FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % hms)
    f = fetch_lines(lines)
    check(len(f) == 1 and f[0].startswith("* %d FETCH" % ids[s6][0]) and "\\Flagged" in flags_of(f[0]),
          "FETCH (CHANGEDSINCE %d): only the changed message: %r" % (hms, f))
    clear_log(t)
    status, lines = tx(m, "STORE %d (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % (ids[s6][0], hms))
    check(status.startswith("OK [MODIFIED %d]" % ids[s6][0]) and not fetch_lines(lines),
          "STORE (UNCHANGEDSINCE %d) on the changed message: [MODIFIED]: %r %r" % (hms, lines, status))
    check(graph_writes(t, bob) == [], "no Graph call for the refused conditional STORE")
    g = gmsg(t, bob, "inbox", s6)
    check(g is not None and g["isRead"] is False and g["flag"]["flagStatus"] == "flagged",
          "Graph: flagged by the first STORE, not read by the refused one")
    status, lines = tx(m, "STORE %d (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % (ids[s6][0], m6))
    check(status.startswith("OK") and "MODIFIED" not in status and fetch_lines(lines),
          "STORE (UNCHANGEDSINCE its MODSEQ) goes through: %r" % status)
    g = gmsg(t, bob, "inbox", s6)
    check(g is not None and g["isRead"] is True, "Graph: read now")

    # ---- QRESYNC and CLOSE --------------------------------------------------------------------------
    m3 = imap_login(t)
    _, lines = tx(m3, "ENABLE QRESYNC")
    check(any("QRESYNC" in x for x in lines), "ENABLE QRESYNC: %r" % lines)
    _, lines = tx(m3, "SELECT INBOX")
    hms0 = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(lines)).group(1))
    qids = uid_map(m)
    spare = [x for x in qids if x not in (s6, s7)]
    check(len(spare) >= 2, "two more messages in INBOX for QRESYNC and CLOSE (%d)" % len(spare))
    gone, closed = spare[0], spare[1]
    tx(m, "UID STORE %d +FLAGS.SILENT (\\Deleted)" % qids[gone][1])
    tx(m, "UID EXPUNGE %d" % qids[gone][1])
    _, lines = tx(m3, "NOOP")
    check("* VANISHED %d" % qids[gone][1] in lines and not any(x.endswith(" EXPUNGE") for x in lines),
          "a QRESYNC client hears VANISHED %d, not EXPUNGE: %r" % (qids[gone][1], lines))
    m4 = imap_login(t)
    tx(m4, "ENABLE QRESYNC")
    status, lines = tx(m4, "SELECT INBOX (QRESYNC (%s %d))" % (inbox_validity, hms0))
    van = [x for x in lines if x.startswith("* VANISHED (EARLIER) ")]
    vanished = set()
    for r in (van[0].split()[-1].split(",") if van else []):
        a, _, b = r.partition(":")
        vanished.update(range(int(a), int(b or a) + 1))
    check(status.startswith("OK") and qids[gone][1] in vanished and not (set(u for _, u in qids.values()) - {qids[gone][1]}) & vanished,
          "SELECT (QRESYNC (uidvalidity %d)) reports UID %d vanished and no UID still there: %r" % (hms0, qids[gone][1], van))
    # CLOSE expunges silently: no EXPUNGE responses, the message goes to Deleted Items.
    tx(m4, "UID STORE %d +FLAGS.SILENT (\\Deleted)" % qids[closed][1])
    clear_log(t)
    status, lines = tx(m4, "CLOSE")
    check(status.startswith("OK") and not any("EXPUNGE" in x or "VANISHED" in x for x in lines),
          "CLOSE answers OK without EXPUNGE: %r %r" % (lines, status))
    check(graph_writes(t, bob) == ["POST /messages/{id}/move"], "CLOSE: one move: %s" % graph_writes(t, bob))
    check(closed not in graph_folder(t, bob, "inbox") and gmsg(t, bob, "deleteditems", closed) is not None,
          "Graph: the \\Deleted message was moved to Deleted Items at CLOSE")
    m3.logout()
    m4.logout()

    # ---- a Graph failure -----------------------------------------------------------------------------
    tx(m2, "NOOP")
    tx(m, "NOOP")  # the EXPUNGEs of the section above first: uid_map's numbers are then current
    ids = uid_map(m)
    # Only the PATCH of that message fails (the STORE's own sync read and the pollers' reads do not take
    # the faults).
    page = t.graph("/users/%s/mailFolders/inbox/messages?$top=200&$select=subject" % bob, immutable=True)
    id7 = [x["id"] for x in page["value"] if x.get("subject") == s7][0]
    clear_log(t)
    t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 503, "count": 5,
                                "path_suffix": "/messages/" + q(id7)})
    status, lines = tx(m, "STORE %d +FLAGS (\\Flagged)" % ids[s7][0])
    t.admin("/sandbox/faults", method="DELETE")
    check(status.startswith("NO [UNAVAILABLE]") and not fetch_lines(lines),
          "STORE while Graph answers 503: tagged NO [UNAVAILABLE], no FETCH: %r %r" % (lines, status))
    log = [x for x in graph_log(t, bob) if x[0] != "GET"]
    check(log == [("PATCH", "/messages/{id}", 503)], "the one PATCH got the 503: %s" % log)
    _, lines = tx(m, "FETCH %d (FLAGS)" % ids[s7][0])
    f = fetch_lines(lines)
    check(len(f) == 1 and "\\Flagged" not in flags_of(f[0]), "FETCH FLAGS: no phantom \\Flagged: %r" % f)
    g = gmsg(t, bob, "inbox", s7)
    check(g is not None and g["flag"]["flagStatus"] == "notFlagged", "Graph: still notFlagged")
    _, lines = tx(m2, "NOOP")
    check(not any("\\Flagged" in flags_of(x) for x in fetch_lines(lines)),
          "the other connection is told of no \\Flagged either: %r" % lines)
    m2.logout()
    m.logout()


def maildir_files(root, box):
    """{file name: path} of a Maildir folder (cur and new)."""
    out = {}
    for sub in ("cur", "new"):
        d = os.path.join(root, box, sub)
        if os.path.isdir(d):
            for x in os.listdir(d):
                out[x] = os.path.join(d, x)
    return out


def maildir_by_subject(root, box):
    """{subject: [path, ...]} of a Maildir folder."""
    out = {}
    for path in maildir_files(root, box).values():
        mo = re.search(rb"^Subject: (.*)$", open(path, "rb").read(), re.M)
        out.setdefault(mo.group(1).strip().decode() if mo else path, []).append(path)
    return out


def maildir_flag(path, flag):
    """Adds a Maildir flag (S, F, T, ...) the way a mail reader does: into cur/, flags sorted."""
    d, name = os.path.split(path)
    base, _, flags = name.partition(":2,")
    new = os.path.join(os.path.dirname(d), "cur", base + ":2," + "".join(sorted(set(flags) | {flag})))
    os.rename(path, new)
    return new


def run_mbsync(rc, channel):
    """mbsync under a pseudo-terminal (so it prints its progress counters); (rc, output, seconds)."""
    start = time.time()
    p = subprocess.run(["script", "-qec", "mbsync -c %s %s" % (rc, channel), "/dev/null"], capture_output=True,
                       timeout=120)
    return p.returncode, p.stdout.decode(errors="replace"), time.time() - start


def tail(out, show):
    """The end of a program's output for a failure message ("" when all went well)."""
    return (": " + out.replace("\r", "\n").strip()[-400:]) if show else ""


def mbsync_counters(out):
    """The last progress line "C: 1/1  B: 2/2  F: +0/0 *0/0 #0/0  N: +0/0 *0/0 #0/0" as
    {"F": [added, flagged, trashed], "N": [...]} (the done counts), or None."""
    lines = re.findall(r"C: \d+/\d+\s+B: \d+/\d+\s+F: ([^N]*)N: ([^\r\n]*)", out)
    if not lines:
        return None
    far, near = lines[-1]
    return {"F": [int(x) for x in re.findall(r"[+*#-](\d+)/\d+", far)],
            "N": [int(x) for x in re.findall(r"[+*#-](\d+)/\d+", near)]}


def scenario_mbsync_push(t):
    """mbsync both ways (Sync All, Expunge Both) over INBOX and a user folder: changes made in the Maildir
    (seen, flagged, trashed, moved to the other folder) reach Microsoft 365, and a further run changes nothing."""
    bob = "bob@sandbox.test"
    poll = 2
    set_poll_interval(t, poll)
    work_id = graph_post(t, "/users/%s/mailFolders" % bob, {"displayName": "Work"})["id"]
    tagid = uuid.uuid4().hex[:8]
    inbox_subjects = ["mb%d-%s" % (i, tagid) for i in range(6)]
    work_subjects = ["wk%d-%s" % (i, tagid) for i in range(3)]
    for s in inbox_subjects:
        file_message(t, bob, s, "inbox body of %s\r\n" % s)
    for s in work_subjects:
        file_message(t, bob, s, "work body of %s\r\n" % s, folder=q(work_id))
    check(sorted(graph_folder(t, bob, work_id)) == sorted(work_subjects), "the user folder Work has 3 messages")
    t.start_bridge()
    maildir = os.path.join(t.dir, "Maildir")
    os.makedirs(maildir)
    rc = os.path.join(t.dir, "mbsyncrc")
    with open(rc, "w") as f:
        f.write("IMAPAccount gb\nHost 127.0.0.1\nPort %d\nUser bob\nPass %s\nSSLType STARTTLS\n"
                "CertificateFile %s\n\nIMAPStore remote\nAccount gb\n\n"
                "MaildirStore local\nPath %s/\nInbox %s/INBOX\nSubFolders Verbatim\n\n"
                "Channel gb\nFar :remote:\nNear :local:\nPatterns INBOX Work\nSync All\nCreate Near\n"
                "Expunge Both\nSyncState *\n"
                % (t.imap_port, t.password("bob"), t.t + "/state/tls/server.pem", maildir, maildir))

    # 1: pull.
    code, out, took = run_mbsync(rc, "gb")
    check(code == 0, "mbsync run 1 (pull) in %.1f s (rc %d%s)" % (took, code, tail(out, code)))
    inbox = maildir_by_subject(maildir, "INBOX")
    work = maildir_by_subject(maildir, "Work")
    check(sorted(inbox) == sorted(inbox_subjects) and all(len(v) == 1 for v in inbox.values()),
          "Maildir INBOX has the 6 messages (%d)" % len(inbox))
    check(sorted(work) == sorted(work_subjects) and all(len(v) == 1 for v in work.values()),
          "Maildir Work has the 3 messages (%d)" % len(work))
    if not check(all(re.search(r",U=\d+", os.path.basename(p[0])) for p in list(inbox.values()) + list(work.values())),
                 "mbsync named every file with its UID (,U=)"):
        return

    # In the Maildir, as a mail reader would: seen, flagged, trashed, moved to Work.
    seen_s, flag_s, trash_s, move_s = inbox_subjects[:4]
    maildir_flag(inbox[seen_s][0], "S")
    maildir_flag(inbox[flag_s][0], "F")
    maildir_flag(inbox[trash_s][0], "T")
    src = inbox[move_s][0]
    name = re.sub(r",U=\d+", "", os.path.basename(src))  # a message new to this folder has no UID
    dst = os.path.join(maildir, "Work", "cur" if ":2," in name else "new", name)
    shutil.copyfile(src, dst)
    os.unlink(src)

    # 2: push.
    clear_log(t)
    code, out, took = run_mbsync(rc, "gb")
    check(code == 0, "mbsync run 2 (push) in %.1f s (rc %d%s), counters %s" % (took, code, tail(out, code),
                                                                          mbsync_counters(out)))
    calls = graph_writes(t, bob)
    want = sorted(["PATCH /messages/{id}"] * 2 + ["POST /messages/{id}/move"] * 2)
    check(sorted(c for c in calls if not creates([c])) == want and len(creates(calls)) == 1,
          "Graph calls: a PATCH each for seen and flagged, a move to Deleted Items each for the trashed and the "
          "moved-away message, one upload into Work: %s" % calls)
    gi = graph_folder(t, bob, "inbox")
    gw = graph_folder(t, bob, work_id)
    gt = graph_folder(t, bob, "deleteditems")
    check(seen_s in gi and gi[seen_s][0]["isRead"] is True, "Graph: the message marked S is read")
    check(flag_s in gi and gi[flag_s][0]["flag"]["flagStatus"] == "flagged" and not gi[flag_s][0]["isRead"],
          "Graph: the message marked F is flagged (and still unread)")
    check(trash_s not in gi and len(gt.get(trash_s, [])) == 1, "Graph: the trashed message left the Inbox for Deleted Items")
    check(move_s not in gi and len(gw.get(move_s, [])) == 1, "Graph: the moved message is in Work exactly once, not in the Inbox")
    check(all(s in gi and not gi[s][0]["isRead"] and gi[s][0]["flag"]["flagStatus"] == "notFlagged"
              for s in inbox_subjects[4:]), "Graph: the untouched messages are unchanged")
    check(sorted(gi) == sorted([seen_s, flag_s] + inbox_subjects[4:]) and
          sorted(gw) == sorted(work_subjects + [move_s]), "Graph: Inbox 4 and Work 4 messages")
    if move_s in gw:
        text = rs.delivered_text(t.mime(bob, gw[move_s][0]["id"])).replace("\r\n", "\n")
        check(text == "inbox body of %s\n" % move_s, "the uploaded copy has the message's body (%r)" % text)
    inbox_files = maildir_files(maildir, "INBOX")
    work_files = maildir_files(maildir, "Work")
    check(sorted(maildir_by_subject(maildir, "INBOX")) == sorted([seen_s, flag_s] + inbox_subjects[4:]),
          "Maildir INBOX: the trashed message expunged (%d files)" % len(inbox_files))
    wm = maildir_by_subject(maildir, "Work")
    check(sorted(wm) == sorted(work_subjects + [move_s]) and all(len(v) == 1 for v in wm.values()) and
          re.search(r",U=\d+", os.path.basename(wm.get(move_s, ["x"])[0])),
          "Maildir Work: the moved message once, now with its new UID (%s)" % sorted(os.path.basename(p[0]) for p in wm.values()))

    # 3: nothing left to do, also after delta rounds have seen everything run 2 did (a session keeps
    # the mailbox polled meanwhile).
    watcher = imap_login(t)
    watcher.select("INBOX", readonly=True)
    clear_log(t)
    time.sleep(poll * 2.5)
    watcher.noop()
    watcher.logout()
    deltas = [r for m_, r, s in graph_log(t, bob) if m_ == "GET" and r.endswith("/messages/delta") and s == 200]
    check(len(deltas) >= 4, "delta rounds ran over the folders meanwhile (%d delta requests)" % len(deltas))
    counts = {f: sorted(graph_folder(t, bob, f)) for f in ("inbox", work_id, "deleteditems")}
    clear_log(t)
    code, out, took = run_mbsync(rc, "gb")
    check(code == 0, "mbsync run 3 in %.1f s (rc %d%s)" % (took, code, tail(out, code)))
    counters = mbsync_counters(out)
    check(counters is not None and counters == {"F": [0, 0, 0], "N": [0, 0, 0]},
          "mbsync run 3 reports nothing added, flagged or trashed on either side: %s%s"
          % (counters, tail(out, counters is None)))
    calls = graph_writes(t, bob)
    check(calls == [], "run 3 made no Graph write: %s" % calls)
    check(maildir_files(maildir, "INBOX") == inbox_files and maildir_files(maildir, "Work") == work_files,
          "run 3 left the Maildir exactly as it was (no duplicates, no renames)")
    counts3 = {f: sorted(graph_folder(t, bob, f)) for f in ("inbox", work_id, "deleteditems")}
    check(counts3 == counts, "Graph unchanged by run 3 (%s)" % {k[:8]: len(v) for k, v in counts3.items()})


def wait_for_subject(t, mailbox, subject, folder, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if subject in [m.get("subject") for m in t.messages(mailbox, folder)]:
            return True
        time.sleep(0.3)
    return False


SCENARIOS = {"throttle": scenario_throttle, "pop3": scenario_pop3, "imaplib": scenario_imaplib, "curl": scenario_curl, "restart": scenario_restart,
             "mbsync": scenario_mbsync, "writes": scenario_writes,
             "mbsync_push": scenario_mbsync_push}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(__doc__)
        return 2
    t = rs.Tenant(sys.argv[1])
    try:
        SCENARIOS[sys.argv[2]](t)
    except Exception as e:
        import traceback
        traceback.print_exc()
        rs.FAILURES.append("exception: %r" % e)
    finally:
        if rs.FAILURES:
            try:
                print("---- bridge log (tail) ----\n" + open(t.bridge_log).read()[-4000:])
            except OSError:
                pass
        t.close()
    print("%s: %d failure(s)" % (sys.argv[2], len(rs.FAILURES)))
    return 1 if rs.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
