#!/usr/bin/env bash
# The gateway against a direct call and nginx, side by side: see BENCHMARKS.md.
#
#   bash benches/run.sh                         # the full run (about 15 minutes)
#   ROUNDS=1 DURATION=3s bash benches/run.sh    # a smoke run
#
# Installs wrk and nginx (Debian packages) when missing, builds the gateway, the upstream
# stand-in (examples/bench_upstream.rs) and the minimal signing proxy
# (examples/min_signing_proxy.rs) in release mode, then runs four targets interleaved, ROUNDS
# times: "direct" (wrk over HTTPS to the upstream), "nginx" (keep-alive proxy_ssl to the same
# upstream), "min-proxy" (hyper + hyper-util + rustls, signing each call, nothing else) and
# "gateway" (signing, policy and limiter on, shipped defaults). A remote-upstream scenario has
# the stand-in answer after WAN_DELAY_MS, at WAN_CONNS callers. The load generator is pinned to
# one core, the servers to another. The fixed-rate run adds "gateway-redis": the same gateway
# with its limits shared through a local redis-server (installed when missing), so the Redis
# backend's added latency and CPU per call are measured against the local one in the same run.
# Writes benches/results/latest.md (and the raw rows beside it) and prints the table. Only
# 127.0.0.1 is ever sent traffic.
#
# Settings (environment):
#   ROUNDS=3            rounds of the whole interleaved set
#   DURATION=10s        length of each saturating run (wrk -d)
#   CONNS="16 128"      connection counts of the saturating runs
#   WAN_CONNS="128 1024" callers of the remote-upstream runs ("" skips them)
#   WAN_DELAY_MS=20     the upstream's answer delay in those runs
#   RATE=2000           requests/s of the fixed-rate latency run (RATE=0 skips it)
#   RATE_DURATION=      its length (default: DURATION)
#   RATE_CONNS=16       its connections
#   WARMUP=2s           a run per target before the first round (pools filled, caches warm)
#   IDLE_CONNS=5000     idle keep-alive connections for the memory test (0 skips it)
#   INFO_RUN=1          one extra gateway run with [log] level = "info" (0 skips it)
#   REDIS_RUN=1         the gateway-redis target in the fixed-rate run (0 skips it)
#   LOAD_CPU=0 SERVER_CPU=1   cores for the load generator and for the servers
#   BASE_BIN=           another gateway binary (an earlier build) run as the target
#                       "gateway-base" beside "gateway", to measure one change in the same run
#   NO_INSTALL=1        never run apt-get; NO_BUILD=1 use the binaries already built
#   OUT=benches/results/latest.md

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-16 128}
WAN_CONNS=${WAN_CONNS-128 1024}
WAN_DELAY_MS=${WAN_DELAY_MS:-20}
RATE=${RATE:-2000}
RATE_DURATION=${RATE_DURATION:-$DURATION}
RATE_CONNS=${RATE_CONNS:-16}
WARMUP=${WARMUP:-2s}
IDLE_CONNS=${IDLE_CONNS:-5000}
INFO_RUN=${INFO_RUN:-1}
REDIS_RUN=${REDIS_RUN:-1}
LOAD_CPU=${LOAD_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
OUT=${OUT:-$ROOT/benches/results/latest.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CERTS=$ROOT/tests/data/certs

say() { printf '[bench] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
seconds() { # "10s" / "2m" / "500ms" / "10" -> whole seconds, at least 1
    local v=$1
    case $v in
        *ms) echo $(( (${v%ms} + 999) / 1000 )) ;;
        *s) echo "${v%s}" ;;
        *m) echo $(( ${v%m} * 60 )) ;;
        *) echo "$v" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Tools
NOTES=()
apt_updated=0
apt_install() {
    [[ ${NO_INSTALL:-0} == 1 ]] && return 1
    command -v apt-get >/dev/null || return 1
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo -n)
    if [[ $apt_updated == 0 ]]; then
        timeout 300 "${sudo[@]}" apt-get update -qq >/dev/null 2>&1 || true
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null 2>&1
}

