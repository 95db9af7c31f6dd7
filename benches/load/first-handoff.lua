-- wrk script for cache-hits.sh's keep-alive mix: hits of one path, but the first request of
-- each connection carries `Range`, which imgedge's hit path hands to pingora (as a CDN's
-- keep-alive connection whose first request was a miss or a range); every later request
-- on the connection is a plain hit. Prints load.sh's RESULT line.
-- args: <path> <connections per thread>
-- wrk sends each connection's first request as it connects, before any answer arrives, so
-- the first `connections` requests of a thread are the connections' first requests.
local path, first, sent = "/", 0, 0
function init(args)
  path = args[1]
  first = tonumber(args[2]) or 1
end
function request()
  sent = sent + 1
  if sent <= first then
    return wrk.format("GET", path, { ["Range"] = "bytes=0-99" })
  end
  return wrk.format("GET", path)
end
function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f mean_ms=%.2f requests=%d errors=%d non2xx3xx=%d timeouts=%d conn_err=%d bytes_per_req=%d duration_s=%.2f\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000, summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, e.status, e.timeout, e.connect,
    summary.requests > 0 and math.floor(summary.bytes / summary.requests) or 0, secs))
end
