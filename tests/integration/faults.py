#!/usr/bin/env python3
"""Fault tests (issue 7): `graphbridge sandbox --no-bridge` plus `graphbridge serve` as separate processes,
faults injected in the sandbox (Graph and the token endpoint) or on the bridge's own disk and state
database, mail sent with smtplib and a mailbox watched with imaplib throughout. After each fault: every
message answered 250 is in the recipient's mailbox exactly once (a duplicate is allowed only for a request
the sandbox carried out after the bridge had given up on it), and the IMAP UIDs a client saw before still
name the same messages under the same UIDVALIDITY.

Usage: faults.py GRAPHBRIDGE_BINARY SCENARIO
Scenarios:
  graph_faults   slow responses past [graph] timeout, a token that expires in flight (revoked), delta
                 tokens expired, a 429 storm, 503/504 bursts and connection resets (before and after the
                 request was carried out), on deliveries and on the sync, with SMTP and IMAP in use
  token_outage   the token endpoint down for GB_OUTAGE_S seconds (default 120) with the cached token
                 revoked: mail is accepted and waits, IMAP serves what it has, nothing is lost
  disk_full      the state directory on a small tmpfs (root only; exit 77 = skipped otherwise): a DATA
                 that cannot be stored gets 452 4.3.1, never 250; after space returns, all 250s delivered
  state_db       mailboxes.db locked by another process for longer than the busy timeout while the bridge
                 polls and a client writes; then damaged while the bridge is down
Exit status 0 = every check held."""
import glob
import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_system as rs  # noqa: E402  (the Tenant fixture and check())
import imap_system as ims  # noqa: E402  (IMAP helpers)

check = rs.check
BOB = "bob@sandbox.test"


def configure(t, graph_timeout=None, poll=None, extra=""):
    """Before start_bridge(): shorter timeouts and poll intervals than production, so faults show quickly."""
    cfg = open(t.config).read()
    if graph_timeout:
        cfg = cfg.replace("[log]", '[graph]\ntimeout = "%ds"\n\n[log]' % graph_timeout, 1)
    if poll:
        cfg = cfg.replace("[imap]\n", '[imap]\npoll_interval = "%ds"\n' % poll, 1)
    cfg += extra
    open(t.config, "w").write(cfg)


def cmd(m, command):
    """One IMAP command; returns (OK|NO|BAD, untagged lines)."""
    status, lines = ims.tx(m, command)
    return status.split(" ", 1)[0], lines


def subjects_by_uid(m):
    """{UID: subject} of the selected folder, read with UID FETCH (what a client caches)."""
    _, lines = ims.tx(m, "UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = {}
    for x in ims.fetch_lines(lines):
        uid = int(re.search(r"UID (\d+)", x).group(1))
        subj = re.search(r"Subject: ([^\r\n]*)", x)
        out[uid] = subj.group(1).strip() if subj else "?%d" % uid
    return out


def uidvalidity(m):
    _, lines = ims.tx(m, "STATUS INBOX (UIDVALIDITY)")
    mo = re.search(r"UIDVALIDITY (\d+)", " ".join(lines))
    return int(mo.group(1)) if mo else None


def send(t, subjects, frm="scanner@sandbox.test", to=(BOB,)):
    """Sends one message per subject over one SMTP connection (the relay network: no AUTH).
    Returns {subject: queue id} of the messages answered 250."""
    acked = {}
    with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=120) as s:
        for subj in subjects:
            acked[subj] = rs.send_for_id(s, rs.plain_message(subj, "fault test %s\n" % subj, frm=frm), to=to)
    return acked


def inbox_counts(t, subjects):
    counts = t.by_subject(BOB)
    return {s: len(counts.get(s, [])) for s in subjects}


def wait_delivered(t, subjects, timeout):
    """Waits until every subject is in bob's inbox at least once; returns {subject: copies}."""
    rs.wait_for(lambda: all(n >= 1 for n in inbox_counts(t, subjects).values()), timeout, 0.5)
    return inbox_counts(t, subjects)


