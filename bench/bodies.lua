-- wrk script: POST a different body (one per line of a file) with every request, so single-use
-- tokens are never replayed; each wrk thread takes its own interleaved share of the lines.
-- usage: wrk -s bench/bodies.lua URL -- <bodies file> <path> <threads>
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  path = args[2]
  step = tonumber(args[3])
  index = id + 1
  headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
end

function request()
  local body = bodies[index]
  index = index + step
  if body == nil then
    body = bodies[1] -- ran out: replays are refused (400) and reported as errors
  end
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  io.stderr:write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
