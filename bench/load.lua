-- wrk script for bench/run.py: POST one JSON body, rotating the Authorization key per request.
--
--   wrk ... -s bench/load.lua URL -- BODY_FILE KEYS_FILE
--
-- KEYS_FILE holds one key a line ("-" or an empty file: no Authorization header). Every request
-- is built once in init(); request() only picks the next one, so the generator stays cheap.
-- done() prints one line "WRK_RESULT {json}" that run.py parses.

local requests = {}
local count = 0
local next_index = 0

local function read_all(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

local threads_set_up = 0

function setup(thread)
  thread:set("thread_id", threads_set_up)
  threads_set_up = threads_set_up + 1
end

function init(args)
  local body = read_all(args[1])
  local keys = {}
  if args[2] and args[2] ~= "-" then
    for line in io.lines(args[2]) do
      if line ~= "" then keys[#keys + 1] = line end
    end
  end
  local headers = { ["Content-Type"] = "application/json" }
  if #keys == 0 then
    requests[1] = wrk.format("POST", nil, headers, body)
  else
    for i, key in ipairs(keys) do
      headers["Authorization"] = "Bearer " .. key
      requests[i] = wrk.format("POST", nil, headers, body)
    end
  end
  count = #requests
  -- Threads start at different keys, so that with -t N they do not walk in step.
  next_index = ((thread_id or 0) * 7919) % count
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

function done(summary, latency, requests_stats)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
