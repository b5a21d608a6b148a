-- wrk script of the benchmark: every request asks for a random user id.
--
--   wrk ... -s bench/random_ids.lua http://127.0.0.1:PORT -- PATH_PREFIX LO HI
--
-- requests PATH_PREFIX .. n with n uniformly random in LO .. HI (e.g.
-- "/mongo/tickets?user_id=" 1 100000); each wrk thread has its own seed.
-- At the end it prints one line "BENCH_JSON {...}" with the totals and the
-- latency percentiles (microseconds) that bench/bench.py reads.

local counter = 0
local threads = {}

function setup(thread)
    counter = counter + 1
    thread:set("tid", counter)
    table.insert(threads, thread)
end

local prefix, lo, hi

function init(args)
    prefix = args[1] or "/?user_id="
    lo = tonumber(args[2] or "1")
    hi = tonumber(args[3] or "1")
    -- math.random(m, n) needs n >= m and both within 2^31
    math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
    for _ = 1, 10 do math.random() end
end

function request()
    return wrk.format(nil, prefix .. math.random(lo, hi))
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
        .. '"errors_connect":%d,"errors_read":%d,"errors_write":%d,'
        .. '"errors_status":%d,"errors_timeout":%d,'
        .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,'
        .. '"max_us":%d,"mean_us":%.1f,"stdev_us":%.1f}\n',
        summary.requests, summary.duration, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency:percentile(99.9),
        latency.max, latency.mean, latency.stdev))
end