def stats(t):
    return t.admin("/sandbox/stats")


def imap_view_consistent(t, m, before, validity, what):
    """The UIDs seen before still name the same messages, UIDVALIDITY unchanged, no UID twice, and the
    IMAP view holds exactly Graph's Inbox."""
    graph_subjects = sorted(x.get("subject") for x in t.messages(BOB))
    now = {}

    def same():  # the next poll may still be on its way
        nonlocal now
        ims.tx(m, "NOOP")
        now = subjects_by_uid(m)
        return sorted(now.values()) == graph_subjects

    rs.wait_for(same, 20, 0.5)
    check(uidvalidity(m) == validity, "%s: UIDVALIDITY unchanged (%s)" % (what, validity))
    changed = [u for u, s in before.items() if now.get(u) != s]
    check(not changed, "%s: all %d UIDs seen before name the same messages (%d changed)" %
          (what, len(before), len(changed)))
    check(len(set(now)) == len(now), "%s: no UID twice" % what)
    view = sorted(now.values())
    check(view == graph_subjects, "%s: the IMAP view is Graph's Inbox (%d vs %d messages; only in IMAP: %s; only "
          "in Graph: %s)" % (what, len(view), len(graph_subjects), sorted(set(view) - set(graph_subjects))[:5],
                             sorted(set(graph_subjects) - set(view))[:5]))
    return now


def wait_view(t, m, subjects, timeout=30):
    """Polls with NOOP until every subject is in the selected folder's view."""
    def seen():
        ims.tx(m, "NOOP")
        have = set(subjects_by_uid(m).values())
        return all(s in have for s in subjects)
    return rs.wait_for(seen, timeout, 0.5)


# ---- scenarios -------------------------------------------------------------------------------------------

