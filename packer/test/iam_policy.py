#!/usr/bin/env python3
"""Checks packer/iam-policy.json against the AWS calls in the host's source.

    python3 packer/test/iam_policy.py [--policy FILE]

1. Reads the operations each AWS SDK crate offers (its `src/operation/` directory, at
   the version Cargo.lock pins) and finds every call of one of them in host/src, in the
   files that use that crate; the HTTP methods the search sink sends (SigV4-signed to
   Amazon OpenSearch Service, `es:ESHttp*`); and, as the host signs MSK IAM tokens, what
   its Kafka clients do on an MSK cluster (`kafka-cluster:*`).
2. Maps each call to the IAM actions AWS authorizes it with, on a sample of the
   resource it touches (OPERATIONS and SCOPES below), including what an operation
   implies: Athena running a statement needs Glue and the results location; an object
   written with SSE-KMS needs the key.
3. Checks that the policy allows each (action, resource) with an Allow statement whose
   conditions the request carries, and that every action the policy names is one of
   them: exactly what the host calls.
4. Removes each needed action from the policy in turn and checks that step 3 then fails,
   so the check cannot pass vacuously.

A call the tables below do not know fails the check, naming the file and the line: add
the operation to OPERATIONS (and its action to the policy). Exits non-zero on any problem.
"""

import argparse
import copy
import fnmatch
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["s3", "sns", "athena", "sqs", "sts", "secretsmanager", "ssm"]

# Sample resources, in the policy's placeholders (docs/ami.md says what each stands for).
LAKE_OBJECT = "arn:aws:s3:::LAKE_BUCKET/LAKE_PREFIX/cleaned/dt=2026-01-01/hour=00/o.parquet"
LAKE_BUCKET = "arn:aws:s3:::LAKE_BUCKET"
RESULTS_OBJECT = "arn:aws:s3:::ATHENA_RESULTS_BUCKET/ATHENA_RESULTS_PREFIX/q.csv"
RESULTS_BUCKET = "arn:aws:s3:::ATHENA_RESULTS_BUCKET"
WORKGROUP = "arn:aws:athena:REGION:ACCOUNT_ID:workgroup/ATHENA_WORKGROUP"
GLUE = [
    "arn:aws:glue:REGION:ACCOUNT_ID:catalog",
    "arn:aws:glue:REGION:ACCOUNT_ID:database/GLUE_DATABASE",
    "arn:aws:glue:REGION:ACCOUNT_ID:table/GLUE_DATABASE/cleaned",
]
TOPIC = "arn:aws:sns:REGION:ACCOUNT_ID:ALERT_TOPIC"
KMS_KEY = "arn:aws:kms:REGION:ACCOUNT_ID:key/KMS_KEY_ID"
DOMAIN_PATH = "arn:aws:es:REGION:ACCOUNT_ID:domain/SEARCH_DOMAIN/_bulk"
QUEUE = "arn:aws:sqs:REGION:ACCOUNT_ID:SOURCE_QUEUE"
SOURCE_OBJECT = "arn:aws:s3:::SOURCE_BUCKET/app/2026/01/01/x.log.gz"
SOURCE_BUCKET = "arn:aws:s3:::SOURCE_BUCKET"
STATE_OBJECT = "arn:aws:s3:::STATE_BUCKET/STATE_PREFIX/SOURCE_BUCKET/app/x.log.gz"
STATE_BUCKET = "arn:aws:s3:::STATE_BUCKET"
# `${secret:…}` and `${ssm:…}` in the config: the one secret and parameter each names.
CONFIG_SECRET = "arn:aws:secretsmanager:REGION:ACCOUNT_ID:secret:CONFIG_SECRET-AbCdEf"
CONFIG_PARAMETER = "arn:aws:ssm:REGION:ACCOUNT_ID:parameter/CONFIG_PARAMETER"

# Which S3 bucket a file's calls touch: (object sample, bucket sample).
SCOPES = {
    "host/src/sink/s3/": (LAKE_OBJECT, LAKE_BUCKET),
    "host/src/backfill.rs": (LAKE_OBJECT, LAKE_BUCKET),
    "host/src/source/s3/object.rs": (SOURCE_OBJECT, SOURCE_BUCKET),
    "host/src/source/s3/done.rs": (STATE_OBJECT, STATE_BUCKET),
    "host/src/source/s3/mod.rs": (SOURCE_OBJECT, SOURCE_BUCKET),
}

