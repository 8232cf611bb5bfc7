#!/usr/bin/env python3
"""Real SMTP clients against graphbridge's SMTP front end. Usage: smtp_client.py SCENARIO PORT TLSPORT CAFILE PASSWORD
Prints one JSON object with what happened; the C++ test asserts on it and on what the spool received."""
import json
import smtplib
import socket
import ssl
import sys
from email.message import EmailMessage

scenario, port, tls_port, cafile, password = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
out = {}


def ctx():
    c = ssl.create_default_context(cafile=cafile)
    c.check_hostname = True
    return c


def message(frm, to, bcc=None, subject="hello"):
    m = EmailMessage()
    m["From"] = frm
    m["To"] = to
    if bcc:
        m["Bcc"] = bcc
    m["Subject"] = subject
    m.set_content("line one\n.leading dot\nline three\n")
    return m


def raw(data, host="127.0.0.1", source=None, wait=1.0):
    s = socket.create_connection((host, port), timeout=5, source_address=(source, 0) if source else None)
    s.settimeout(wait)
    replies = b""
    try:
        replies += s.recv(4096)
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            replies += chunk
    except socket.timeout:
        pass
    s.close()
    return replies.decode("utf-8", "replace")


if scenario == "auth_plain":
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.example")
        out["esmtp"] = sorted(s.esmtp_features.keys())
        s.login("alice", password)
        refused = s.send_message(message("alice@sandbox.test", "bob@sandbox.test", bcc="carol@example.com"))
        out["refused"] = list(refused.keys())
        out["noop"] = s.noop()[0]
elif scenario == "wrong_password":
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        try:
            s.login("alice", password + "x")
            out["code"] = 235
        except smtplib.SMTPAuthenticationError as e:
            out["code"] = e.smtp_code
elif scenario == "starttls_login":
    with smtplib.SMTP("localhost", port, timeout=10) as s:
        s.ehlo()
        out["starttls_offered"] = s.has_extn("starttls")
        s.starttls(context=ctx())
        s.ehlo()
        out["starttls_after"] = s.has_extn("starttls")
        s.user, s.password = "alice", password
        code, _ = s.auth("LOGIN", s.auth_login)
        out["auth"] = code
        s.send_message(message("alice@sandbox.test", "bob@sandbox.test", subject="via starttls"))
elif scenario == "implicit_tls":
    with smtplib.SMTP_SSL("localhost", tls_port, context=ctx(), timeout=10) as s:
        s.login("alice", password)
        s.send_message(message("alice@sandbox.test", "bob@sandbox.test", subject="via implicit tls"))
        out["ok"] = True
elif scenario == "spoof":
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.login("alice", password)
        code, text = s.mail("ceo@sandbox.test")
        out["code"] = code
        out["text"] = text.decode()
elif scenario == "relay_allowed":
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=("127.0.0.2", 0)) as s:
        s.send_message(message("printer@device.local", "bob@sandbox.test", subject="scan"))
        out["ok"] = True
elif scenario == "relay_denied":
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=("127.0.0.3", 0)) as s:
        s.ehlo("stranger")
        code, text = s.mail("scanner@sandbox.test")
        out["code"] = code
elif scenario == "pipelined":
    out["replies"] = raw(b"EHLO pipe\r\nMAIL FROM:<x@printer.local>\r\nRCPT TO:<bob@sandbox.test>\r\nDATA\r\n"
                         b"Subject: piped\r\n\r\nbody\r\n.\r\nQUIT\r\n", source="127.0.0.2")
elif scenario == "smuggling":
    out["replies"] = raw(b"EHLO smuggler\r\nMAIL FROM:<x@printer.local>\r\nRCPT TO:<bob@sandbox.test>\r\nDATA\r\n"
                         b"Subject: outer\r\n\r\nhello\n.\nMAIL FROM:<ceo@sandbox.test>\r\nRCPT TO:<victim@example.com>\r\n"
                         b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n", source="127.0.0.2")
elif scenario == "starttls_injection":
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO inj\r\n")
    while True:
        line = f.readline()
        if line[3:4] == b" ":
            break
    # The injected NOOP rides in the same packet as STARTTLS: it must be discarded, never answered.
    s.sendall(b"STARTTLS\r\nNOOP injected\r\n")
    out["starttls"] = f.readline().decode().strip()
    t = ctx().wrap_socket(s, server_hostname="localhost")
    t.settimeout(1.0)
    try:
        out["after_tls"] = t.recv(4096).decode()
    except socket.timeout:
        out["after_tls"] = ""
    t.sendall(b"EHLO again\r\n")
    out["ehlo"] = t.recv(4096).decode()
    t.close()
elif scenario == "bdat":
    body = b"Subject: chunks\r\n\r\nfirst chunk\r\n.\r\nnot the end\r\n"
    out["replies"] = raw(b"EHLO chunky\r\nMAIL FROM:<x@printer.local>\r\nRCPT TO:<bob@sandbox.test>\r\n"
                         + b"BDAT %d\r\n" % len(body[:20]) + body[:20]
                         + b"BDAT %d LAST\r\n" % len(body[20:]) + body[20:] + b"QUIT\r\n", source="127.0.0.2")
else:
    out["error"] = "unknown scenario"
print(json.dumps(out))
