"""What the benchmark scripts share about this machine and its processes: free ports, waiting
for a port, CPU seconds of a process (and of its threads by name), of reaped children and of the whole machine, and waiting
until the shared machine is quiet. Imported by benches/nats/run.py, benches/amqp/run.py and benches/http/end_to_end.py."""
import json, os, socket, time

CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not up after {timeout}s")


def stat_fields(stat):
    """The fields of a /proc/.../stat text after the command name (which may hold spaces and
    parentheses): field 3 of proc(5) is index 0 here."""
    return stat.rsplit(")", 1)[1].split()


def stat_cpu(fields):
    """CPU seconds (user + system) in `stat_fields`' result."""
    return (int(fields[11]) + int(fields[12])) / CLK


def cpu_s(pid):
    """CPU seconds one process used so far (user + system, all threads)."""
    return stat_cpu(stat_fields(open(f"/proc/{pid}/stat").read()))


# Thread name prefixes of a router, grouped as the end-to-end benchmark reports them (the
# kernel keeps 15 bytes of a name: `eventyard-worker-0` reads `eventyard-worke`).
THREAD_GROUPS = (("eventyard-worke", "workers"), ("tokio-rt-worker", "http"), ("eventyard-log", "log"))


def threads_cpu(pid):
    """CPU seconds a router's threads used so far, by group (`THREAD_GROUPS`, else `other`):
    which side of the router (plugin workers, the HTTP runtime, the log writer and its
    syncers) an event's cost is on."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        group = next((g for prefix, g in THREAD_GROUPS if name.startswith(prefix)), "other")
        out[group] = out.get(group, 0) + stat_cpu(stat_fields(stat))
    return out


def children_cpu():
    """CPU seconds of the children reaped so far (load generators; not the servers)."""
    r = os.times()
    return r.children_user + r.children_system


def machine_busy():
    """Busy CPU seconds of the whole machine so far (all cores; steal not counted)."""
    f = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (sum(f[:8]) - f[3] - f[4] - f[7]) / CLK


def wait_quiet(ours, limit=0.3, max_wait=180, settle=lambda: 0.0):
    """The machine is shared: waits (up to max_wait s) until what is not ours uses less than
    `limit` of a core over a second. Given `settle` (CPU seconds of the script's own servers),
    also until they use less than `limit`: a server still busy with the previous
    measurement's aftermath (nats-server deleting a purged stream's blocks) would slow the
    next one and be charged to it. Answers the seconds waited."""
    t0 = time.time()
    while time.time() - t0 < max_wait:
        a, o = machine_busy(), ours()
        s = settle()
        time.sleep(1)
        if machine_busy() - a - (ours() - o) < limit and settle() - s < limit:
            break
    return time.time() - t0


def measured(run, arg, noisy, retries, **tags):
    """`run(arg)`'s result (a dict with `other_cores`: what other processes used meanwhile),
    taken again up to `retries` times while other processes used more than `noisy` cores;
    printed as JSON lines, with `tags` and the attempt added."""
    for attempt in range(retries + 1):
        r = run(arg) | tags | {"attempt": attempt}
        print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
        if r["other_cores"] <= noisy:
            break
        print(f"  (other processes used {r['other_cores']:.2f} cores meanwhile: measured again)", flush=True)
    return r
