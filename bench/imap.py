#!/usr/bin/env python3
"""IMAP read-path benchmark (reports, never asserts). Runs `graphbridge sandbox --no-bridge` and
`graphbridge serve` as separate processes, files N messages in bob's Inbox through the sandbox's admin
endpoint, then measures:
  1. initial sync: wall time of the first SELECT INBOX (folder tree + delta paging) and the Graph
     requests it made (sandbox counter), per 1,000 messages;
  2. FETCH 1:* (FLAGS ENVELOPE): cold (bodies downloaded once to compute ENVELOPE) and warm (from the
     state store), in messages/s, and the Graph requests a warm FETCH makes (should be 0);
  3. writes: STORE of W messages (one PATCH each, 3 in flight), the same STORE again (no change: no
     request), COPY and MOVE of W/5 messages to a new folder, EXPUNGE of W/5, APPEND of 100 messages;
     messages/s and Graph requests each;
  4. memory per idle connection: bridge RSS with C clients logged in, INBOX selected and in IDLE.
Usage: bench/imap.py BUILD_DIR/graphbridge [--messages 10000] [--clients 1000] [--writes 1000]"""
import argparse
import os
import resource
import socket
import ssl
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import relay_system as rs  # noqa: E402
import imap_system as ims  # noqa: E402


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def graph_requests(t):
    return t.admin("/sandbox/stats")["graph_requests"]


