"""A Fix Inventory (Resoto) worker written with the published client, resotolib's
CoreActions: it registers for `collect` over HTTP, connects to /subscriber/<id>/handle and
answers each action with action_done. Prints every action it got as one JSON line.

usage: worker.py <base-url> <subscriber-id> <actions-to-answer>"""
import json
import sys
import threading
import time

import requests

from resotolib.core.actions import CoreActions

base, ident, wanted = sys.argv[1], sys.argv[2], int(sys.argv[3])
got = []
enough = threading.Event()


def process(message):
    if message.get("kind") != "action":
        return None
    print(json.dumps(message), flush=True)
    got.append(message)
    if len(got) >= wanted:
        enough.set()
    data = message["data"]
    return {"kind": "action_done", "message_type": message["message_type"], "data": {"task": data["task"], "step": data["step"]}}


actions = CoreActions(ident, base, base.replace("http://", "ws://"), {"collect": {"timeout": 30, "wait_for_completion": True}},
                      message_processor=process)
actions.daemon = True
actions.start()
print("started", flush=True)
ok = enough.wait(60)
# resotolib sends the reply after process() returns: wait until the router has it (no action
# of ours pending) before closing the connection.
deadline = time.time() + 30
while ok and time.time() < deadline:
    if requests.get(f"{base}/subscriber/{ident}").json().get("pending_actions") == 0:
        break
    time.sleep(0.05)
actions.shutdown()
sys.exit(0 if ok else 1)
