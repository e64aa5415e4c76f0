#!/usr/bin/env python3
"""bench/report.py — turns what bench/run measured ($B_WORK/json) into docs/BENCHMARKS.md and
the charts in docs/bench/ (gnuplot, PNG). Run by bench/run; every input comes from its
environment (B_*), nothing is measured here."""

import datetime
import glob
import json
import math
import os
import statistics
import subprocess

E = os.environ
WORK = E["B_WORK"]
J = f"{WORK}/json"
OUT = E["B_OUT_DIR"]
IMG = f"{OUT}/bench"
USER = E["B_USER"]
os.makedirs(IMG, exist_ok=True)


def load(name, default=None):
    try:
        with open(f"{J}/{name}") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def pct(xs, p):
    """Nearest-rank percentile of sorted xs."""
    if not xs:
        return float("nan")
    i = min(len(xs), max(1, math.ceil(p * len(xs)))) - 1
    return xs[i]


def f2(x):
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def mib(kib):
    return kib / 1024.0


# ---------------------------------------------------------------- latency
cases = []
with open(f"{WORK}/cases.tsv") as f:
    for line in f:
        cid, name, short, shown = line.rstrip("\n").split("\t")
        times = []
        for path in sorted(glob.glob(f"{J}/{cid}.*.json")):
            with open(path) as g:
                times += json.load(g)["results"][0]["times"]
        if not times:
            continue
        ms = sorted(t * 1e3 for t in times)
        n = len(ms)
        mean = sum(ms) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in ms) / (n - 1)) if n > 1 else 0.0
        cases.append(dict(id=cid, name=name, short=short, shown=shown, n=n, mean=mean, sd=sd, min=ms[0],
                          p5=pct(ms, .05), p25=pct(ms, .25), median=pct(ms, .5),
                          p75=pct(ms, .75), p95=pct(ms, .95), max=ms[-1]))
by = {c["id"]: c for c in cases}
med = lambda cid: by[cid]["median"] if cid in by else None  # noqa: E731
SETPRIV, SUDO_RS, RUNUSER = med("setpriv"), med("sudo-rs"), med("runuser")


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


# ---------------------------------------------------------------- charts
def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, check=True)


with open(f"{WORK}/lat.dat", "w") as f:
    for i, c in enumerate(cases, 1):
        f.write(f'{i} {c["p5"]} {c["p25"]} {c["median"]} {c["p75"]} {c["p95"]} "{c["short"]}"\n')
gnuplot(f"""
set terminal pngcairo size 1200,620 font "sans,10"
set output '{IMG}/latency.png'
set title "Start /bin/true as {USER} and wait: latency by tool (box p25–p75, whiskers p5–p95, bar median)"
set logscale y
set ylabel 'ms (log scale)'
set grid ytics mytics
set style fill solid 0.35 border -1
set boxwidth 0.55
set xtics rotate by -30 noenhanced
set bmargin 6
set key top left
set xrange [0.3:{len(cases) + 0.7}]
plot '{WORK}/lat.dat' using 1:3:2:6:5:xtic(7) with candlesticks whiskerbars 0.5 lc rgb '#4477aa' notitle, \
     '' using 1:4:4:4:4 with candlesticks lt -1 lw 2 notitle, \
     {0.8 * SETPRIV if SETPRIV else 'NaN'} with lines dt 2 lc rgb '#cc3311' title 'target for the peer and trusted paths: 0.8 × setpriv'
""")

clients = E["B_CLIENTS"].split()
tp = {}
for kind in ("raw", "peer", "trusted"):
    for c in clients:
        tp[(kind, c)] = load(f"tp-{kind}-{c}.json")
with open(f"{WORK}/tp.dat", "w") as f:
    for i, c in enumerate(clients):
        row = [str(i), c]
        for kind in ("raw", "peer", "trusted"):
            r = tp[(kind, c)]
            row += [f'{r["per_sec"]:.1f}' if r else "NaN", f'{r["latency"]["p99_ms"]:.3f}' if r else "NaN"]
        f.write(" ".join(row) + "\n")
gnuplot(f"""
set terminal pngcairo size 1200,500 font "sans,10"
set output '{IMG}/throughput.png'
set multiplot layout 1,2 title "Concurrent clients starting /bin/true in a loop ({E['B_DURATION']} s per point)"
set xlabel 'concurrent clients'
set grid
set key top left
set ylabel 'starts per second'
set yrange [0:*]
plot '{WORK}/tp.dat' using 1:3:xtic(2) with linespoints lw 2 title 'raw: std Command (threads)', \
     '' using 1:5 with linespoints lw 2 title 'deputy peer path', \
     '' using 1:7 with linespoints lw 2 title 'deputy trusted path'
set ylabel 'p99 latency, ms (log scale)'
set logscale y
set yrange [*:*]
plot '{WORK}/tp.dat' using 1:4:xtic(2) with linespoints lw 2 title 'raw', \
     '' using 1:6 with linespoints lw 2 title 'deputy peer', \
     '' using 1:8 with linespoints lw 2 title 'deputy trusted'
unset multiplot
""")

