#!/usr/bin/env python3
"""HTTP ingestion next to the peers, in the same run on the same body.

usage: python3 benches/http/run.py [pinned|unpinned|both] [rounds] [seconds]
       python3 benches/http/run.py end-to-end [rounds] [seconds] [--pinned]

The second form runs the end-to-end case, end_to_end.py (events handled through the bundled
echo handler, next to the same events on a router with no routes, in the same run); it
drives two eventyard routers rather than the peers, so it lives in a script of its own.

Reuses ../shared/bench/peers/bench.py (its servers, wrk runner and summary) and adds:
  E        eventyard, single events (POST /v1/events/infrahub/check.generator.run)
  E-invalid  the same with the invalid body
  E-ndjson eventyard, NDJSON batches of 100 events (POST /v1/events); rps x 100 = events/s
Prints the ratios the targets are stated in: E / B (fastify + ajv) and E / A0 (bare axum).
Needs: wrk, a release build of eventyard, and the peers' set-up (see their README)."""
import json, os, pathlib, statistics, sys

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent.parent
if sys.argv[1:2] == ["end-to-end"]:
    import runpy
    sys.argv = [str(HERE / "end_to_end.py")] + sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    sys.exit(0)
PEERS = REPO.parent / "shared" / "bench" / "peers"
sys.argv = [sys.argv[0]] + sys.argv[1:]
sys.path.insert(0, str(PEERS))
import bench  # noqa: E402  (the peers' driver)

BATCH = HERE / "batch.ndjson"
BATCH_SIZE = 100
body = json.loads((PEERS / "body.json").read_text())
BATCH.write_text("\n".join(json.dumps({"type": "infrahub/check.generator.run", "data": body}) for _ in range(BATCH_SIZE)) + "\n")

EY = str(REPO / "target" / "release" / "eventyard")
# E: the event log on, group commit (the default); E-off: the log written, never synced.
import shutil
shutil.rmtree("/tmp/eventyard-bench", ignore_errors=True)
bench.SERVERS["E"] = (3020, [EY, "serve", "--listen", "127.0.0.1:3020", "--config", str(HERE / "ingest.toml")], REPO)
bench.SERVERS["E-off"] = (3021, [EY, "serve", "--listen", "127.0.0.1:3021", "--config", str(HERE / "ingest-nosync.toml")], REPO)
PATHS = {3020: "/v1/events/infrahub/check.generator.run", 3021: "/v1/events/infrahub/check.generator.run"}
bench.ROUND = [("A0", "A0", "body.json"), ("A", "A", "body.json"), ("B", "B", "body.json"), ("C", "C", "body.json"),
               ("E", "E", "body.json"), ("E-invalid", "E", "body_invalid.json"), ("E-ndjson", "E", "ndjson"),
               ("E-off", "E-off", "body.json"), ("E-off-ndjson", "E-off", "ndjson")]

_wrk = bench.wrk
def wrk(setup, port, body_file, dur):
    """The peers' wrk call, with eventyard's paths and the NDJSON script."""
    bench.PATH = PATHS.get(port, "/v1/events/check.generator.run")
    if body_file != "ndjson":
        return _wrk(setup, port, body_file, dur)
    bench.PATH = "/v1/events"
    os.environ["BATCH"] = str(BATCH)
    run = bench.subprocess.run
    # Same wrk command and parsing as the peers, with the NDJSON script instead of post.lua.
    bench.subprocess.run = lambda cmd, **kw: run([str(HERE / "post_ndjson.lua") if a == "post.lua" else a for a in cmd], **kw)
    try:
        return _wrk(setup, port, "body.json", dur)
    finally:
        bench.subprocess.run = run
bench.wrk = wrk

bench.main()
summary = json.loads((PEERS / "results" / "summary.json").read_text())["summary"]
for setup in {k.split("/")[0] for k in summary}:
    med = lambda label: summary[f"{setup}/{label}"]["rps_median"]
    print(f"\n[{setup}] durable (group commit): E/B (fastify+ajv) = {med('E') / med('B'):.2f}x   "
          f"E/A0 (bare axum parse-only) = {med('E') / med('A0'):.0%}   E/A (axum+jsonschema) = {med('E') / med('A'):.0%}   "
          f"NDJSON = {med('E-ndjson') * BATCH_SIZE:,.0f} events/s")
    print(f"[{setup}] log never synced:      E-off/A0 = {med('E-off') / med('A0'):.0%}   "
          f"NDJSON = {med('E-off-ndjson') * BATCH_SIZE:,.0f} events/s")
