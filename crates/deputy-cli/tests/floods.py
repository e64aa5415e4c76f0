"""The floods of deputy's hardening tests (tests/floods.rs) and benchmark (bench/run), against a
deputyd socket. Each prints "ready" once its connections are open, then floods, then prints
what it counted.

    python3 floods.py SOCKET hold  N SECONDS   N connections opened and held
    python3 floods.py SOCKET slow  N SECONDS   N connections sending a valid call a byte a second
    python3 floods.py SOCKET wrong N           N Logons of dpt-alice with a wrong password at once
    python3 floods.py SOCKET fds   N           N GetToken calls, each passing 16 descriptors
"""

import array
import os
import resource
import socket
import sys
import time


def connect(path, n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    conns = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        conns.append(s)
    print("ready", flush=True)
    return conns


def hold(path, n, seconds):
    conns = connect(path, n)
    time.sleep(seconds)
    print("held", len(conns), flush=True)


def slow(path, n, seconds):
    message = b'{"method":"io.deputy.GetToken"}\0'
    conns = connect(path, n)
    for s in conns:
        s.setblocking(False)
    end = time.time() + seconds
    i = 0
    while time.time() < end and i < len(message):
        for s in conns:
            try:
                s.send(message[i:i + 1])
            except OSError:
                pass
        i += 1
        time.sleep(1)
    print("sent", i, flush=True)


def answers(conns, timeout, counted):
    """How many connections answered with a reply that `counted` accepts."""
    count = 0
    for s in conns:
        s.settimeout(timeout)
        try:
            if counted(s.recv(65536)):
                count += 1
        except OSError:
            pass
    return count


def wrong(path, n):
    call = (b'{"method":"io.deputy.Logon","parameters":'
            b'{"user":"dpt-alice","password":"wrong-password"}}\0')
    conns = connect(path, n)
    for s in conns:
        s.sendall(call)
    print("errors", answers(conns, 60, lambda reply: b'"error"' in reply), flush=True)


def fds(path, n):
    passed = [os.open("/dev/null", os.O_RDONLY) for _ in range(16)]
    conns = connect(path, n)
    for s in conns:
        s.sendmsg([b'{"method":"io.deputy.GetToken"}\0'],
                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", passed))])
    print("replies", answers(conns, 30, bool), flush=True)


def main():
    path, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "hold":
        hold(path, n, float(sys.argv[4]))
    elif kind == "slow":
        slow(path, n, float(sys.argv[4]))
    elif kind == "wrong":
        wrong(path, n)
    elif kind == "fds":
        fds(path, n)
    else:
        sys.exit(f"floods.py: unknown flood {kind}")


main()
