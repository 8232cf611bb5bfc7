#!/usr/bin/env python3
"""PROXY protocol (v1 and v2) on the bridge's listeners, over real sockets against `graphbridge serve`:
the relay policy applies to the client the header names, not to the load balancer; a header from a
source outside proxy_trusted, a malformed header, no header, or one that never finishes closes the
connection before any greeting; an implicit-TLS listener behind a proxy reads the header and then the
TLS handshake that follows it at once; listeners without proxy_protocol are unaffected.

Usage: proxy_system.py GRAPHBRIDGE_BINARY        Exit status 0 = every check held."""
import os
import re
import smtplib
import socket
import ssl
import struct
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_system as rs  # noqa: E402

check = rs.check
BALANCER = "127.0.0.5"   # the only trusted proxy
STRANGER = "127.0.0.6"


def v1(src, dst="127.0.0.1", sport=40000, dport=25):
    fam = "TCP6" if ":" in src else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def v2(src, dst="127.0.0.1", sport=40000, dport=25, local=False):
    sig = b"\r\n\r\n\x00\r\nQUIT\n"
    if local:
        return sig + bytes([0x20, 0x00, 0, 0])
    block = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return sig + bytes([0x21, 0x11]) + struct.pack("!H", len(block)) + block


def connect(port, source=BALANCER, header=b"", timeout=10):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    if header:
        s.sendall(header)
    return s


def first_line(s):
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return data.decode("utf-8", "replace")


def smtp_dialog(s, lines):
    """Sends each line and returns the replies (multi-line replies joined)."""
    f = s.makefile("rb")
    out = []
    for line in lines:
        s.sendall(line.encode() + b"\r\n")
        reply = b""
        while True:
            ln = f.readline()
            reply += ln
            if not ln or ln[3:4] != b"-":
                break
        out.append(reply.decode("utf-8", "replace"))
    return out


