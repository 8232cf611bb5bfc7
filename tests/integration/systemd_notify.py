#!/usr/bin/env python3
"""`graphbridge serve` under systemd's notification protocol (Type=notify, WatchdogSec=), with a real Unix
datagram socket standing in for systemd: READY=1 once every listener is up (and not before: the SMTP port
answers by then), WATCHDOG=1 at half of WATCHDOG_USEC while the bridge is healthy, RELOADING=1 then READY=1
on SIGHUP, STOPPING=1 on SIGTERM,
exit status 0; and no message at all without NOTIFY_SOCKET (the same binary runs anywhere).

Usage: systemd_notify.py GRAPHBRIDGE_BINARY        Exit status 0 = every check held."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import relay_system as rs  # noqa: E402

check = rs.check


def main():
    t = rs.Tenant(sys.argv[1])
    sock = None
    try:
        path = os.path.join(t.dir, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        os.environ["NOTIFY_SOCKET"] = path
        os.environ["WATCHDOG_USEC"] = "1000000"
        t.start_bridge()  # returns once the ports answer
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
        got = []
        end = time.time() + 4
        while time.time() < end:
            try:
                got.append((time.time(), sock.recv(4096).decode()))
            except socket.timeout:
                pass
        ready = [m for _, m in got if "READY=1" in m]
        check(len(ready) == 1, "READY=1 sent once (%s)" % [m for _, m in got][:3])
        check(ready and "STATUS=serving" in ready[0], "with a STATUS line")
        dogs = [ts for ts, m in got if m == "WATCHDOG=1"]
        check(5 <= len(dogs) <= 12, "WATCHDOG=1 about every 0.5 s for WATCHDOG_USEC=1 s (%d in 4 s)" % len(dogs))
        # SIGHUP (ExecReload=): RELOADING=1, then READY=1 once the config is applied (systemctl reload waits
        # for it).
        t.bridge.send_signal(signal.SIGHUP)
        seq = []
        end = time.time() + 10
        while time.time() < end and not any("READY=1" in m for m in seq):
            try:
                m = sock.recv(4096).decode()
                if m != "WATCHDOG=1":
                    seq.append(m)
            except socket.timeout:
                pass
        check(len(seq) >= 2 and "RELOADING=1" in seq[0] and "READY=1" in seq[1],
              "SIGHUP: RELOADING=1 then READY=1 (%s)" % seq)
        check(t.bridge.poll() is None, "still running after the reload")
        t.bridge.send_signal(signal.SIGTERM)
        stopping = None
        end = time.time() + 10
        while time.time() < end and stopping is None:
            try:
                m = sock.recv(4096).decode()
                if "STOPPING=1" in m:
                    stopping = m
            except socket.timeout:
                pass
        check(stopping is not None, "STOPPING=1 on SIGTERM")
        code = t.bridge.wait(60)
        check(code == 0, "exit status 0 after SIGTERM (%s)" % code)

        # Without NOTIFY_SOCKET: nothing is sent anywhere, the bridge runs as before.
        t.start_bridge()
        time.sleep(1.5)
        try:
            stray = sock.recv(4096)
        except socket.timeout:
            stray = None
        check(stray is None, "no notification without NOTIFY_SOCKET")
    except Exception:
        import traceback
        traceback.print_exc()
        rs.FAILURES.append("exception")
    finally:
        if sock:
            sock.close()
        t.close()
    print("systemd_notify: %s" % ("ok" if not rs.FAILURES else "%d failure(s)" % len(rs.FAILURES)))
    return 1 if rs.FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
