"""Benchmark of corral.gateway (KServe v2 over HTTP) against the HTTP ceiling and against
per-request inference, measured in the same run (issue 14; not named http.py: a script's
folder comes first on sys.path, and a benchmarks/http.py would stand in for the standard
library's ``http`` package there and in the port workers that inherit the path).

    python benchmarks/gateway.py [--quick] [--loop uvloop|asyncio] [--verbose] [--kinds thread,loop]

Every server runs in its own OS process (``_http_servers``), on a free loopback port, on
``--loop``, with uvicorn's default HTTP implementation (httptools when installed, else h11:
each line's ``http`` says which). The load is ``wrk`` (Debian package ``wrk``) in another
process: one thread, 64 keep-alive connections, closed loop, each sending the same v2 infer
request for the tiny MLP of benchmarks/serving.py (64->256->256->10, one ``[1, 64]`` FP32
sample as JSON) for 2 s (``--quick``) or 5 s, with ``--latency`` percentiles and a Lua
script (``_http_infer.lua``) that counts non-2xx answers. Before it is measured, each server
answers one request correctly (checked against the model) and takes a warm-up run.

Configurations, interleaved over 3 (``--quick``) or 5 repeats in rotated order; each line
gives medians, and ``ratio`` is the median of the per-repeat ``ratios``:

``ceiling_constant_v2``
    A bare Starlette app on uvicorn that reads the body and answers a constant v2 response:
    the HTTP ceiling every other line is divided by (its own line has ratio 1).
``per_request_inline``
    The same app parsing the request and running the model on its one sample, inline, per
    request: serving without batching (LitServe-style).
``gateway_{thread,loop,port}``
    ``corral.gateway.Gateway`` in front of a ``Serving`` of the model (``batch_size=64``,
    ``batch_timeout=0.002``, one partition of that kind), in one ``Node``: batched
    inference. ``mean_batch_size`` comes from the serving's statistics over the measured
    run; ``vs_per_request`` is the median per-repeat ratio to ``per_request_inline``.
``gateway_best``, ``gateway_best_vs_per_request``
    The configuration with the highest median ratio, against the ceiling (target >= 0.7)
    and against per-request inference (stretch target >= 10, with the 785 req/s LitServe
    measured on this machine beside it as ``litserve_reference``, not measured here).

Every line also has ``p50_ms``/``p99_ms`` (wrk's, medians over repeats), ``non2xx`` and
``socket_errors`` (sums), ``server_cpu_us_per_req`` (CPU time of the server process, all its
threads, and of its port workers, over the measured run, per answered request) and
``cpu_ratio``, the baseline's CPU per request over this one's (median of the repeats): what
``ratio`` would be were both servers bound by their own CPU time, which neighbours on a
shared machine barely move. A missed target is reported (``target_met: false``), never an
error. Without ``wrk``, starlette or uvicorn the run prints one ``skipped`` line; without
``corral.gateway`` the gateway lines are ``skipped``.
"""

import sys

from _http_bench import run

if __name__ == "__main__":
    run(__doc__.splitlines()[0], sys.argv[1:])
