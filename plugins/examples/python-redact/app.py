"""Redacts secrets and personal data from log records: payment card numbers (those that
pass the Luhn check), e-mail addresses, bearer tokens and `password=`/`secret=`/`token=`
values, in the body and in every text attribute. Records keep their origin and route;
nothing is dropped. Counts what it redacted per batch (`redacted_*` counters).

Config (JSON): {"mask": "[redacted]", "emails": true, "cards": true, "secrets": true,
"skip_fields": ["trace.id"]} -- every key optional.
"""

import json
import re

import wit_world
from componentize_py_types import Err
from wit_world.exports import State as StateProtocol
from wit_world.imports import host, types

# 13 to 19 digits, optionally split by single spaces or dashes.
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]+=*")
SECRET = re.compile(r"(?i)\b(password|passwd|secret|token|api_key|apikey)(\s*[=:]\s*)([^\s,;&\"']+)")


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Redactor:
    def __init__(self, config: dict):
        unknown = set(config) - {"mask", "emails", "cards", "secrets", "skip_fields"}
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        self.mask = str(config.get("mask", "[redacted]"))
        self.emails = bool(config.get("emails", True))
        self.cards = bool(config.get("cards", True))
        self.secrets = bool(config.get("secrets", True))
        self.skip = set(config.get("skip_fields", ["trace.id", "span.id", "event.id"]))
        self.counts = {"cards": 0, "emails": 0, "secrets": 0}

    def card(self, m: re.Match) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= 19 and luhn(digits):
            self.counts["cards"] += 1
            return self.mask
        return m.group(0)

    def email(self, m: re.Match) -> str:
        self.counts["emails"] += 1
        return self.mask

    def secret(self, m: re.Match) -> str:
        self.counts["secrets"] += 1
        return m.group(1) + m.group(2) + self.mask

    def bearer(self, m: re.Match) -> str:
        self.counts["secrets"] += 1
        return m.group(1) + self.mask

    def text(self, s: str) -> str:
        # Cheap tests first: most lines hold no digit run, '@' or '='.
        if self.cards and any(c.isdigit() for c in s):
            s = CARD.sub(self.card, s)
        if self.emails and "@" in s:
            s = EMAIL.sub(self.email, s)
        if self.secrets:
            s = BEARER.sub(self.bearer, s)
            s = SECRET.sub(self.secret, s)
        return s

    def record(self, r: types.LogRecord) -> None:
        # Before normalize a JSON line's message is an attribute and the body is empty;
        # after it, the message is the body. Both are covered by redacting every text.
        if r.body:
            r.body = self.text(r.body)
        for a in r.attributes:
            if isinstance(a.value, types.Value_Text) and a.key not in self.skip:
                a.value = types.Value_Text(self.text(a.value.value))


redactor = Redactor({})


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global redactor
        try:
            redactor = Redactor(json.loads(config))
        except (ValueError, TypeError) as e:
            raise Err(types.PluginError(f"redact: {e}"))

    def process(self, batch: list[types.LogRecord]) -> list[types.LogRecord]:
        for r in batch:
            redactor.record(r)  # origin and route are kept as they came
        for name, n in redactor.counts.items():
            if n:
                host.counter_add("redacted_" + name, n)  # once per batch, not per record
                redactor.counts[name] = 0
        return batch

    def tick(self, watermark: int) -> list[types.LogRecord]:
        return []


class State(StateProtocol):
    """Redaction keeps no state between batches."""

    def snapshot(self, source) -> bytes | None:
        return None

    def restore(self, source, state: bytes) -> None:
        pass

    def release(self, source) -> None:
        pass
