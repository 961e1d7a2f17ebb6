-- wrk script of benchmarks/http.py: POST one v2 infer request, the same on every connection,
-- and count the answers that are not 2xx.
--
--   wrk -t1 -c64 -d5s --latency -s benchmarks/_http_infer.lua URL -- BODY_FILE
--
-- BODY_FILE holds the request's JSON body (benchmarks/http.py writes it). At the end one line
-- "WRKJSON {...}" on stdout gives the totals and the latency percentiles in microseconds.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(io.open(args[1], "rb"), "cannot open the body file " .. tostring(args[1]))
   wrk.body = file:read("*a")
   file:close()
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   responses = 0
   non2xx = 0
end

function response(status, headers, body)
   responses = responses + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
   end
end

function done(summary, latency, requests)
   local total, bad = 0, 0
   for _, thread in ipairs(threads) do
      total = total + thread:get("responses")
      bad = bad + thread:get("non2xx")
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"duration_us": %d, "requests": %d, "responses": %d, "non2xx": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, '
         .. '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
      summary.duration, summary.requests, total, bad,
      e.connect, e.read, e.write, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max
   ))
end
