#!/usr/bin/env python3
"""Reload and drain under load (issue 8): N idle connections per protocol, then SIGHUP (how long until
the reload is logged; do all connections still answer?), then SIGTERM (how long until every client got
its goodbye and the process exited?). Numbers only; tests/integration/lifecycle.py checks behaviour.

Usage: bench/lifecycle.py GRAPHBRIDGE_BINARY [CONNECTIONS_PER_PROTOCOL=1000]"""
import os
import re
import resource
import selectors
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import relay_system as rs  # noqa: E402


def open_many(port, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        socks.append(s)
    for s in socks:  # the greeting
        s.settimeout(10)
        s.recv(4096)
    return socks


def ask_all(socks, line, expect_prefix):
    """Sends `line` on every socket, returns how many answered with expect_prefix."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.sendall(line)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    ok, pending, end = 0, len(socks), time.time() + 30
    while pending and time.time() < end:
        for key, _ in sel.select(1):
            try:
                data = key.fileobj.recv(4096)
            except OSError:
                data = b""
            if data.startswith(expect_prefix):
                ok += 1
            sel.unregister(key.fileobj)
            pending -= 1
    sel.close()
    return ok


def goodbyes(socks, prefixes, timeout):
    """Waits until each socket got a line starting with one of prefixes and EOF; returns (count, seconds)."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    done, start, end = 0, time.time(), time.time() + timeout
    told = 0
    while len(bufs) and time.time() < end:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                bufs[s] += data
                continue
            if any(bufs[s].startswith(p) for p in prefixes):
                told += 1
            sel.unregister(s)
            del bufs[s]
            done += 1
    sel.close()
    return told, done, time.time() - start


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t = rs.Tenant(binary)
    try:
        cfg = open(t.config).read()
        cfg = cfg.replace("[smtp]\n", "[smtp]\nmax_connections = %d\n" % (n + 100), 1)
        cfg = cfg.replace("[imap]\n", "[imap]\nmax_connections = %d\n" % (n + 100), 1)
        cfg = cfg.replace("[pop3]\n", "[pop3]\nmax_connections = %d\n" % (n + 100), 1)
        cfg = 'shutdown_timeout = "30s"\n' + cfg
        open(t.config, "w").write(cfg)
        t.start_bridge()
        t0 = time.time()
        smtp = open_many(t.smtp_port, n)
        imap = open_many(t.imap_port, n)
        pop3 = open_many(t.pop3_port, n)
        print("opened %d connections in %.2f s" % (3 * n, time.time() - t0))

        log_before = len(re.findall("configuration reloaded", open(t.bridge_log).read()))
        t0 = time.time()
        t.bridge.send_signal(signal.SIGHUP)
        rs.wait_for(lambda: len(re.findall("configuration reloaded", open(t.bridge_log).read())) > log_before, 30,
                    0.005)
        reload_s = time.time() - t0
        a = ask_all(smtp, b"NOOP\r\n", b"250")
        b = ask_all(imap, b"n1 NOOP\r\n", b"n1 OK")
        c = ask_all(pop3, b"CAPA\r\n", b"+OK")
        print("SIGHUP with %d connections open: reload logged after %.3f s; answering afterwards: SMTP %d/%d, "
              "IMAP %d/%d, POP3 %d/%d" % (3 * n, reload_s, a, n, b, n, c, n))

        t0 = time.time()
        t.bridge.send_signal(signal.SIGTERM)
        told_s, done_s, secs_s = goodbyes(smtp, [b"421"], 40)
        told_i, done_i, secs_i = goodbyes(imap, [b"* BYE"], 40)
        told_p, done_p, secs_p = goodbyes(pop3, [b"-ERR"], 40)
        code = t.bridge.wait(60)
        total = time.time() - t0
        print("SIGTERM: goodbyes SMTP %d/%d, IMAP %d/%d, POP3 %d/%d; all closed after %.2f s; exit %s after %.2f s"
              % (told_s, n, told_i, n, told_p, n, secs_s + secs_i + secs_p, code, total))
    finally:
        t.close()


if __name__ == "__main__":
    main()
