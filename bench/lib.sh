# bench/lib.sh — what bench/peers and bench/run share: packages, a temp dir cleaned on every
# way out, the release build (the launcher without libc), sudo-rs in a private prefix, a deputyd on a temp
# socket, running things as the target user, hyperfine cases with retries, and the machine's
# description. Source it after setting BENCH_NAME; it is not meant to be run.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
USER_T=${BENCH_USER:-dpt-alice}
# The cargo profile the binaries are built with: dist (release with fat LTO), as scripts/start
# builds them; PROFILE=release for a quicker build.
PROFILE=${PROFILE:-dist}
BIN_DIR="$REPO/target/$PROFILE"
SUDO_RS_ROOT="${HOME:-/root}/.cache/deputy-bench/sudo-rs"

log() { printf '[bench/%s] %s\n' "${BENCH_NAME:-?}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

bench_require_root() {
    [[ $EUID -eq 0 ]] || die "must run as root (it benchmarks root-only paths and starts deputyd)"
    id "$USER_T" >/dev/null 2>&1 || die "user $USER_T does not exist (run scripts/setup)"
}

# ---------------------------------------------------------------- packages
APT_UPDATED=0
apt_install() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}
# need_cmd COMMAND PACKAGE: installs PACKAGE when COMMAND is missing.
need_cmd() {
    command -v "$1" >/dev/null || { log "installing $2"; apt_install "$2"; }
    command -v "$1" >/dev/null || die "$1 still missing after installing $2"
}

