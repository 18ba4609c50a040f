"""{{name}}: an Eventyard filter. Keeps events whose priority is at least the plugin config's
`min_priority` (default 1), drops the others with a reason."""
import json

from wit_world import WitWorld as Base
from wit_world.imports import config, types


class WitWorld(Base):
    def filter(self, event: types.Event) -> types.Verdict:
        minimum = json.loads(config.get() or "{}").get("min_priority", 1)
        if event.priority() >= minimum:
            return types.Verdict_Keep()
        return types.Verdict_Drop(f"priority {event.priority()} is below {minimum}")
