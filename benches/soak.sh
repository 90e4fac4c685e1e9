#!/usr/bin/env bash
# Soak: the gateway under a steady paced load for a long time, with a share of bad requests and of
# upstream faults, then checks that nothing leaked and that every call was answered exactly once.
# Not part of `cargo test`; see README "Reliability" for the last run's figures.
#
#   bash benches/soak.sh                       # 10 minutes at 600 requests/s
#   DURATION=180 nice bash benches/soak.sh     # 3 minutes
#
# The load (wrk, Debian package, installed when missing; benches/soak.lua) cycles through 100
# slots: 85 good calls (RemoveUsers, ShowApp) and 15 the gateway must refuse (unknown path, wrong
# method, empty user list, a body over the cap). The upstream stand-in (examples/bench_upstream.rs)
# drops the connection, stalls past the gateway's response timeout, or answers 503 for a share of
# what reaches it. At the end:
#   - the gateway's RSS and open file descriptors after the warm-up and at the end of the load
#     differ by at most RSS_TOLERANCE_KB and FD_TOLERANCE;
#   - wrk read an answer for every request it wrote, with no socket error or timeout;
#   - the gateway counted as many answered calls as wrk wrote (sparkrtc_gateway_requests_total);
#   - the upstream received exactly as many calls as the gateway says it forwarded (answers with
#     origin="upstream" plus upstream connect errors and timeouts).
# Exits 1 when a check fails.
#
# Settings (environment):
#   DURATION=600          seconds of load (wrk writes requests for this long)
#   RATE=600              requests/s, paced
#   CONNS=64              wrk connections (stalls hold one each for RESPONSE_TIMEOUT)
#   FAULTS=drop=0.01,stall=0.01,error=0.02   upstream faults, shares of the calls it receives
#   RESPONSE_TIMEOUT=1s   the gateway's upstream response timeout (stalls end in it)
#   WARMUP=30             seconds into the run at which the first RSS/fd sample is the baseline
#   SAMPLE_EVERY=10       seconds between RSS/fd samples
#   RSS_TOLERANCE_KB=16384  FD_TOLERANCE=16
#   PROFILE=release       release | debug (debug skips a release build; slower per call)
#   NO_INSTALL=1          never run apt-get; NO_BUILD=1 use the binaries already built
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-600}
RATE=${RATE:-600}
CONNS=${CONNS:-64}
FAULTS=${FAULTS:-drop=0.01,stall=0.01,error=0.02}
RESPONSE_TIMEOUT=${RESPONSE_TIMEOUT:-1s}
WARMUP=${WARMUP:-30}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
RSS_TOLERANCE_KB=${RSS_TOLERANCE_KB:-16384}
FD_TOLERANCE=${FD_TOLERANCE:-16}
PROFILE=${PROFILE:-release}
DRAIN=5
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CERTS=$ROOT/tests/data/certs

say() { printf '[soak] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

if ! command -v wrk >/dev/null; then
    [[ ${NO_INSTALL:-0} == 1 ]] && die "wrk is not installed (apt-get install wrk)"
    say "installing wrk (Debian package)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
        die "wrk could not be installed"
fi
command -v python3 >/dev/null || die "python3 is needed"

if [[ ${NO_BUILD:-0} != 1 ]]; then
    say "building the gateway and the upstream stand-in ($PROFILE)"
    if [[ $PROFILE == release ]]; then
        cargo build --release --bin sparkrtc-gateway --example bench_upstream >&2
    else
        cargo build --bin sparkrtc-gateway --example bench_upstream >&2
    fi
fi
GATEWAY_BIN=$TARGET_DIR/$PROFILE/sparkrtc-gateway
UPSTREAM_BIN=$TARGET_DIR/$PROFILE/examples/bench_upstream
[[ -x $GATEWAY_BIN && -x $UPSTREAM_BIN ]] || die "binaries missing under $TARGET_DIR/$PROFILE"

# Everything started here is stopped on exit, by process id.
WORK=$(mktemp -d /tmp/sparkrtc-soak.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP_WORK:-0} == 1 ]]; then say "work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r UP_PORT GW_PORT ADMIN_PORT <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')"
wait_port() { # port: until something accepts on 127.0.0.1:port (30 s)
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.2
    done
    return 1
}

