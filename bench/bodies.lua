-- wrk script: POST a different body (one per line of a file) with every request, so single-use
-- tokens are never replayed; each wrk thread takes its own interleaved share of the lines.
-- usage: wrk -s bench/bodies.lua URL -- <bodies file> <path> <threads>
-- A thread that runs out of bodies replays the first one (refused, 400) and counts it as
-- "exhausted": such a run's figures are not valid and the benchmark says so.
local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  path = args[2]
  step = tonumber(args[3])
  index = id + 1
  exhausted = 0
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
end

function request()
  local body = bodies[index]
  index = index + step
  if body == nil then
    body = bodies[1]
    exhausted = exhausted + 1
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local ran_out = 0
  for _, thread in ipairs(threads) do ran_out = ran_out + (thread:get("exhausted") or 0) end
  io.stderr:write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, "p50_us": %d, "p99_us": %d, "exhausted": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), ran_out))
end