levels = E["B_SCALE"].split()
scale = {}
for lv in levels:
    scale[lv] = {k: load(f"scale-{lv}-{k}.json") for k in ("fill", "trusted", "peer", "session", "lists")}


# The most sessions against a freshly started second deputyd, alternated (ABBA) in rounds: for each
# route, each round's median with many sessions over its median with few.
AB_ROUTES = (("trusted", "trusted"), ("peer", "peer"), ("session", "in a session"))
ab = {}
for k, _ in AB_ROUTES:
    rounds = []
    for r in range(1, int(E.get("B_SCALE_AB_ROUNDS") or 0) + 1):
        many, few = load(f"scale-ab-many-{k}-{r}.json"), load(f"scale-ab-few-{k}-{r}.json")
        if many and few and many["n"] and few["n"] and few["median_ms"]:
            rounds.append((many["median_ms"], few["median_ms"], many["errors"] + few["errors"]))
    if rounds:
        ab[k] = dict(rounds=rounds,
                     ratio=statistics.median(m / f for m, f, _ in rounds),
                     many=statistics.median(m for m, _, _ in rounds),
                     few=statistics.median(f for _, f, _ in rounds),
                     errors=sum(e for _, _, e in rounds))


def sget(lv, k, *path):
    v = scale[lv][k]
    for p in path:
        if v is None:
            return None
        v = v.get(p)
    return v


with open(f"{WORK}/scale.dat", "w") as f:
    for lv in levels:
        vals = [sget(lv, "trusted", "median_ms"), sget(lv, "peer", "median_ms"),
                sget(lv, "session", "median_ms"), sget(lv, "lists", "fresh", "median_ms"),
                sget(lv, "lists", "reused", "median_ms")]
        f.write(lv + " " + " ".join("NaN" if v in (None, 0) else f"{v:.4f}" for v in vals) + "\n")
gnuplot(f"""
set terminal pngcairo size 1000,560 font "sans,10"
set output '{IMG}/scale.png'
set title "Latency with N live sessions (medians)"
set logscale xy
set xlabel 'live sessions'
set ylabel 'ms (log scale)'
set grid
set key top left
plot '{WORK}/scale.dat' using 1:2 with linespoints lw 2 title 'start, trusted path', \
     '' using 1:3 with linespoints lw 2 title 'start, peer path', \
     '' using 1:4 with linespoints lw 2 title 'start in a kept session', \
     '' using 1:5 with linespoints lw 2 title 'ListSessions, new connection', \
     '' using 1:6 with linespoints lw 2 title 'ListSessions, reused connection'
""")

# ---------------------------------------------------------------- report
L = []
now = datetime.datetime.now(datetime.timezone.utc)
quick = E.get("B_QUICK") == "1"
L.append("# Benchmarks: deputy against its peers, and deputyd under load")
L.append("")
L.append(f"Generated by `bash bench/run`{' with `QUICK=1` (a smoke run: few runs, short points — indicative only)' if quick else ''} "
         f"on {now:%Y-%m-%d %H:%M} UTC, repo at {E['B_GIT']}, in {E['B_ELAPSED']} s. Target user `{USER}`. "
         "Everything below was measured in that one run, on this machine; rerun it to check any figure.")
L.append("")
L.append("## Machine")
L.append("")
for k, v in [("CPU", E["B_CPU"]), ("cores (nproc)", E["B_NPROC"]), ("kernel", E["B_KERNEL"]), ("OS", E["B_OS"]),
             ("load average 1/5/15 min", E["B_LOAD"])]:
    L.append(f"- {k}: `{v}`")
L.append("")
L.append("Versions: " + "; ".join(f"`{E[k]}`" for k in (
    "B_V_SETPRIV", "B_V_RUNUSER", "B_V_SU", "B_V_SUDO", "B_V_SUDO_RS", "B_V_USERV", "B_V_PAM",
    "B_V_HYPERFINE", "B_V_GNUPLOT", "B_V_DEPUTY", "B_V_RUSTC")) + ".")
notes = [x for x in E.get("B_NOTES", "").splitlines() if x.strip()]
if notes:
    L.append("")
    L += [f"**Note:** {x}" for x in notes]

# targets first: what a reader wants at a glance
targets = []


def target(name, figure, met):
    targets.append((name, figure, "n/a" if met is None else ("**met**" if met else "**missed**")))


peer_r, trusted_r = ratio(med("deputy-peer"), SETPRIV), ratio(med("deputy-trusted"), SETPRIV)
target("peer path ≤ 0.8× setpriv", f"{f2(med('deputy-peer'))} ms = {f2(peer_r)}× setpriv ({f2(SETPRIV)} ms)",
       None if peer_r is None else peer_r <= 0.8)
