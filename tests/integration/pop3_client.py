#!/usr/bin/env python3
"""Real POP3 clients against graphbridge's POP3 front end.
Usage: pop3_client.py SCENARIO HOST PORT TLSPORT CAFILE PASSWORD
Prints one JSON object with what happened; the C++ test (tests/pop3_server_test.cpp) asserts on it and on
what the fake maildrop provider saw."""
import hashlib
import json
import poplib
import socket
import ssl
import sys
import time

scenario, host, port, tls_port, cafile, password = (sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                                                    sys.argv[5], sys.argv[6])
out = {}


def ctx(check_hostname=True):
    c = ssl.create_default_context(cafile=cafile)
    c.check_hostname = check_hostname
    return c


def text(b):
    return b.decode("utf-8", "replace")


def lines(ls):
    return [text(x) for x in ls]


def recv_until(s, marker, limit=5.0):
    data = b""
    end = time.monotonic() + limit
    s.settimeout(0.2)
    while marker not in data and time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return data


def raw_read_all(s, wait=1.0):
    s.settimeout(wait)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    return data


if scenario == "session":
    # The whole RFC 1939 command set through poplib, then a second session that must see the deletion.
    p = poplib.POP3(host, port, timeout=10)
    out["welcome"] = text(p.getwelcome())
    out["capa"] = sorted(p.capa().keys())
    out["user"] = text(p.user("alice"))
    out["pass"] = text(p.pass_(password))
    out["stat"] = list(p.stat())
    resp, listing, _ = p.list()
    out["list"] = lines(listing)
    out["list2"] = text(p.list(2))
    resp, uids, _ = p.uidl()
    out["uidl"] = lines(uids)
    out["uidl1"] = text(p.uidl(1))
    resp, body, octets = p.retr(1)
    out["retr1"] = lines(body)
    out["retr1_resp"] = text(resp)
    resp, top, _ = p.top(2, 1)
    out["top2"] = lines(top)
    out["noop"] = text(p.noop())
    out["dele"] = text(p.dele(1))
    try:
        p.retr(1)
        out["retr_deleted"] = "+OK"
    except poplib.error_proto as e:
        out["retr_deleted"] = text(e.args[0])
    out["stat_after_dele"] = list(p.stat())
    out["quit"] = text(p.quit())
    p = poplib.POP3(host, port, timeout=10)
    p.user("alice")
    p.pass_(password)
    out["second_stat"] = list(p.stat())
    out["second_uidl"] = lines(p.uidl()[1])
    out["second_retr1"] = lines(p.retr(1)[1])
    p.quit()
elif scenario == "big":
    p = poplib.POP3(host, port, timeout=30)
    p.user("alice")
    p.pass_(password)
    resp, body, octets = p.retr(3)
    data = b"\r\n".join(body) + b"\r\n"
    out["resp"] = text(resp)
    out["size"] = len(data)
    out["sha256"] = hashlib.sha256(data).hexdigest()
    p.quit()
elif scenario == "stls":
    p = poplib.POP3("localhost", port, timeout=10)
    out["capa_before"] = sorted(p.capa().keys())
    out["stls"] = text(p.stls(context=ctx()))
    out["capa_after"] = sorted(p.capa().keys())
    p.user("alice")
    out["pass"] = text(p.pass_(password))
    out["stat"] = list(p.stat())
    out["cipher"] = p.sock.cipher()[1]
    p.quit()
elif scenario == "pop3s":
    p = poplib.POP3_SSL("localhost", tls_port, context=ctx(), timeout=10)
    out["welcome"] = text(p.getwelcome())
    out["capa"] = sorted(p.capa().keys())
    p.user("alice")
    out["pass"] = text(p.pass_(password))
    out["uidl"] = lines(p.uidl()[1])
    out["top1"] = lines(p.top(1, 0)[1])
    p.quit()
