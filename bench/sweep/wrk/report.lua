-- Prints wrk's summary as one JSON line (prefix "WRK_JSON "), so bench/sweep/workloads.py reads numbers,
-- not wrk's human-readable text. Latencies are in microseconds.

local function num(x)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return 0 end
  return x
end

function done(summary, latency, requests)
  local e = summary.errors
  local counted = summary.requests > 0
  local function pct(p) if counted then return num(latency:percentile(p)) else return 0 end end
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"latency_mean_us":%.1f,"latency_stdev_us":%.1f,"latency_max_us":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    counted and num(latency.mean) or 0, counted and num(latency.stdev) or 0,
    counted and num(latency.max) or 0, pct(50), pct(90), pct(99)))
end
