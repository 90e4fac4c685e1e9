-- wrk script for benches/soak.sh: a paced, repeatable mix of good and bad calls, counting every
-- request written and every answer read, by status.
--
-- SOAK_RATE=N paces the run at N requests/s (run wrk with -t1). SOAK_SECONDS=S stops writing new
-- requests after S seconds: run wrk for a few seconds longer, so that every request written has
-- been answered when wrk stops and none is cut off in flight.

local body_ok = '{"user_ids":["user001","user002"]}'
local remove = "/v2/apps/app-123/rooms/room-456/batch-remove-users"
-- The requests are made when the script loads, before wrk fills in its own Host header, so name
-- one: an HTTP/1.1 request without Host is refused (400 RTCGW.4004, RFC 9112 section 3.2).
local host = { Host = "sparkrtc-gateway" }
local json = { Host = "sparkrtc-gateway", ["Content-Type"] = "application/json" }

-- 100 slots, used in turn: 85 good calls (RemoveUsers, ShowApp), 15 the gateway must refuse.
local kinds = {
  { 80, "POST", remove, json, body_ok },                                   -- 202 (or a fault)
  { 5, "GET", "/v2/apps/app-123", host, nil },                             -- 202 (or a fault)
  { 4, "GET", "/v2/secrets", host, nil },                                  -- 404 unknown path
  { 4, "POST", remove, json, '{"user_ids":[]}' },                          -- 400 bad body
  { 4, "POST", remove, json, '{"user_ids":["' .. string.rep("u", 8192) .. '"]}' }, -- 413 over the cap
  { 3, "DELETE", remove, host, nil },                                      -- 405 wrong method
}
local pattern = {}
for _, k in ipairs(kinds) do
  for _ = 1, k[1] do
    pattern[#pattern + 1] = wrk.format(k[2], k[3], k[4], k[5])
  end
end
-- Spread the kinds over the cycle instead of sending them in runs.
local spread = {}
for i = 0, 99 do spread[#spread + 1] = pattern[(i * 37) % 100 + 1] end

sent = 0
answered = 0
statuses = {}
local n = 0

-- wrk calls request() once in the first thread's state before the run, to check the request
-- parses (script_verify_request); that call writes nothing and is not counted.
local verified = false

function request()
  if id == 1 and not verified then
    verified = true
    return spread[1]
  end
  n = n + 1
  sent = sent + 1
  return spread[(n - 1) % 100 + 1]
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
end

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
  int clock_gettime(int clk_id, soak_timespec *tp);
]]
local ts = ffi.new("soak_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local rate = tonumber(os.getenv("SOAK_RATE") or "500")
local stop_after = tonumber(os.getenv("SOAK_SECONDS") or "600") * 1000
local interval = 1000 / rate
local start, slot = nil, 0

function delay()
  local now = now_ms()
  if not start then start = now end
  if now - start >= stop_after then return 3600 * 1000 end -- done writing: drain
  slot = slot + 1
  local wait = start + slot * interval - now
  if wait <= 0 then return 0 end
  return math.floor(wait + 0.5)
end

local threads = {}
function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function done(summary, latency, requests)
  local total_sent, total_answered, by_status = 0, 0, {}
  for _, t in ipairs(threads) do
    total_sent = total_sent + t:get("sent")
    total_answered = total_answered + t:get("answered")
    for status, count in pairs(t:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do parts[#parts + 1] = string.format("s%d=%d", status, count) end
  table.sort(parts)
  local e = summary.errors
  io.write(string.format(
    "SOAK_WRK sent=%d answered=%d wrk_requests=%d connect_err=%d read_err=%d write_err=%d timeout_err=%d " ..
    "p50_us=%d p99_us=%d max_us=%d %s\n",
    total_sent, total_answered, summary.requests, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, " ")))
end