VIA_S3 = {"kms:ViaService"}


def s3_object(action, kms=None):
    """An object call: the action on the object; with SSE-KMS, `kms` on the key."""

    def needs(obj, bucket):
        out = [(action, obj, set())]
        if kms:
            out.append((kms, KMS_KEY, VIA_S3))
        return out

    return needs


def s3_read(obj, bucket):
    # Telling a missing key (404) from a forbidden one (403) needs s3:ListBucket.
    return [("s3:GetObject", obj, set()), ("s3:ListBucket", bucket, set()),
            ("kms:Decrypt", KMS_KEY, VIA_S3)]


def athena_statement(obj, bucket):
    # Athena runs the statement (ALTER TABLE … ADD PARTITION) with the caller's rights:
    # the Glue catalog, and the query results location.
    out = [("athena:StartQueryExecution", WORKGROUP, set())]
    out += [("glue:GetDatabase", r, set()) for r in GLUE[:2]]
    out += [(a, r, set()) for a in ("glue:GetTable", "glue:BatchCreatePartition") for r in GLUE]
    out += [(a, RESULTS_OBJECT, set()) for a in
            ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts")]
    out += [(a, RESULTS_BUCKET, set()) for a in
            ("s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads")]
    return out


def fixed(*needs):
    return lambda obj, bucket: list(needs)


# (service, operation) -> function(object sample, bucket sample) -> [(action, resource,
# condition keys the request carries)]
OPERATIONS = {
    ("s3", "put_object"): s3_object("s3:PutObject", "kms:GenerateDataKey"),
    ("s3", "create_multipart_upload"): s3_object("s3:PutObject", "kms:GenerateDataKey"),
    ("s3", "upload_part"): s3_object("s3:PutObject", "kms:GenerateDataKey"),
    ("s3", "complete_multipart_upload"): s3_object("s3:PutObject", "kms:Decrypt"),
    ("s3", "abort_multipart_upload"): s3_object("s3:AbortMultipartUpload"),
    ("s3", "get_object"): s3_read,
    ("s3", "head_object"): s3_read,
    # HeadBucket sends no s3:prefix: a statement conditioned on it does not apply.
    ("s3", "head_bucket"): lambda obj, bucket: [("s3:ListBucket", bucket, set())],
    ("s3", "list_objects_v2"): lambda obj, bucket: [("s3:ListBucket", bucket, {"s3:prefix"})],
    ("sns", "get_topic_attributes"): fixed(("sns:GetTopicAttributes", TOPIC, set())),
    ("sns", "publish_batch"): fixed(("sns:Publish", TOPIC, set()),
                                    ("kms:GenerateDataKey", KMS_KEY, VIA_S3),
                                    ("kms:Decrypt", KMS_KEY, VIA_S3)),
    ("athena", "start_query_execution"): athena_statement,
    ("athena", "get_query_execution"): fixed(("athena:GetQueryExecution", WORKGROUP, set())),
    ("sqs", "get_queue_attributes"): fixed(("sqs:GetQueueAttributes", QUEUE, set())),
    ("sqs", "receive_message"): fixed(("sqs:ReceiveMessage", QUEUE, set())),
    ("sqs", "delete_message"): fixed(("sqs:DeleteMessage", QUEUE, set())),
    ("sqs", "change_message_visibility_batch"): fixed(("sqs:ChangeMessageVisibility", QUEUE, set())),
    # A secret or SecureString under a customer key is decrypted through the service.
    ("secretsmanager", "get_secret_value"): fixed(("secretsmanager:GetSecretValue", CONFIG_SECRET, set()),
                                                  ("kms:Decrypt", KMS_KEY, VIA_S3)),
    ("ssm", "get_parameter"): fixed(("ssm:GetParameter", CONFIG_PARAMETER, set()),
                                    ("kms:Decrypt", KMS_KEY, VIA_S3)),
}

# With `security.auth = "aws_msk_iam"` the Kafka clients authorize with IAM: what each
# does on the cluster (docs/kafka-security.md). The producers are idempotent.
MSK_IAM_SIGNER = "host/src/kafka_security/msk_iam.rs"
MSK = "arn:aws:kafka:REGION:ACCOUNT_ID:{}/MSK_CLUSTER/MSK_CLUSTER_UUID"
MSK_CLUSTER = MSK.format("cluster")
MSK_SOURCE = MSK.format("topic") + "/SOURCE_TOPIC"
MSK_SINK = MSK.format("topic") + "/SINK_TOPIC"
MSK_STATE = MSK.format("topic") + "/GROUP_ID.sluice-state"
MSK_GROUP = MSK.format("group") + "/GROUP_ID"
MSK_TXN = MSK.format("transactional-id") + "/TRANSACTIONAL_ID"
MSK_NEEDS = [
    ("kafka-cluster:Connect", MSK_CLUSTER, "every client connects"),
    ("kafka-cluster:WriteDataIdempotently", MSK_CLUSTER, "idempotent producers"),
    ("kafka-cluster:DescribeTopic", MSK_SOURCE, "the consumer"),
    ("kafka-cluster:ReadData", MSK_SOURCE, "the consumer"),
    ("kafka-cluster:DescribeGroup", MSK_GROUP, "the consumer group"),
    ("kafka-cluster:AlterGroup", MSK_GROUP, "joining the group, committing offsets"),
    ("kafka-cluster:DescribeTopic", MSK_SINK, "a Kafka sink"),
    ("kafka-cluster:WriteData", MSK_SINK, "a Kafka sink"),
    ("kafka-cluster:DescribeTopic", MSK_STATE, "the plugin state topic"),
    ("kafka-cluster:CreateTopic", MSK_STATE, "the plugin state topic, created if missing"),
    ("kafka-cluster:ReadData", MSK_STATE, "restoring plugin state"),
    ("kafka-cluster:WriteData", MSK_STATE, "storing plugin state"),
    ("kafka-cluster:DescribeTransactionalId", MSK_TXN, "exactly once"),
    ("kafka-cluster:AlterTransactionalId", MSK_TXN, "exactly once"),
]

# The search sink's requests (not `sluice kibana import`, a command an operator runs).
SEARCH_DIR = "host/src/sink/elasticsearch/"
SEARCH_EXCLUDED = {"host/src/sink/elasticsearch/kibana.rs"}


def sdk_operations(service):
    """Operation names of aws-sdk-<service> at the version Cargo.lock pins."""
    lock = (REPO / "Cargo.lock").read_text()
    m = re.search(r'name = "aws-sdk-%s"\nversion = "([^"]+)"' % service, lock)
    if not m:
        return None
    cargo_home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    for src in sorted((cargo_home / "registry" / "src").glob("*")):
        d = src / f"aws-sdk-{service}-{m.group(1)}" / "src" / "operation"
        if d.is_dir():
            return {p.name for p in d.iterdir() if p.is_dir()}
    sys.exit(f"iam_policy: the source of aws-sdk-{service} {m.group(1)} is not in {cargo_home}/registry: "
             "build the host first (cargo build -p sluice)")


def source_files():
    for path in sorted((REPO / "host" / "src").rglob("*.rs")):
        rel = path.relative_to(REPO).as_posix()
        text = path.read_text()
        # Unit tests call nothing on AWS; leave them out.
        text = text.split("#[cfg(test)]")[0]
        yield rel, text


def calls():
    """[(file, line, service, operation)] and the problems found on the way."""
    ops = {s: sdk_operations(s) for s in SERVICES}
    found, problems = [], []
    for rel, text in source_files():
        for service, names in ops.items():
            if not names or f"aws_sdk_{service}" not in text:
                continue
            for m in re.finditer(r"\.([a-z0-9_]+)\(\)", text):
                if m.group(1) in names:
                    line = text.count("\n", 0, m.start()) + 1
                    found.append((rel, line, service, m.group(1)))
        if rel == MSK_IAM_SIGNER and "kafka-cluster:Connect" in text:
            line = text.count("\n", 0, text.index("kafka-cluster:Connect")) + 1
            found.append((rel, line, "kafka-cluster", "msk-iam"))
        if rel.startswith(SEARCH_DIR) and rel not in SEARCH_EXCLUDED:
            for m in re.finditer(r"Method::([A-Z]+)\b", text):
                line = text.count("\n", 0, m.start()) + 1
                found.append((rel, line, "es", m.group(1)))
    return found, problems


def needs_of(found):
    """{(action, resource, frozenset(context)): [where]} and problems."""
    needs, problems = {}, []
    for rel, line, service, op in found:
        where = f"{rel}:{line} {service} {op}"
        if service == "kafka-cluster":
            for action, resource, why in MSK_NEEDS:
                needs.setdefault((action, resource, frozenset()), []).append(f"{where} ({why})")
            continue
        if service == "es":
            action = "es:ESHttp" + op.capitalize()
            needs.setdefault((action, DOMAIN_PATH, frozenset()), []).append(where)
            continue
        fn = OPERATIONS.get((service, op))
        if fn is None:
            problems.append(f"{where}: an AWS call this check does not know; add it to OPERATIONS in "
                            f"{Path(__file__).relative_to(REPO)} and its action to the policy")
            continue
        scope = next((v for k, v in SCOPES.items() if rel == k or (k.endswith("/") and rel.startswith(k))),
                     None)
        if service == "s3" and scope is None:
            problems.append(f"{where}: an S3 call in a file with no bucket scope; add the file to SCOPES")
            continue
        for action, resource, context in fn(*(scope or (None, None))):
            needs.setdefault((action, resource, frozenset(context)), []).append(where)
    return needs, problems


def as_list(x):
    return x if isinstance(x, list) else [x]


def allowed(policy, action, resource, context):
    for st in policy["Statement"]:
        if st.get("Effect") != "Allow":
            continue
        if not any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in as_list(st["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in as_list(st["Resource"])):
            continue
        keys = {k for cond in st.get("Condition", {}).values() for k in cond}
        if keys <= set(context):
            return True
    return False


def check(policy, needs):
    problems = []
    for (action, resource, context), where in sorted(needs.items()):
        if not allowed(policy, action, resource, context):
            problems.append(f"the policy does not allow {action} on {resource}"
                            + (f" (the request carries no {', '.join(sorted({'s3:prefix'} - context))})"
                               if action == "s3:ListBucket" else "")
                            + f", which {where[0]} needs")
    for st in policy["Statement"]:
        for a in as_list(st["Action"]):
            if "*" in a or "?" in a:
                problems.append(f"statement {st.get('Sid')}: {a}: name each action, no wildcards")
                continue
            for r in as_list(st["Resource"]):
                if not any(a.lower() == na.lower() and fnmatch.fnmatchcase(nr, r) for na, nr, _ in needs):
                    problems.append(f"statement {st.get('Sid')}: {a} on {r} is allowed but nothing in host/src "
                                    "calls for it")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=str(REPO / "packer" / "iam-policy.json"))
    ap.add_argument("--list", action="store_true", help="print each call and what it needs")
    ap.add_argument("--sample", action="store_true",
                    help="print the policy with a sample region and account (for linters) and exit")
    args = ap.parse_args()
    text = Path(args.policy).read_text()
    if args.sample:
        print(text.replace(":REGION:", ":us-east-1:").replace(".REGION.", ".us-east-1.")
              .replace(":ACCOUNT_ID:", ":123456789012:"), end="")
        return 0
    policy = json.loads(text)

    found, problems = calls()
    needs, more = needs_of(found)
    problems += more
    if args.list:
        for (action, resource, _), where in sorted(needs.items()):
            print(f"{action:32} {resource:72} {where[0]}")
    problems += check(policy, needs)

    # Each needed action, taken out, must make the check fail.
    for action in sorted({a for a, _, _ in needs}):
        cut = copy.deepcopy(policy)
        for st in cut["Statement"]:
            st["Action"] = [a for a in as_list(st["Action"]) if a.lower() != action.lower()]
        cut["Statement"] = [st for st in cut["Statement"] if st["Action"]]
        if not check(cut, needs):
            problems.append(f"removing {action} from the policy goes unnoticed: the check is broken")

    services = sorted({s for _, _, s, _ in found})
    print(f"iam_policy: {len(found)} AWS calls in host/src ({', '.join(services)}), "
          f"{len(needs)} (action, resource) needs, {len({a for a, _, _ in needs})} actions")
    for p in problems:
        print(f"iam_policy: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
