#!/usr/bin/env python3
"""Instructions per request of a front Envoy running under callgrind.

    callgrind.py NAME PORT PID OUT_PREFIX N

Sends N sequential JSON and then N SSE requests to the Envoy on PORT (after a
warm-up), zeroing callgrind's counters before and dumping them after each
batch, and prints one `instructions ...` result line per workload with the
instructions per request split by where they ran: Envoy's own code, V8's
builtins and wasm-to-host trampolines, the filter's JIT-compiled wasm, a
native dynamic module's own code (module), libc and the rest.
Valgrind counts every executed instruction, so the figures do not move with
other load on the machine (a time-based timer or flush landing inside a
batch still adds a few per cent)."""

import collections
import glob
import http.client
import os
import re
import subprocess
import sys

name, port, pid, prefix, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
BODY = {
    "json": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Summarize the billing rules in one line."}]}',
    "sse": b'{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Summarize the billing rules in one line."}]}',
}


def send(kind, count):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"content-type": "application/json", "x-tenant-id": "bench"}
    if kind == "sse":
        headers["x-bench-stream"] = "1"
    for _ in range(count):
        c.request("POST", "/v1/chat/completions", BODY[kind], headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"{name}: HTTP {r.status}")
    c.close()


def control(flag):
    subprocess.run(["callgrind_control", flag, pid], check=True, capture_output=True)


def split(path):
    """Self cost per origin; callgrind names unsymbolized code by address:
    JIT-compiled wasm lives far above the binary's and V8's own mappings."""
    obs, fns, cur_ob, cur_fn, skip = {}, {}, None, None, False
    agg = collections.Counter()
    for line in open(path, errors="replace"):
        m = re.match(r"^(c?ob|c?fn|c?fl|fi|fe)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            kind, idx, label = m.groups()
            table = obs if kind.endswith("ob") else fns if kind.endswith("fn") else None
            if table is not None and label is not None:
                table[idx] = label
            if kind == "ob":
                cur_ob = obs.get(idx)
            elif kind == "fn":
                cur_fn = fns.get(idx)
            continue
        if line.startswith("calls="):
            skip = True  # the next cost line is a callee's inclusive cost
            continue
        parts = line.split()
        if len(parts) >= 2 and (line[0].isdigit() or line[0] in "+-*"):
            if skip:
                skip = False
                continue
            if cur_ob and cur_ob.startswith("???"):
                addr = cur_fn.split()[0].split("'")[0] if cur_fn and cur_fn.startswith("0x") else "0x0"
                origin = "wasm" if int(addr, 16) > 0x100000000 else "v8"
            elif cur_ob and os.path.basename(cur_ob).startswith(("libllm_billing", "libbench_noop")):
                origin = "module"
            elif cur_ob and "envoy" in os.path.basename(cur_ob):
                origin = "envoy"
            else:
                origin = "libc"
            agg[origin] += int(parts[1])
    return agg


send("json", 50)
send("sse", 50)
for kind in ("json", "sse"):
    before = set(glob.glob(prefix + "*"))
    control("-z")
    send(kind, n)
    control("-d")
    dumps = sorted(set(glob.glob(prefix + "*")) - before, key=os.path.getmtime)
    agg = split(dumps[-1])
    per = {k: v / n for k, v in agg.items()}
    print(
        f"instructions variant={name} workload={kind} requests={n} total={sum(per.values()):.0f} "
        + " ".join(f"{k}={per.get(k, 0):.0f}" for k in ("envoy", "v8", "wasm", "module", "libc")),
        flush=True,
    )
