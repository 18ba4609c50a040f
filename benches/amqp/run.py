#!/usr/bin/env python3
"""Messages/s from a RabbitMQ queue into durable events (the router's `[[sources.amqp]]`),
next to a plain consumer on the same queue, in one run on one private broker (issue 14).

usage: python3 benches/amqp/run.py [rounds] [--messages N] [--prefetch P] [--perf] [--keep]

Needs Debian's rabbitmq-server (`bash tests/run.sh` installs it; the scripts in
/usr/lib/rabbitmq/bin) and two release binaries, which this script does not build:

    CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --bin eventyard --example amqp_bench

(the env var matches the profile the other benchmarks' builds used, so the release
dependencies are reused instead of rebuilt; it also gives perf line tables).

Starts a private broker the way tests/support/rabbitmq.rs does (every path and port in the
environment, a temp dir, its own epmd, free ports; killed at the end, also on errors and
Ctrl-C). One durable classic queue `bench`, bound to the topic exchange `bench.events` with
`send.*.*`. Each measurement drains N messages from it, every one persistent, with its own
`message_id` (a UUIDv7) and routing key `send.echo.request`, the body of
benches/http/end_to_end.py's `infrahub/send.echo.request` event, published beforehand with
publisher confirms by `amqp_bench publish`. Per round, back to back on the same queue:
  P       the plain consumer, `amqp_bench consume`: basic_consume with manual acks, prefetch P,
          each delivery acked (the ack awaited) before the next, no other work
  P-conc  the same acking up to 64 deliveries at once, as the router's source takes them
  L       `eventyard serve` with one `[[sources.amqp]]` on the queue (type_from = "fixed",
          type = "infrahub/send.echo.request", declare = false, the same prefetch), no
          plugins, no routes, the default store (group commit: each message acked once its
          event is fsynced in the log)
  Loff    the same with [store] durability = "off" (written, never synced)
Fair start for both kinds: the consumer (a fresh process each time: a router with a fresh
data dir, or amqp_bench) connects to the empty queue and starts consuming; the script then
stops it (SIGSTOP), fills the queue with N messages, waits until the broker is idle and the
machine quiet, and lets it go on (SIGCONT). So start-up and the publishing are outside the
measurement, and both begin with the same prefetch window already in their socket.
Messages/s: for P, N / (its first delivery .. its N-th ack), timed by the consumer itself;
for L, N / (SIGCONT .. eventyard_amqp_accepted_total{source="bench"} = N), polled on
/metrics every 10 ms. Also shown: CPU per message of the router (or the plain consumer) and
of the broker over the same interval. A measurement during which processes not ours used
more than 0.15 cores is taken again (up to 3 times). Prints medians over the rounds and the
ratios L / P (target: L >= 50% of the plain consumer, the faster of P and P-conc).
`--perf` adds one more L drain with `perf record --call-graph dwarf` attached to the router
(target/bench-amqp/perf-L.data; not in the table). Raw results: target/bench-amqp/results.json."""
import argparse, json, os, pathlib, re, shutil, signal, statistics, subprocess, sys, tempfile, time, urllib.request
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from machine import children_cpu, measured, cpu_s, free_port, machine_busy, stat_cpu, stat_fields, wait_port, wait_quiet  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
EY = os.environ.get("EVENTYARD", str(REPO / "target" / "release" / "eventyard"))
BENCH = os.environ.get("AMQP_BENCH", str(REPO / "target" / "release" / "examples" / "amqp_bench"))
SBIN = pathlib.Path("/usr/lib/rabbitmq/bin")
OUT = REPO / "target" / "bench-amqp"

