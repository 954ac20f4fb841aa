"""The local stack as the chaos harness uses it: environment, Kafka through kcat, the
`sluice` host as a child process, generated configs, a per-run SNS topic with its SQS tap.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def say(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


class Fatal(Exception):
    """The harness cannot go on (the stack is not there, a tool is missing)."""


def run(cmd, *, check=True, timeout=120, input=None, env=None):
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input, env=env)
    if check and r.returncode != 0:
        raise Fatal(f"`{' '.join(map(str, cmd))}` failed ({r.returncode}): "
                    f"{(r.stdout + r.stderr).decode(errors='replace')[-2000:]}")
    return r


def stack_env() -> dict:
    """`dev/stack env` of this checkout, under anything already set in the environment."""
    r = run([str(ROOT / "dev" / "stack"), "env"], check=False)
    env = {}
    for line in r.stdout.decode().splitlines():
        m = re.match(r"export (\w+)=(.*)$", line.strip())
        if m:
            v = m.group(2)
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                v = v[1:-1]
            env[m.group(1)] = v
    env.update(os.environ)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hostport(url: str) -> tuple[str, int]:
    m = re.match(r"https?://([^:/]+):(\d+)", url)
    if not m:
        raise Fatal(f"cannot read host:port from {url}")
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------- Kafka (kcat)


class Kafka:
    def __init__(self, brokers: str):
        self.brokers = brokers
        self.big_ok: dict[str, bool] = {}

    def check(self) -> None:
        r = run(["kcat", "-b", self.brokers, "-L", "-m", "5"], check=False, timeout=20)
        if r.returncode != 0:
            raise Fatal(f"Kafka at {self.brokers} does not answer (kcat -L); start the stack")

    def reachable(self) -> bool:
        r = run(["kcat", "-b", self.brokers, "-L", "-m", "3"], check=False, timeout=20)
        return r.returncode == 0 and b"broker" in r.stdout

    def partitions(self, topic: str) -> int:
        r = run(["kcat", "-b", self.brokers, "-L", "-t", topic, "-m", "5"], check=False, timeout=20)
        m = re.search(rb'topic "[^"]+" with (\d+) partitions', r.stdout)
        return int(m.group(1)) if m else 0

    def create(self, topic: str, partitions: int) -> None:
        """Create a topic by a metadata request: kcat has no admin API, so the broker's
        auto-creation (`num.partitions`, 3 on the local stack) makes it."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run(["kcat", "-b", self.brokers, "-X", "allow.auto.create.topics=true",
                 "-L", "-t", topic, "-m", "5"], check=False, timeout=20)
            if self.partitions(topic) >= partitions:
                return
            time.sleep(0.3)
        raise Fatal(f"topic {topic} was not created (is auto.create.topics.enable on?)")

    def end_offsets(self, topic: str) -> dict[int, int]:
        n = self.partitions(topic)
        args = ["kcat", "-b", self.brokers, "-Q"]
        for p in range(n):
            args += ["-t", f"{topic}:{p}:-1"]
        r = run(args, check=False, timeout=30)
        out = {}
        for m in re.finditer(rb"\[(\d+)\] offset (-?\d+)", r.stdout):
            out[int(m.group(1))] = int(m.group(2))
        return out

    def read(self, topic: str, timeout: float = 300) -> list[dict]:
        """Every message: partition, offset, headers, raw value bytes (size-framed, so any
        byte may be in a value)."""
        p = subprocess.run(
            ["kcat", "-b", self.brokers, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
             "-X", "fetch.message.max.bytes=20000000", "-X", "receive.message.max.bytes=60000000",
             "-f", "%p %o %S %h\n%s\n"], capture_output=True, timeout=timeout)
        if p.returncode != 0:
            raise Fatal(f"kcat -C {topic}: {p.stderr.decode(errors='replace')[-500:]}")
        data, i, out = p.stdout, 0, []
        while i < len(data):
            nl = data.index(b"\n", i)
            head = data[i:nl].decode(errors="replace")
            part, off, size, hdrs = (head.split(" ", 3) + [""])[:4]
            size = int(size) if size.lstrip("-").isdigit() and int(size) >= 0 else 0
            value = data[nl + 1: nl + 1 + size]
            i = nl + 1 + size + 1
            out.append({"partition": int(part), "offset": int(off), "value": value,
                        "headers": hdrs})
        return out

    def create_with(self, topic: str, partitions: int, configs: dict, stack_dir: str) -> bool:
        """Create a topic with topic configs through Kafka's TopicCommand (from the local
        stack); without it, fall back to auto-creation and return False."""
        java = shutil.which("java")
        libs = Path(stack_dir) / "kafka" / "libs"
        if java and libs.is_dir():
            args = [java, "-cp", f"{libs}/*", "org.apache.kafka.tools.TopicCommand",
                    "--bootstrap-server", self.brokers, "--create", "--topic", topic,
                    "--partitions", str(partitions), "--replication-factor", "1"]
            for k, v in configs.items():
                args += ["--config", f"{k}={v}"]
            if run(args, check=False, timeout=120).returncode == 0:
                self.big_ok[topic] = True
                return True
        self.create(topic, partitions)
        return False

    def committed_lag(self, group: str, topic: str, stack_dir: str) -> dict | None:
        """Per partition of `topic`: what `group` committed and the log end (Kafka's own
        ConsumerGroupCommand from the local stack; None when it is not installed)."""
        java = shutil.which("java")
        libs = Path(stack_dir) / "kafka" / "libs"
        if not java or not libs.is_dir():
            return None
        r = run([java, "-cp", f"{libs}/*",
                 "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
                 "--bootstrap-server", self.brokers, "--describe", "--group", group],
                check=False, timeout=120)
        out = {}
        for line in r.stdout.decode().splitlines():
            f = line.split()
            if len(f) >= 5 and f[0] == group and f[1] == topic:
                cur = int(f[3]) if f[3].isdigit() else -1
                out[int(f[2])] = {"committed": cur, "end": int(f[4])}
        ends = self.end_offsets(topic)
        for p, end in ends.items():
            if end > 0 and p not in out:
                out[p] = {"committed": -1, "end": end}
        return out

    def produce(self, topic: str, lines: list[tuple[bytes, bytes]], partition: int | None = None):
        """Produce (key, value) pairs; values may hold any byte but a newline (kcat -l
        reads a file of messages delimited by a byte we pick: \\x1e)."""
        delim = b"\x1e"
        keydelim = b"\x1f"
        body = b"".join(k + keydelim + v + delim for k, v in lines)
        assert body.count(delim) == len(lines), "a value holds the delimiter"
        args = ["kcat", "-b", self.brokers, "-P", "-t", topic, "-D", "\x1e", "-K", "\x1f",
                "-X", "message.max.bytes=20000000", "-X", "enable.idempotence=true"]
        if partition is not None:
            args += ["-p", str(partition)]
        run(args, input=body, timeout=300)


