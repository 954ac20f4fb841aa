"""{{name}}: a Sluice transform plugin (world `transform` of wit/plugin.wit).

Adds `{{name}}.length`, the length of each record's message, and dead-letters a record
that has no message. The message is the body after normalize; before it (this plugin
first in the chain) a JSON line's message is an attribute (`message` or `msg` here) and the
body is empty.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.exports import State as StateProtocol
from wit_world.imports import host, types


def text(record: types.LogRecord, key: str) -> str:
    for a in record.attributes:
        if a.key == key and isinstance(a.value, types.Value_Text):
            return a.value.value
    return ""


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        unknown = sorted(json.loads(config))
        if unknown:
            # Refusing unknown keys makes a misspelt config fail at start-up.
            raise Err(types.PluginError(f"{{name}}: unknown config keys {unknown}"))

    def process(self, batch: list[types.LogRecord]) -> list[types.LogRecord]:
        out = []
        for record in batch:
            message = record.body or text(record, "message") or text(record, "msg")
            if not message:
                record.route = types.Route_Dlq("{{name}}: the record has no message")
            else:
                record.attributes.append(
                    types.Attribute("{{name}}.length", types.Value_Integer(len(message)))
                )
            out.append(record)  # the same record: its origin is kept
        host.counter_add("records", len(batch))  # once per batch, not per record
        return out

    def tick(self, watermark: int) -> list[types.LogRecord]:
        return []  # nothing held back: nothing to emit as event time advances


class State(StateProtocol):
    """No state is kept between batches, so there is none to snapshot."""

    def snapshot(self, source) -> bytes | None:
        return None

    def restore(self, source, state: bytes) -> None:
        pass

    def release(self, source) -> None:
        pass