def main():
    t = rs.Tenant(sys.argv[1])
    try:
        smtp_proxy, imap_proxy, pop3s_proxy = rs.free_port(), rs.free_port(), rs.free_port()
        cfg = open(t.config).read()
        cfg = cfg.replace('[smtp]\nlisten = ["127.0.0.1:%d"]' % t.smtp_port,
                          '[smtp]\nlisten = ["127.0.0.1:%d", "127.0.0.1:%d"]\nproxy_protocol = ["127.0.0.1:%d"]\n'
                          'proxy_trusted = ["%s/32"]' % (t.smtp_port, smtp_proxy, smtp_proxy, BALANCER), 1)
        cfg = cfg.replace('[imap]\nlisten = ["127.0.0.1:%d"]' % t.imap_port,
                          '[imap]\nlisten = ["127.0.0.1:%d", "127.0.0.1:%d"]\nproxy_protocol = ["127.0.0.1:%d"]\n'
                          'proxy_trusted = ["%s/32"]' % (t.imap_port, imap_proxy, imap_proxy, BALANCER), 1)
        cfg = cfg.replace('tls_listen = ["127.0.0.1:%d"]' % t.pop3s_port,
                          'tls_listen = ["127.0.0.1:%d", "127.0.0.1:%d"]\nproxy_protocol = ["127.0.0.1:%d"]\n'
                          'proxy_trusted = ["%s/32"]' % (t.pop3s_port, pop3s_proxy, pop3s_proxy, BALANCER), 1)
        open(t.config, "w").write(cfg)
        check("proxy_protocol" in cfg and cfg.count("proxy_trusted") == 3, "config has three PROXY listeners")
        t.start_bridge()

        # 1. The header names a relay-network client (127.0.0.1/32): it relays without AUTH, as that client.
        subject = "via balancer %s" % uuid.uuid4().hex[:8]
        s = connect(smtp_proxy, header=v1("127.0.0.1"))
        greeting = first_line(s)
        check(greeting.startswith("220 "), "v1 header from the trusted balancer: SMTP greeting (%r)" % greeting[:40])
        replies = smtp_dialog(s, ["EHLO printer", "MAIL FROM:<scan@printer.local>", "RCPT TO:<bob@sandbox.test>",
                                  "DATA"])
        check(replies[1].startswith("250") and replies[2].startswith("250") and replies[3].startswith("354"),
              "the named relay-network client relays without AUTH: %s" % [r[:3] for r in replies])
        replies = smtp_dialog(s, ["Subject: %s\r\n\r\nscanned\r\n." % subject, "QUIT"])
        check(replies[0].startswith("250"), "message accepted through the balancer")
        s.close()
        ok = rs.wait_for(lambda: subject in t.by_subject("bob@sandbox.test"), 30, 0.5)
        check(ok, "and delivered")
        log = open(t.bridge_log).read()
        check(re.search(r"queued ip=127\.0\.0\.1 ", log) is not None and "ip=%s" % BALANCER not in log,
              "the log names the client from the header, not the balancer")

        # 2. The header names a stranger: no relay, and no plaintext AUTH (it is not loopback any more).
        s = connect(smtp_proxy, header=v2("198.51.100.7"))
        greeting = first_line(s)
        check(greeting.startswith("220 "), "v2 header: SMTP greeting")
        ehlo, mail = smtp_dialog(s, ["EHLO stranger", "MAIL FROM:<scan@printer.local>"])
        check(mail.startswith("530"), "a client outside the relay networks must authenticate: %s" % mail.strip())
        check("AUTH" not in ehlo, "a non-loopback client behind a loopback balancer gets no plaintext AUTH")
        s.close()

        # 3. Refusals: each closes the connection before any greeting.
        cases = [
            ("a header from a source outside proxy_trusted", STRANGER, v1("127.0.0.1")),
            ("a malformed v1 header", BALANCER, b"PROXY TCP4 127.0.0.1 127.0.0.1 040000 25\r\n"),
            ("no header (plain SMTP on a PROXY listener)", BALANCER, b"EHLO sneaky\r\n"),
            ("a v2 header for UDP", BALANCER, v2("127.0.0.1")[:13] + b"\x12" + v2("127.0.0.1")[14:]),
        ]
        for what, source, header in cases:
            s = connect(smtp_proxy, source=source, header=header)
            got = first_line(s)
            check(got == "", "%s: closed without a greeting (%r)" % (what, got[:30]))
            s.close()
        s = connect(smtp_proxy, header=b"PROXY TCP4 127.0.0.1", timeout=20)
        t0 = time.time()
        got = first_line(s)
        took = time.time() - t0
        check(got == "" and took < 15, "a header that never finishes: closed after the deadline (%.1f s)" % took)
        s.close()
        rs.wait_for(lambda: "no header in time" in open(t.bridge_log).read(), 5, 0.1)
        log = open(t.bridge_log).read()
        check(log.count("PROXY protocol") >= 5, "each refusal logged with its reason")
        check(all(w in log for w in ("not from a trusted proxy", "a port is not 0-65535", "no PROXY protocol header",
                                     "not TCP over IPv4/IPv6", "no header in time")), "the reasons are specific")

        # 4. LOCAL (the balancer's health check): the connection is the balancer's own.
        s = connect(smtp_proxy, header=v2("0.0.0.0", local=True))
        check(first_line(s).startswith("220 "), "v2 LOCAL (health check): greeting")
        s.close()

        # 5. IMAP behind the balancer, and POP3 over implicit TLS: the ClientHello follows the header at once.
        s = connect(imap_proxy, header=v1("127.0.0.1", dport=143))
        check(first_line(s).startswith("* OK"), "IMAP greeting after a v1 header")
        s.close()
        ctx = ssl.create_default_context(cafile=t.t + "/state/tls/server.pem")
        raw = connect(pop3s_proxy, header=v2("127.0.0.1", dport=995))
        tls = ctx.wrap_socket(raw, server_hostname="localhost")
        check(first_line(tls).startswith("+OK"), "POP3 over implicit TLS after a v2 header (%s)" % tls.version())
        tls.close()

        # 6. The listeners without proxy_protocol are unaffected.
        with smtplib.SMTP("127.0.0.1", t.smtp_port, timeout=10) as c:
            check(c.noop()[0] == 250, "the plain SMTP listener still speaks SMTP at once")
        check(t.bridge.poll() is None, "the bridge is still running")
    except Exception:
        import traceback
        traceback.print_exc()
        rs.FAILURES.append("exception")
        if os.path.exists(t.bridge_log):
            print("---- bridge log (tail) ----\n" + open(t.bridge_log).read()[-3000:])
    finally:
        t.close()
    print("proxy_system: %s" % ("ok" if not rs.FAILURES else "%d failure(s)" % len(rs.FAILURES)))
    return 1 if rs.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
