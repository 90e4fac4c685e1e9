-- wrk script for benches/run.sh: POST RemoveUsers with its JSON body, and a machine-readable
-- summary line (requests, errors, p50/p90/p99/p99.9 in microseconds) for the report.
--
-- WRK_RATE=N (environment) paces the run at N requests/s in total: every request takes the next
-- slot of one schedule shared by the thread's connections (run wrk with -t1), so the rate holds
-- whatever the latency as long as a connection is free for each slot. wrk measures each
-- request's latency from the moment it is written; a stall longer than (connections / rate) would
-- delay later requests instead of queueing them (coordinated omission), which the report states.

wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/v2/apps/app-123/rooms/room-456/batch-remove-users"
wrk.body = os.getenv("WRK_BODY") or '{"user_ids":["user001","user002"]}'
wrk.headers["Content-Type"] = "application/json"

local rate = tonumber(os.getenv("WRK_RATE") or "")

if rate and rate > 0 then
  local ffi = require("ffi")
  ffi.cdef [[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local CLOCK_MONOTONIC = 1
  local function now_ms()
    ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local interval = 1000 / rate
  local start, slot = nil, 0

  -- Called by wrk before every request, the first included; returns milliseconds to wait.
  function delay()
    local now = now_ms()
    if not start then start = now end
    slot = slot + 1
    local wait = start + slot * interval - now
    if wait <= 0 then return 0 end
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_RESULT requests=%d duration_us=%d bytes=%d connect_err=%d read_err=%d write_err=%d " ..
    "status_err=%d timeout_err=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
