#!/usr/bin/env python3
"""End to end: events through the bundled echo handler, next to the same events on a router
with no routes, in the same run.

usage: python3 benches/http/end_to_end.py [rounds] [seconds] [--pinned]

Starts two release routers (target/release/eventyard), both with the event log on (group
commit, the default):
  R  `eventyard serve` with no --config: the embedded default config, whose `echo` route
     sends every infrahub/send.echo.request through the bundled echo handler (one Wasm
     call, one emitted infrahub/response/send.echo.request, validated and routed);
  N  the same binary with benches/http/ingest.toml: no plugins, no routes (ingestion only).
and drives each with wrk (-t1 -c64, unpinned unless --pinned: wrk on core 0, routers on
core 1), per round:
  N-single / R-single   POST /v1/events/infrahub/send.echo.request, one event (echo.json)
  N-ndjson / R-ndjson   POST /v1/events, NDJSON batches of 100 such events
For N the rate is accepted events / wrk's duration. For R it is end to end: wrk runs,
then /metrics is polled until every event accepted (eventyard_events_accepted_total)
has been handled (eventyard_events_emitted_total, one echo response each); the rate is
accepted events / (wrk start .. all handled), the lag is wrk's end .. all handled. R's
ingestion rate (accepted / wrk's duration), 503s and events refused as `overloaded` (the
queue stayed full past pipeline.queue_wait_ms; an NDJSON request answers these per line, so
wrk does not count them as errors) are shown too.
Each row also shows the router's CPU per event, in all and by thread group (the plugin
workers, the HTTP runtime that parses, validates and appends, the log writer and its syncers).
Prints medians over the rounds and the ratios R/N. The routers' logs are kept in
/tmp/eventyard-bench-e2e/{R,N}.log; should accepted events stay unhandled for 120 s, the run
stops and leaves there the router's full /metrics and every thread's stack (gdb). $ROWS (e.g. ROWS=R-ndjson) measures only the rows named; $R_CONFIG gives R
a config file instead of the embedded default; $EVENTYARD another build. Needs wrk (apt-get install -y wrk) and
`cargo build --release`."""
import json, os, pathlib, re, shutil, signal, statistics, subprocess, sys, time, urllib.request

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
PEERS = REPO.parent / "shared" / "bench" / "peers"
sys.path.insert(0, str(PEERS))
import bench  # noqa: E402  (the peers' helpers: wait_port, cpu_times, busy, to_ms)
sys.path.insert(0, str(HERE.parent))
from machine import cpu_s, threads_cpu  # noqa: E402

args = [a for a in sys.argv[1:] if not a.startswith("--")]
PINNED = "--pinned" in sys.argv
ROUNDS = int(args[0]) if len(args) > 0 else 3
DUR = int(args[1]) if len(args) > 1 else 10
TYPE = "infrahub/send.echo.request"
BATCH_SIZE = 100
WORK = pathlib.Path("/tmp/eventyard-bench-e2e")
EY = os.environ.get("EVENTYARD", str(REPO / "target" / "release" / "eventyard"))  # another build to compare

# The body per the event table (schemas/source/infrahub.md, "Send Echo"): meta and message.
BODY = HERE / "echo.json"
body = {"meta": {"request_id": "01HZX3K9V7Q2M8N4P6R5T0W1YA", "correlation_id": "c0a8-77f1", "priority": 5},
        "message": "ping from the end-to-end benchmark"}
BODY.write_text(json.dumps(body, separators=(",", ":")))
BATCH = HERE / "echo.ndjson"
BATCH.write_text("\n".join(json.dumps({"type": TYPE, "data": body}, separators=(",", ":")) for _ in range(BATCH_SIZE)) + "\n")

