"""{{name}}: an Eventyard handler. Logs each event it gets and emits nothing; emit events by
returning them (their types must be in the manifest's `emits`)."""
import json

from wit_world import WitWorld as Base
from wit_world.imports import log, types


class WitWorld(Base):
    def handle(self, event: types.Event) -> list[types.Emitted]:
        data = json.loads(event.data())
        log.write(log.Level.INFO, f"{{name}} got {event.type()} ({len(data)} fields)")
        return []