command -v python3 >/dev/null || apt_install python3 || die "python3 is needed (the report and the idle-connection test)"
command -v taskset >/dev/null || apt_install util-linux || true
if ! command -v wrk >/dev/null; then
    say "installing wrk (Debian package)"
    apt_install wrk || die "wrk is not installed and could not be installed (apt-get install wrk)"
fi
NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z $NGINX ]]; then
    [[ ${NO_INSTALL:-0} == 1 ]] || say "installing nginx (Debian package)"
    if apt_install nginx-light || apt_install nginx; then
        NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    fi
fi
if [[ $REDIS_RUN == 1 ]] && ! command -v redis-server >/dev/null; then
    say "installing redis-server (Debian package)"
    apt_install redis-server || { REDIS_RUN=0; NOTES+=("redis-server could not be installed: the gateway-redis target is skipped."); }
fi
if [[ -z $NGINX || ! -x $NGINX ]]; then
    NGINX=""
    NOTES+=("nginx could not be installed (apt-get install nginx failed): the nginx column is skipped.")
    say "nginx unavailable: skipping the nginx column"
fi

NCPU=$(nproc)
PIN_LOAD=()
PIN_SERVER=()
if command -v taskset >/dev/null && ((NCPU >= 2)); then
    PIN_LOAD=(taskset -c "$LOAD_CPU")
    PIN_SERVER=(taskset -c "$SERVER_CPU")
else
    NOTES+=("No pinning: $NCPU core(s) or no taskset; load generator and servers share the cores.")
fi

# ---------------------------------------------------------------------------------------------
# Build
if [[ ${NO_BUILD:-0} != 1 ]]; then
    say "building the gateway and the upstream stand-in (release)"
    cargo build --release --bin sparkrtc-gateway --example bench_upstream --example min_signing_proxy >&2
fi
GATEWAY_BIN=$TARGET_DIR/release/sparkrtc-gateway
UPSTREAM_BIN=$TARGET_DIR/release/examples/bench_upstream
MIN_BIN=$TARGET_DIR/release/examples/min_signing_proxy
[[ -x $GATEWAY_BIN && -x $UPSTREAM_BIN && -x $MIN_BIN ]] || die "binaries missing under $TARGET_DIR/release"