cli = argparse.ArgumentParser(description="AMQP source ingestion next to a plain consumer on the same queue")
cli.add_argument("rounds", nargs="?", type=int, default=3)
cli.add_argument("--messages", type=int, default=50_000, help="messages drained per measurement (default 50000)")
cli.add_argument("--prefetch", type=int, default=64, help="basic_qos prefetch of every consumer (default 64, the source's default)")
cli.add_argument("--perf", action="store_true", help="one more L drain under perf record (target/bench-amqp/perf-L.data)")
cli.add_argument("--keep", action="store_true", help="keep the temp dir (broker logs, router logs and configs)")
ARGS = cli.parse_args()
ROUNDS, N, PREFETCH = ARGS.rounds, ARGS.messages, ARGS.prefetch
QUEUE, EXCHANGE, SOURCE = "bench", "bench.events", "bench"
TYPE = "infrahub/send.echo.request"
# The machine is shared (other builds and tests come and go): a measurement during which
# processes not ours used more than NOISY cores is taken again, up to RETRIES times.
NOISY, RETRIES = 0.15, 3
POLL = 0.01


def session_cpu(sids):
    """CPU seconds used so far by the live processes of each session in `sids` (user + system,
    all threads): a server with its helpers (beam.smp, erl_child_setup, inet_gethost)."""
    out = dict.fromkeys(sids, 0.0)
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = stat_fields(open(f"/proc/{d}/stat").read())
        except OSError:
            continue
        sid = int(f[3])
        if sid in out:
            out[sid] += stat_cpu(f)
    return out


