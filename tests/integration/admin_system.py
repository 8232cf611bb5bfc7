#!/usr/bin/env python3
"""The admin endpoint of a running `graphbridge serve` ([admin] listen): /metrics in the Prometheus text
format whose counters move when mail flows and sessions open, /healthz, and /readyz going 503 (with the
reason) while the token endpoint is down and the cached token revoked, back to 200 when it returns.

Usage: admin_system.py GRAPHBRIDGE_BINARY        Exit status 0 = every check held."""
import http.client
import imaplib
import os
import re
import smtplib
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_system as rs  # noqa: E402

check = rs.check


def get(port, path, method="GET"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path)
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, r.getheader("Content-Type", ""), body


def metrics(port):
    """{'name{labels}': value} of every sample; also checks each family has HELP and TYPE first."""
    status, ctype, body = get(port, "/metrics")
    assert status == 200, status
    out, declared = {}, set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            declared.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        mo = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})? (\S+)$', line)
        assert mo, "not an exposition line: %r" % line
        assert mo.group(1) in declared, "sample before its TYPE: %r" % line
        out[mo.group(1) + (mo.group(2) or "")] = float(mo.group(3))
    return out


def main():
    t = rs.Tenant(sys.argv[1])
    try:
        port = int(re.search(r'\[admin\]\nlisten = "127\.0\.0\.1:(\d+)"', open(t.config).read()).group(1))
        t.start_bridge()
        check(get(port, "/healthz")[0] == 200, "/healthz answers 200")
        ready = rs.wait_for(lambda: get(port, "/readyz")[0] == 200, 30, 0.2)
        check(ready, "/readyz turns 200 once the first token is there and the spool is writable")
        status, ctype, body = get(port, "/metrics")
        check(status == 200 and ctype.startswith("text/plain; version=0.0.4"), "/metrics in the text format (%s)" % ctype)
        m0 = metrics(port)
        for name in ("graphbridge_messages_accepted_total", "graphbridge_messages_delivered_total",
                     "graphbridge_queue_depth", "graphbridge_queue_oldest_age_seconds",
                     'graphbridge_sessions{protocol="imap"}', 'graphbridge_token_usable{app="sandbox"}',
                     "graphbridge_imap_cache_hits_total", "graphbridge_sync_polls_total"):
            check(name in m0, "metric %s present" % name)
        check(m0.get('graphbridge_token_usable{app="sandbox"}') == 1, "the app's token is usable")

        # Mail flows: accepted and delivered move by exactly what was sent.
        subjects = ["metrics %d %s" % (i, uuid.uuid4().hex[:8]) for i in range(3)]
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
            for subj in subjects:
                s.send_message(rs.plain_message(subj, "counted\n"))
        rs.wait_for(lambda: metrics(port)["graphbridge_messages_delivered_total"] >=
                    m0["graphbridge_messages_delivered_total"] + 3, 30, 0.2)
        m1 = metrics(port)
        check(m1["graphbridge_messages_accepted_total"] - m0["graphbridge_messages_accepted_total"] == 3,
              "3 messages accepted -> accepted_total +3")
        check(m1["graphbridge_messages_delivered_total"] - m0["graphbridge_messages_delivered_total"] == 3,
              "and delivered_total +3")
        check(m1["graphbridge_queue_depth"] == 0, "the queue is empty again")
        sent = [v for k, v in m1.items() if k.startswith("graphbridge_graph_requests_total{") and
                'route="/users/{id}/sendMail"' in k and 'status="202"' in k]
        sent0 = [v for k, v in m0.items() if k.startswith("graphbridge_graph_requests_total{") and
                 'route="/users/{id}/sendMail"' in k and 'status="202"' in k]
        check(sent and sent[0] - (sent0[0] if sent0 else 0) == 3,
              "graph_requests_total{route=/users/{id}/sendMail,status=202} +3 (%s)" % sent)
        check(not any("@" in k for k in m1 if k.startswith("graphbridge_graph_")),
              "no mailbox address in the Graph request labels (routes are templates)")
        check(m1['graphbridge_connections_total{protocol="smtp"}'] > m0['graphbridge_connections_total{protocol="smtp"}'],
              "SMTP connections counted")

        # An IMAP session is open while we look.
        ctx = __import__("ssl").create_default_context(cafile=t.t + "/state/tls/server.pem")
        imap = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=30)
        imap.starttls(ssl_context=ctx)
        imap.login("bob", t.password("bob"))
        imap.select("INBOX")
        m2 = metrics(port)
        check(m2['graphbridge_sessions{protocol="imap"}'] >= 1, "an open IMAP session shows in sessions{imap}")
        auth_before = m2['graphbridge_sessions_authenticated{protocol="imap"}']
        check(auth_before >= 1, "and as logged in (sessions_authenticated{imap} %s)" % auth_before)
        # A second session, not logged in: sessions grows, sessions_authenticated does not; then IDLE.
        anon = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=30)
        m2b = metrics(port)
        check(m2b['graphbridge_sessions{protocol="imap"}'] == m2['graphbridge_sessions{protocol="imap"}'] + 1 and
              m2b['graphbridge_sessions_authenticated{protocol="imap"}'] == auth_before,
              "a session that has not logged in counts in sessions only")
        anon.shutdown()
        idle_before = m2b["graphbridge_imap_idle_sessions"]
        tag = imap._new_tag().decode()
        imap.send(("%s IDLE\r\n" % tag).encode())
        imap.readline()  # "+ idling"
        check(rs.wait_for(lambda: metrics(port)["graphbridge_imap_idle_sessions"] == idle_before + 1, 5, 0.1),
              "IDLE shows in imap_idle_sessions")
        imap.send(b"DONE\r\n")
        while not imap.readline().startswith(tag.encode()):
            pass
        check(rs.wait_for(lambda: metrics(port)["graphbridge_imap_idle_sessions"] == idle_before, 5, 0.1),
              "and leaves it after DONE")
        check(m2["graphbridge_sync_polls_total"] >= m1["graphbridge_sync_polls_total"], "sync rounds counted")
        lag = rs.wait_for(lambda: metrics(port).get('graphbridge_sync_lag_seconds{mailbox="bob@sandbox.test"}'), 30, 0.5)
        m2 = metrics(port)
        check('graphbridge_sync_lag_seconds{mailbox="bob@sandbox.test"}' in m2 and
              m2['graphbridge_sync_lag_seconds{mailbox="bob@sandbox.test"}'] < 60,
              "sync lag for the mailbox with a session (%s s)" % m2.get('graphbridge_sync_lag_seconds{mailbox="bob@sandbox.test"}'))
        imap.logout()
        fails = m2['graphbridge_auth_failures_total{protocol="smtp"}']
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
            try:
                s.login("alice", "wrong password")
            except smtplib.SMTPAuthenticationError:
                pass
        m3 = metrics(port)
        check(m3['graphbridge_auth_failures_total{protocol="smtp"}'] > fails, "a failed AUTH is counted")
        ifails = m3.get('graphbridge_auth_failures_total{protocol="imap"}')
        check(ifails is not None, "IMAP failed logins are a series too")
        m = imaplib.IMAP4("127.0.0.1", t.imap_port, timeout=30)
        try:
            m.login("bob", "wrong password")
        except imaplib.IMAP4.error:
            pass
        m.shutdown()
        check(metrics(port).get('graphbridge_auth_failures_total{protocol="imap"}', 0) == (ifails or 0) + 1,
              "a failed IMAP LOGIN is counted once")
        check("wrong password" not in get(port, "/metrics")[2], "no credential text in /metrics")

        # Not ready while the token endpoint is down and the token the bridge holds no longer works.
        t.admin("/sandbox/faults", {"target": "token", "kind": "status", "status": 503, "duration_ms": 20000})
        t.admin("/sandbox/tokens/revoke", {})
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:  # a delivery meets the 401
            s.send_message(rs.plain_message("during outage %s" % uuid.uuid4().hex[:8], "waits\n"))
        not_ready = rs.wait_for(lambda: get(port, "/readyz")[0] == 503, 20, 0.2)
        status, _, body = get(port, "/readyz")
        check(not_ready and "app sandbox" in body, "/readyz 503 naming the app while no token can be had: %r" %
              body.strip()[:120])
        check(get(port, "/healthz")[0] == 200, "/healthz stays 200 (alive, just not ready)")
        # The failure is counted once the token request is answered (it may still be on its way when
        # /readyz first says 503) and the delivery deferred: wait for both.
        rs.wait_for(lambda: (lambda m: m['graphbridge_token_failures_total{app="sandbox"}'] >
                             m3['graphbridge_token_failures_total{app="sandbox"}'] and
                             m["graphbridge_messages_deferred_total"] > m3["graphbridge_messages_deferred_total"])(
                                 metrics(port)), 15, 0.2)
        m4 = metrics(port)
        check(m4['graphbridge_token_usable{app="sandbox"}'] == 0 and
              m4['graphbridge_token_failures_total{app="sandbox"}'] > m3['graphbridge_token_failures_total{app="sandbox"}'],
              "token_usable 0 and token failures counted during the outage")
        check(m4["graphbridge_queue_depth"] >= 1 and m4["graphbridge_messages_deferred_total"] > m3["graphbridge_messages_deferred_total"],
              "the waiting message shows in queue_depth and deferred_total")
        back = rs.wait_for(lambda: get(port, "/readyz")[0] == 200, 90, 0.5)
        check(back, "/readyz 200 again after the endpoint returns")
        check(rs.wait_for(lambda: metrics(port)["graphbridge_queue_depth"] == 0, 60, 0.5), "the queue drains")

        t.admin("/sandbox/faults", {"target": "graph", "kind": "status", "status": 429, "retry_after": 1, "count": 2,
                                    "path_suffix": "/sendMail"})
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=30) as s:
            s.send_message(rs.plain_message("throttled %s" % uuid.uuid4().hex[:8], "429\n"))
        rs.wait_for(lambda: metrics(port)["graphbridge_queue_depth"] == 0 and
                    metrics(port).get('graphbridge_graph_throttled_total{app="sandbox"}', 0) >= 2, 30, 0.3)
        m5 = metrics(port)
        check(m5.get('graphbridge_graph_throttled_total{app="sandbox"}', 0) >= 2 and
              m5.get('graphbridge_graph_retry_after_seconds_total{app="sandbox"}', 0) >= 2,
              "two 429s with Retry-After: 1 -> throttled_total >= 2, retry_after_seconds_total >= 2")
        check(get(port, "/nothing")[0] == 404 and get(port, "/metrics", "POST")[0] == 405, "404 and 405 elsewhere")
    except Exception:
        import traceback
        traceback.print_exc()
        rs.FAILURES.append("exception")
        if os.path.exists(t.bridge_log):
            print("---- bridge log (tail) ----\n" + open(t.bridge_log).read()[-3000:])
    finally:
        t.close()
    print("admin_system: %s" % ("ok" if not rs.FAILURES else "%d failure(s)" % len(rs.FAILURES)))
    return 1 if rs.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
