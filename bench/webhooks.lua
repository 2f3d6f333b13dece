-- wrk script: send pre-signed webhook requests read from files written by bench/events.py.
--
-- Usage: wrk -s bench/webhooks.lua ... <url> -- <requests file> [<requests file> ...]
-- Thread i reads file i (modulo the count), so threads never send the same event id. Each
-- record is an 8-digit length followed by a complete HTTP/1.1 request, read sequentially:
-- memory stays flat however many requests a run needs. A file that runs out is rewound
-- and counted in "wraps" (rewound requests are duplicates: size the files so it is 0).
-- done() prints one JSON line the runner parses (prefix "BENCH ").

local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local path = args[(id % #args) + 1]
   handle = assert(io.open(path, "rb"))
   wraps = 0
end

function request()
   local header = handle:read(8)
   if header == nil then
      handle:seek("set", 0)
      wraps = wraps + 1
      header = handle:read(8)
   end
   return handle:read(tonumber(header))
end

function done(summary, latency, requests)
   local total_wraps = 0
   for _, thread in ipairs(threads) do
      total_wraps = total_wraps + (thread:get("wraps") or 0)
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH {"requests": %d, "duration_us": %d, "bytes": %d, "connect_errors": %d, "read_errors": %d,'
         .. ' "write_errors": %d, "non_2xx": %d, "timeouts": %d, "wraps": %d,'
         .. ' "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, errors.connect, errors.read, errors.write,
      errors.status, errors.timeout, total_wraps,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean))
end
