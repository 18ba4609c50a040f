-- wrk script: POST an NDJSON batch (BATCH=file) to /v1/events.
local f = assert(io.open(os.getenv("BATCH") or "batch.ndjson", "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-ndjson"