def scenario_graph_faults(t):
    timeout = 3
    for i in range(20):
        ims.file_message(t, BOB, "before faults %02d" % i)
    configure(t, graph_timeout=timeout, poll=1)
    t.start_bridge()
    m = ims.imap_login(t)
    m.select("INBOX")
    validity = uidvalidity(m)
    before = subjects_by_uid(m)
    check(len(before) == 20, "IMAP sees the 20 messages filed before (%d)" % len(before))
    all_acked = []

    # 1. Slow responses past the timeout: two sendMail calls answered after 2 x timeout. The bridge gives
    # up at `timeout`, defers and retries; the sandbox still carries the slow ones out (as Graph would),
    # so those two -- and only those -- may arrive twice.
    t.admin("/sandbox/faults", {"target": "graph", "kind": "delay", "delay_ms": timeout * 2000, "count": 2,
                                "path_suffix": "/sendMail"})
    slow = ["slow %d %s" % (i, uuid.uuid4().hex[:8]) for i in range(4)]
    t0 = time.time()
    acked = send(t, slow)
    check(len(acked) == 4, "4 messages answered 250 while Graph is slow (%.1f s: acceptance does not wait "
          "for Graph)" % (time.time() - t0))
    counts = wait_delivered(t, slow, 60)
    check(all(n >= 1 for n in counts.values()), "all 4 delivered through responses slower than the timeout")
    time.sleep(timeout * 2 + 1)  # the abandoned requests complete in the sandbox meanwhile
    counts = inbox_counts(t, slow)
    check(sum(counts.values()) - 4 <= 2, "duplicates only for the 2 requests abandoned at the timeout (%d)" %
          (sum(counts.values()) - 4))
    log = open(t.bridge_log).read()
    check(len(re.findall(r"deferred .*(?:[Tt]imeout|timed out)", log)) >= 1,
          "the abandoned requests are logged as deferred with the timeout")
    all_acked += slow

    # A slow delta: the sync round times out; IMAP keeps answering from the store meanwhile.
    t.admin("/sandbox/faults", {"target": "graph", "kind": "delay", "delay_ms": timeout * 2000, "count": 2,
                                "path_suffix": "/delta"})
    ims.file_message(t, BOB, "during slow delta")
    t0 = time.time()
    typ, _ = cmd(m, "NOOP")
    check(typ == "OK", "NOOP answered while the delta is slow (%.1f s)" % (time.time() - t0))
    check(wait_view(t, m, slow + ["during slow delta"], 60), "after the slow deltas the view catches up")

    # 2. An expired token in flight: every issued token revoked, then a burst. Each request meets 401,
    # the broker fetches ONE new token for all of them, nothing is lost or doubled.
    tokens_before = stats(t)["token_requests"]
    t.admin("/sandbox/tokens/revoke", {})
    burst = ["revoked %02d %s" % (i, uuid.uuid4().hex[:8]) for i in range(10)]
    acked = send(t, burst)
    ims.file_message(t, BOB, "after revoke")
    counts = wait_delivered(t, burst, 60)
    check(all(n == 1 for n in counts.values()), "10 messages sent across a revoked token: each exactly once")
    check(wait_view(t, m, burst + ["after revoke"], 60), "IMAP sync goes on with the new token")
    new_tokens = stats(t)["token_requests"] - tokens_before
    check(1 <= new_tokens <= 2, "one new token for the whole burst and the sync, not one per request (%d)" %
          new_tokens)
    all_acked += burst

    # 3. Delta tokens expired (410 syncStateNotFound): a full round; survivors keep their UIDs.
    t.admin("/sandbox/delta/expire", {})
    ims.file_message(t, BOB, "after delta expiry")
    check(wait_view(t, m, ["after delta expiry"], 60), "a message filed after the delta tokens expired appears")

    # 4. A 429 storm on the sync and on deliveries at once.
    for suffix in ("/sendMail", "/delta"):  # the bridge's calls, not this test's own Graph reads
        t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 429, "retry_after": 1,
                                    "count": 6, "path_suffix": suffix})
    storm = ["storm %02d %s" % (i, uuid.uuid4().hex[:8]) for i in range(6)]
    acked = send(t, storm)
    ims.file_message(t, BOB, "during storm")
    counts = wait_delivered(t, storm, 90)
    check(all(n == 1 for n in counts.values()), "6 messages through a 429 storm: each exactly once")
    check(wait_view(t, m, storm + ["during storm"], 60), "IMAP catches up after the storm")
    all_acked += storm

    # 5. 503 and 504 bursts and connections reset mid-request, on deliveries and on the sync. A reset
    # after the request was carried out (a lost response) may duplicate that one delivery, nothing else.
    for suffix in ("/sendMail", "/delta"):
        t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 503, "count": 3,
                                    "path_suffix": suffix})
        t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 504, "count": 2,
                                    "path_suffix": suffix})
        t.admin("/sandbox/faults", {"target": "graph", "kind": "reset", "count": 2, "path_suffix": suffix})
    t.admin("/sandbox/faults", {"target": "graph", "kind": "reset", "count": 1, "after": True,
                                "path_suffix": "/sendMail"})
    burst = ["5xx %02d %s" % (i, uuid.uuid4().hex[:8]) for i in range(8)]
    acked = send(t, burst)
    ims.file_message(t, BOB, "during 5xx")
    counts = wait_delivered(t, burst, 120)
    check(all(n >= 1 for n in counts.values()) and sum(counts.values()) - len(burst) <= 1,
          "8 messages through 503s, 504s and resets: all delivered, at most the one whose response was lost "
          "twice (%d extra)" % (sum(counts.values()) - len(burst)))
    check(wait_view(t, m, burst + ["during 5xx"], 60), "IMAP catches up after the 5xx burst and resets")
    all_acked += burst

    imap_view_consistent(t, m, before, validity, "after all Graph faults")
    missing = [s for s, n in inbox_counts(t, all_acked).items() if n == 0]
    check(not missing, "none of the %d acknowledged messages lost (%d missing)" % (len(all_acked), len(missing)))
    check(t.bridge.poll() is None, "the bridge is still running")
    m.logout()