target("trusted path ≤ 0.8× setpriv", f"{f2(med('deputy-trusted'))} ms = {f2(trusted_r)}× setpriv",
       None if trusted_r is None else trusted_r <= 0.8)
sr_p, sr_t = ratio(med("deputy-peer"), SUDO_RS), ratio(med("deputy-trusted"), SUDO_RS)
target("… so about 4× faster than sudo-rs (≤ 0.25× sudo-rs)",
       f"peer {f2(sr_p)}×, trusted {f2(sr_t)}× sudo-rs ({f2(SUDO_RS)} ms)",
       None if sr_p is None else max(sr_p, sr_t) <= 0.25)
b_r = ratio(med("deputy-batch"), RUNUSER)
target("with a PAM session, no slower than runuser", f"{f2(med('deputy-batch'))} ms = {f2(b_r)}× runuser ({f2(RUNUSER)} ms)",
       None if b_r is None else b_r <= 1.0)
logon = load("logon.json")
if logon:
    target("fresh password logon within 5% of the PAM stack's own cost",
           f"{f2(logon['daemon']['median_ms'])} ms through deputyd vs {f2(logon['bare']['median_ms'])} ms bare = {logon['ratio']:.3f}×",
           logon["ratio"] <= 1.05)
r8, p8, t8 = tp.get(("raw", "8")), tp.get(("peer", "8")), tp.get(("trusted", "8"))
if r8 and p8 and t8:
    pr, tr = p8["per_sec"] / r8["per_sec"], t8["per_sec"] / r8["per_sec"]
    target("throughput at 8 clients ≥ 90% of the raw spawn rate",
           f"peer {p8['per_sec']:.0f}/s = {pr:.0%}, trusted {t8['per_sec']:.0f}/s = {tr:.0%} of raw {r8['per_sec']:.0f}/s",
           min(pr, tr) >= 0.9)
mem = load("memory.json")
if mem:
    target("idle RSS ≤ 8 MiB", f"{mib(mem['idle']['rss_kib']):.1f} MiB", mib(mem["idle"]["rss_kib"]) <= 8)
    target(f"RSS with {mem['connections']:,} idle connections ≤ 32 MiB",
           f"{mib(mem['with_connections']['rss_kib']):.1f} MiB ({mem['connections_served']:,} served)",
           mib(mem["with_connections"]["rss_kib"]) <= 32 and mem["connections_served"] == mem["connections"])
if len(levels) >= 2:
    lo, hi = levels[0], levels[-1]
    if ab:
        target(f"a start does not grow with the sessions ({hi} against a fresh deputyd, alternated in "
               f"{E['B_SCALE_AB_ROUNDS']} rounds: median of the rounds' ratios ≤ 1.25×)",
               ", ".join(f"{label} {ab[k]['ratio']:.2f}×" for k, label in AB_ROUTES if k in ab),
               max(v["ratio"] for v in ab.values()) <= 1.25)
    mid = levels[-2]
    fac = int(hi) / int(mid)
    lgrow = []
    for k in ("fresh", "reused"):
        a, b = sget(mid, "lists", k, "median_ms"), sget(hi, "lists", k, "median_ms")
        if a and b:
            lgrow.append((k, b / a))
    if lgrow:
        target(f"ListSessions at most linear ({mid} → {hi} sessions: ≤ {fac * 1.5:.0f}×, i.e. 1.5× the ×{fac:.0f} in sessions)",
               ", ".join(f"{k} connection {g:.1f}×" for k, g in lgrow), max(g for _, g in lgrow) <= fac * 1.5)
fb, fd = load("fair-before.json"), load("fair-during.json")
if fb and fd and fb["latency"]["n"] and fd["latency"]["n"]:
    fr = fd["latency"]["median_ms"] / fb["latency"]["median_ms"]
    target(f"another user's start stays within 2× while {E['B_FLOOD_USER']} floods (default limits)",
           f"median {f2(fb['latency']['median_ms'])} → {f2(fd['latency']['median_ms'])} ms = {fr:.2f}× "
           f"(p99 {f2(fb['latency']['p99_ms'])} → {f2(fd['latency']['p99_ms'])} ms; {fd['latency']['errors']} errors)",
           fr <= 2.0 and fd["latency"]["errors"] == 0)
FLOODS = (("hold", "held", "10,000 connections held"), ("slow", "slow", "1,000 clients sending a byte a second"),
          ("wrong", "wrong passwords", "1,000 wrong-password logons at once"),
          ("fds", "descriptors", "100 clients passing 16 descriptors each"))