# ---------------------------------------------------------------- the host


def scrape(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError, TimeoutError):
        return None
    out: dict = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        try:
            v = float(value)
        except ValueError:
            continue
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + v
        if "{" in name_labels:
            out[name_labels] = v
    return out


class Host:
    """One `sluice run` child with its admin port and log file."""

    def __init__(self, binary: Path, config: Path, log: Path, port: int, env: dict):
        self.port = port
        self.log = log
        self._logf = open(log, "ab")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(binary), "run", "--config", str(config)],
            stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
            env={**env, "SLUICE_LOG": env.get("SLUICE_CHAOS_LOG", "info")})

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metrics(self) -> dict | None:
        return scrape(self.port)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise Fatal(f"host exited ({self.proc.returncode}) at start-up:\n{self.tail()}")
            if self.metrics() is not None:
                return
            time.sleep(0.1)
        raise Fatal(f"host did not serve /metrics within {timeout:.0f} s:\n{self.tail()}")

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._logf.close()

    def sigterm(self, timeout: float) -> tuple[int | None, float]:
        """SIGTERM; (exit status or None if still running at `timeout`, seconds taken)."""
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._logf.close()
            return None, time.monotonic() - t0
        self._logf.close()
        return self.proc.returncode, time.monotonic() - t0

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# ---------------------------------------------------------------- SNS and its SQS tap


def aws_clients(env: dict):
    import boto3

    kw = dict(endpoint_url=env["SLUICE_AWS_ENDPOINT"], region_name="us-east-1",
              aws_access_key_id=env.get("AWS_ACCESS_KEY_ID", "test"),
              aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", "test"))
    return boto3.client("s3", **kw), boto3.client("sns", **kw), boto3.client("sqs", **kw)


def sns_tap(env: dict, name: str) -> tuple[str, str]:
    """A topic of this run's own with an SQS queue subscribed (raw delivery off: the `sqs`
    protocol's envelope carries the structured JSON). Returns (topic ARN, queue URL)."""
    _, sns, sqs = aws_clients(env)
    arn = sns.create_topic(Name=name)["TopicArn"]
    url = sqs.create_queue(QueueName=f"{name}-tap")["QueueUrl"]
    qarn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
    return arn, url


def drop_sns_tap(env: dict, arn: str, url: str) -> None:
    _, sns, sqs = aws_clients(env)
    for f, kw in ((sns.delete_topic, {"TopicArn": arn}), (sqs.delete_queue, {"QueueUrl": url})):
        try:
            f(**kw)
        except Exception:  # noqa: BLE001 — cleanup is best effort
            pass


def json_dumps(x) -> str:
    return json.dumps(x, sort_keys=True, default=str)
