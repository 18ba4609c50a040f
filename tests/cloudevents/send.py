"""Posts CloudEvents to a router with the published CloudEvents SDK (PyPI `cloudevents`
2.2.0), in binary and structured mode, one valid and one invalid event each, through both of
its APIs: `cloudevents.core` (2.x) and the older `cloudevents.v1.http` (still shipped, used
by most existing producers). Prints one JSON line per request:
{"api", "mode", "valid", "id", "status", "body", "content_type_sent"}.

Usage: send.py <base url>
"""
import json
import sys
import warnings

import requests
from cloudevents.core.bindings import http as core_http
from cloudevents.core.v1.event import CloudEvent as CoreEvent
from cloudevents.v1 import http as v1_http

warnings.simplefilter("ignore")  # the v1 API warns that it is deprecated
base = sys.argv[1]
VALID = {"kind": "action", "message_type": "collect", "data": {"task": "sdk-task", "step": "collect"}}
# `message_type` names another event: the schema of fixinventory/collect refuses it.
INVALID = {"kind": "action", "message_type": "cleanup", "data": {"task": "sdk-task", "step": "collect"}}


def core(mode, attributes, data):
    event = CoreEvent(attributes, data)
    message = (core_http.to_binary_event if mode == "binary" else core_http.to_structured_event)(event)
    return event.get_id(), message.headers, message.body


def v1(mode, attributes, data):
    event = v1_http.CloudEvent(attributes, data)
    headers, body = (v1_http.to_binary if mode == "binary" else v1_http.to_structured)(event)
    return event["id"], headers, body


for api, encode in (("core", core), ("v1", v1)):
    for mode in ("binary", "structured"):
        for valid, data in ((True, VALID), (False, INVALID)):
            attributes = {"type": "fixinventory/collect", "source": f"python-sdk/{api}/{mode}"}
            event_id, headers, body = encode(mode, attributes, data)
            res = requests.post(base + "/v1/events", data=body, headers=headers, timeout=30)
            print(json.dumps({
                "api": api,
                "mode": mode,
                "valid": valid,
                "id": event_id,
                "status": res.status_code,
                "body": res.json(),
                "content_type_sent": {k.lower(): v for k, v in headers.items()}.get("content-type"),
            }), flush=True)