# ---------------------------------------------------------------------------------------------
# Processes: everything started here is stopped on exit, by process id.
WORK=$(mktemp -d /tmp/sparkrtc-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.3
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [[ ${KEEP_WORK:-0} == 1 ]]; then say "work files kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# File descriptors for 5,000 held connections (and their upstream side), inherited by the servers.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

free_ports() { # N free TCP ports on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
wait_port() { # port [seconds]: until something accepts on 127.0.0.1:port
    local port=$1 deadline=$((SECONDS + ${2:-30}))
    while ((SECONDS < deadline)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}
children() { # the child process ids of a process (nginx workers)
    local pid=$1
    cat "/proc/$pid/task/"*/children 2>/dev/null | tr ' ' '\n' | grep -v '^$' | tr '\n' ',' | sed 's/,$//'
}
cpu_ticks() { # comma-separated pids -> "utime stime", each summed over the processes (clock ticks)
    local user=0 sys=0 pid stat
    for pid in ${1//,/ }; do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        stat=${stat##*) }
        # shellcheck disable=SC2086
        set -- $stat
        user=$((user + ${12}))
        sys=$((sys + ${13}))
    done
    echo "$user $sys"
}
ctx_switches() { # comma-separated pids -> context switches (voluntary + not), over all their threads
    local pid
    for pid in ${1//,/ }; do cat "/proc/$pid/task/"*/status 2>/dev/null; done |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}
busy_ticks() { # CPU time of the whole machine, all cores, not idle (clock ticks)
    awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}
status_kb() { # field comma-separated-pids -> summed kB
    local field=$1 total=0 pid v
    for pid in ${2//,/ }; do
        v=$(awk -v f="$field:" '$1 == f { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

read -r UP_PORT GW_PORT GW_INFO_PORT NG_PORT GW_IDLE_PORT NG_IDLE_PORT GW_REDIS_PORT REDIS_PORT MIN_PORT BASE_PORT <<<"$(free_ports 10)"

# The upstream stand-in.
"${PIN_SERVER[@]}" "$UPSTREAM_BIN" "127.0.0.1:$UP_PORT" --threads 1 \
    --cert "$CERTS/server.pem" --key "$CERTS/server.key" >"$WORK/upstream.log" 2>&1 &
UP_PID=$!
PIDS+=("$UP_PID")
wait_port "$UP_PORT" || die "the upstream did not start: $(cat "$WORK/upstream.log")"

# Gateway configs: signing, policy and limiter on, limits far above what the run can reach.
gateway_config() { # port level [backend]
    local backend=${3:-local}
    cat <<EOF
[server]
listen = "127.0.0.1:$1"
drain_delay = "0s"
grace_period = "1s"

[admin]
listen = "127.0.0.1:0"

[upstream]
endpoint = "https://127.0.0.1:$UP_PORT"
ca_file = "$CERTS/ca.pem"

[log]
level = "$2"

[profiles.main]
access_key = "BENCHAKEXAMPLE000000"
secret_key = "BENCHSKEXAMPLE0000000000000000000000000"
project_id = "0123456789abcdef0123456789abcdef"

[callers.local]
addresses = ["127.0.0.1"]

[limits]
per_caller = { rate = "1000000/s" }
backend = "$backend"
$([[ $backend == redis ]] && printf '[limits.redis]\nurl = "redis://127.0.0.1:%s/0"\n' "$REDIS_PORT")

[apps."app-123"]
profile = "main"
allow = [{ callers = ["local"], operations = ["*"] }]
limit = { rate = "1000000/s" }
operation_limits = { RemoveUsers = { rate = "1000000/s" } }
EOF
}
start_gateway() { # name port level [backend [binary]] -> sets GW_STARTED_PID
    local name=$1 port=$2 level=$3 backend=${4:-local} bin=${5:-$GATEWAY_BIN}
    gateway_config "$port" "$level" "$backend" >"$WORK/$name.toml"
    "$bin" check --config "$WORK/$name.toml" >"$WORK/$name.check" 2>&1 ||
        die "the generated gateway config is refused: $(cat "$WORK/$name.check")"
    "${PIN_SERVER[@]}" "$bin" serve --config "$WORK/$name.toml" >"$WORK/$name.out" 2>"$WORK/$name.log" &
    GW_STARTED_PID=$!
    PIDS+=("$GW_STARTED_PID")
    wait_port "$port" || die "the gateway ($name) did not start: $(tail -20 "$WORK/$name.log")"
}
start_nginx() { # name port -> sets NG_STARTED_PIDS (master,worker); returns 1 when nginx fails
    local name=$1 port=$2 pid workers=""
    sed -e "s|@WORK@|$WORK|g" -e "s|@NAME@|$name|g" -e "s|@UPSTREAM_PORT@|$UP_PORT|g" \
        -e "s|@LISTEN_PORT@|$port|g" -e "s|@CA_FILE@|$CERTS/ca.pem|g" -e "s|@NOFILE@|$(ulimit -n)|g" \
        "$ROOT/benches/nginx.conf.template" >"$WORK/$name.conf"
    mkdir -p "$WORK/nginx-$name-"{body,proxy,fastcgi,uwsgi,scgi}
    "${PIN_SERVER[@]}" "$NGINX" -e "$WORK/nginx-$name.error.log" -c "$WORK/$name.conf" >"$WORK/$name.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if ! wait_port "$port" 10; then
        say "nginx ($name) did not start: $(cat "$WORK/$name.out" "$WORK/nginx-$name.error.log" 2>/dev/null | tail -5)"
        kill -TERM "$pid" 2>/dev/null || true
        return 1
    fi
    for _ in $(seq 50); do
        workers=$(children "$pid")
        [[ -n $workers ]] && break
        sleep 0.1
    done
    NG_STARTED_PIDS="$pid${workers:+,$workers}"
}

# One request through a target, checked: 202, an X-request-Id, and (gateway) its own request id.
probe() { # url [expect-gateway]
    "${PIN_LOAD[@]}" timeout 20 python3 - "$1" "${2:-}" "$CERTS/ca.pem" <<'EOF'
import http.client, ssl, sys, urllib.parse
url, gateway, ca = sys.argv[1], sys.argv[2], sys.argv[3]
u = urllib.parse.urlsplit(url)
if u.scheme == "https":
    conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=10, context=ssl.create_default_context(cafile=ca))
else:
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
conn.request("POST", "/v2/apps/app-123/rooms/room-456/batch-remove-users",
             body=b'{"user_ids":["user001","user002"]}', headers={"Content-Type": "application/json"})
r = conn.getresponse()
body = r.read()
problems = []
if r.status != 202:
    problems.append(f"status {r.status} {body[:300]!r}")
if not r.getheader("x-request-id"):
    problems.append("no X-request-Id")
if gateway and not r.getheader("x-gateway-request-id"):
    problems.append("no x-gateway-request-id")
if problems:
    sys.exit(f"{url}: " + "; ".join(problems))
EOF
}
set_delay() { # ms: the upstream stand-in's answer delay from now on
    "${PIN_LOAD[@]}" timeout 20 python3 - "$UP_PORT" "$CERTS/ca.pem" "$1" <<'EOF'
import http.client, ssl, sys
conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), timeout=10,
                                   context=ssl.create_default_context(cafile=sys.argv[2]))
conn.request("GET", "/__bench/delay?ms=" + sys.argv[3])
conn.getresponse().read()
EOF
}
upstream_stats() { # -> "connections requests signed"
    "${PIN_LOAD[@]}" timeout 20 python3 - "$UP_PORT" "$CERTS/ca.pem" <<'EOF'
import http.client, json, ssl, sys
conn = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), timeout=10,
                                   context=ssl.create_default_context(cafile=sys.argv[2]))
conn.request("GET", "/__bench/stats")
s = json.loads(conn.getresponse().read())
print(s["connections"], s["requests"], s["signed"])
EOF
}

start_gateway gateway "$GW_PORT" warn
GW_PID=$GW_STARTED_PID
"${PIN_SERVER[@]}" "$MIN_BIN" "127.0.0.1:$MIN_PORT" "127.0.0.1:$UP_PORT" "$CERTS/ca.pem" >"$WORK/min-proxy.log" 2>&1 &
MIN_PID=$!
PIDS+=("$MIN_PID")
wait_port "$MIN_PORT" || die "the minimal signing proxy did not start: $(tail -5 "$WORK/min-proxy.log")"
BASE_PID=""
if [[ -n ${BASE_BIN:-} ]]; then
    start_gateway gateway-base "$BASE_PORT" warn local "$BASE_BIN"
    BASE_PID=$GW_STARTED_PID
fi
GW_INFO_PID=""
if [[ $INFO_RUN == 1 ]]; then
    start_gateway gateway-info "$GW_INFO_PORT" info
    GW_INFO_PID=$GW_STARTED_PID
fi
GW_REDIS_PID=""
REDIS_PID=""
if [[ $REDIS_RUN == 1 ]]; then
    "${PIN_SERVER[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$WORK" >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" || die "redis-server did not start: $(tail -5 "$WORK/redis.log")"
    start_gateway gateway-redis "$GW_REDIS_PORT" warn redis
    GW_REDIS_PID=$GW_STARTED_PID
fi
NG_PIDS=""
if [[ -n $NGINX ]]; then
    if start_nginx nginx "$NG_PORT"; then
        NG_PIDS=$NG_STARTED_PIDS
    else
        NOTES+=("nginx did not start (see above): the nginx column is skipped.")
        NGINX=""
    fi
fi

TARGETS=(direct)
[[ -n $NGINX ]] && TARGETS+=(nginx)
TARGETS+=(min-proxy gateway)
[[ -n $BASE_PID ]] && TARGETS+=(gateway-base)

target_url() {
    case $1 in
        direct) echo "https://127.0.0.1:$UP_PORT" ;;
        nginx) echo "http://127.0.0.1:$NG_PORT" ;;
        min-proxy) echo "http://127.0.0.1:$MIN_PORT" ;;
        gateway) echo "http://127.0.0.1:$GW_PORT" ;;
        gateway-info) echo "http://127.0.0.1:$GW_INFO_PORT" ;;
        gateway-base) echo "http://127.0.0.1:$BASE_PORT" ;;
        gateway-redis) echo "http://127.0.0.1:$GW_REDIS_PORT" ;;
    esac
}
target_pids() {
    case $1 in
        direct) echo "$UP_PID" ;;
        nginx) echo "$NG_PIDS" ;;
        min-proxy) echo "$MIN_PID" ;;
        gateway) echo "$GW_PID" ;;
        gateway-info) echo "$GW_INFO_PID" ;;
        gateway-base) echo "$BASE_PID" ;;
        gateway-redis) echo "$GW_REDIS_PID" ;;
    esac
}

