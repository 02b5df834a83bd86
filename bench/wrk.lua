-- One wrk case, configured from the environment (bench/run sets these):
--   BENCH_METHOD  GET or POST
--   BENCH_PATH    request target
--   BENCH_TOKENS  file with one bearer token per line, used in turn (optional)
--   BENCH_BODY    file sent as a JSON body (optional)
-- At the end it prints one JSON line with the counts and latency percentiles (microseconds).
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local tokens = {}
local token_file = os.getenv("BENCH_TOKENS")
if token_file and token_file ~= "" then
  for line in io.lines(token_file) do
    if line ~= "" then tokens[#tokens + 1] = line end
  end
end
local body = nil
local body_file = os.getenv("BENCH_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
end

local next_token = 0
local threads = 0

function setup(thread)
  -- Threads start at different places in the token list.
  thread:set("offset", threads)
  threads = threads + 1
end

function init(args)
  next_token = (offset or 0) * 7919
end

function request()
  local headers = {}
  if #tokens > 0 then
    next_token = next_token % #tokens + 1
    headers["Authorization"] = "Bearer " .. tokens[next_token]
  end
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format(method, path, headers, body)
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"timeouts":%d,"status_errors":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