elif scenario == "wrong_password":
    # poplib sees the -ERR [AUTH]. Then, from 127.0.0.3 so the throttling does not slow the other tests:
    # three failures close the first connection; the fourth attempt (second connection) is answered only
    # after the throttle delay.
    p = poplib.POP3(host, port, timeout=10)
    p.user("alice")
    try:
        p.pass_(password + "x")
        out["poplib"] = "+OK"
    except poplib.error_proto as e:
        out["poplib"] = text(e.args[0])
    p.quit()
    timings, answers = [], []

    def connect():
        s = socket.create_connection((host, port), timeout=30, source_address=("127.0.0.3", 0))
        f = s.makefile("rb")
        f.readline()
        return s, f

    def attempt(s, f):
        s.sendall(b"USER alice\r\n")
        f.readline()
        t = time.monotonic()
        s.sendall(("PASS %sx\r\n" % password).encode())
        answers.append(text(f.readline()).rstrip("\r\n"))
        timings.append(time.monotonic() - t)

    s, f = connect()
    for _ in range(3):
        attempt(s, f)
    out["closed_after_three"] = f.readline() == b""
    s.close()
    s, f = connect()
    attempt(s, f)
    s.close()
    out["answers"], out["timings"] = answers, timings
elif scenario == "pipelined":
    s = socket.create_connection((host, port), timeout=10)
    recv_until(s, b"\r\n")
    s.sendall(("CAPA\r\nUSER alice\r\nPASS %s\r\nSTAT\r\nLIST\r\nUIDL 2\r\nTOP 1 0\r\nQUIT\r\n" % password).encode())
    out["replies"] = text(raw_read_all(s, 5.0))
    s.close()
elif scenario == "stls_injection":
    s = socket.create_connection(("localhost", port), timeout=10)
    recv_until(s, b"\r\n")
    s.sendall(b"STLS\r\nUSER alice\r\n")  # the USER must never run
    out["stls"] = text(recv_until(s, b"\r\n"))
    t = ctx().wrap_socket(s, server_hostname="localhost")
    t.settimeout(1.0)
    try:
        out["after_tls"] = text(t.recv(4096))
    except socket.timeout:
        out["after_tls"] = ""
    t.sendall(b"PASS whatever\r\n")  # without the injected USER this is out of sequence
    out["pass"] = text(recv_until(t, b"\r\n"))
    t.close()
elif scenario == "idle":
    s = socket.create_connection((host, port), timeout=10)
    out["greeting"] = text(recv_until(s, b"\r\n"))
    t = time.monotonic()
    s.settimeout(30)
    rest = s.recv(4096)
    out["after_idle"] = text(rest)
    out["closed"] = rest == b""
    out["elapsed"] = time.monotonic() - t
    s.close()
elif scenario == "off_loopback":
    # host is a non-loopback address of this machine: plaintext logins are refused until STLS.
    s = socket.create_connection((host, port), timeout=10, source_address=(host, 0))
    recv_until(s, b"\r\n")
    s.sendall(b"CAPA\r\n")
    out["capa"] = text(recv_until(s, b"\r\n.\r\n"))
    s.sendall(b"USER alice\r\nAUTH PLAIN AGFsaWNlAHg=\r\nAUTH\r\n")
    f = s.makefile("rb")
    out["refused"] = [text(f.readline()).rstrip("\r\n") for _ in range(3)]
    s.close()
    p = poplib.POP3(host, port, timeout=10)
    p.stls(context=ctx(check_hostname=False))
    out["capa_tls"] = sorted(p.capa().keys())
    p.user("alice")
    out["pass"] = text(p.pass_(password))
    p.quit()
elif scenario == "maildrop_error":
    p = poplib.POP3(host, port, timeout=10)
    p.user("alice")
    try:
        out["pass"] = text(p.pass_(password))
    except poplib.error_proto as e:
        out["pass"] = text(e.args[0])
    out["quit"] = text(p.quit())
else:
    print(json.dumps({"error": "unknown scenario " + scenario}))
    sys.exit(2)

print(json.dumps(out))
