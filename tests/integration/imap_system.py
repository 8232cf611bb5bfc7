#!/usr/bin/env python3
"""System tests of the IMAP read path with real clients: `graphbridge sandbox --no-bridge` plus
`graphbridge serve` as separate processes, messages filed in the sandbox through its admin endpoint (as
if they arrived or were changed in Outlook), read with Python's imaplib, curl and mbsync.

Usage: imap_system.py GRAPHBRIDGE_BINARY SCENARIO
Scenarios: imaplib, curl, restart, mbsync, pop3, throttle. Exit status 0 = every check held."""
import hashlib
import json
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


def wait_for_subject(t, mailbox, subject, folder, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if subject in [m.get("subject") for m in t.messages(mailbox, folder)]:
            return True
        time.sleep(0.3)
    return False


SCENARIOS = {"throttle": scenario_throttle, "pop3": scenario_pop3, "imaplib": scenario_imaplib, "curl": scenario_curl, "restart": scenario_restart,
             "mbsync": scenario_mbsync}


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