"$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" --faults "$FAULTS" --stall-secs 3 >"$WORK/upstream.log" 2>&1 &
PIDS+=("$!")
wait_port "$UP_PORT" || die "the upstream did not start: $(cat "$WORK/upstream.log")"

cat >"$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
max_body_bytes = 4096
drain_delay = "0s"
grace_period = "1s"

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[upstream]
endpoint = "https://127.0.0.1:$UP_PORT"
ca_file = "$CERTS/ca.pem"
response_timeout = "$RESPONSE_TIMEOUT"
pool_max_idle_per_host = 256

[log]
level = "warn"

[profiles.main]
access_key = "SOAKAKEXAMPLE0000000"
secret_key_env = "SOAK_SK"
project_id = "0123456789abcdef0123456789abcdef"

[apps."app-123"]
profile = "main"
allow = [{ callers = ["*"], operations = ["*"] }]
EOF
export SOAK_SK=SOAKSKEXAMPLE0000000000000000000000000
"$GATEWAY_BIN" check --config "$WORK/gateway.toml" >"$WORK/check.log" 2>&1 || die "config refused: $(cat "$WORK/check.log")"
"$GATEWAY_BIN" serve --config "$WORK/gateway.toml" >"$WORK/gateway.out" 2>"$WORK/gateway.log" &
GW_PID=$!
PIDS+=("$GW_PID")
wait_port "$GW_PORT" || die "the gateway did not start: $(tail -20 "$WORK/gateway.log")"

sample() { # "seconds rss_kb fds" of the gateway
    local rss fds
    rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$GW_PID/status")
    fds=$(find "/proc/$GW_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    echo "$1 $rss $fds"
}
metrics() { python3 - "$ADMIN_PORT" <<'EOF'
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10).read().decode()
total = upstream = abandoned = resends = 0
errors = {}
for line in text.splitlines():
    m = re.match(r'sparkrtc_gateway_requests_total\{.*origin="(\w+)"\} (\d+)', line)
    if m:
        total += int(m[2])
        upstream += int(m[2]) if m[1] == "upstream" else 0
        abandoned += int(m[2]) if m[1] == "caller" else 0
    m = re.match(r'sparkrtc_gateway_upstream_errors_total\{kind="(\w+)"\} (\d+)', line)
    if m:
        errors[m[1]] = int(m[2])
    m = re.match(r'sparkrtc_gateway_in_flight_requests (\d+)', line)
    if m:
        in_flight = int(m[1])
    m = re.match(r'sparkrtc_gateway_upstream_resends_total (\d+)', line)
    if m:
        resends = int(m[1])
print(total, upstream, errors.get("connect", 0), errors.get("timeout", 0), abandoned, in_flight, resends)
EOF
}
upstream_stats() { python3 - "$UP_PORT" "$CERTS/ca.pem" <<'EOF'
import http.client, json, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
conn.request("GET", "/__bench/stats")
s = json.loads(conn.getresponse().read())
print(s["forwarded"], s["dropped"], s["stalled"], s["errors"], s["connections"])
EOF
}

say "load: ${DURATION}s at ${RATE}/s over $CONNS connections, faults $FAULTS; gateway pid $GW_PID"
SAMPLES=$WORK/samples
sample 0 >"$SAMPLES"
(
    start=$SECONDS
    while sleep "$SAMPLE_EVERY"; do sample $((SECONDS - start)) >>"$SAMPLES" || exit 0; done
) &
SAMPLER=$!
PIDS+=("$SAMPLER")
SOAK_RATE=$RATE SOAK_SECONDS=$DURATION wrk -t1 -c"$CONNS" -d$((DURATION + DRAIN))s --timeout 10s \
    -s "$ROOT/benches/soak.lua" "http://127.0.0.1:$GW_PORT" >"$WORK/wrk.out" 2>&1 || die "wrk failed: $(cat "$WORK/wrk.out")"
