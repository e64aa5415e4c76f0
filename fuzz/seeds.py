#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/ (seed-* files) from real messages of the tree.

varlink_call: the calls the end-to-end tests send raw (crates/deputy-cli/tests/e2e.rs,
security.rs), the calls the CLI makes (crates/deputy-cli/src/run.rs, client.rs), the Python
varlink interoperability test's calls, and the logon calls.
config: the TOML of README.md, the doc comment of crates/deputyd/src/config.rs, the tests'
configuration (crates/deputy-cli/tests/common/mod.rs) and its error cases.
environment: the environment names of crates/deputy/src/spawn/env.rs's tests and denylist.
ticket_cache: the start of a ccache file (MIT's format, versions 1 to 4), and near misses.

Run it from anywhere: python3 fuzz/seeds.py. It replaces only seed-* files.
"""
import hashlib
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent / "corpus"


def call(method, parameters=None, **flags):
    message = {"method": method}
    if parameters is not None:
        message["parameters"] = parameters
    message.update(flags)
    return json.dumps(message, separators=(",", ":")).encode() + b"\0"


VARLINK = [
    # e2e.rs: malformed and refused calls.
    b"{not json\0",
    b'{"method":"io.deputy.CreateProcess","parameters":{"argv":42}}\0',
    b'{"method":"io.deputy.Bogus"}\0',
    b'{"method":"com.example.X"}\0',
    b'{"method":"io.deputy.CreateProcess","parameters":{"argv":[]}}\0',
    b'{"method":"io.deputy.CreateProcess","parameters":{"argv":["id"],"stdout":7}}\0',
    b'{"method":"io.deputy.GetTo',
    b'{"method":"io.deputy.GetToken"}\0',
    b'{"method":"io.deputy.CreateProcess","more":true,"parameters":{"argv":["sleep","30"]}}\0',
    b'{"method":"io.deputy.GetToken","parameters":{"x":"' + b"a" * 300 + b'"}}\0',
    # security.rs: identity fields a client may not write.
    call("io.deputy.CreateProcess", {"argv": ["id"], "uid": 0}),
    call("io.deputy.CreateProcess", {"argv": ["id"], "caller": "root"}),
    call("io.deputy.GetToken", {"uid": 0}),
    call("io.deputy.ListSessions", {"owner": 0}),
    call("io.deputy.CreateProcess", {"argv": ["id"], "user": "root"}),
    # The CLI: deputy whoami, sessions, logoff, run (plain, pty, logon, x11, grant, delegate).
    call("io.deputy.GetToken"),
    call("io.deputy.ListSessions", more=True),
    call("io.deputy.Logoff", {"session": "0123456789abcdef0123456789abcdef"}),
    call("io.deputy.CreateProcess", {"argv": ["id"], "stdin": 0, "stdout": 1, "stderr": 2}, more=True),
    call("io.deputy.CreateProcess", {"argv": ["sh", "-c", "echo $USER"], "env": ["LANG=C.UTF-8", "TERM=xterm", "LD_PRELOAD=/x.so"], "cwd": "/tmp", "keepSession": True, "pty": True, "rows": 24, "cols": 80}, more=True),
    call("io.deputy.CreateProcess", {"argv": ["id"], "user": "dpt-alice", "logonType": "interactive"}, more=True),
    call("io.deputy.CreateProcess", {"argv": ["xterm"], "x11": {"display": ":0.0", "authName": "MIT-MAGIC-COOKIE-1", "authData": "00112233445566778899aabbccddeeff"}, "grants": ["/run/user/1000/wayland-0"]}, more=True),
    call("io.deputy.CreateProcess", {"argv": ["klist"], "delegateFd": 3, "stdin": 0, "stdout": 1, "stderr": 2}, more=True),
    call("io.deputy.CreateProcess", {"argv": ["id"], "session": "0123456789abcdef0123456789abcdef"}, more=True),
    call("io.deputy.Logon", {"user": "dpt-alice", "passwordFd": 0, "logonType": "batch", "keepSession": True}),
    call("io.deputy.Logon", {"user": "dpt-bob", "password": "x"}),
    call("io.deputy.BeginLogon", {"user": "dpt-alice", "logonType": "network"}),
    call("io.deputy.AnswerLogon", {"answer": "x"}),
    call("io.deputy.AnswerLogon", {"answerFd": 0}),
    call("io.deputy.Signal", {"pid": 1234, "signal": 2}),
    call("io.deputy.Signal", {"session": "0123456789abcdef0123456789abcdef", "signal": 15}),
    call("io.deputy.ResizePty", {"pid": 1234, "rows": 50, "cols": 132}),
    # Python varlink and org.varlink.service.
    call("org.varlink.service.GetInfo", {}),
    call("org.varlink.service.GetInterfaceDescription", {"interface": "io.deputy"}),
    call("io.deputy.GetToken", None, oneway=True),
    # Several calls on one connection, as the CLI's run makes them.
    call("io.deputy.GetToken") + call("io.deputy.ListSessions") + call("io.deputy.Logoff", {"session": "x"}),
    # The header form: descriptors with the first byte, written in pieces.
    b"\xfd\x03\x07" + call("io.deputy.CreateProcess", {"argv": ["id"], "stdin": 0, "stdout": 1, "stderr": 2}),
    b"\xfd\x14\x40" + call("io.deputy.GetToken"),
    b"\xfd\x01\x00" + call("io.deputy.Logon", {"user": "dpt-alice", "passwordFd": 0}),
]

CONFIG = [
    # README.md and config.rs's doc comment.
    b'[daemon]\nsocket = "/run/deputy/io.deputy"\naudit_log = "/var/log/deputy/audit.jsonl"\n\n'
    b'[logon]\ndeny_users = ["root"]         # never logged on, whatever the password\n'
    b"uid_min = 1000\ntrusted_callers = [0]\n\n[limits]\nsessions_per_user = 64\n",
    # The tests' daemon (tests/common/mod.rs).
    b'[daemon]\naudit_log = "/tmp/x/audit.jsonl"\npam_service = "deputy-test"\n\n'
    b"[logon]\nfail_delay_ms = 100\n\n[sessions]\ngrace_ms = 400\n",
    # Every section and key.
    b'[daemon]\nsocket = "/run/deputy/io.deputy"\naudit_log = "/var/log/deputy/audit.jsonl"\n'
    b'on_audit_failure = "continue"\npam_service = "deputy"\nsession_worker = "/usr/libexec/deputy-session-worker"\n'
    b"account_cache_secs = 30\n\n"
    b'[logon]\nallow_users = ["dpt-alice", "dpt-bob"]\ndeny_users = ["root"]\nuid_min = 1000\n'
    b"trusted_callers = [0, 1001]\nlogon_callers = [0]\nfail_delay_ms = 2000\nmax_failures = 5\n"
    b"max_failures_per_caller = 20\nfailure_window_secs = 300\nlockout_secs = 300\npam_timeout_secs = 120\n\n"
    b"[limits]\nsessions_per_user = 64\nprocesses_per_session = 256\nconnections_per_uid = 64\n"
    b"requests_in_flight_per_uid = 2\nrequest_timeout_secs = 300\n\n"
    b'[environment]\nallow = ["LANG", "LC_*", "TERM", "PATH"]\n\n'
    b"[rlimits]\nnofile = { soft = 1024, hard = 4096 }\nnproc = { soft = 100, hard = 200 }\n"
    b"[rlimits.core]\nsoft = 0\nhard = 0\n\n"
    b"[sessions]\nidle_timeout_secs = 900\ngrace_ms = 5000\n",
    # config.rs's tests: errors with line and column.
    b"",
    b'[logon]\nuid_min = 1000\nfail_delay_ms = "soon"\n',
    b"[logon]\nbogus = 1\n",
    b"[rlimits]\nnofile = { soft = 10, hard = 5 }\n",
    b"[rlimits]\nbanana = { soft = 1, hard = 1 }\n",
    b"[limits]\nrequest_timeout_secs = 0\n",
    b'[daemon]\nsocket = "relative/path"\n',
    b"[daemon]\naudit_log = ''\n",
]

ENVIRONMENT = [
    b"Aid\nELANG=C.UTF-8\nETERM=xterm\nEPATH=/bin",
    b"ELD_PRELOAD=/x.so\nELD_LIBRARY_PATH=/x\nEBASH_FUNC_f%%=() { :; }\nEGCONV_PATH=/x\nELANG=C.UTF-8",
    b"EHOME=/tmp\nEUSER=someone\nELOGNAME=x\nESHELL=/bin/sh\nEGLIBC_TUNABLES=glibc.malloc.check=3",
    b"EBASH_ENV=/x\nEENV=/x\nEIFS=x\nEPS4=$(id)\nESHELLOPTS=xtrace\nELOCPATH=/x\nENLSPATH=/x",
    b"E=x",
    b"EA=B\x1fx",
    b"EA\0\x1fx",
    b"EGOOD=a\0b",
    b"Aa\0b",
    b"Ash\nA-c\nAecho $USER; exit 3",
    b"DLANG=C.UTF-8\nDLC_ALL=C\nDTERM=xterm\nDLD_PRELOAD=/x.so\nDPATH=/opt/bin\nDBASH_FUNC_x%%=() { id; }",
    b"Dnot an entry",
    b"D=\nDA==\nDLC_=x",
]

# A version 4 ccache: header (one tag), default principal alice@EXAMPLE.ORG, no credentials.
CCACHE4 = (
    b"\x05\x04\x00\x0c\x00\x01\x00\x08" + b"\xff" * 4 + b"\x00" * 4
    + b"\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x0bEXAMPLE.ORG\x00\x00\x00\x05alice"
)
TICKETS = [CCACHE4, b"\x05\x01", b"\x05\x03\x00", b"\x05\x05", b"\x04\x04", b"", b"\x05"]


def write(target, seeds):
    folder = HERE / target
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("seed-*"):
        old.unlink()
    for seed in seeds:
        name = "seed-" + hashlib.sha1(seed).hexdigest()[:16]
        (folder / name).write_bytes(seed)
    print(f"{target}: {len(seeds)} seeds")


write("varlink_call", VARLINK)
write("config", CONFIG)
write("environment", ENVIRONMENT)
write("ticket_cache", TICKETS)