SERVERS = {  # name: (port, argv, cwd); the default config keeps its data in <cwd>/eventyard-data
    "R": (3030, [EY, "serve", "--listen", "127.0.0.1:3030"] + (["--config", os.environ["R_CONFIG"]] if os.environ.get("R_CONFIG") else []), WORK / "routed"),
    "N": (3031, [EY, "serve", "--listen", "127.0.0.1:3031", "--config", str(HERE / "ingest.toml")], REPO),
}
ROUND = [("N-single", "N", "single"), ("R-single", "R", "single"), ("N-ndjson", "N", "ndjson"), ("R-ndjson", "R", "ndjson")]
ROUND = [r for r in ROUND if r[0] in os.environ.get("ROWS", ",".join(r[0] for r in ROUND)).split(",")]


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for name in ("eventyard_events_accepted_total", "eventyard_events_emitted_total", "eventyard_events_routed_total",
                 "eventyard_events_dead_lettered_total"):
        m = re.search(rf"^{name} (\d+)$", text, re.M)
        out[name.removeprefix("eventyard_events_").removesuffix("_total")] = int(m.group(1)) if m else 0
    m = re.search(r'^eventyard_plugin_calls_total\{plugin="echo"\} (\d+)$', text, re.M)
    out["echo_calls"] = int(m.group(1)) if m else 0
    # Lines of NDJSON batches refused (queue full): answered 2xx per request, so wrk's non-2xx
    # count does not show them.
    m = re.search(r'^eventyard_events_rejected_total\{error="overloaded"\} (\d+)$', text, re.M)
    out["overloaded"] = int(m.group(1)) if m else 0
    return out


def handled(m):
    """Accepted events that are finished: each echo request emits one response."""
    return m["emitted"] + m["dead_lettered"]


def stalled(port, pid, what):
    """Keeps what explains a stall in WORK (the full /metrics, every thread's stack) and fails."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    (WORK / f"stall-{port}-metrics.txt").write_text(text)
    panics = re.findall(r"^eventyard_worker_panics_total.*$", text, re.M)
    if shutil.which("gdb"):
        with open(WORK / f"stall-{port}-threads.txt", "w") as out:
            subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt 20"], stdout=out,
                           stderr=subprocess.STDOUT, timeout=120)
    raise RuntimeError(f"port {port}: {what}; worker panics {panics}; metrics, stacks and logs in {WORK}")


def wait_idle(port, pid, timeout=120):
    """Until everything accepted is handled (between measurements); the time it took."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        m = metrics(port)
        if handled(m) >= m["accepted"]:
            return time.time() - t0
        time.sleep(0.005)
    stalled(port, pid, f"not idle after {timeout}s: {m}")


