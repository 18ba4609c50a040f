#!/usr/bin/env python3
"""Durable ingestion on the NATS JetStream backend, next to the local log and to a plain
JetStream publisher, in one run on one nats-server.

usage: python3 benches/nats/run.py [rounds] [seconds] [--connections N] [--keep]

Needs wrk (apt-get install -y wrk), the nats-server at target/nats-venv/bin/nats-server (or
$NATS_SERVER) and two release binaries, which this script does not build:

    CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --bin eventyard --example nats_publisher

(the env var matches the profile the other benchmarks' builds used, so the release
dependencies are reused instead of rebuilt; it also gives perf line tables).

Starts nats-server (-js, file storage in a temp dir, a free port) and five routers, all with
no plugins and no routes (ingestion only: every event is accepted, stored and finished):
  L    the local log (the default store, group commit: fdatasync before each 202)
  Loff the local log with durability = "off" (written, never synced): nats-server's
       JetStream file store acks after its write and syncs every 2 minutes by default
       (sync_interval), so this is the like-for-like local row
  N1   store.backend = "nats", stream EYB / prefix eyb, one instance
  N2a, N2b  two instances on stream EYC / prefix eyc (the same nats-server)
and, per round, back to back (each measurement starts from an empty stream and an idle
nats-server: a purge leaves it deleting blocks for a while):
  L-single, L-ndjson       wrk -t1 -cC on L (one event per POST / NDJSON batches of 100)
  Loff-single, Loff-ndjson the same on Loff
  N1-single, N1-ndjson     the same on N1
  N2-single, N2-ndjson     two wrk processes at once, -t1 -c(C/2) each, on N2a and N2b
  P-single, P-batch        target/release/examples/nats_publisher -c C: C publishers on one
                           connection, each awaiting its PubAck before the next (single), or
                           publishing 100 and then awaiting all 100 acks (batch)
  P-listen                 diagnostic: P-single plus what each router did on its connection
                           before no_echo (41dee64): a subscription to every event, its own
                           delivered back to it (`--listen`)
Each publisher row is measured right between the two router rows compared with it (N1-single,
P-single, N2-single; then N1-ndjson, P-batch, N2-ndjson), those three in the opposite order
every other round: on these shared cores the whole machine runs fast or slow for tens of
seconds at a time, and a publisher measured a minute after its router rows was part of why the
per-round ratios swung by a third (sessions 7-12; the router's own slow mode is the rest).
The body is benches/http/end_to_end.py's `infrahub/send.echo.request` event. Events/s of a
router = its eventyard_events_accepted_total delta / wrk's duration. Also shown: CPU per
event of the router(s), of nats-server and of the load generator (wrk or the publisher).
Prints medians over the rounds, the ratios N / P (target: N1 >= 50% of P) as the median of
the rounds' paired ratios and as the ratio of the medians, and N / L.
Raw results: target/bench-nats/results.json."""
import argparse, json, os, pathlib, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from machine import children_cpu, measured, cpu_s, free_port, machine_busy, wait_port, wait_quiet  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
EY = os.environ.get("EVENTYARD", str(REPO / "target" / "release" / "eventyard"))
PUBLISHER = os.environ.get("NATS_PUBLISHER", str(REPO / "target" / "release" / "examples" / "nats_publisher"))
NATS_SERVER = os.environ.get("NATS_SERVER", str(REPO / "target" / "nats-venv" / "bin" / "nats-server"))
OUT = REPO / "target" / "bench-nats"

cli = argparse.ArgumentParser(description="NATS backend ingestion next to the local log and a plain publisher")
cli.add_argument("rounds", nargs="?", type=int, default=3)
cli.add_argument("seconds", nargs="?", type=int, default=5)
cli.add_argument("--connections", type=int, default=64, help="wrk connections / concurrent publishers (default 64)")
cli.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs, nats-server's store)")
ARGS = cli.parse_args()
ROUNDS, DUR, CONNS = ARGS.rounds, ARGS.seconds, ARGS.connections
TYPE = "infrahub/send.echo.request"
# The machine is shared (other builds and tests come and go): a measurement during which
# processes not ours used more than NOISY cores is taken again, up to RETRIES times.
NOISY, RETRIES = 0.15, 3
BATCH_SIZE = 100