kill "$SAMPLER" 2>/dev/null || true

# Calls still in flight (none should be: wrk drained for DRAIN seconds) are waited for, 30 s at most.
for _ in $(seq 60); do
    read -r GW_TOTAL GW_UPSTREAM GW_CONNECT GW_TIMEOUT GW_ABANDONED GW_IN_FLIGHT GW_RESENDS <<<"$(metrics)"
    ((GW_IN_FLIGHT == 0)) && break
    sleep 0.5
done
read -r UP_FORWARDED UP_DROPPED UP_STALLED UP_ERRORS UP_CONNS <<<"$(upstream_stats)"
WRK_LINE=$(grep '^SOAK_WRK' "$WORK/wrk.out") || die "no summary from wrk: $(cat "$WORK/wrk.out")"
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<" $WRK_LINE"; }

# Baseline: the first sample at or after the warm-up; end: the last one taken under load.
read -r T0 RSS0 FD0 < <(awk -v w="$WARMUP" '$1 >= w { print; exit }' "$SAMPLES")
read -r T1 RSS1 FD1 < <(awk -v d="$DURATION" '$1 <= d { last = $0 } END { print last }' "$SAMPLES")
read -r _ RSS_AFTER FD_AFTER <<<"$(sample after)"

failed=0
check() { # description, then a command that succeeds when the check holds
    local what=$1
    shift
    if "$@"; then echo "SOAK_CHECK ok   $what"; else echo "SOAK_CHECK FAIL $what"; failed=1; fi
}
echo "$WRK_LINE"
echo "SOAK_GATEWAY answered=$GW_TOTAL origin_upstream=$GW_UPSTREAM upstream_connect_errors=$GW_CONNECT upstream_timeouts=$GW_TIMEOUT abandoned=$GW_ABANDONED in_flight=$GW_IN_FLIGHT resent_gets=$GW_RESENDS"
echo "SOAK_UPSTREAM received=$UP_FORWARDED dropped=$UP_DROPPED stalled=$UP_STALLED answered_503=$UP_ERRORS connections=$UP_CONNS"
echo "SOAK_RESOURCES baseline_at=${T0}s rss_kb=$RSS0 fds=$FD0; end_at=${T1}s rss_kb=$RSS1 fds=$FD1; after_drain rss_kb=$RSS_AFTER fds=$FD_AFTER"
echo "SOAK_SAMPLES (seconds rss_kb fds): $(tr '\n' ';' <"$SAMPLES")"
SENT=$(field sent)
check "wrk read an answer for each of the $SENT requests it wrote" test "$(field answered)" -eq "$SENT"
check "no socket error or timeout at wrk" test $(($(field connect_err) + $(field read_err) + $(field write_err) + $(field timeout_err))) -eq 0
check "the gateway answered as many calls as wrk wrote" test "$GW_TOTAL" -eq "$SENT"
# A GET whose connection closed before any answer is sent once more (RFC 9110 section 9.2.2):
# the upstream sees it twice, and the gateway counts that second copy.
check "the upstream received exactly the calls the gateway forwarded (and the GETs it resent)" \
    test "$UP_FORWARDED" -eq $((GW_UPSTREAM + GW_CONNECT + GW_TIMEOUT + GW_RESENDS))
check "faults were injected (dropped, stalled, 503)" test $((UP_DROPPED * UP_STALLED * UP_ERRORS)) -gt 0
check "RSS flat within ${RSS_TOLERANCE_KB} kB" test $((RSS1 - RSS0)) -le "$RSS_TOLERANCE_KB"
check "open files flat within $FD_TOLERANCE" test $((FD1 - FD0)) -le "$FD_TOLERANCE"
exit "$failed"