class Broker:
    """A private rabbitmq-server: its own dirs, cookie (HOME), epmd and free ports."""

    def __init__(self, tmp):
        self.dir = tmp / "rabbit"
        self.port, self.dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.node = f"eyb_{self.port}@localhost"
        for d in ("home", "mnesia", "log"):
            (self.dir / d).mkdir(parents=True)
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "enabled_plugins").write_text("[].")
        (self.dir / "advanced.config").write_text("[].")
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        p = lambda s: str(self.dir / s)
        self.env = dict(os.environ, HOME=p("home"), RABBITMQ_CONF_ENV_FILE=p("rabbitmq-env.conf"),
                        RABBITMQ_CONFIG_FILE=p("rabbitmq"), RABBITMQ_ADVANCED_CONFIG_FILE=p("advanced.config"),
                        RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_NODE_PORT=str(self.port), RABBITMQ_DIST_PORT=str(self.dist_port),
                        ERL_EPMD_PORT=str(self.epmd_port), ERL_EPMD_ADDRESS="127.0.0.1",
                        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
                        RABBITMQ_MNESIA_BASE=p("mnesia"), RABBITMQ_LOG_BASE=p("log"), RABBITMQ_PID_FILE=p("rabbit.pid"),
                        RABBITMQ_ENABLED_PLUGINS_FILE=p("enabled_plugins"), RABBITMQ_FEATURE_FLAGS_FILE=p("feature_flags"),
                        RABBITMQ_PLUGINS_EXPAND_DIR=p("plugins-expand"), RABBITMQ_QUORUM_DIR=p("quorum"),
                        RABBITMQ_STREAM_DIR=p("stream"))
        self.procs = []

    def start(self):
        if not (SBIN / "rabbitmq-server").exists():
            sys.exit("rabbitmq-server is missing: bash tests/run.sh installs Debian's rabbitmq-server")
        self.procs.append(subprocess.Popen(["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        self.server = subprocess.Popen([str(SBIN / "rabbitmq-server")], env=self.env, stdout=open(self.dir / "server.out", "w"),
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(self.server)
        waited = subprocess.run([str(SBIN / "rabbitmqctl"), "-q", "-n", self.node, "wait", str(self.dir / "rabbit.pid"),
                                 "--timeout", "120"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if waited.returncode != 0:
            raise RuntimeError(f"rabbitmq-server did not start; its log: {self.dir / 'log'}")
        wait_port(self.port)
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2f"

    def stop(self):
        try:
            os.kill(int((self.dir / "rabbit.pid").read_text().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    get = lambda series: int(float(m.group(1))) if (m := re.search(rf'^{series}{{source="{SOURCE}"}} (\S+)$', text, re.M)) else 0
    return {k: get(f"eventyard_amqp_{k}") for k in ("connected", "messages_total", "accepted_total", "rejected_total", "handed_back_total")}


def main():
    for path in (EY, BENCH):
        if not os.access(path, os.X_OK):
            sys.exit(f"missing {path}: CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --bin eventyard --example amqp_bench")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="eventyard-bench-amqp-"))
    broker = Broker(tmp)
    live = {}  # label -> Popen of what runs now besides the broker (a router, the plain consumer)
    results = []

    def bench(*args, **kw):
        return subprocess.run([BENCH, *args, "--url", broker.url, "--queue", QUEUE], capture_output=True, text=True, **kw)

    try:
        print(f"starting rabbitmq-server in {tmp / 'rabbit'} ...", flush=True)
        broker.start()
        sids = lambda: [p.pid for p in broker.procs] + [p.pid for p in live.values()]
        # CPU seconds of everything this script runs (broker, router; publisher and consumer once reaped).
        ours = lambda: sum(session_cpu(sids()).values()) + children_cpu() + sum(os.times()[:2])
        broker_cpu = lambda: sum(session_cpu([p.pid for p in broker.procs]).values())

        def settle(limit=0.05, max_wait=30):
            """Until the broker is idle (below `limit` of a core over half a second)."""
            end = time.time() + max_wait
            while time.time() < end:
                c = broker_cpu()
                time.sleep(0.5)
                if broker_cpu() - c < limit * 0.5:
                    return

        def preload(n):
            p = bench("publish", "--exchange", EXCHANGE, "--count", str(n))
            if p.returncode != 0:
                raise RuntimeError(f"amqp_bench publish: {p.stderr}")
            return json.loads(p.stdout.strip().splitlines()[-1])

        def window(pause, run, n):
            """Fills the queue while the consumer `pause` is stopped, then times `run`, which
            lets it go on and returns when it has taken n messages."""
            os.kill(pause, signal.SIGSTOP)
            pub = preload(n)
            settle()
            # Not too long: the stopped consumer sends no heartbeats meanwhile.
            waited = wait_quiet(ours, max_wait=45)
            b0, all0, ours0, t0 = broker_cpu(), machine_busy(), ours(), time.time()
            os.kill(pause, signal.SIGCONT)
            out = run(t0)
            wall = time.time() - t0
            other = (machine_busy() - all0 - (ours() - ours0)) / wall
            return out, {"t0": t0, "broker_us": (broker_cpu() - b0) * 1e6 / n, "other_cores": other, "waited_s": waited,
                         "window_s": wall, "preload_msgs_per_s": pub["msgs_per_s"]}

        def plain_run(label, n, concurrency):
            p = subprocess.Popen([BENCH, "consume", "--url", broker.url, "--queue", QUEUE, "--count", str(n),
                                  "--prefetch", str(PREFETCH), "--concurrency", str(concurrency)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            live[label] = p
            try:
                if '"ready"' not in p.stdout.readline():
                    raise RuntimeError(f"amqp_bench consume: {p.stderr.read()}")

                def run(t0):
                    out, err = p.communicate(timeout=600)
                    if p.returncode != 0:
                        raise RuntimeError(f"amqp_bench consume: {err}")
                    return json.loads(out.strip().splitlines()[-1])

                out, res = window(p.pid, run, n)
                res.pop("t0")
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
                del live[label]
            return {"label": label, "messages": out["acked"], "msgs_per_s": out["msgs_per_s"], "seconds": out["seconds"],
                    "consumer_us": out["cpu_us_per_msg"], **res}

        def router_run(label, n, durability, perf=None):
            name = f"{label}-{len(results)}-{time.time_ns()}"
            data = tmp / name
            data.mkdir()
            cfg = tmp / f"{name}.toml"
            cfg.write_text(f'data_dir = "{data}"\n[store]\ndurability = "{durability}"\n\n'
                           f'[[sources.amqp]]\nname = "{SOURCE}"\nurl = "{broker.url}"\nqueue = "{QUEUE}"\ndeclare = false\n'
                           f'prefetch = {PREFETCH}\ntype_from = "fixed"\ntype = "{TYPE}"\n')
            port = free_port()
            r = subprocess.Popen([EY, "serve", "--listen", f"127.0.0.1:{port}", "--config", str(cfg)], cwd=data,
                                 stdout=open(tmp / f"{name}.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
            live[label] = r
            recorder = None
            try:
                wait_port(port)
                end = time.time() + 30
                while metrics(port)["connected"] != 1:
                    if time.time() > end:
                        raise RuntimeError(f"the router's AMQP source did not connect: {tmp / (name + '.log')}")
                    time.sleep(0.05)
                if perf:
                    # Attached while the router is stopped below; recorded from SIGCONT on.
                    recorder = subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F", "499", "-p", str(r.pid),
                                                 "-o", str(perf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                cpu = {}

                def run(t0):
                    end = t0 + 600
                    while (m := metrics(port))["accepted_total"] < n:
                        if time.time() > end:
                            raise RuntimeError(f"{label}: only {m['accepted_total']} of {n} accepted: {m}")
                        time.sleep(POLL)
                    cpu["t1"], cpu["r1"] = time.time(), cpu_s(r.pid)
                    return m

                cpu["r0"] = cpu_s(r.pid)
                m, res = window(r.pid, run, n)
                seconds = cpu["t1"] - res.pop("t0")
            finally:
                if recorder:
                    recorder.send_signal(signal.SIGINT)
                    recorder.wait(60)
                os.killpg(r.pid, signal.SIGTERM)
                try:
                    r.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(r.pid, signal.SIGKILL)
                    r.wait()
                del live[label]
                if not ARGS.keep:
                    shutil.rmtree(data, ignore_errors=True)
            return {"label": label, "messages": m["accepted_total"], "msgs_per_s": n / seconds, "seconds": seconds, "rejected": m["rejected_total"],
                    "handed_back": m["handed_back_total"], "received": m["messages_total"], "durability": durability,
                    "router_us": (cpu["r1"] - cpu["r0"]) * 1e6 / n, **res}

        plan = [("P", lambda n: plain_run("P", n, 1)),
                ("P-conc", lambda n: plain_run("P-conc", n, 64)),
                ("L", lambda n: router_run("L", n, "group")),
                ("Loff", lambda n: router_run("Loff", n, "off"))]
        print(f"broker {broker.url}; warm-up ({N // 10} messages each); then {ROUNDS} rounds of {N} messages, prefetch {PREFETCH}",
              flush=True)
        for label, run in plan:
            run(N // 10)
        for rnd in range(ROUNDS):
            for label, run in plan:
                def purged_then(n, run=run):
                    left = json.loads(bench("purge").stdout or '{"purged": -1}')["purged"]
                    if left:
                        print(f"  (purged {left} messages left in the queue)", flush=True)
                    return run(n)
                results.append(measured(purged_then, N, NOISY, RETRIES, round=rnd))
        if ARGS.perf:
            OUT.mkdir(parents=True, exist_ok=True)
            r = router_run("L", N, "group", perf=OUT / "perf-L.data")
            print("perf run (not in the table):", json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}),
                  f"\n  perf report -i {OUT / 'perf-L.data'} --no-children", flush=True)
    finally:
        for p in list(live.values()):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        broker.stop()
        if not ARGS.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    labels = [label for label, _ in plan]
    med = lambda label, key="msgs_per_s": statistics.median(r.get(key, 0.0) for r in results if r["label"] == label)
    print(f"\n{'label':7} {'msgs/s':>9} {'min':>9} {'max':>9} {'consumer':>8} {'broker':>7} {'other':>6}"
          f"   (medians of {ROUNDS} x {N} messages; CPU us per message: the router or the plain consumer, the broker;"
          " other: cores busy with what is not ours)")
    for label in labels:
        rate = [r["msgs_per_s"] for r in results if r["label"] == label]
        own = "router_us" if label.startswith("L") else "consumer_us"
        print(f"{label:7} {med(label):9,.0f} {min(rate):9,.0f} {max(rate):9,.0f} {med(label, own):8.1f} "
              f"{med(label, 'broker_us'):7.1f} {med(label, 'other_cores'):6.2f}")
    print()
    best = max(("P", "P-conc"), key=med)
    for l in ("L", "Loff"):
        print(f"{l} / P = {med(l) / med('P'):.0%}   {l} / P-conc = {med(l) / med('P-conc'):.0%}   "
              f"{l} / the plain consumer ({best}) = {med(l) / med(best):.0%} (target >= 50%)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