# The body of benches/http/end_to_end.py (schemas/source/infrahub.md, "Send Echo").
BODY = {"meta": {"request_id": "01HZX3K9V7Q2M8N4P6R5T0W1YA", "correlation_id": "c0a8-77f1", "priority": 5},
        "message": "ping from the end-to-end benchmark"}
LUA_SINGLE = """-- wrk script: POST one JSON event (BODY=file).
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
"""


class Nats:
    """The smallest NATS client (stdlib sockets) for the script's JetStream API requests: a
    connection per request (one kept open would go stale while the script waits)."""

    def __init__(self, port):
        self.port = port

    def request(self, subject, payload=b""):
        with socket.create_connection(("127.0.0.1", self.port), 5) as sock:
            buf = b""

            def line():
                nonlocal buf
                while b"\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise RuntimeError("nats-server closed the connection")
                    buf += chunk
                first, buf = buf.split(b"\r\n", 1)
                return first.decode()

            line()  # INFO
            sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.bench 1\r\n'
                         + f"PUB {subject} _INBOX.bench {len(payload)}\r\n".encode() + payload + b"\r\n")
            while True:
                op = line()
                if op.startswith("PING"):
                    sock.sendall(b"PONG\r\n")
                elif op.startswith("MSG"):
                    n = int(op.split()[-1])
                    while len(buf) < n + 2:
                        buf += sock.recv(65536)
                    return json.loads(buf[:n])
                elif op.startswith("-ERR"):
                    raise RuntimeError(op)

    def purge(self, stream):
        r = self.request(f"$JS.API.STREAM.PURGE.{stream}")
        if not r.get("success") and r.get("error", {}).get("err_code") != 10059:  # 10059: no such stream yet
            raise RuntimeError(f"purge {stream}: {r}")

    def state(self, stream):
        return self.request(f"$JS.API.STREAM.INFO.{stream}")["state"]


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    m = re.search(r"^eventyard_events_accepted_total (\d+)$", text, re.M)
    return int(m.group(1)) if m else 0


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def parse_wrk(out):
    r = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
         "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", out).group(1)),
         "requests": int(re.search(r"(\d+) requests in", out).group(1)),
         "wrk_s": to_ms(re.search(r"requests in ([\d.]+\w+),", out).group(1)) / 1000}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


# Router rows and the publisher row each is compared with (the target: N1 >= 50% of P).
PAIRS = (("N1-single", "P-single"), ("N1-ndjson", "P-batch"), ("N2-single", "P-single"), ("N2-ndjson", "P-batch"))


def round_order(plan, rnd):
    """The plan of round `rnd`: the local rows, then each publisher row between the two
    router rows it is compared with, those triples turned round every other round, so that
    neither side of a pair is always measured first (a drift of the machine's speed within a
    round then favours each side in turn)."""
    local = [step for step in plan if step[0].startswith("L")]
    paired = [step for step in plan if not step[0].startswith("L") and step[0] != "P-listen"]
    triples = [paired[i:i + 3] for i in range(0, len(paired), 3)]
    if rnd % 2:
        triples = [t[::-1] for t in triples]
    return local + [step for t in triples for step in t] + [step for step in plan if step[0] == "P-listen"]


