-- GCRA over every limit one call meets, in one round trip; nothing is spent unless every
-- enforced limit admits the call. Time is Redis's own (TIME), so replicas with skewed clocks
-- agree. The same arithmetic as governor's, in microseconds:
--   admit iff now >= tat - tau;  then tat' = max(tat, now) + T
-- where T is the emission interval and tau = T * (burst - 1).
--
-- KEYS[i]: limit i's theoretical arrival time (TAT), microseconds of Redis's clock.
-- ARGV[3i-2], ARGV[3i-1], ARGV[3i]: T (us), tau (us), "1" when enforced or "0" in shadow mode.
-- Returns {admitted, wait_1, ..., wait_n}: admitted is 1 or 0; wait_i is how many microseconds
-- until limit i would admit (0: it admits now).
--
-- A key expires when its TAT is reached: from then on it is indistinguishable from a fresh
-- bucket, so Redis holds no state for limits at rest.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local admitted = 1
local next_tat, waits = {}, {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then
    tat = now
  end
  local earliest = tat - tolerance
  if now < earliest then
    waits[i] = earliest - now
    if ARGV[3 * i] == '1' then
      admitted = 0
    end
  else
    waits[i] = 0
  end
  next_tat[i] = tat + interval
end
if admitted == 1 then
  for i = 1, #KEYS do
    -- A shadow-mode limit that would refuse is not spent, as in process.
    if waits[i] == 0 then
      local ttl_ms = math.ceil((next_tat[i] - now) / 1000)
      redis.call('SET', KEYS[i], string.format('%.0f', next_tat[i]), 'PX', ttl_ms)
    end
  end
end
local reply = { admitted }
for i = 1, #KEYS do
  reply[i + 1] = waits[i]
end
return reply
