"""Idem post-state filter for `idem/idem-state`: keeps the post-state messages of states that
failed (`message.result` is not true) and drops those that succeeded, so handlers behind it
only see what needs attention. Pre-state messages pass unchanged.

Plugin config (optional): `keep_pre = false` drops pre-state messages too.
"""
import json

from wit_world import WitWorld as Base
from wit_world.imports import config, types


class WitWorld(Base):
    def filter(self, event: types.Event) -> types.Verdict:
        body = json.loads(event.data())
        tags = body.get("tags") or {}
        kind = tags.get("type")
        if kind == "state-pre":
            keep_pre = json.loads(config.get() or "{}").get("keep_pre", True)
            return types.Verdict_Keep() if keep_pre else types.Verdict_Drop("pre-state")
        if kind != "state-post":
            return types.Verdict_Keep()
        message = body.get("message")
        if isinstance(message, dict) and message.get("result") is True:
            return types.Verdict_Drop(f"state {tags.get('ref')} succeeded")
        return types.Verdict_Keep()