probe "$(target_url direct)" || die "the upstream does not answer as expected"
[[ -n $NGINX ]] && { probe "$(target_url nginx)" || die "nginx does not answer as expected"; }
read -r _ _ signed0 <<<"$(upstream_stats)"
probe "$(target_url gateway)" gateway || die "the gateway does not answer as expected: $(tail -5 "$WORK/gateway.log")"
read -r _ _ signed1 <<<"$(upstream_stats)"
# The probe itself and the stats call are requests too: the gateway's call must have been signed.
((signed1 - signed0 == 1)) || die "the gateway's call reached the upstream unsigned"
probe "$(target_url min-proxy)" || die "the minimal signing proxy does not answer as expected"
read -r _ _ signed2 <<<"$(upstream_stats)"
((signed2 - signed1 == 1)) || die "the minimal proxy's call reached the upstream unsigned"
if [[ $REDIS_RUN == 1 ]]; then
    probe "$(target_url gateway-redis)" gateway || die "the gateway on Redis does not answer: $(tail -5 "$WORK/gateway-redis.log")"
fi
say "targets answer 202 with X-request-Id; the gateway's calls are signed"

# ---------------------------------------------------------------------------------------------
# Runs
RESULTS=$WORK/results.tsv
printf 'round\tscenario\ttarget\tconns\trate\trequests\tduration_s\terrors\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\tserver_cpu_us\tserver_user_us\tserver_sys_us\tupstream_cpu_us\tctx_per_req\tloadgen_cpu_pct\tother_cpu_pct\tupstream_conns\tsigned\tredis_cpu_us\tupstream_open\trss_delta_kb\n' >"$RESULTS"