flb = load("floods-before.json")
flood_rows = [(label, load(f"floods-{k}.json"), short) for k, short, label in FLOODS]
flood_rows = [(label, r, short) for label, r, short in flood_rows if r and r["latency"]["n"]]
if flb and flb["latency"]["n"] and flood_rows:
    base = flb["latency"]["median_ms"]
    worst = max(flood_rows, key=lambda lr: lr[1]["latency"]["median_ms"])
    errors = sum(r["latency"]["errors"] for _, r, _ in flood_rows)
    target("another user's start stays within 2× during each hardening flood (default limits)",
           "; ".join(f"{short} {r['latency']['median_ms'] / base:.2f}×" for _, r, short in flood_rows)
           + f" of {f2(base)} ms; {errors} errors",
           worst[1]["latency"]["median_ms"] <= 2 * base and errors == 0)

L.append("")
L.append("## Targets")
L.append("")
L.append("| target | measured | |")
L.append("|---|---|---|")
L += [f"| {a} | {b} | {c} |" for a, b, c in targets]
BOUNDS_AT = len(L)  # "what bounds it" goes here, once the sections below computed it

# latency
L.append("")
L.append("## Latency: start `/bin/true` as the user and wait")
L.append("")
L.append(f"hyperfine `--shell=none`, {E['B_ROUNDS']} rounds that run every tool in turn (so drift hits all alike), "
         f"{E['B_WARMUP']} warm-up runs per tool per round, {by['setpriv']['n'] if 'setpriv' in by else '?'} timed runs per tool in all. "
         "Milliseconds; ratios are of medians. Everything runs as root except the deputy peer path, whose hyperfine was "
         f"itself started as {USER}. deputy is built with cargo profile `{E.get('B_PROFILE', 'release')}`; `deputy` is the "
         "launcher, static and without libc, as `scripts/start` builds it.")
L.append("")
L.append("![latency by tool](bench/latency.png)")
L.append("")
L.append("| tool | median | p25 – p75 | p5 – p95 | mean ± σ | min | max | runs | × setpriv | × sudo-rs |")
L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in cases:
    L.append(f"| {c['name']} | {c['median']:.2f} | {c['p25']:.2f} – {c['p75']:.2f} | {c['p5']:.2f} – {c['p95']:.2f} | "
             f"{c['mean']:.2f} ± {c['sd']:.2f} | {c['min']:.2f} | {c['max']:.2f} | {c['n']} | "
             f"{f2(ratio(c['median'], SETPRIV))} | {f2(ratio(c['median'], SUDO_RS))} |")
L.append("")
L.append("Commands (`deputy` is `deputy --socket S`, S the socket of the deputyd this run started):")
L.append("")
for c in cases:
    L.append(f"- {c['name']}: `{c['shown']}`")
L.append("")
L.append("Configuration: sudo and sudo-rs read Debian's `/etc/sudoers` plus a drop-in "
         f"`root ALL=({USER}) NOPASSWD: ALL` (removed afterwards) and use PAM service `sudo`; runuser and su "
         "use their PAM services (`pam_rootok` lets root through, a PAM session is opened); su runs the command "
         "through the user's shell (`bash -c`, which execs it); userv runs through `uservd` (started for the run) and a "
         "service file that executes `/bin/true`; setpriv does no PAM at all and is the floor (fork, setuid, exec). "
         "deputy's trusted path does an account check on a kept PAM handle; `--logon-type batch` opens a full PAM "
         "session in a session worker; the kept session was logged on once with the password; the fresh logon "
         "authenticates with the password (pam_unix, yescrypt) every time. ssh is not measured (no sshd in this run).")
retries = [x for x in E.get("B_RETRIES", "").splitlines() if x.strip()]
if retries:
    L.append("")
    L.append("**Retried cases** (hyperfine stops at the first failing run):")
    L += [f"- {x}" for x in retries]

