"""Read every sink back with clients independent of the host and count, per sink and per
key: present once, duplicated, missing.

Keys: the source origin (partition, offset) where the sink keeps it (S3 raw and cleaned,
search `_id`, dead-letter headers); the generator's `event_id` for the Kafka `cleaned-logs`
topic, which carries no origin; (service, window start) for metrics; (service, kind) for
alerts sent through SNS.
"""

from __future__ import annotations

import collections
import datetime as dt
import gzip
import io
import json
import re
import urllib.request

WINDOW_S = 60


def parse_ts(s: str) -> float | None:
    try:
        s = s.replace("Z", "+00:00")
        m = re.match(r"(.*\.\d{6})\d*(\+.*)$", s)
        if m:
            s = m.group(1) + m.group(2)
        return dt.datetime.fromisoformat(s).timestamp()
    except (ValueError, AttributeError):
        return None


# ---------------------------------------------------------------- the truth


class Truth:
    """What went into the source topic, read back from the topic itself."""

    def __init__(self, source_msgs: list[dict], dlq_msgs: list[dict], source_topic: str):
        self.topic = source_topic
        self.origins: dict[tuple[int, int], bytes] = {}
        self.event_id: dict[tuple[int, int], str] = {}
        self.expected_cleaned: set[tuple[int, int]] = set()   # first copy of each line
        self.input_duplicates: set[tuple[int, int]] = set()   # exact repeats (dedup drops)
        window_of: dict[tuple[int, int], tuple[str, int]] = {}
        seen: set[bytes] = set()
        for m in sorted(source_msgs, key=lambda m: (m["partition"], m["offset"])):
            o = (m["partition"], m["offset"])
            v = m["value"]
            self.origins[o] = v
            if v in seen:
                self.input_duplicates.add(o)
                continue
            seen.add(v)
            self.expected_cleaned.add(o)
            if v[:1] == b"{" and len(v) < 1_000_000:
                try:
                    j = json.loads(v)
                except (ValueError, RecursionError):
                    continue
                if isinstance(j, dict) and isinstance(j.get("event_id"), str):
                    self.event_id[o] = j["event_id"]
                    t = parse_ts(j.get("ts", "")) if isinstance(j.get("ts"), str) else None
                    # Hostile lines (1970, 2100) are late or far ahead: no window expected.
                    hostile = j["event_id"].startswith("hostile-")
                    if t is not None and isinstance(j.get("service"), str) and not hostile:
                        window_of[o] = (j["service"], int(t // WINDOW_S) * WINDOW_S)
        # Dead letters of this source, by origin, with their reasons.
        self.dead: dict[tuple[int, int], str] = {}
        self.dlq_total = len(dlq_msgs)
        for m in dlq_msgs:
            h = m["headers"]
            t = re.search(r"sluice\.origin\.topic=([^,]*)", h)
            p = re.search(r"sluice\.origin\.partition=(\d+)", h)
            off = re.search(r"sluice\.origin\.offset=(\d+)", h)
            reason = re.search(r"sluice\.dlq\.reason=(.*?)(,sluice\.|$)", h)
            if t and p and off and t.group(1) == source_topic:
                self.dead[(int(p.group(1)), int(off.group(1)))] = reason.group(1) if reason else ""
        # Lines per (service, window) that reached the chain's end (not dead-lettered).
        self.windows: collections.Counter = collections.Counter(
            w for o, w in window_of.items() if o not in self.dead)

    def summary(self) -> dict:
        reasons = collections.Counter(re.sub(r"\d+", "N", r)[:90] for r in self.dead.values())
        return {"records_in": len(self.origins), "input_duplicates": len(self.input_duplicates),
                "dead_lettered": len(self.dead), "dlq_messages": self.dlq_total,
                "dlq_reasons": dict(reasons.most_common(8))}


def tally(counts: dict, expected: set, accounted: set) -> dict:
    """missing: expected keys absent and not accounted for elsewhere (dead-lettered);
    duplicated: keys present more than once."""
    missing = sorted(k for k in expected if counts.get(k, 0) == 0 and k not in accounted)
    dup = sorted(k for k, c in counts.items() if c > 1)
    return {"expected": len(expected), "present": sum(1 for k in expected if counts.get(k, 0) > 0),
            "rows": sum(counts.values()), "missing": len(missing), "duplicated": len(dup),
            "extra_copies": sum(counts[k] - 1 for k in dup),
            "missing_examples": [list(k) if isinstance(k, tuple) else k for k in missing[:8]],
            "duplicated_examples": [list(k) if isinstance(k, tuple) else k for k in dup[:8]]}


# ---------------------------------------------------------------- Kafka topics


def kafka_cleaned(truth: Truth, msgs: list[dict]) -> dict:
    counts: collections.Counter = collections.Counter()
    unattributed = 0
    for m in msgs:
        try:
            j = json.loads(m["value"])
            eid = j.get("event.id")
        except (ValueError, RecursionError, AttributeError):
            eid = None
        if isinstance(eid, str):
            counts[eid] += 1
        else:
            unattributed += 1
    expected = {truth.event_id[o] for o in truth.expected_cleaned if o in truth.event_id}
    dead_ids = {truth.event_id[o] for o in truth.dead if o in truth.event_id}
    r = tally(counts, expected, dead_ids)
    r["without_event_id"] = unattributed
    return r


def metrics_rows(truth: Truth, rows: list[tuple[str, int, int]]) -> dict:
    """rows: (service, window start s, count). Windows closed by event time well before the
    end (two windows) are expected; partial windows of one key are counted as duplicated."""
    if not truth.windows:
        return {"expected": 0, "present": 0, "rows": len(rows), "missing": 0, "duplicated": 0}
    last = max(w for _, w in truth.windows)
    expected = {k for k in truth.windows if k[1] < last - 2 * WINDOW_S}
    counts: collections.Counter = collections.Counter()
    summed: collections.Counter = collections.Counter()
    for service, w, c in rows:
        counts[(service, w)] += 1
        summed[(service, w)] += c
    r = tally(counts, expected, set())
    want = sum(truth.windows[k] for k in expected)
    got = sum(summed[k] for k in expected)
    r["records_counted"] = got
    r["records_in_windows"] = want
    return r


def kafka_metrics_rows(msgs: list[dict]) -> list[tuple[str, int, int]]:
    out = []
    for m in msgs:
        try:
            j = json.loads(m["value"])
            out.append((j["service.name"], int(j["metric.window.start"]) // 1_000_000_000,
                        int(j["count"])))
        except (ValueError, KeyError, TypeError):
            pass
    return out


def kafka_alerts(msgs: list[dict]) -> dict:
    ids: collections.Counter = collections.Counter()
    keys = {}
    for m in msgs:
        try:
            j = json.loads(m["value"])
        except ValueError:
            continue
        aid = j.get("alert.id")
        ids[aid] += 1
        keys[aid] = (j.get("service.name"), j.get("alert.kind"), j.get("alert.severity"))
    dup = [k for k, c in ids.items() if c > 1]
    return {"rows": sum(ids.values()), "distinct": len(ids), "duplicated": len(dup),
            "keys": sorted({(s, k) for s, k, sev in keys.values()
                            if str(sev).lower() not in ("info",)})}


# ---------------------------------------------------------------- S3 lake


def s3_objects(s3, bucket: str, prefix: str) -> list[tuple[str, bytes]]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out.append((o["Key"], s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))
    return out


def lake_raw(truth: Truth, objects) -> dict:
    counts: collections.Counter = collections.Counter()
    for key, body in objects:
        if not key.endswith(".ndjson.gz"):
            continue
        for line in gzip.decompress(body).splitlines():
            e = json.loads(line)
            if e.get("source_topic") == truth.topic:
                counts[(int(e["source_partition"]), int(e["source_offset"]))] += 1
    r = tally(counts, set(truth.origins), set(truth.dead))
    r["objects"] = sum(1 for k, _ in objects if k.endswith(".ndjson.gz"))
    return r


def lake_parquet(objects, columns):
    import pyarrow.parquet as pq

    for key, body in objects:
        if key.endswith(".parquet"):
            t = pq.read_table(io.BytesIO(body), columns=columns)
            yield from zip(*(t.column(c).to_pylist() for c in columns))


def lake_cleaned(truth: Truth, objects) -> dict:
    counts: collections.Counter = collections.Counter()
    for topic, p, o in lake_parquet(objects, ["source_topic", "source_partition", "source_offset"]):
        if topic == truth.topic:
            counts[(int(p), int(o))] += 1
    r = tally(counts, truth.expected_cleaned, set(truth.dead))
    r["input_duplicates_passed"] = sum(1 for o in truth.input_duplicates if counts.get(o))
    r["objects"] = sum(1 for k, _ in objects if k.endswith(".parquet"))
    return r


def lake_metrics(truth: Truth, objects) -> dict:
    rows = []
    for service, start, count in lake_parquet(objects, ["service_name", "window_start", "count"]):
        ts = start.timestamp() if hasattr(start, "timestamp") else float(start)
        rows.append((service, int(ts), int(count)))
    return metrics_rows(truth, rows)


# ---------------------------------------------------------------- search


def _es(url: str, path: str, body=None, method=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def search_docs(truth: Truth, url: str, index: str) -> dict:
    """Every document of the index, by scroll; counted by the origin in its `_id`."""
    counts: collections.Counter = collections.Counter()
    try:
        _es(url, f"/{index}/_refresh", method="POST")
        total = _es(url, f"/{index}/_count")["count"]
        page = _es(url, f"/{index}/_search?scroll=2m", {"size": 5000, "sort": ["_doc"],
                                                        "_source": False})
    except urllib.error.HTTPError as e:
        if e.code == 404:
            total, page = 0, {"hits": {"hits": []}}
        else:
            raise
    sid = page.get("_scroll_id")
    while page["hits"]["hits"]:
        for h in page["hits"]["hits"]:
            parts = h["_id"].rsplit(":", 3)
            if len(parts) == 4 and parts[0] == truth.topic:
                counts[(int(parts[1]), int(parts[2]))] += 1
        page = _es(url, "/_search/scroll", {"scroll": "2m", "scroll_id": sid})
        sid = page.get("_scroll_id", sid)
    if sid:
        try:
            _es(url, "/_search/scroll", {"scroll_id": sid}, method="DELETE")
        except OSError:
            pass
    r = tally(counts, truth.expected_cleaned, set(truth.dead))
    r["count_api"] = total
    r["input_duplicates_passed"] = sum(1 for o in truth.input_duplicates if counts.get(o))
    return r


import urllib.error  # noqa: E402  (used above; kept beside the search client)


# ---------------------------------------------------------------- SNS via SQS


def sqs_messages(sqs, queue_url: str, quiet_s: float = 3.0) -> list[dict]:
    """Drain the run's own queue: every structured alert message published to its topic."""
    import time

    out, last = [], time.monotonic()
    while time.monotonic() - last < quiet_s:
        r = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        msgs = r.get("Messages", [])
        if msgs:
            last = time.monotonic()
        for m in msgs:
            body = json.loads(m["Body"])
            try:
                out.append(json.loads(body.get("Message", "{}")))
            except ValueError:
                out.append({"unparsed": body.get("Message")})
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return out


def sns_alerts(alert_keys: list, messages: list[dict]) -> dict:
    """Every (service, kind) the alerts topic raised at warning or above must be named by a
    firing SNS message; alert ids announced more than once are counted as duplicated."""
    sent_keys = set()
    ids: collections.Counter = collections.Counter()
    fail_states = 0
    for m in messages:
        if m.get("fail_state"):
            fail_states += 1
            continue
        if m.get("status") != "firing":
            continue
        for a in m.get("alerts", []):
            sent_keys.add((a.get("service"), a.get("kind")))
            ids[a.get("id")] += 1
    expected = {tuple(k) for k in alert_keys}
    missing = sorted(k for k in expected if k not in sent_keys)
    dup = [k for k, c in ids.items() if c > 1]
    return {"expected": len(expected), "present": len(expected) - len(missing),
            "rows": len(messages), "missing": len(missing), "duplicated": len(dup),
            "fail_state_messages": fail_states,
            "missing_examples": [list(k) for k in missing[:8]]}