def scenario_token_outage(t):
    outage = int(os.environ.get("GB_OUTAGE_S", "120"))
    for i in range(10):
        ims.file_message(t, BOB, "cached %02d" % i)
    configure(t, poll=2)
    t.start_bridge()
    m = ims.imap_login(t)
    m.select("INBOX")
    validity = uidvalidity(m)
    before = subjects_by_uid(m)
    ims.tx(m, "UID FETCH 1:3 BODY.PEEK[]")  # three bodies in the bridge's cache
    check(len(before) == 10, "IMAP sees the 10 messages before the outage")

    # The token endpoint goes down and every token the bridge holds stops working.
    t.admin("/sandbox/faults", {"target": "token", "kind": "status", "status": 503,
                                "duration_ms": outage * 1000})
    t.admin("/sandbox/tokens/revoke", {})
    s0 = stats(t)
    t_start = time.time()
    waiting = ["outage %02d %s" % (i, uuid.uuid4().hex[:8]) for i in range(10)]
    acked = send(t, waiting)
    check(len(acked) == 10, "10 messages answered 250 with the token endpoint down (they wait in the spool)")
    ims.file_message(t, BOB, "filed during the outage")

    # While it lasts: nothing delivered, IMAP answers from what it has, the endpoint is not hammered.
    time.sleep(min(20, outage / 3))
    typ, _ = cmd(m, "NOOP")
    check(typ == "OK", "IMAP NOOP answered during the outage")
    typ, lines = cmd(m, "UID FETCH %d BODY.PEEK[]" % min(before))
    check(typ == "OK", "a cached body is served during the outage")
    typ, lines = cmd(m, "UID FETCH %d FLAGS" % max(before))
    check(typ == "OK", "FETCH FLAGS (from the state DB) works during the outage")
    m2 = ims.imap_login(t)  # a new session: LOGIN is local, SELECT serves the stored folder
    typ, _ = m2.select("INBOX")
    check(typ == "OK", "a new IMAP session can SELECT during the outage")
    m2.logout()
    check(stats(t)["messages_sent"] == s0["messages_sent"], "nothing was delivered without a token")
    rs.wait_for(lambda: time.time() - t_start >= outage, outage + 5, 1.0)
    during = stats(t)["faults_injected"] - s0["faults_injected"]  # token requests answered 503
    # Backoff 1, 2, 4, ... capped at 60 s, with jitter: a handful per minute at most.
    check(1 <= during <= 4 + outage // 15,
          "token requests during the %d s outage: %d (backed off, not one per message or poll)" % (outage, during))

    t_back = time.time()
    counts = wait_delivered(t, waiting, 150)
    took = time.time() - t_back
    check(all(n == 1 for n in counts.values()),
          "after the outage all 10 delivered exactly once (%.0f s after the endpoint came back)" % took)
    check(took <= 120, "mail flows again within two minutes of the token endpoint's return (%.0f s)" % took)
    check(wait_view(t, m, ["filed during the outage"], 90), "IMAP sync resumes")
    imap_view_consistent(t, m, before, validity, "after a %d s token outage" % outage)
    log = open(t.bridge_log).read()
    check("503" in log and re.search(r"deferred", log) is not None, "the outage is in the log (deferred, 503)")
    m.logout()


def mounted(path):
    return any(line.split()[1] == path for line in open("/proc/mounts"))