class Client:
    """A minimal IMAP client on a raw socket (many of them at once)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.f = self.s.makefile("rb")
        self.f.readline()
        self.n = 0

    def cmd(self, text):
        self.n += 1
        tag = b"b%d" % self.n
        self.s.sendall(tag + b" " + text.encode() + b"\r\n")
        size = 0
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError("connection closed")
            size += len(line)
            if line.endswith(b"}\r\n"):  # a literal follows
                k = int(line[line.rindex(b"{") + 1:-3])
                size += len(self.f.read(k))
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--latency-ms", type=int, default=0,
                    help="hold every Graph request this long during the writes (a real tenant's ~50-200 ms)")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, a.clients * 2 + 200)), hard))

    t = rs.Tenant(os.path.abspath(a.binary))
    try:
        start = time.time()
        for i in range(a.messages):
            ims.file_message(t, "bob@sandbox.test", "bench %05d" % i,
                             ("benchmark body line %d\r\n" % i) * (1 + i % 20), read=(i % 3 == 0))
        print("filed %d messages in the sandbox in %.1f s" % (a.messages, time.time() - start))
        t.start_bridge()
        pid = t.bridge.pid
        c = Client(t.imap_port)
        before = graph_requests(t)
        start = time.time()
        c.cmd("LOGIN bob %s" % t.password("bob"))  # the folder tree is synced at login
        took_login = time.time() - start
        tree = graph_requests(t) - before
        before = graph_requests(t)
        start = time.time()
        c.cmd("SELECT INBOX")
        took = time.time() - start
        reqs = graph_requests(t) - before
        print("folder tree at LOGIN: %d Graph requests, %.2f s (incl. the scrypt password check)" % (tree, took_login))
        print("initial sync of the Inbox (first SELECT): %.2f s, %d Graph requests for %d messages = %.1f per "
              "1,000 (page size 500)" % (took, reqs, a.messages, reqs * 1000.0 / a.messages))

        before = graph_requests(t)
        start = time.time()
        size = c.cmd("FETCH 1:* (FLAGS ENVELOPE)")
        took = time.time() - start
        reqs = graph_requests(t) - before
        print("cold FETCH 1:* (FLAGS ENVELOPE): %.2f s = %.0f messages/s, %d Graph requests (bodies), %d KB out"
              % (took, a.messages / took, reqs, size // 1024))
        rounds = 5
        before = graph_requests(t)
        start = time.time()
        for _ in range(rounds):
            c.cmd("FETCH 1:* (FLAGS ENVELOPE)")
        took = time.time() - start
        reqs = graph_requests(t) - before
        print("warm FETCH 1:* (FLAGS ENVELOPE): %.3f s each = %.0f messages/s (%.1f FETCH 1:*/s), %d Graph "
              "requests in %d rounds" % (took / rounds, a.messages * rounds / took, rounds / took, reqs, rounds))

        # Writes: what Graph calls they cost and how fast they go (the sandbox answers in ~1-2 ms; on a real
        # tenant each call takes ~50-200 ms, so requests per message is the number that carries over).
        w = min(a.writes, a.messages)
        if a.latency_ms:
            t.admin("/sandbox/settings", {"graph_latency_ms": a.latency_ms})
            print("writes with %d ms Graph latency per request:" % a.latency_ms)

        def timed(label, command, n):
            before = graph_requests(t)
            start = time.time()
            c.cmd(command)
            took = time.time() - start
            reqs = graph_requests(t) - before
            print("%s: %.2f s = %.0f messages/s, %d Graph requests (%.2f per message)"
                  % (label, took, n / took, reqs, reqs / max(1, n)))

        timed("STORE 1:%d +FLAGS (\\Flagged)" % w, "STORE 1:%d +FLAGS.SILENT (\\Flagged)" % w, w)
        timed("same STORE again (nothing changes)", "STORE 1:%d +FLAGS.SILENT (\\Flagged)" % w, w)
        k = max(1, w // 5)
        c.cmd("CREATE BenchTarget")
        timed("COPY 1:%d to a folder" % k, "COPY 1:%d BenchTarget" % k, k)
        timed("MOVE 1:%d to a folder" % k, "MOVE 1:%d BenchTarget" % k, k)
        c.cmd("STORE 1:%d +FLAGS.SILENT (\\Deleted)" % k)
        timed("EXPUNGE of %d (to Deleted Items)" % k, "EXPUNGE", k)
        msg = ("From: bob@sandbox.test\r\nSubject: appended %d\r\nMessage-ID: <bench-%d@sandbox.test>\r\n\r\n"
               + "x" * 76 + "\r\n") * 1
        before = graph_requests(t)
        start = time.time()
        for i in range(100):
            body = (msg % (i, i)) + ("y" * 76 + "\r\n") * 130  # ~10 KB
            c.n += 1
            tag = b"b%d" % c.n
            c.s.sendall(tag + b" APPEND BenchTarget (\\Seen) {%d+}\r\n" % len(body) + body.encode() + b"\r\n")
            while True:
                line = c.f.readline()
                if line.startswith(tag + b" "):
                    if b" OK [APPENDUID" not in line:
                        raise RuntimeError(line.decode(errors="replace"))
                    break
        took = time.time() - start
        reqs = graph_requests(t) - before
        print("APPEND x 100 (10 KB, JSON create): %.1f ms each, %d Graph requests" % (took * 10, reqs))

        if a.latency_ms:
            t.admin("/sandbox/settings", {"graph_latency_ms": 0})

        # Idle connections. One login first, so scrypt's 32 MB working set is already in the allocator.
        warm = Client(t.imap_port)
        warm.cmd("LOGIN bob %s" % t.password("bob"))
        time.sleep(1)
        base = rss_kb(pid)
        clients = []
        start = time.time()
        for i in range(a.clients):
            cl = Client(t.imap_port)
            cl.cmd("LOGIN bob %s" % t.password("bob"))
            cl.cmd("SELECT INBOX")
            cl.s.sendall(b"i IDLE\r\n")
            cl.f.readline()  # "+ idling"
            clients.append(cl)
        took = time.time() - start
        time.sleep(2)
        rss = rss_kb(pid)
        print("%d clients logged in, INBOX selected, IDLE: %.1f s to set up; bridge RSS %d KB -> %d KB = "
              "%.1f KB per idle connection" % (a.clients, took, base, rss, (rss - base) / max(1, a.clients)))
        # New clients are still served.
        start = time.time()
        extra = Client(t.imap_port)
        extra.cmd("CAPABILITY")
        print("a new client's CAPABILITY with %d idling: %.1f ms" % (a.clients, (time.time() - start) * 1000))
        for cl in clients:
            cl.s.close()
    finally:
        t.close()


if __name__ == "__main__":
    main()