# ---------------------------------------------------------------- temp dir + cleanup
# WORK is world-readable (the target user runs binaries and reaches sockets in it).
# Processes in STARTED_PIDS are stopped (SIGTERM, then SIGKILL after 15 s) and files in
# CREATED_FILES removed on every way out; KEEP=1 (or a failure) keeps WORK.
STARTED_PIDS=()
CREATED_FILES=()
bench_workdir() {
    WORK=$(mktemp -d "/tmp/deputy-bench-$BENCH_NAME.XXXXXX")
    chmod 755 "$WORK"
    # deputyd's session records go to tmpfs, as /run/deputy/sessions does on a Debian system
    # (on some VMs /run is a disk file system, where each record costs a journal commit).
    STATE_ROOT=$(mktemp -d "/dev/shm/deputy-bench-$BENCH_NAME.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
stop_pid() {
    local pid=$1 _
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
bench_cleanup() {
    local rc=$? pid f
    for pid in "${STARTED_PIDS[@]}"; do stop_pid "$pid"; done
    for f in "${CREATED_FILES[@]}"; do rm -f -- "$f"; done
    [[ -n ${STATE_ROOT:-} ]] && rm -rf -- "$STATE_ROOT"
    if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then
        log "temp dir kept: $WORK"
    else
        rm -rf -- "$WORK"
    fi
    exit $rc
}

# ---------------------------------------------------------------- build deputy
# build_deputy [PACKAGE...]: the daemon, worker and CLI (the launcher and the full CLI, as
# scripts/start builds them) in PROFILE, plus any other workspace package named; NO_BUILD=1
# uses what is there. The CLI (and the other binaries named in BENCH_BINS) are copied to
# $WORK/bin for the target user.
build_deputy() {
    local p extra=()
    for p in "$@"; do extra+=(-p "$p"); done
    if [[ ${NO_BUILD:-0} != 1 ]]; then
        log "building the binaries (profile $PROFILE)"
        (cd "$REPO" && cargo build --profile "$PROFILE" --locked -p deputyd -p deputy -p deputy-cli "${extra[@]}") >&2
        # `deputy`, the launcher: static, without libc (its start-up is on the path of every
        # `deputy run`); it hands what it does not serve to deputy-cli, beside it.
        (cd "$REPO" && bash scripts/launcher "$PROFILE") >&2
    fi
    local b
    for b in deputyd deputy deputy-cli deputy-session-worker ${BENCH_BINS:-}; do
        [[ -x $BIN_DIR/$b ]] || die "target/$PROFILE/$b missing (build failed?)"
    done
    mkdir -p "$WORK/bin"
    install -m 755 "$BIN_DIR/deputy" "$WORK/bin/deputy"
    install -m 755 "$BIN_DIR/deputy-cli" "$WORK/bin/deputy-cli"
    for b in ${BENCH_BINS:-}; do install -m 755 "$BIN_DIR/$b" "$WORK/bin/$b"; done
    DEPUTY="$WORK/bin/deputy"
}

# ---------------------------------------------------------------- sudo
# sudoers_dropin: lets root run commands as the target user without a password, for sudo and
# sudo-rs alike (Debian's /etc/sudoers includes /etc/sudoers.d; root needs no password there
# anyway, but the rule makes the benchmark independent of the stock file). Removed at exit.
sudoers_dropin() {
    local f=/etc/sudoers.d/deputy-bench
    [[ -d /etc/sudoers.d ]] || return 0
    if [[ ! -e $f ]]; then
        printf 'root ALL=(%s) NOPASSWD: ALL\n' "$USER_T" > "$f"
        chmod 440 "$f"
        CREATED_FILES+=("$f")
        if command -v visudo >/dev/null && ! visudo -cqf "$f" >/dev/null 2>&1; then
            die "visudo rejects $f"
        fi
    fi
}

# install_sudo_rs: sets SUDO_RS (the binary) or SUDO_RS_NOTE (why it is skipped).
install_sudo_rs() {
    SUDO_RS=""
    SUDO_RS_NOTE=""
    if [[ ${NO_SUDO_RS:-0} == 1 ]]; then
        SUDO_RS_NOTE="sudo-rs skipped: NO_SUDO_RS=1"
        return 0
    fi
    if [[ ! -x $SUDO_RS_ROOT/bin/sudo ]]; then
        log "installing sudo-rs with cargo into $SUDO_RS_ROOT (timeout 20 min)"
        if ! timeout 1200 cargo install --locked --root "$SUDO_RS_ROOT" sudo-rs >&2; then
            SUDO_RS_NOTE="sudo-rs skipped: 'cargo install --locked sudo-rs' failed or timed out"
        fi
    fi
    if [[ -z $SUDO_RS_NOTE && -x $SUDO_RS_ROOT/bin/sudo ]]; then
        # sudo-rs must be setuid root; it reads /etc/sudoers-rs if present, else
        # /etc/sudoers, and authenticates through PAM service "sudo" (/etc/pam.d/sudo,
        # shipped by Debian's sudo package). Root needs no password.
        chown root:root "$SUDO_RS_ROOT/bin/sudo"
        chmod 4755 "$SUDO_RS_ROOT/bin/sudo"
        if [[ ! -e /etc/sudoers-rs && ! -e /etc/sudoers ]]; then
            printf 'root ALL=(ALL:ALL) ALL\n' > /etc/sudoers-rs
            chmod 440 /etc/sudoers-rs
            CREATED_FILES+=(/etc/sudoers-rs)
        fi
        if "$SUDO_RS_ROOT/bin/sudo" -n -u "$USER_T" /bin/true </dev/null >/dev/null 2>"$WORK/sudo-rs.err"; then
            SUDO_RS="$SUDO_RS_ROOT/bin/sudo"
        else
            SUDO_RS_NOTE="sudo-rs skipped: smoke test failed: $(head -c 300 "$WORK/sudo-rs.err" | tr '\n' ' ')"
        fi
    elif [[ -z $SUDO_RS_NOTE ]]; then
        SUDO_RS_NOTE="sudo-rs skipped: binary not found after install"
    fi
    [[ -z $SUDO_RS_NOTE ]] || log "$SUDO_RS_NOTE"
}

# ---------------------------------------------------------------- deputyd
# start_deputyd NAME [CONFIG_TOML]: a deputyd (from PROFILE) on $WORK/NAME/sock with CONFIG_TOML
# appended to a [daemon] section that puts the audit log in $WORK/NAME. Sets DPID and SOCK.
# Its open-file limit is raised to the hard limit (a thousand connections need as many fds).
start_deputyd() {
    local name=$1 extra=${2:-} dir="$WORK/$1" _
    mkdir -p "$dir"
    chmod 755 "$dir"
    SOCK="$dir/sock"
    printf '[daemon]\naudit_log = "%s/audit.jsonl"\nstate_dir = "%s/%s"\n%s\n' "$dir" "$STATE_ROOT" "$1" "$extra" > "$dir/c.toml"
    "$BIN_DIR/deputyd" --check-config "$dir/c.toml" >&2 || die "bad deputyd config $dir/c.toml"
    log "starting deputyd ($name) on $SOCK"
    (ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$BIN_DIR/deputyd" --config "$dir/c.toml" --socket "$SOCK") \
        >"$dir/daemon.log" 2>&1 &
    DPID=$!
    STARTED_PIDS+=("$DPID")
    for _ in $(seq 100); do
        [[ -S $SOCK ]] && break
        kill -0 "$DPID" 2>/dev/null || { cat "$dir/daemon.log" >&2; die "deputyd exited early"; }
        sleep 0.1
    done
    [[ -S $SOCK ]] || { cat "$dir/daemon.log" >&2; die "deputyd socket did not appear"; }
}
# stop_deputyd: SIGTERM (deputyd logs every session off), SIGKILL after 15 s.
stop_deputyd() {
    [[ -n ${DPID:-} ]] || return 0
    stop_pid "$DPID"
    DPID=""
}

# as_user CMD...: runs CMD as the target user with a minimal environment (used to launch
# hyperfine or deputy-load themselves, so that the timed command contains no setpriv).
as_user() {
    setpriv --reuid "$USER_T" --regid "$USER_T" --init-groups \
        env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$WORK/home" LANG=C.UTF-8 "$@"
}
prepare_as_user() {
    mkdir -p "$WORK/home" "$WORK/json"
    chown "$USER_T": "$WORK/home" "$WORK/json"
}

# ---------------------------------------------------------------- hyperfine
# hf_case ID RUNS [as_user] NAME CMD: one hyperfine invocation, its JSON in $WORK/json/ID.json
# (or ID.N.json when HF_SUFFIX=N is set, for rounds). A failing run aborts hyperfine: the case
# is tried three times, and what one more run of the command says is recorded in RETRY_NOTES.
RETRY_NOTES=()
hf_case() {
    local id=$1 runs=$2; shift 2
    local pre=()
    if [[ $1 == as_user ]]; then pre=(as_user); shift; fi
    local name=$1 cmd=$2 try err out="$WORK/json/$id${HF_SUFFIX:+.$HF_SUFFIX}.json"
    for try in 1 2 3; do
        log "measuring: $name  ($runs runs)"
        if "${pre[@]}" hyperfine --shell=none --style basic --warmup "${WARMUP:-20}" --runs "$runs" \
            --export-json "$out" -n "$name" "$cmd" </dev/null >/dev/null 2>"$WORK/hf.err"; then
            return 0
        fi
        # shellcheck disable=SC2086  # word splitting of $cmd is intended
        err=$("${pre[@]}" $cmd </dev/null 2>&1 >/dev/null | head -c 300 | tr '\n' ' ') || true
        log "attempt $try of '$name' failed; one more run of it says: ${err:-(nothing, exit 0)}"
        RETRY_NOTES+=("'$name': attempt $try failed (a later single run said: ${err:-nothing, exit 0})")
        sleep 2
    done
    die "'$name' kept failing"
}

# ---------------------------------------------------------------- the machine
# machine_env: exports B_* variables describing the machine and the tools, for the reports.
machine_env() {
    export B_NPROC B_KERNEL B_CPU B_OS B_GIT B_V_HYPERFINE B_V_DEPUTY
    B_NPROC=$(nproc)
    B_KERNEL=$(uname -srm)
    B_CPU=$( (grep -m1 'model name' /proc/cpuinfo || lscpu | grep -m1 'Model name') | sed 's/.*:[[:space:]]*//')
    B_OS="$( . /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown}") ($(cat /etc/debian_version 2>/dev/null || echo '?'))"
    B_GIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo ' (dirty tree)')"
    B_V_HYPERFINE=$(hyperfine --version | head -1)
    B_V_DEPUTY=$("$DEPUTY" --version | head -1)
}
load_warning() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
        log "WARNING: load average is $load: other work on this machine will skew the figures"
    fi
}
