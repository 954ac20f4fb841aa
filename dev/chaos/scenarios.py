"""The scenarios: each a named function taking a `Trial` (its own topics, group, lake
prefix, search namespace, SNS topic and proxies) and a seeded `random.Random`.

A scenario starts hosts, produces the corpus (`sluice gen` at a steady rate, so faults
land while records flow), injects its faults, and ends with `trial.drain()`: every host
drained and stopped by SIGTERM. The harness then reads every sink back (readback.py).
"""

from __future__ import annotations

import collections
import json
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import readback
from proxy import FaultProxy
from stack import Fatal, Host, free_port, hostport, say, sns_tap

GEN_START = "2026-11-25T10:00:00Z"
EVENTS_PER_SECOND = 5          # 60-s windows of ~300 lines; the burst starts at line 3,000
BURST = "checkout@600+180:0.6"


class Trial:
    def __init__(self, h, name: str, seed: int):
        self.h, self.name, self.seed = h, name, seed
        tag = f"{h.run_id}-{name}"
        self.source = f"{tag}-raw"
        if name == "hostile-input":
            self.source = f"{tag}-rawbig"   # made by the scenario with a larger message limit
        self.topics = {r: f"{tag}-{r}" for r in ("cleaned", "metrics", "alerts", "dlq")}
        for t in [self.source, *self.topics.values()]:
            if not t.endswith("-rawbig"):
                h.kafka.create(t, 3)
        self.group = f"{tag}-group"
        self.prefix = f"chaos/{h.run_id}/{name}"
        self.namespace = re.sub(r"[^a-z0-9]", "", tag.lower())
        self.index = f"logs-sluice-{self.namespace}"
        self.sns_arn, self.sqs_url = sns_tap(h.env, re.sub(r"[^A-Za-z0-9-]", "-", tag)[:70])
        self.aws = FaultProxy("aws", hostport(h.env["SLUICE_AWS_ENDPOINT"]))
        self.search = FaultProxy("search", hostport(h.env["SLUICE_SEARCH_URL"]))
        if h.env.get("SLUICE_CHAOS_TRACE"):
            self.aws.trace, self.search.trace = collections.Counter(), collections.Counter()
        self.dir = h.work / name
        self.plugins = self.dir / "plugins"
        self.plugins.mkdir(parents=True)
        for p in ("normalize", "dedup", "metrics"):
            shutil.copy2(h.plugin_dir / f"{p}.wasm", self.plugins / f"{p}.wasm")
        self.hosts: list[Host] = []
        self.starts = 0
        self.kills = 0
        self.events: list[str] = []
        self.gen: subprocess.Popen | None = None
        self.t0 = time.monotonic()
        self.lake_settings = "max_records = 500\nidle_flush_ms = 3000\n"
        self.drain_timeout_ms = 10_000
        self.exits: list[dict] = []
        self.notes: list[str] = []
        self.last_progress: dict = {}

    def log(self, msg: str) -> None:
        line = f"{time.monotonic() - self.t0:7.1f}s {msg}"
        self.events.append(line)
        say(f"{self.name}: {msg}")

    # -- config and hosts

    def config(self, port: int) -> str:
        b = self.h.brokers
        c = f"""
[source]
type = "kafka"
brokers = "{b}"
topics = ["{self.source}"]
group_id = "{self.group}"
batch_max_records = 500
batch_max_wait_ms = 50
max_message_bytes = 1048576
# A killed member leaves the group after the session timeout: 6 s (the broker's minimum)
# instead of 45 s, so a restart does not wait most of a minute for its partitions.
options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1500" }}
# Several hosts of the group run on this one machine: under the default static member id
# (<hostname>-<group_id>) each would fence the one before it.
group_instance_id = ""
{self.exactly_once_keys()}
[pipeline]
tick_interval_ms = 200
idle_watermark_ms = 2000
drain_timeout_ms = {self.drain_timeout_ms}

[admin]
listen = "127.0.0.1:{port}"
"""
        for p in ("normalize", "dedup", "metrics"):
            c += f'\n[[plugins]]\nname = "{p}"\npath = "{self.plugins / (p + ".wasm")}"\n'
        c += 'on_failure = "pass_through"\n'
        for route, topic in self.topics.items():
            c += (f'\n[sinks.{route}]\ntype = "kafka"\nbrokers = "{b}"\ntopic = "{topic}"\n'
                  f'routes = ["{route}"]\n')
        c += f"""
[sinks.search]
type = "elasticsearch"
routes = ["cleaned"]
url = "{self.search.url()}"
index = {{ mode = "data_stream", dataset = "sluice", namespace = "{self.namespace}" }}
retry_max_backoff_ms = 2000
"""
        for table in ("raw", "cleaned", "metrics"):
            c += f"""
[sinks.lake_{table}]
type = "s3"
routes = ["{table}"]
bucket = "{self.h.bucket}"
prefix = "{self.prefix}"
endpoint = "{self.aws.url()}"
region = "us-east-1"
{self.lake_settings}"""
        c += f"""
[sinks.alerting]
type = "sns"
routes = ["alerts", "metrics"]
topic_arn = "{self.sns_arn}"
endpoint = "{self.aws.url()}"
kibana_url = "http://kibana.example:5601"
athena_table = "sluice.logs"
"""
        return c

    def exactly_once_keys(self) -> str:
        """With --exactly-once: a transactional id per slot (hosts running at once here
        need their own; a host restarted after a kill takes the free slot and its id, so it
        aborts what the killed one left open at once)."""
        if not self.h.args.exactly_once:
            return ""
        taken = {getattr(x, "slot", None) for x in self.live()}
        self.slot = min(i for i in range(len(taken) + 1) if i not in taken)
        return ("exactly_once = true\ntransaction_interval_ms = 1000\n"
                f'transactional_id = "{self.group}-slot{self.slot}"\n')

    def start_host(self) -> Host:
        port = free_port()
        self.starts += 1
        cfg = self.dir / f"host-{self.starts}.toml"
        cfg.write_text(self.config(port))
        host = Host(self.h.binary, cfg, self.dir / f"host-{self.starts}.log", port, self.h.env)
        host.slot = getattr(self, "slot", None)
        host.wait_ready()
        self.hosts.append(host)
        self.log(f"host {self.starts} up (pid {host.proc.pid}, admin :{port})")
        return host

    def live(self) -> list[Host]:
        return [x for x in self.hosts if x.alive()]

    def kill9(self, host: Host) -> None:
        host.kill9()
        self.kills += 1
        self.log(f"kill -9 pid {host.proc.pid}")

    def check_alive(self) -> None:
        for x in self.hosts:
            if not x.alive() and not getattr(x, "expected_exit", False) and x.proc.returncode != -9:
                x.expected_exit = True
                self.log(f"host pid {x.proc.pid} exited by itself ({x.proc.returncode}):\n"
                         + x.tail(15))
                self.notes.append(f"host pid {x.proc.pid} exited by itself "
                                  f"({x.proc.returncode}); see {x.log.name}")

    # -- input

    def generate(self, count: int, rate: int) -> None:
        """`sluice gen` into the source topic in the background, `rate` lines/s."""
        self.gen = subprocess.Popen(
            [str(self.h.binary), "gen", "--brokers", self.h.brokers, "--topic", self.source,
             "--count", str(count), "--rate", str(rate), "--seed", str(self.seed),
             "--logfmt", "0", "--plain", "0", "--duplicates", "0.01",
             "--events-per-second", str(EVENTS_PER_SECOND), "--start", GEN_START,
             "--burst", BURST, "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=self.h.env)
        self.log(f"generating {count} lines at {rate}/s (seed {self.seed})")

    def generating(self) -> bool:
        return self.gen is not None and self.gen.poll() is None

    def wait_generated(self, timeout: float = 600) -> None:
        if self.gen is None:
            return
        try:
            self.gen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.gen.kill()
            raise Fatal("sluice gen did not finish")
        if self.gen.returncode != 0:
            raise Fatal(f"sluice gen failed: {self.gen.stderr.read().decode()[-1000:]}")

    def sleep_while_generating(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.check_alive()
            time.sleep(0.1)

    # -- the end

    def caught_up(self, settle: float = 6.0, timeout: float = 180) -> bool:
        """Every live host reports no lag and nothing in flight, with its counters and the
        traffic through both proxies still for `settle` seconds (longer than the lake's
        idle flush: a sink may be busy with requests that move no counter)."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            self.check_alive()
            ms = [x.metrics() for x in self.live()]
            if not ms or any(m is None for m in ms):
                time.sleep(0.5)
                continue
            acked = sum(m.get("sluice_sink_acknowledged_total", 0) for m in ms)
            inflight = sum(m.get("sluice_sink_in_flight_bytes", 0) for m in ms)
            consumed = sum(m.get("sluice_source_consumed_total", 0) for m in ms)
            failing = sum(m.get('sluice_fail_state_active{state="SinkUnavailable"}', 0)
                          + m.get('sluice_fail_state_active{state="KafkaUnavailable"}', 0)
                          for m in ms)
            key = (acked, consumed, self.aws.bytes, self.search.bytes)
            if key != last:
                last, since = key, time.monotonic()
            self.last_progress = {"acked": acked, "in_flight": inflight, "consumed": consumed,
                                  "failing": failing,
                                  "lag_gauge": sum(m.get("sluice_source_lag", 0) for m in ms)}
            # A host may have nothing to consume: all committed before it started.
            started = min(time.monotonic() - x.started for x in self.live())
            if inflight == 0 and failing == 0 and (consumed > 0 or started > 20) \
                    and time.monotonic() - since >= settle:
                # Still counters can also mean a host that stopped consuming (after a broker
                # restart, say): caught up only once the group committed the end of the log.
                if self.committed_to_end():
                    return True
                since = time.monotonic()
            time.sleep(0.5)
        return False

    def committed_to_end(self) -> bool:
        lag = self.h.kafka.committed_lag(
            self.group, self.source, self.h.env.get("SLUICE_STACK_DIR", str(self.h.root / ".stack")))
        if lag is None:
            return True  # no Kafka tools here: the counters alone decide
        self.last_progress["behind"] = {p: c for p, c in lag.items() if max(c["committed"], 0) < c["end"]}
        return not self.last_progress["behind"]

    def drain(self) -> None:
        """The clean end: the input complete, every host caught up, then SIGTERM to each:
        it must exit 0 within the drain timeout (plus start-up slack)."""
        self.wait_generated()
        if not self.live():
            self.start_host()
        if not self.caught_up():
            self.notes.append(f"hosts did not catch up within 180 s: {self.last_progress}")
            self.log("not caught up after 180 s; stopping anyway")
        for x in self.live():
            self.stop(x, expect_ok=True)
        if self.exits and self.exits[-1]["exit"] != 0:
            # Counted as a failure above; drain once more so the read-back shows whether the
            # replay still delivers everything.
            self.log("clean stop failed: starting once more to drain")
            self.start_host()
            self.caught_up()
            for x in self.live():
                self.stop(x, expect_ok=True)

    def stop(self, host: Host, expect_ok: bool) -> dict:
        limit = self.drain_timeout_ms / 1000 + 15
        code, took = host.sigterm(limit)
        host.expected_exit = True
        e = {"pid": host.proc.pid, "exit": code, "seconds": round(took, 1), "bounded": code is not None}
        self.exits.append(e)
        self.log(f"SIGTERM pid {host.proc.pid}: exit {code} after {took:.1f}s")
        if expect_ok and code != 0:
            self.notes.append(f"clean stop of pid {host.proc.pid} exited {code}: "
                              + " | ".join(host.tail(6).splitlines()))
        if code is None:
            self.notes.append(f"pid {host.proc.pid} did not exit within {limit:.0f}s of SIGTERM")
        return e

    def close(self) -> None:
        for x in self.hosts:
            if x.alive():
                x.kill9()
        if self.gen is not None and self.gen.poll() is None:
            self.gen.kill()
        self.aws.close()
        self.search.close()


# ---------------------------------------------------------------- scenarios


def kill9(t: Trial, rng: random.Random) -> None:
    """kill -9 the host at random points while records flow, N times, then a clean drain."""
    n, count = t.h.args.kills, t.h.args.records
    # Spread the input over the kills (a restart takes ~5 s plus the 6-s session timeout).
    rate = max(50, count // max(8, n * 8))
    t.start_host()
    t.generate(count, rate)
    for i in range(n):
        t.sleep_while_generating(rng.uniform(0.5, 6.0))
        for x in t.live():
            t.kill9(x)
        t.start_host()
    t.drain()


def sink_outage(t: Trial, rng: random.Random) -> None:
    """S3/SNS and the search engine refuse, reset mid-response, answer 5xx/429 bursts and
    slow down, one after another, while records flow."""
    count = t.h.args.records
    rate = max(100, count // 20)
    t.start_host()
    t.generate(count, rate)
    faults = [
        (t.aws, "refuse", {}), (t.search, "refuse", {}),
        (t.aws, "reset", {}), (t.search, "reset", {}),
        (t.aws, "burst", {"n": 30, "status": 503}), (t.search, "burst", {"n": 30, "status": 429}),
        (t.search, "burst", {"n": 30, "status": 500}), (t.aws, "burst", {"n": 30, "status": 500}),
        (t.aws, "delay", {"delay_s": 0.3}), (t.search, "delay", {"delay_s": 0.3}),
    ]
    rng.shuffle(faults)
    for proxy, mode, kw in faults:
        t.sleep_while_generating(rng.uniform(0.3, 1.0))
        proxy.set(mode, **kw)
        t.log(f"{proxy.name} → {mode} {kw or ''}")
        t.sleep_while_generating(rng.uniform(1.0, 3.0))
        proxy.set("pass")
        t.log(f"{proxy.name} → pass")
    t.drain()


def sigterm_outage(t: Trial, rng: random.Random) -> None:
    """SIGTERM while a sink is down: the host must exit within the drain timeout (non-zero,
    committing nothing unwritten); restarted with the sink back, it delivers everything."""
    count = t.h.args.records
    rate = max(50, count // 40)
    t.drain_timeout_ms = 5_000
    t.start_host()
    t.generate(count, rate)
    for proxy, mode in [(t.aws, "refuse"), (t.search, "refuse"), (t.aws, "reset"),
                        (t.search, "burst")]:
        t.sleep_while_generating(rng.uniform(1.0, 2.5))
        proxy.set(mode, n=10_000, status=503) if mode == "burst" else proxy.set(mode)
        t.log(f"{proxy.name} → {mode}")
        t.sleep_while_generating(rng.uniform(2.0, 4.0))
        for x in t.live():
            e = t.stop(x, expect_ok=False)
            if not e["bounded"]:
                t.notes.append(f"SIGTERM during {proxy.name} {mode} was not bounded")
        proxy.set("pass")
        t.start_host()
    t.drain()


def scale(t: Trial, rng: random.Random) -> None:
    """Two, then three hosts in one group at the S3 sink's default rotation and idle flush;
    one killed, one started, one stopped, while records flow."""
    t.lake_settings = ""
    count = t.h.args.records
    rate = max(100, count // 25)
    t.start_host()
    t.start_host()
    t.generate(count, rate)
    t.sleep_while_generating(rng.uniform(2, 4))
    t.start_host()
    t.sleep_while_generating(rng.uniform(3, 5))
    t.kill9(rng.choice(t.live()))
    t.sleep_while_generating(rng.uniform(2, 4))
    t.start_host()
    t.sleep_while_generating(rng.uniform(3, 5))
    t.stop(rng.choice(t.live()), expect_ok=True)
    t.drain()


def hostile_input(t: Trial, rng: random.Random) -> None:
    """Oversized lines, invalid UTF-8, deep JSON, 100k-key objects and event times of 1970
    and 2100 between ordinary lines."""
    count = t.h.args.records
    if not t.h.kafka.create_with(t.source, 3, {"max.message.bytes": "20000000"},
                                 t.h.env.get("SLUICE_STACK_DIR", "")):
        t.notes.append("the source topic could not take 1.1-MB messages (no Kafka tools): "
                       "oversized lines left out")
    t.start_host()
    t.generate(count, max(100, count // 10))
    lines = []
    for i in range(40):
        eid = f"hostile-{i:04d}"
        kind = i % 6
        if kind == 0 and not t.h.kafka.big_ok.get(t.source):
            continue
        if kind == 0:   # over max_message_bytes (1 MiB): dead-lettered
            v = json.dumps({"event_id": eid, "msg": "x" * (1_100_000 + rng.randrange(1000))})
        elif kind == 1:  # invalid UTF-8, not JSON: a text record
            v = (f"{eid} caf\xe9 ".encode("latin-1") + bytes([0xff, 0xfe, 0xc3]) + b" end").decode(
                "latin-1")
        elif kind == 2:  # deep JSON
            depth = rng.choice([200, 2000, 20000])
            v = '{"event_id":"%s","deep":%s%s}' % (eid, "[" * depth, "]" * depth)
        elif kind == 3:  # 100k keys
            obj = {f"k{j}": j for j in range(100_000)}
            obj["event_id"] = eid
            v = json.dumps(obj)
        elif kind == 4:  # 1970
            v = json.dumps({"ts": "1970-01-01T00:00:0%dZ" % (i % 10), "service": "checkout",
                            "level": "info", "msg": "epoch", "event_id": eid})
        else:            # 2100
            v = json.dumps({"ts": "2100-01-01T00:00:00Z", "service": "checkout",
                            "level": "error", "msg": "future", "event_id": eid})
        data = v.encode("latin-1") if kind == 1 else v.encode()
        lines.append((b"hostile", data))
    time.sleep(1)
    for i in range(0, len(lines), 8):
        t.h.kafka.produce(t.source, lines[i:i + 8], partition=i // 8 % 3)
        t.log(f"produced hostile lines {i}–{i + 7}")
        t.sleep_while_generating(rng.uniform(0.5, 1.5))
    t.drain()


def broker(t: Trial, rng: random.Random) -> None:
    """Stop the shared broker mid-run (dev/stack down kafka), leave it down a few seconds,
    start it again. This affects everyone using the local stack."""
    count = t.h.args.records
    # The dev/stack that runs the services: the one beside SLUICE_STACK_DIR (a worktree's
    # own dev/stack would look for the broker in its own .stack and install a new one).
    stack_dir = Path(t.h.env.get("SLUICE_STACK_DIR", t.h.root / ".stack"))
    stack = str(stack_dir.parent / "dev" / "stack")
    env = {**t.h.env}
    if not Path(stack).is_file():
        raise Fatal(f"{stack} not found: set SLUICE_STACK_DIR (eval \"$(dev/stack env)\")")
    t.start_host()
    t.generate(count, max(100, count // 20))
    t.sleep_while_generating(rng.uniform(2, 4))
    t.log(f"{stack} down kafka")
    subprocess.run([stack, "down", "kafka"], env=env, capture_output=True, timeout=120)
    if t.h.kafka.reachable():
        raise Fatal(f"{stack} down kafka left the broker running")
    time.sleep(rng.uniform(5, 10))
    r = subprocess.run([stack, "up", "kafka"], env=env, capture_output=True, timeout=300)
    t.log(f"dev/stack up kafka: exit {r.returncode}")
    if r.returncode != 0:
        raise Fatal("dev/stack up kafka failed: " + (r.stdout + r.stderr).decode()[-1500:])
    if t.gen is not None and t.gen.poll() not in (None, 0):
        t.notes.append("sluice gen failed while the broker was down; restarted for the rest")
    t.drain()


def hostile_plugin(t: Trial, rng: random.Random) -> None:
    """Swap the dedup plugin for a hostile fixture mid-run (written beside it and renamed
    into place), then back: the hot reload must not lose a record."""
    count = t.h.args.records
    fixtures = t.h.plugin_dir / "fixtures"
    bad = fixtures / "malformed.wasm"
    t.start_host()
    t.generate(count, max(100, count // 15))
    t.sleep_while_generating(rng.uniform(2, 4))
    target = t.plugins / "dedup.wasm"
    good = t.dir / "dedup.good.wasm"
    shutil.copy2(target, good)
    tmp = t.plugins / ".dedup.tmp"
    shutil.copy2(bad, tmp)
    tmp.rename(target)
    t.log(f"dedup.wasm replaced by {bad.name}")
    t.sleep_while_generating(rng.uniform(3, 5))
    shutil.copy2(good, tmp)
    tmp.rename(target)
    t.log("dedup.wasm restored")
    t.drain()


SCENARIOS = {
    "kill9": kill9,
    "sink-outage": sink_outage,
    "sigterm-outage": sigterm_outage,
    "scale": scale,
    "hostile-input": hostile_input,
    "hostile-plugin": hostile_plugin,
    "broker": broker,
}


# ---------------------------------------------------------------- read-back


def read_back(t: Trial, sabotage: bool) -> dict:
    h = t.h
    kafka = h.kafka
    truth = readback.Truth(kafka.read(t.source), kafka.read(t.topics["dlq"]), t.source)
    s3 = h.s3
    if sabotage:
        sabotage_sinks(t, s3)
    sinks = {}
    sinks["kafka cleaned"] = readback.kafka_cleaned(truth, kafka.read(t.topics["cleaned"]))
    sinks["kafka metrics"] = readback.metrics_rows(
        truth, readback.kafka_metrics_rows(kafka.read(t.topics["metrics"])))
    alerts = readback.kafka_alerts(kafka.read(t.topics["alerts"]))
    sinks["kafka alerts"] = {k: v for k, v in alerts.items() if k != "keys"}
    sinks["s3 raw"] = readback.lake_raw(truth, readback.s3_objects(s3, h.bucket, f"{t.prefix}/raw/"))
    sinks["s3 cleaned"] = readback.lake_cleaned(
        truth, readback.s3_objects(s3, h.bucket, f"{t.prefix}/cleaned/"))
    sinks["s3 metrics"] = readback.lake_metrics(
        truth, readback.s3_objects(s3, h.bucket, f"{t.prefix}/metrics/"))
    sinks["search"] = readback.search_docs(truth, h.search_url, t.index)
    sinks["sns"] = readback.sns_alerts(alerts["keys"], readback.sqs_messages(h.sqs, t.sqs_url))
    return {"truth": truth.summary(), "sinks": sinks}


def sabotage_sinks(t: Trial, s3) -> None:
    """Debug only (--sabotage): delete one lake object of each table and a few search
    documents before reading back, to show the read-back notices loss."""
    import urllib.request

    for table in ("raw", "cleaned"):
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=t.h.bucket, Prefix=f"{t.prefix}/{table}/") for o in page.get("Contents", [])]
        if keys:
            s3.delete_object(Bucket=t.h.bucket, Key=keys[len(keys) // 2])
            t.log(f"sabotage: deleted s3://{t.h.bucket}/{keys[len(keys) // 2]}")
    hits = readback._es(t.h.search_url, f"/{t.index}/_search",
                        {"size": 25, "_source": False, "query": {"match_all": {}}})["hits"]["hits"]
    bulk = "".join(json.dumps({"delete": {"_index": x["_index"], "_id": x["_id"]}}) + "\n"
                   for x in hits).encode()
    req = urllib.request.Request(f"{t.h.search_url}/_bulk?refresh=true", data=bulk, method="POST",
                                 headers={"Content-Type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=60) as r:
        items = json.loads(r.read()).get("items", [])
    t.log(f"sabotage: deleted {sum(1 for i in items if i['delete'].get('result') == 'deleted')} "
          "search documents")


def cleanup(t: Trial) -> None:
    import urllib.request

    h = t.h
    try:
        req = urllib.request.Request(f"{h.search_url}/_data_stream/{t.index}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).read()
    except OSError:
        pass
    keys = [o["Key"] for page in h.s3.get_paginator("list_objects_v2").paginate(
        Bucket=h.bucket, Prefix=f"{t.prefix}/") for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        h.s3.delete_objects(Bucket=h.bucket,
                            Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