def scenario_disk_full(t):
    if os.geteuid() != 0:
        print("SKIP  disk_full needs root to mount a tmpfs")
        sys.exit(77)
    fs = t.dir + "/smallfs"
    os.makedirs(fs)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", fs]).returncode != 0:
        print("SKIP  cannot mount a tmpfs here")
        sys.exit(77)
    try:
        cfg = open(t.config).read()
        cfg = re.sub(r'(?m)^state_dir = .*$', 'state_dir = "%s/state"' % fs, cfg, 1)
        open(t.config, "w").write(cfg)
        configure(t)
        t.start_bridge()
        # Deliveries stall (Graph answers 503 for a while): accepted mail piles up in the spool.
        t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 503, "duration_ms": 600000})
        big = "x" * 76 + "\n"
        acked, refused, other = [], [], []
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
            for i in range(40):
                subj = "fill %02d %s" % (i, uuid.uuid4().hex[:8])
                msg = rs.plain_message(subj, big * (300000 // 77))  # ~300 KB
                try:
                    s.send_message(msg)
                    acked.append(subj)
                except smtplib.SMTPDataError as e:
                    (refused if (e.smtp_code, e.smtp_error[:5]) == (452, b"4.3.1") else other).append(
                        (subj, e.smtp_code, e.smtp_error))
                    if len(refused) >= 3:
                        break
                except smtplib.SMTPException as e:
                    other.append((subj, str(e)))
                    break
        check(len(refused) >= 1, "once the disk is full DATA is answered 452 4.3.1 (%d accepted, %d refused)" %
              (len(acked), len(refused)))
        check(not other, "no other answer than 250 or 452 4.3.1: %s" % other[:2])
        check(len(acked) >= 3, "mail was accepted until the disk filled (%d)" % len(acked))
        # Fill the rest: even a small message is refused, and MAIL FROM with a SIZE that cannot fit too.
        filler = fs + "/filler"
        subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k", "count=100"], capture_output=True)
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=60) as s:
            try:
                s.send_message(rs.plain_message("tiny when full", "small\n"))
                code = 250
            except smtplib.SMTPDataError as e:
                code = e.smtp_code
            except smtplib.SMTPSenderRefused as e:
                code = e.smtp_code
            check(code == 452, "a 1 KB message on a full disk: %d (452, never 250)" % code)
        check(t.bridge.poll() is None, "the bridge kept running on a full disk")
        # Space comes back, Graph comes back: every 250 is delivered exactly once.
        os.unlink(filler)
        t.admin("/sandbox/faults", method="DELETE")
        later = "after space returned %s" % uuid.uuid4().hex[:8]
        send(t, [later])
        counts = wait_delivered(t, acked + [later], 120)
        check(all(n == 1 for n in counts.values()),
              "all %d messages answered 250 delivered exactly once after the disk emptied" % (len(acked) + 1))
        never = [s for s, _, _ in refused if inbox_counts(t, [s])[s] > 0]
        check(not never, "messages answered 452 were not delivered (the client keeps them): %s" % never)
        log = open(t.bridge_log).read()
        check(re.search(r"(?i)no space|storage|ENOSPC", log) is not None, "the full disk is in the log")
    finally:
        t.kill_bridge(signal.SIGTERM)
        for _ in range(20):
            if subprocess.run(["umount", fs]).returncode == 0 or not mounted(fs):
                break
            time.sleep(0.5)


def scenario_state_db(t):
    for i in range(15):
        ims.file_message(t, BOB, "stored %02d" % i)
    configure(t, poll=1)
    t.start_bridge()
    m = ims.imap_login(t)
    m.select("INBOX")
    validity = uidvalidity(m)
    before = subjects_by_uid(m)
    check(len(before) == 15, "IMAP sees the 15 messages")
    db = t.t + "/state/mailboxes.db"

    # 1. Another process holds the database for 12 s (longer than the 5 s busy timeout) while new mail
    # arrives in Graph (the poller must write) and a client stores a flag.
    holder = sqlite3.connect(db, timeout=1, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    ims.file_message(t, BOB, "arrived while locked")
    smtp_subject = "smtp while locked %s" % uuid.uuid4().hex[:8]
    acked = send(t, [smtp_subject])
    check(len(acked) == 1, "SMTP accepts mail while the state DB is locked (it does not need it)")
    answers = []

    def store():
        try:
            answers.append(cmd(m, "UID STORE %d +FLAGS (\\Flagged)" % min(before)))
        except Exception as e:  # the connection may be closed with BYE [UNAVAILABLE]
            answers.append(("BYE", [str(e)]))

    th = threading.Thread(target=store)
    th.start()
    # The STORE waits out the busy timeout (5 s) and fails; the poller, which waited behind it for the
    # mailbox, then meets the lock too (5 s more). Hold it past both.
    time.sleep(12)
    holder.execute("COMMIT")
    holder.close()
    th.join(30)
    check(answers and answers[0][0] in ("OK", "NO", "BYE"), "STORE under the lock answered: %s" %
          (answers[0][0] if answers else "nothing"))
    check(t.bridge.poll() is None, "the bridge survived the locked state DB (exit %s)" % t.bridge.poll())
    log = open(t.bridge_log).read()
    check(re.search(r"sync failed .*state database.*locked", log) is not None,
          "the poll that met the lock failed, was logged, and the process went on")
    m2 = ims.imap_login(t)
    m2.select("INBOX")
    check(wait_view(t, m2, ["arrived while locked", smtp_subject], 60),
          "after the lock is released the sync catches up (both new messages visible)")
    imap_view_consistent(t, m2, before, validity, "after the state DB was locked")
    check(wait_delivered(t, [smtp_subject], 30)[smtp_subject] == 1, "the SMTP message delivered exactly once")
    m2.logout()
    try:
        m.logout()
    except Exception:
        pass

    # 2. Damaged while the bridge is down: it starts anyway (SMTP does not need the file), moves the wreck
    # aside, rebuilds from Graph, and every folder gets a new UIDVALIDITY (clients resync, never trust a
    # wrong UID).
    t.kill_bridge()
    with open(db, "r+b") as f:
        f.write(b"\x5a" * 8192)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    t.start_bridge()
    log = open(t.bridge_log).read()
    check("state database was corrupt" in log, "the corruption is logged clearly")
    check(glob.glob(db + ".corrupt-*"), "the damaged file is kept aside for inspection")
    after_smtp = "smtp after rebuild %s" % uuid.uuid4().hex[:8]
    send(t, [after_smtp])
    m3 = ims.imap_login(t)
    m3.select("INBOX")
    v2 = uidvalidity(m3)
    check(v2 is not None and v2 > validity, "a new, greater UIDVALIDITY after the rebuild (%s -> %s)" % (validity, v2))
    check(wait_view(t, m3, [after_smtp], 60), "mail keeps flowing after the rebuild")
    graph_subjects = sorted(x.get("subject") for x in t.messages(BOB))
    ims.tx(m3, "NOOP")
    check(sorted(subjects_by_uid(m3).values()) == graph_subjects,
          "the rebuilt view is Graph's Inbox (%d messages)" % len(graph_subjects))
    m3.logout()


SCENARIOS = {
    "graph_faults": scenario_graph_faults,
    "token_outage": scenario_token_outage,
    "disk_full": scenario_disk_full,
    "state_db": scenario_state_db,
}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in SCENARIOS:
        print(__doc__)
        return 2
    t = rs.Tenant(sys.argv[1])
    try:
        SCENARIOS[sys.argv[2]](t)
    except SystemExit:
        raise
    except Exception:
        import traceback
        traceback.print_exc()
        rs.FAILURES.append("exception")
        print("\n---- bridge log (tail) ----\n" + open(t.bridge_log).read()[-3000:] if os.path.exists(t.bridge_log)
              else "")
    finally:
        t.close()
    print("%s: %s" % (sys.argv[2], "ok" if not rs.FAILURES else "%d failure(s)" % len(rs.FAILURES)))
    return 1 if rs.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