def wrk(port, mode, dur):
    if mode == "single":
        path, script, env = f"/v1/events/{TYPE}", str(PEERS / "post.lua"), {"BODY": str(BODY)}
    else:
        path, script, env = "/v1/events", str(HERE / "post_ndjson.lua"), {"BATCH": str(BATCH)}
    cmd = (["taskset", "-c", "0"] if PINNED else []) + ["wrk", "-t1", "-c64", f"-d{dur}s", "--latency", "-s", script,
                                                        f"http://127.0.0.1:{port}{path}"]
    t0 = time.time()
    cpu0 = bench.cpu_times()
    out = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True).stdout
    cpu1 = bench.cpu_times()
    r = {"start": t0, "end": time.time(), "cpu_busy": bench.busy(cpu0, cpu1)}
    r["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    r["p99_ms"] = bench.to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    r["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    return r


def measure(label, name, mode, dur, pid):
    port = SERVERS[name][0]
    before = metrics(port)
    cpu0, threads0 = cpu_s(pid), threads_cpu(pid)
    r = wrk(port, mode, dur)
    accepted = metrics(port)["accepted"] - before["accepted"]
    wall = r["end"] - r["start"]
    after = metrics(port)
    refused = after["overloaded"] - before["overloaded"]
    res = {"label": label, "accepted": accepted, "ingest_eps": accepted / wall, "rps": r["rps"], "p99_ms": r["p99_ms"],
           "non2xx_frac": round(r["non2xx"] / max(1, r["requests"]), 3), "cpu_busy": r["cpu_busy"],
           "refused_frac": round(refused / max(1, accepted + refused), 3)}
    if name == "R":
        while True:
            m = metrics(port)
            if handled(m) - handled(before) >= accepted:
                break
            if time.time() - r["end"] > 120:
                stalled(port, pid, f"{accepted - (handled(m) - handled(before))} events unhandled 120 s after wrk: {m}")
            time.sleep(0.002)
        done = time.time()
        res["lag_s"] = done - r["end"]
        res["e2e_eps"] = accepted / (done - r["start"])
        res["echo_calls"] = m["echo_calls"] - before["echo_calls"]
        res["dead_lettered"] = m["dead_lettered"] - before["dead_lettered"]
    else:
        res["e2e_eps"] = res["ingest_eps"]
    # The router's own CPU per event (wrk's not counted): less moved by other load than rates.
    res["cpu_us_per_event"] = (cpu_s(pid) - cpu0) * 1e6 / max(1, accepted)
    # ...and by side: plugin workers, the HTTP runtime (parse, validate, append), the log.
    threads1 = threads_cpu(pid)
    for group in ("workers", "http", "log"):
        res[f"{group}_us"] = (threads1.get(group, 0) - threads0.get(group, 0)) * 1e6 / max(1, accepted)
    print(json.dumps({k: (round(v) if isinstance(v, float) and v > 100 else round(v, 3) if isinstance(v, float) else v)
                      for k, v in res.items()}), flush=True)
    return res


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.rmtree("/tmp/eventyard-bench/group", ignore_errors=True)  # ingest.toml's data_dir
    (WORK / "routed").mkdir(parents=True)
    procs = {}
    try:
        for name, (port, argv, cwd) in SERVERS.items():
            cmd = (["taskset", "-c", "1"] if PINNED else []) + argv
            # Logs kept: they and stall() explain a row that never finishes.
            log = open(WORK / f"{name}.log", "w")
            procs[name] = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            bench.wait_port(port)
        for name, (port, _, _) in SERVERS.items():  # warm-up: connections, allocator, warm instances
            for mode in ("single", "ndjson"):
                wrk(port, mode, 2)
            if name == "R":
                wait_idle(port, procs[name].pid)
        results = []
        for rnd in range(ROUNDS):
            for label, name, mode in ROUND:
                results.append(measure(label, name, mode, DUR, procs[name].pid) | {"round": rnd})
                if name == "R":
                    wait_idle(SERVERS[name][0], procs[name].pid)
    finally:
        for p in procs.values():
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs.values():
            p.wait(10)
    med = lambda label, key: statistics.median(r[key] for r in results if r["label"] == label and key in r)
    print(f"\n{'label':10} {'events/s':>10} {'ingest/s':>10} {'lag s':>6} {'p99 ms':>7} {'non2xx':>7} {'refused':>7} {'cpu us/ev':>9} {'workers':>7} {'http':>6} {'log':>6}   (medians of {ROUNDS}; the last three: us/event by thread group)")
    for label, name, _ in ROUND:
        lag = f"{med(label, 'lag_s'):6.2f}" if name == "R" else f"{'':6}"
        print(f"{label:10} {med(label, 'e2e_eps'):10,.0f} {med(label, 'ingest_eps'):10,.0f} {lag} "
              f"{med(label, 'p99_ms'):7.2f} {med(label, 'non2xx_frac'):7.3f} {med(label, 'refused_frac'):7.3f} "
              f"{med(label, 'cpu_us_per_event'):9.2f} {med(label, 'workers_us'):7.2f} {med(label, 'http_us'):6.2f} "
              f"{med(label, 'log_us'):6.2f}")
    labels = {label for label, _, _ in ROUND}
    for mode in ("single", "ndjson"):
        if not {f"R-{mode}", f"N-{mode}"} <= labels:
            continue
        print(f"end to end / no route, {mode}: {med(f'R-{mode}', 'e2e_eps') / med(f'N-{mode}', 'e2e_eps'):.0%}")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "end_to_end.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