if logon:
    L.append("")
    L.append("## Fresh password logon against the PAM stack's own cost")
    L.append("")
    L.append(f"`deputy-load logon`, {E['B_LOGON_RUNS']} of each, alternated, {logon['pace_ms']} ms untimed between any two. "
             f"*bare*: in the load tool itself, the PAM calls a logon makes on service `{logon['service']}` (pam_start, "
             "authenticate, acct_mgmt, setcred, open_session … close_session, setcred delete, pam_end) and a plain start of "
             "`/bin/true` as the user; *deputyd*: connect, `Logon` with the password in a pipe, `CreateProcess` in the new "
             "session, its exit (the session then ends off the caller's path).")
    L.append("")
    L.append("| | median | p25 | p75 | p99 | runs | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for k, label in (("bare", "bare PAM + start"), ("daemon", "through deputyd")):
        s = logon[k]
        L.append(f"| {label} | {s['median_ms']:.2f} | {s['p25_ms']:.2f} | {s['p75_ms']:.2f} | {s['p99_ms']:.2f} | {s['n']} | {s['errors']} |")
    L.append("")
    L.append(f"deputyd ÷ bare (medians): **{logon['ratio']:.3f}**.")

# throughput
L.append("")
L.append("## Throughput")
L.append("")
L.append(f"`deputy-load throughput`: N connections (one task each) each starting `/bin/true` and waiting for its exit, in a "
         f"loop, for {E['B_DURATION']} s; the clock starts once all are connected. *raw*: `deputy-load raw`, N threads "
         "each running `std::process::Command::new(\"/bin/true\").status()` in a loop, as the same user as the peer "
         "clients. For each N the three run back to back, raw first. The peer path runs as "
         f"{USER}; the trusted path as root (`user: {USER}`).")
L.append("")
L.append("![throughput by concurrency](bench/throughput.png)")
L.append("")
L.append("| clients | raw /s | peer /s | × raw | peer p50 / p99 ms | trusted /s | × raw | trusted p50 / p99 ms | errors |")
L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in clients:
    r, p, t = tp[("raw", c)], tp[("peer", c)], tp[("trusted", c)]
    if not (r and p and t):
        continue
    errs = p["latency"]["errors"] + t["latency"]["errors"]
    L.append(f"| {c} | {r['per_sec']:.0f} | {p['per_sec']:.0f} | {p['per_sec'] / r['per_sec']:.2f} | "
             f"{p['latency']['median_ms']:.2f} / {p['latency']['p99_ms']:.2f} | {t['per_sec']:.0f} | "
             f"{t['per_sec'] / r['per_sec']:.2f} | {t['latency']['median_ms']:.2f} / {t['latency']['p99_ms']:.2f} | {errs} |")


def sched(kind, c):
    """deputyd's main thread during a point: shares of wall time, and CPU ms per start."""
    try:
        with open(f"{J}/tp-{kind}-{c}.sched") as f:
            a, b = [list(map(int, line.split())) for line in f.read().split("\n") if line.strip()][:2]
    except (OSError, ValueError):
        return None
    run, wait, wall, ticks = (b[i] - a[i] for i in range(4))
    r = tp[(kind, c)]
    starts = r["latency"]["n"] if r else 0
    cpu_ms = ticks / int(E.get("B_CLK_TCK", "100")) * 1e3
    return dict(run=run / wall, wait=wait / wall, blocked=max(0.0, 1 - (run + wait) / wall),
                cpu_per_start=cpu_ms / starts if starts else float("nan"))


L.append("")
L.append("Where deputyd's runtime thread spent each point (from `/proc/PID/schedstat`: on a CPU, runnable but waiting "
         "for one, neither — waiting in epoll or in `clone(CLONE_VFORK)` until the child execs) and deputyd's CPU time "
         "per start (all threads, `/proc/PID/stat`):")
L.append("")
L.append("| clients | peer: on CPU / waiting / blocked | CPU ms per start | trusted: on CPU / waiting / blocked | CPU ms per start |")
L.append("|---:|---:|---:|---:|---:|")
for c in clients:
    sp, st = sched("peer", c), sched("trusted", c)
    if sp and st:
        L.append(f"| {c} | {sp['run']:.0%} / {sp['wait']:.0%} / {sp['blocked']:.0%} | {sp['cpu_per_start']:.3f} | "
                 f"{st['run']:.0%} / {st['wait']:.0%} / {st['blocked']:.0%} | {st['cpu_per_start']:.3f} |")
L.append("")
L.append("Raw p50 / p99 ms by clients: " + ", ".join(
    f"{c}: {tp[('raw', c)]['latency']['median_ms']:.2f} / {tp[('raw', c)]['latency']['p99_ms']:.2f}"
    for c in clients if tp[("raw", c)]) + ".")

# memory
if mem:
    L.append("")
    L.append("## Memory")
    L.append("")
    L.append("deputyd's `VmRSS` (what `ps -o rss` shows), read from `/proc` by `deputy-load memory` right after the daemon "
             f"started: idle; with {mem['connections']:,} connections open, each served one `GetToken` and then silent; after they "
             f"closed; with {mem['sessions']} kept sessions (trusted path) each running `sleep`; after all were logged off.")
    L.append("")
    L.append("| state | RSS MiB | high-water MiB |")
    L.append("|---|---:|---:|")
    for k, label in (("idle", "idle"), ("with_connections", f"{mem['connections_served']:,} idle connections"),
                     ("after_connections", "connections closed"),
                     ("with_sessions", f"{mem['sessions_started']} live sessions (sleep)"),
                     ("after_logoff", "sessions logged off")):
        L.append(f"| {label} | {mib(mem[k]['rss_kib']):.1f} | {mib(mem[k]['hwm_kib']):.1f} |")
    if mem.get("errors"):
        L.append("")
        L.append(f"Errors: {mem['errors']} (e.g. {mem.get('first_error')}).")
try:
    with open(f"{J}/rss.tsv") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    L.append("")
    L.append("RSS along the run (and the 1-minute load average then: other work on the machine skews figures): "
             + "; ".join(f"{r[0]}: {mib(int(r[1])):.1f} MiB (load {r[2] if len(r) > 2 else '?'})" for r in rows if r[1]) + ".")
except OSError:
    pass

# scale
L.append("")
L.append("## Scale: live sessions")
L.append("")
L.append(f"Kept sessions made by the trusted path (each started `/bin/true`, which ended; the session stays), then at each "
         f"count: {E['B_SCALE_SAMPLES']} sequential starts on one connection by the trusted path (root), by the peer path "
         f"({USER}), and in one kept session; ListSessions as root (which lists them all) on new connections (connect "
         "included) and on one reused connection (after a first call on it), each called with \"more\" as `deputy sessions` "
         "calls it (a daemon that streams the list sends it in pieces). Medians (p99) in ms.")
L.append("")
L.append("![latency with N sessions](bench/scale.png)")
L.append("")
L.append("| sessions | start trusted | start peer | start in session | ListSessions new conn. | ListSessions reused | first on a conn. | listed | fill /s |")
L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for lv in levels:
    def cell(k, *p):
        m = sget(lv, k, *p, "median_ms")
        q = sget(lv, k, *p, "p99_ms")
        return "–" if not m else f"{m:.2f} ({q:.2f})"
    fill = scale[lv]["fill"]
    fill_rate = f"{fill['created'] / fill['seconds']:.0f}" if fill and fill["seconds"] else "–"
    L.append(f"| {lv} | {cell('trusted')} | {cell('peer')} | {cell('session')} | {cell('lists', 'fresh')} | "
             f"{cell('lists', 'reused')} | {f2(sget(lv, 'lists', 'first_ms'))} | {sget(lv, 'lists', 'listed') or '–'} | {fill_rate} |")
if ab:
    hi = levels[-1]
    L.append("")
    L.append(f"The rows above are minutes apart, and on a shared VM two batches of the same starts a minute apart "
             f"can differ by 15%. Whether a start grows with the sessions is therefore judged in one alternated "
             f"comparison: with the {hi} (and more) sessions still live, a second deputyd with the same configuration "
             f"is started beside it, with no sessions but those its in-session starts leave (one kept session each: "
             f"{int(E['B_SCALE_AB_ROUNDS']) * int(E['B_SCALE_AB_SAMPLES'])} at the end), and batches of "
             f"{E['B_SCALE_AB_SAMPLES']} starts by each route alternate between the two in {E['B_SCALE_AB_ROUNDS']} "
             "rounds (ABBA order). Medians of the rounds' medians, in ms, and the median of the rounds' ratios:")
    L.append("")
    L.append(f"| route | {hi} sessions | fresh deputyd | ratio (median of rounds) | rounds' ratios | errors |")
    L.append("|---|---:|---:|---:|---|---:|")
    for k, label in AB_ROUTES:
        if k in ab:
            v = ab[k]
            ratios = " ".join(f"{m / f:.2f}" for m, f, _ in v["rounds"])
            L.append(f"| {label} | {v['many']:.2f} | {v['few']:.2f} | {v['ratio']:.2f}× | {ratios} | {v['errors']} |")
errs = []
for lv in levels:
    for k in ("fill", "trusted", "peer", "session"):
        s = scale[lv][k]
        s = s.get("latency", s) if s else None
        if s and s.get("errors"):
            errs.append(f"{lv}/{k}: {s['errors']} ({s.get('first_error')})")
    if scale[lv]["lists"] is None:
        errs.append(f"{lv}/ListSessions: no result (failed or timed out)")
if errs:
    L.append("")
    L.append("Errors: " + "; ".join(errs) + ".")
if len(levels) >= 2:
    lo, hi = levels[0], levels[-1]
    a, b = sget(lo, "lists", "fresh", "median_ms"), sget(hi, "lists", "fresh", "median_ms")
    if a and b and int(hi) > int(lo):
        k = math.log(b / a) / math.log(int(hi) / int(lo))
        L.append("")
        L.append(f"ListSessions on a new connection grows as n^{k:.2f} from {lo} to {hi} sessions "
                 f"({f2(a)} → {f2(b)} ms).")

# fairness
fa, ff = load("fair-after.json"), load("fair-flood.json")
if fb and fd:
    L.append("")
    L.append("## Load and fairness")
    L.append("")
    L.append(f"A deputyd on its default limits (`[limits]` in crates/deputyd/src/config.rs). {USER} starts `/bin/true` "
             "by the peer path on a new connection each time (as the CLI does), 10 ms apart: alone, then while "
             f"{E['B_FLOOD_USER']} floods with {E['B_FLOOD_CONNECTIONS']} connections starting `/bin/true` in a loop "
             f"(bounded: {E['B_FLOOD_SECONDS']} s, {int(E['B_FLOOD_MAX']):,} requests), then alone again.")
    L.append("")
    L.append("| | median ms | p90 | p99 | max | starts | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for label, r in (("alone, before", fb), ("during the flood", fd), ("alone, after", fa)):
        if r:
            s = r["latency"]
            L.append(f"| {label} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.2f} | {s['n']} | {s['errors']} |")
    if ff:
        s = ff["latency"]
        kinds = ", ".join(f"{k}: {v:,}" for k, v in s["errors_by_kind"].items()) or "none"
        L.append("")
        L.append(f"The flood: {s['n']:,} starts in {ff['seconds']:.1f} s ({ff['per_sec']:.0f}/s, p50 {s['median_ms']:.2f} ms, "
                 f"p99 {s['p99_ms']:.2f} ms); refused or failed: {kinds}.")
    L.append("")
    L.append("What holds it: each uid's calls beyond `requests_in_flight_per_uid` (2) wait their turn behind its own, "
             "and a start runs on the runtime thread only when no other start has been asked for. A start yields "
             "once before it looks, so that the other connections' calls are received (and counted) first: without "
             "that, a start done in place kept every other call unread, each start found itself alone, and another "
             "user's call queued behind all of the flooder's (41-44 ms in the same test before the change).")

# the hardening floods
if flb and flood_rows:
    L.append("")
    L.append("## During the hardening floods")
    L.append("")
    L.append(f"The floods of `crates/deputy-cli/tests/floods.rs` (the same program, `floods.py`), each by {E['B_FLOOD_USER']} "
             f"on a deputyd with the default limits, repeated while {USER} starts `/bin/true` as in the fairness phase "
             f"(a new connection each time, 10 ms apart), then stopped.")
    L.append("")
    L.append("| during | median ms | p90 | p99 | max | × alone | starts | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    base = flb["latency"]["median_ms"]
    rows = [("alone, before", flb)] + [(label, r) for label, r, _ in flood_rows]
    for label, r in rows + [("alone, after", load("floods-after.json"))]:
        if r and r["latency"]["n"]:
            s = r["latency"]
            L.append(f"| {label} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} | {s['p99_ms']:.2f} | {s['max_ms']:.2f} | "
                     f"{s['median_ms'] / base:.2f} | {s['n']} | {s['errors']} |")

# ---------------------------------------------------------------- what bounds the misses
B = []
if peer_r is not None and trusted_r is not None and max(peer_r, trusted_r) > 0.8:
    B.append("- **Peer and trusted paths against setpriv.** A `deputy run` is two process starts (the CLI, then the "
             "command in deputyd) where setpriv is one process that execs twice. Without the CLI, a peer start "
             "through deputyd takes "
             + (f"{tp[('peer', '1')]['latency']['median_ms']:.2f} ms (deputy-load, 1 client) against "
                f"{tp[('raw', '1')]['latency']['median_ms']:.2f} ms for a raw spawn"
                if tp.get(("peer", "1")) and tp.get(("raw", "1")) else "(see throughput at 1 client)")
             + f", so most of the {f2(med('deputy-peer'))} ms of `deputy run` is the CLI's own start-up and its "
             "connection. See the README's performance section.")
if b_r is not None and b_r > 1:
    B.append("- **With a PAM session, against runuser.** Both run the same PAM session stack (pam_keyinit, "
             "pam_limits, pam_env, pam_unix's session, `setcred`); runuser does it in its own process before it "
             "execs the command, deputy in a session worker that holds the PAM session, so a start is the CLI's, "
             "the worker's (kept ready as a spare, its start-up off the caller's path) and the command's. The "
             "ratio moves across runs on this VM (0.87–1.04× on 2026-11-23 with this code); a miss by a few "
             "percent is within that.")
sp8, st8 = sched("peer", "8"), sched("trusted", "8")
if r8 and p8 and sp8 and st8 and p8["per_sec"] < 0.9 * r8["per_sec"]:
    B.append(f"- **Throughput.** At 8 clients deputyd's runtime thread was on a CPU {sp8['run']:.0%} of the time, "
             f"waiting for one {sp8['wait']:.0%}, and blocked {sp8['blocked']:.0%} (epoll, or `clone(CLONE_VFORK)` until a "
             f"child execs, when a start runs on that thread); deputyd used {sp8['cpu_per_start']:.3f} ms of CPU per peer "
             f"start and {st8['cpu_per_start']:.3f} ms per trusted start (the account check: NSS, shadow, "
             f"pam_acct_mgmt). The raw baseline forks from {r8['clients']} threads on {E['B_NPROC']} CPUs with none of "
             "that work, and the load tool, the daemon and the commands share those CPUs.")
    # What 90 % of the raw rate would leave, with every CPU busy: the raw rate spends
    # nproc / rate of CPU per start; at 90 % of it a start may spend 1/0.9 of that, and the
    # difference is all there is for the load tool and deputyd together.
    per_raw = int(E["B_NPROC"]) / r8["per_sec"] * 1e3
    budget = per_raw / 0.9 - per_raw
    tool = [t["own_cpu_ms_per_start"] for t in (p8, t8) if t.get("own_cpu_ms_per_start")]
    if tool:
        left = budget - max(tool)
        B.append(f"  - The budget: at {r8['per_sec']:.0f} starts/s on {E['B_NPROC']} CPUs a raw start costs {per_raw:.3f} ms "
                 f"of CPU; 90 % of that rate leaves {budget * 1e3:.0f} µs per start for everything that is not the "
                 f"command. The load tool alone used {min(tool) * 1e3:.0f}–{max(tool) * 1e3:.0f} µs per start, which "
                 f"leaves {max(left, 0) * 1e3:.0f} µs for deputyd, against the {sp8['cpu_per_start'] * 1e3:.0f}–"
                 f"{st8['cpu_per_start'] * 1e3:.0f} µs it used.")
if len(levels) >= 2:
    hi = levels[-1]
    fr, ru = sget(hi, "lists", "fresh", "median_ms"), sget(hi, "lists", "reused", "median_ms")
    if fr and ru and fr > 5 * ru:
        B.append(f"- **ListSessions.** With {hi} sessions a call on a new connection takes {fr:.1f} ms against {ru:.1f} ms "
                 "on a connection that made one before: the cost is in growing the connection's write buffer. zlink 0.8 "
                 "(`WriteConnection::enqueue`) serializes a reply into its buffer, and when it does not fit grows the "
                 "buffer by 256 bytes and serializes the whole reply again — quadratic in the reply's size; `perf` on "
                 "deputyd during such calls shows most of its CPU in `zlink_core::json_ser`. The runtime thread is busy "
                 "all that time, so every other client waits too. Growing the buffer geometrically (upstream), or "
                 "paging ListSessions, makes it linear.")
grew = {k: v for k, v in ab.items() if v["ratio"] > 1.25}
if grew:
    why = [f"{label} {ab[k]['few']:.2f} → {ab[k]['many']:.2f} ms" for k, label in AB_ROUTES if k in grew]
    B.append(f"- **A start with {levels[-1]} sessions.** Against a deputyd with none, alternated: " + "; ".join(why) +
             ". What a start looks up is indexed (the sessions of a user are counted as they come and go, a caller's "
             "shared peer session is found by its owner, a named session by its id); profile deputyd during these "
             "starts (`perf record -p`) to find what grows.")
ff = load("fair-flood.json")
if fb and fd and ff and fb["latency"]["n"] and fd["latency"]["median_ms"] > 2 * fb["latency"]["median_ms"]:
    kinds = ff["latency"]["errors_by_kind"]
    infl = sum(v for k, v in kinds.items() if "requests_in_flight_per_uid" in k)
    refused = ", ".join(f"{k}: {v:,}" for k, v in kinds.items()) or "none"
    B.append(f"- **Fairness.** While {E['B_FLOOD_USER']} flooded, {USER}'s start took {fd['latency']['median_ms']:.1f} ms "
             f"(median) against {fb['latency']['median_ms']:.2f} ms alone, and the flooder's own starts "
             f"{ff['latency']['median_ms']:.1f} ms; the flooder's refusals by limit: {refused}"
             + (" (none by `requests_in_flight_per_uid`)" if infl == 0 else "")
             + f". {USER}'s call (a new connection each time) still waits behind the flooder's work: in the accept "
             "loop, in the runtime's queue, or for a CPU.")
if B:
    L[BOUNDS_AT:BOUNDS_AT] = ["", "What bounds the targets that are missed (measured in this run):", ""] + B

L.append("")
L.append("## Method and knobs")
L.append("")
L.append(f"`bash bench/run` (as root; `QUICK=1` for a ~2 minute smoke run). This run: RUNS={E['B_RUNS']}, WARMUP={E['B_WARMUP']}, "
         f"ROUNDS={E['B_ROUNDS']}, DURATION={E['B_DURATION']} s, CLIENTS=\"{E['B_CLIENTS']}\", SCALE=\"{E['B_SCALE']}\", "
         f"MEM_CONNECTIONS={E['B_MEM_CONNECTIONS']}, MEM_SESSIONS={E['B_MEM_SESSIONS']}, FLOOD_SECONDS={E['B_FLOOD_SECONDS']}, "
         f"LOGON_RUNS={E['B_LOGON_RUNS']}. The load tool is `crates/deputy-bench` (`deputy-load`): it talks Varlink to deputyd "
         "directly, so a request costs no process start. The latency, logon, throughput, memory and scale phases share one "
         "deputyd whose limits were raised for them:")
L.append("")
L.append("```toml")
L += E["B_LIMITS"].splitlines()
L.append("```")
L.append("")
L.append("The fairness phase runs a second deputyd on the default limits. Times are wall clock as the caller sees them; "
         "deputy's work happens in deputyd and its workers, which hyperfine's user/system figures do not include. "
         "This machine is shared with other work at times: check the load average above before trusting a small difference.")
L.append("")
with open(f"{OUT}/BENCHMARKS.md", "w") as f:
    f.write("\n".join(L))
print("\n".join(L))
