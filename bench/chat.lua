-- wrk script: POST one chat completion per request and print a JSON summary line at the end.
-- Environment: KEY (Bearer), MODEL, STREAM ("true"/"false").
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KEY") or "")
wrk.body = string.format(
  '{"model":"%s","stream":%s,"max_tokens":64,"messages":[{"role":"user","content":"benchmark prompt"}]}',
  os.getenv("MODEL") or "taogate-owner", os.getenv("STREAM") or "false")

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\n',
    summary.requests, summary.requests / secs, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