def main():
    for path in (EY, PUBLISHER, NATS_SERVER):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --bin eventyard --example nats_publisher")
    if not shutil.which("wrk"):
        sys.exit("missing wrk: apt-get install -y wrk")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="eventyard-bench-nats-"))
    body, batch, lua = tmp / "echo.json", tmp / "echo.ndjson", tmp / "post.lua"
    body.write_text(json.dumps(BODY, separators=(",", ":")))
    batch.write_text("\n".join(json.dumps({"type": TYPE, "data": BODY}, separators=(",", ":")) for _ in range(BATCH_SIZE)) + "\n")
    lua.write_text(LUA_SINGLE)

    nats_port = free_port()
    url = f"nats://127.0.0.1:{nats_port}"
    procs = {}
    (tmp / "nats").mkdir()
    procs["nats"] = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", str(tmp / "nats")],
                                     stdout=open(tmp / "nats-server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(nats_port)

    def config(name, stream=None, durability="group"):
        text = f'data_dir = "{tmp / name}"\n[store]\n'
        if not stream:
            text += f'durability = "{durability}"\n'
        else:
            text += f'backend = "nats"\n[store.nats]\nurls = ["{url}"]\nstream = "{stream}"\nsubject_prefix = "{stream.lower()}"\n'
        path = tmp / f"{name}.toml"
        path.write_text(text)
        return path

    routers = {"L": None, "Loff": None, "N1": "EYB", "N2a": "EYC", "N2b": "EYC"}
    ports = {}
    results = []
    try:
        for name, stream in routers.items():
            ports[name] = free_port()
            (tmp / name).mkdir()
            procs[name] = subprocess.Popen([EY, "serve", "--listen", f"127.0.0.1:{ports[name]}", "--config", str(config(name, stream, "off" if name == "Loff" else "group"))],
                                           cwd=tmp / name, stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT,
                                           start_new_session=True)
            wait_port(ports[name])
        js = Nats(nats_port)
        # CPU seconds of everything this script runs (servers, and wrk / the publisher once reaped).
        ours = lambda: sum(cpu_s(p.pid) for p in procs.values()) + children_cpu() + sum(os.times()[:2])
        servers = lambda: sum(cpu_s(p.pid) for p in procs.values())

        def wrk_cmd(port, mode, conns, dur):
            if mode == "single":
                path, script, env = f"/v1/events/{TYPE}", str(lua), {"BODY": str(body)}
            else:
                path, script, env = "/v1/events", str(HERE.parent / "http" / "post_ndjson.lua"), {"BATCH": str(batch)}
            return (["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "--latency", "-s", script, f"http://127.0.0.1:{port}{path}"],
                    dict(os.environ, **env))

        def routers_run(label, names, mode, dur, stream):
            """wrk on each of `names` at once (connections shared out); accepted events / wrk's time."""
            if stream:
                js.purge(stream)
            waited = wait_quiet(ours, settle=servers)
            before = {n: metrics(ports[n]) for n in names}
            cpu0 = {n: cpu_s(procs[n].pid) for n in names + ["nats"]}
            all0, ours0, t0 = machine_busy(), ours(), time.time()
            gen0 = children_cpu()
            runs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for cmd, env in (wrk_cmd(ports[n], mode, CONNS // len(names), dur) for n in names)]
            outs = [p.communicate()[0] for p in runs]
            gen = children_cpu() - gen0
            other = (machine_busy() - all0 - (ours() - ours0)) / (time.time() - t0)
            cpu = {n: cpu_s(procs[n].pid) - cpu0[n] for n in cpu0}
            ws = [parse_wrk(o) for o in outs]
            accepted = sum(metrics(ports[n]) - before[n] for n in names)
            wall = max(w["wrk_s"] for w in ws)
            res = {"label": label, "events": accepted, "eps": accepted / wall, "p99_ms": max(w["p99_ms"] for w in ws),
                   "non2xx": sum(w["non2xx"] for w in ws),
                   "router_us": sum(cpu[n] for n in names) * 1e6 / max(1, accepted),
                   "nats_us": cpu["nats"] * 1e6 / max(1, accepted), "loadgen_us": gen * 1e6 / max(1, accepted),
                   "other_cores": other, "waited_s": waited}
            if stream:
                res["stored"] = js.state(stream)["messages"]
            return res

        def publisher_run(label, mode, dur, warmup=1.0, extra=()):
            js.purge("PLAIN")
            waited = wait_quiet(ours, settle=servers)
            cpu0 = cpu_s(procs["nats"].pid)
            all0, ours0, t0 = machine_busy(), ours(), time.time()
            gen0 = children_cpu()
            cmd = [PUBLISHER, "--url", url, "--stream", "PLAIN", "--prefix", "plain", "-c", str(CONNS), "-d", str(dur),
                   "--warmup", str(warmup), "--batch", "1" if mode == "single" else str(BATCH_SIZE), "--label", label, *extra]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"nats_publisher: {p.stderr}")
            gen = children_cpu() - gen0
            other = (machine_busy() - all0 - (ours() - ours0)) / (time.time() - t0)
            out = json.loads(p.stdout.strip().splitlines()[-1])
            n = max(1, out["events"])
            # The publisher's CPU includes its warm-up second: scale to the measured share.
            share = out["seconds"] / (out["seconds"] + warmup)
            return {"label": label, "events": out["events"], "eps": out["events_per_s"], "p99_ms": out["p99_ms"],
                    "non2xx": out["errors"], "router_us": 0.0,
                    "nats_us": (cpu_s(procs["nats"].pid) - cpu0) * share * 1e6 / n, "loadgen_us": gen * share * 1e6 / n,
                    "payload_bytes": out["payload_bytes"], "stored": js.state("PLAIN")["messages"],
                    "other_cores": other, "waited_s": waited}

        plan = [("L-single", lambda d: routers_run("L-single", ["L"], "single", d, None)),
                ("L-ndjson", lambda d: routers_run("L-ndjson", ["L"], "ndjson", d, None)),
                ("Loff-single", lambda d: routers_run("Loff-single", ["Loff"], "single", d, None)),
                ("Loff-ndjson", lambda d: routers_run("Loff-ndjson", ["Loff"], "ndjson", d, None)),
                # Each publisher row between the two router rows it is compared with (see PAIRS).
                ("N1-single", lambda d: routers_run("N1-single", ["N1"], "single", d, "EYB")),
                ("P-single", lambda d: publisher_run("P-single", "single", d)),
                ("N2-single", lambda d: routers_run("N2-single", ["N2a", "N2b"], "single", d, "EYC")),
                ("N1-ndjson", lambda d: routers_run("N1-ndjson", ["N1"], "ndjson", d, "EYB")),
                ("P-batch", lambda d: publisher_run("P-batch", "batch", d)),
                ("N2-ndjson", lambda d: routers_run("N2-ndjson", ["N2a", "N2b"], "ndjson", d, "EYC")),
                # Diagnostic: the publisher also subscribed to every event, as each router is.
                ("P-listen", lambda d: publisher_run("P-listen", "single", d, extra=["--listen"]))]
        print(f"warm-up (2 s each); then {ROUNDS} rounds of {DUR} s, {CONNS} connections; temp dir {tmp}", flush=True)
        for label, run in plan:
            if not label.startswith("P-"):
                run(2)
        for rnd in range(ROUNDS):
            for label, run in round_order(plan, rnd):
                results.append(measured(run, DUR, NOISY, RETRIES, round=rnd))
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        if not ARGS.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    med = lambda label, key="eps": statistics.median(r[key] for r in results if r["label"] == label)
    print(f"\n{'label':11} {'events/s':>10} {'min':>9} {'max':>9} {'p99 ms':>7} {'router':>7} {'nats':>6} {'loadgen':>7} {'other':>6}"
          f"   (medians of {ROUNDS} x {DUR} s; CPU us per event; other: cores busy with what is not ours)")
    for label, _ in plan:
        eps = [r["eps"] for r in results if r["label"] == label]
        print(f"{label:11} {med(label):10,.0f} {min(eps):9,.0f} {max(eps):9,.0f} {med(label, 'p99_ms'):7.2f} "
              f"{med(label, 'router_us'):7.2f} {med(label, 'nats_us'):6.2f} {med(label, 'loadgen_us'):7.2f} {med(label, 'other_cores'):6.2f}")
    print()
    for n, p in PAIRS:
        # And per round, each against the publisher measured next to it: on these shared cores
        # the machine is fast or slow for tens of seconds at a time, so the median of these
        # paired ratios is the steadier figure, and their spread says how near the edge it is.
        of = lambda label: {r["round"]: r["eps"] for r in results if r["label"] == label}
        paired = [of(n)[k] / of(p)[k] for k in sorted(of(n)) if k in of(p)]
        rounds = ", ".join(f"{r:.0%}" for r in paired)
        print(f"{n} / {p} = {statistics.median(paired):.0%} paired   {med(n) / med(p):.0%} of the medians   (per round: {rounds})")
    for n in ("N1-single", "N1-ndjson", "N2-single", "N2-ndjson"):
        mode = n.split("-")[1]
        print(f"{n} / L-{mode} = {med(n) / med('L-' + mode):.0%}   {n} / Loff-{mode} = {med(n) / med('Loff-' + mode):.0%}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