run_wrk() { # round scenario target conns duration rate
    local round=$1 scenario=$2 target=$3 conns=$4 dur=$5 rate=$6
    local url pids out secs s0 s1 u0 u1 c0 c1 g0 g1 x0 x1 b0 b1 r0 r1 line
    url=$(target_url "$target")
    pids=$(target_pids "$target")
    out=$WORK/wrk-$round-$scenario-$target
    secs=$(seconds "$dur")
    read -r c0 _ g0 <<<"$(upstream_stats)"
    s0=$(cpu_ticks "$pids")
    u0=$(cpu_ticks "$UP_PID")
    r0=$(cpu_ticks "${REDIS_PID:-0}")
    x0=$(ctx_switches "$pids")
    b0=$(busy_ticks)
    # Remote-upstream runs: halfway through, the proxy's open upstream connections (ESTABLISHED
    # sockets of its processes to the upstream port) and its RSS growth over the idle state.
    local sample=$out.sample rss0 sampler=""
    rss0=$(status_kb VmRSS "$pids")
    echo "0 0" >"$sample"
    if [[ $scenario == wan* ]]; then
        (
            sleep $((secs / 2))
            open=0
            if [[ $target != direct ]]; then
                for pid in ${pids//,/ }; do
                    open=$((open + $(ss -Htnp state established "( dport = :$UP_PORT )" 2>/dev/null | grep -c "pid=$pid," || true)))
                done
            fi
            echo "$open $(($(status_kb VmRSS "$pids") - rss0))" >"$sample"
        ) &
        sampler=$!
    fi
    local TIMEFORMAT='%U %S %R'
    { time WRK_RATE=$rate timeout $((secs + 30)) "${PIN_LOAD[@]}" wrk -t1 -c"$conns" -d"$dur" --timeout 5s \
        -s "$ROOT/benches/wrk.lua" "$url" >"$out.out" 2>&1; } 2>"$out.time" || true
    b1=$(busy_ticks)
    s1=$(cpu_ticks "$pids")
    u1=$(cpu_ticks "$UP_PID")
    r1=$(cpu_ticks "${REDIS_PID:-0}")
    x1=$(ctx_switches "$pids")
    read -r c1 _ g1 <<<"$(upstream_stats)"
    [[ -n $sampler ]] && wait "$sampler"
    local open rss_delta
    read -r open rss_delta <"$sample"
    line=$(grep '^WRK_RESULT' "$out.out" || true)
    if [[ -z $line ]]; then
        say "wrk gave no result for $target ($scenario): $(tail -3 "$out.out")"
        return 0
    fi
    [[ $round == warmup ]] && return 0
    # The stats call opens a connection of its own: one less was the proxy's.
    python3 - "$line" "$(cat "$out.time")" "$CLK_TCK" "$s0" "$s1" "$u0" "$u1" "$((c1 - c0 - 1))" "$((g1 - g0))" \
        "$((x1 - x0))" "$((b1 - b0))" "$round" "$scenario" "$target" "$conns" "$rate" "$r0" "$r1" "$open" "$rss_delta" >>"$RESULTS" <<'EOF'
import sys
line, times, tck, s0, s1, u0, u1, conns_opened, signed, ctx, busy = sys.argv[1:12]
round_, scenario, target, conns, rate, r0, r1, open_, rss_delta = sys.argv[12:21]
tck = int(tck)
f = dict(kv.split("=") for kv in line.split()[1:])
req = int(f["requests"])
dur = int(f["duration_us"]) / 1e6
errors = sum(int(f[k]) for k in ("connect_err", "read_err", "write_err", "status_err", "timeout_err"))
lg_user, lg_sys, real = (float(x) for x in times.split()[-3:])
su, ss = (int(b) - int(a) for a, b in zip(s0.split(), s1.split()))
uu, us_ = (int(b) - int(a) for a, b in zip(u0.split(), u1.split()))
per_req = lambda ticks: ticks * 1e6 / tck / max(req, 1)
# Busy CPU of the machine not accounted to the servers or the load generator: other processes and
# interrupt time, as a percentage of one core. High values mean the machine was not quiet.
rr = sum(int(b) - int(a) for a, b in zip(r0.split(), r1.split())) if target == "gateway-redis" else 0
ours = su + ss + rr + (uu + us_ if target != "direct" else 0) + (lg_user + lg_sys) * tck
other = 100 * (int(busy) - ours) / tck / max(real, 1e-9)
row = [round_, scenario, target, conns, rate, req, f"{dur:.3f}", errors, f["p50_us"], f["p90_us"], f["p99_us"],
       f["p999_us"], f["max_us"], f"{per_req(su + ss):.2f}", f"{per_req(su):.2f}", f"{per_req(ss):.2f}",
       f"{per_req(uu + us_):.2f}", f"{int(ctx) / max(req, 1):.3f}", f"{100 * (lg_user + lg_sys) / max(real, 1e-9):.0f}",
       f"{max(other, 0):.0f}", conns_opened, signed, f"{per_req(rr):.2f}", open_, rss_delta]
print("\t".join(str(x) for x in row))
EOF
    tail -1 "$RESULTS" | awk -F'\t' '{ printf "[bench] %-5s %-9s %-12s %8.0f req/s  p99 %6.2f ms  server %5.1f us/req (user %.1f sys %.1f)  upstream %5.1f us/req  ctx/req %s  loadgen %s%%  other %s%%  errors %s\n", $1, $2, $3, $6 / $7, $11 / 1000, $14, $15, $16, $17, $18, $19, $20, $8 }' >&2
}

# Rotate the order of targets each round, so none always runs first or last.
rotated() { # round -> targets
    local r=$1 n=${#TARGETS[@]} i
    for ((i = 0; i < n; i++)); do echo "${TARGETS[(i + r) % n]}"; done
}

say "warm-up: $WARMUP per target"
for t in "${TARGETS[@]}"; do run_wrk warmup warmup "$t" 128 "$WARMUP" 0; done
[[ $INFO_RUN == 1 ]] && run_wrk warmup warmup gateway-info 128 "$WARMUP" 0
[[ -n $GW_REDIS_PID ]] && run_wrk warmup warmup gateway-redis 16 "$WARMUP" "$RATE"
if [[ -n $WAN_CONNS ]]; then
    set_delay "$WAN_DELAY_MS"
    for t in "${TARGETS[@]}"; do run_wrk warmup warmup "$t" "${WAN_CONNS##* }" "$WARMUP" 0; done
    set_delay 0
fi

LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
started=$SECONDS
for ((round = 1; round <= ROUNDS; round++)); do
    say "round $round of $ROUNDS"
    for c in $CONNS; do
        for t in $(rotated "$round"); do run_wrk "$round" "c$c" "$t" "$c" "$DURATION" 0; done
    done
    if [[ -n $WAN_CONNS ]]; then
        set_delay "$WAN_DELAY_MS"
        for c in $WAN_CONNS; do
            for t in $(rotated "$round"); do run_wrk "$round" "wan$c" "$t" "$c" "$DURATION" 0; done
        done
        set_delay 0
    fi
    if ((RATE > 0)); then
        for t in $(rotated "$round") ${GW_REDIS_PID:+gateway-redis}; do
            run_wrk "$round" "rate$RATE" "$t" "$RATE_CONNS" "$RATE_DURATION" "$RATE"
        done
    fi
done

INFO_LOG_BYTES=""
if [[ $INFO_RUN == 1 ]]; then
    say "one gateway run with [log] level = \"info\""
    first_conns=${CONNS%% *}
    log0=$(stat -c %s "$WORK/gateway-info.log")
    run_wrk info "c$first_conns" gateway-info "$first_conns" "$DURATION" 0
    log1=$(stat -c %s "$WORK/gateway-info.log")
    INFO_LOG_BYTES=$((log1 - log0))
fi
RUNS_SECONDS=$((SECONDS - started))

# Peak and current RSS of the loaded processes, before anything else runs.
PEAK_FILE=$WORK/peak.tsv
printf 'target\thwm_kb\trss_kb\n' >"$PEAK_FILE"
for t in "${TARGETS[@]}"; do
    pids=$(target_pids "$t")
    [[ $t == nginx ]] && pids=${pids#*,} # the worker; the master is reported in a note
    printf '%s\t%s\t%s\n' "$t" "$(status_kb VmHWM "$pids")" "$(status_kb VmRSS "$pids")" >>"$PEAK_FILE"
done
NG_MASTER_RSS=""
[[ -n $NGINX ]] && NG_MASTER_RSS=$(status_kb VmRSS "${NG_PIDS%%,*}")
GW_LOG_LINES=$(wc -l <"$WORK/gateway.log")

# ---------------------------------------------------------------------------------------------
# Idle connections: fresh processes, one served request, then IDLE_CONNS held keep-alive clients,
# opened 16 at a time so the proxies need few upstream connections of their own for them.
idle_test() { # name port pids
    local name=$1 port=$2 pids=$3
    local c0 c1
    probe "http://127.0.0.1:$port" >/dev/null || { say "$name does not answer"; return 0; }
    sleep 0.5
    read -r c0 _ <<<"$(upstream_stats)"
    "${PIN_LOAD[@]}" timeout 180 python3 "$ROOT/benches/idle_conns.py" --port "$port" --count "$IDLE_CONNS" \
        --pids "$pids" --hold 3 --parallel 16 >"$WORK/idle-$name.json.tmp" || say "idle test of $name failed"
    read -r c1 _ <<<"$(upstream_stats)"
    # How many upstream connections the proxy opened for those calls (its pool keeps them too).
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); d["upstream_conns"] = int(sys.argv[2]); print(json.dumps(d))' \
        "$WORK/idle-$name.json.tmp" "$((c1 - c0 - 1))" >"$WORK/idle-$name.json" 2>/dev/null || true
    say "idle $name: $(cat "$WORK/idle-$name.json" 2>/dev/null)"
}
if ((IDLE_CONNS > 0)); then
    say "memory: $IDLE_CONNS idle keep-alive connections against fresh processes"
    start_gateway gateway-idle "$GW_IDLE_PORT" warn
    idle_test gateway "$GW_IDLE_PORT" "$GW_STARTED_PID"
    kill -TERM "$GW_STARTED_PID" 2>/dev/null || true
    if [[ -n $NGINX ]] && start_nginx nginx-idle "$NG_IDLE_PORT"; then
        idle_test nginx "$NG_IDLE_PORT" "${NG_STARTED_PIDS#*,}"
        kill -TERM "${NG_STARTED_PIDS%%,*}" 2>/dev/null || true
    fi
fi

# ---------------------------------------------------------------------------------------------
# Report
META=$WORK/meta.txt
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "nproc=$NCPU"
    echo "kernel=$(uname -sr)"
    echo "mem_total=$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
    echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
    echo "nginx=$([[ -n $NGINX ]] && "$NGINX" -v 2>&1 | sed 's/^nginx version: //' || echo none)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git status --porcelain 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "rate=$RATE"
    echo "rate_duration=$RATE_DURATION"
    echo "rate_conns=$RATE_CONNS"
    echo "idle_conns=$IDLE_CONNS"
    echo "wan_delay_ms=$WAN_DELAY_MS"
    echo "pinned=$([[ ${#PIN_LOAD[@]} -gt 0 ]] && echo "load generator on core $LOAD_CPU, servers on core $SERVER_CPU" || echo no)"
    echo "runs_seconds=$RUNS_SECONDS"
    echo "loadavg=$LOADAVG_START"
    echo "info_log_bytes=$INFO_LOG_BYTES"
    echo "nginx_master_rss_kb=$NG_MASTER_RSS"
    echo "gateway_log_lines=$GW_LOG_LINES"
    echo "upstream_hwm_kb=$(status_kb VmHWM "$UP_PID")"
    for n in "${NOTES[@]}"; do echo "note=$n"; done
} >"$META"

mkdir -p "$(dirname "$OUT")"
python3 "$ROOT/benches/report.py" --results "$RESULTS" --meta "$META" --peak "$PEAK_FILE" \
    --idle-gateway "$WORK/idle-gateway.json" --idle-nginx "$WORK/idle-nginx.json" >"$OUT"
cp "$RESULTS" "${OUT%.md}.tsv"
cat "$OUT"
say "written to $OUT (raw rows: ${OUT%.md}.tsv)"
