#!/usr/bin/env python3
"""End to end through a running `graphbridge sandbox`: SMTP to the bridge, delivery through the sandbox's
Graph, read back over Graph. Usage: e2e_relay.py SANDBOX_DIR SANDBOX_PORT SMTP_PORT. Prints JSON."""
import json
import smtplib
import ssl
import sys
import time
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage

d, sport, mport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
state = json.load(open(d + "/sandbox.json"))
alice = [a for a in state["accounts"] if a["login"] == "alice"][0]
ctx = ssl.create_default_context(cafile=d + "/ca.pem")
base = "https://127.0.0.1:%d" % sport
subject = "e2e " + uuid.uuid4().hex
out = {"subject": subject}

m = EmailMessage()
m["From"] = "alice@sandbox.test"
m["To"] = "bob@sandbox.test"
m["Subject"] = subject
m.set_content("quoted-printable check: " + "x" * 90 + " caf\u00e9\n", cte="quoted-printable")
with smtplib.SMTP("127.0.0.1", mport, timeout=20) as s:
    s.starttls(context=ssl._create_unverified_context())
    s.login("alice", alice["password"])
    # scanner@ only in the envelope: it must get the message as a Bcc recipient.
    s.send_message(m, to_addrs=["bob@sandbox.test", "scanner@sandbox.test"])
    out["spoof_code"] = s.mail("ceo@sandbox.test")[0]  # outside alice's send_as

secret = open(d + "/client-secret").read().strip()
body = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": state["client_id"],
                               "scope": base + "/.default", "client_secret": secret}).encode()
tok = json.load(urllib.request.urlopen(base + "/%s/oauth2/v2.0/token" % state["tenant_id"], body, context=ctx))
hdr = {"Authorization": "Bearer " + tok["access_token"]}


def inbox(mb):
    url = base + "/v1.0/users/%s@sandbox.test/mailFolders/inbox/messages?$select=subject&$top=100" % mb
    return json.load(urllib.request.urlopen(urllib.request.Request(url, headers=hdr), context=ctx))["value"]


for mb in ("bob", "scanner"):
    found = None
    for _ in range(100):
        found = [x for x in inbox(mb) if x.get("subject") == subject]
        if found:
            break
        time.sleep(0.2)
    out[mb] = len(found)
    if found:
        raw = urllib.request.urlopen(urllib.request.Request(
            base + "/v1.0/users/%s@sandbox.test/messages/%s/$value" % (mb, found[0]["id"]), headers=hdr),
            context=ctx).read().decode("utf-8", "replace")
        out[mb + "_has_bcc_header"] = "\nbcc:" in raw.lower() or raw.lower().startswith("bcc:")
        out[mb + "_qp_intact"] = ("=3D" in raw or "caf=C3=A9" in raw) and "x" * 70 in raw.replace("=\r\n", "")
print(json.dumps(out))
