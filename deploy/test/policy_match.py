#!/usr/bin/env python3
"""The template's host role allows what packer/iam-policy.json allows, statement by statement.

    python policy_match.py TEMPLATE POLICY   (with cfn-lint installed: dev/iac/tools)

Each statement of the role's policy must carry the Sid of a statement of iam-policy.json,
with the same actions, and resources that are the policy's with its placeholders replaced
by the template's references (PLACEHOLDERS). The policy's statements the template leaves
out must be listed in OMITTED, with the reason. A conditional statement (Fn::If) counts
with each of its branches. Exits non-zero on any difference.
"""

import json
import sys

from cfnlint.decode import decode

PLACEHOLDERS = {
    "arn:aws:": "arn:${AWS::Partition}:",
    "LAKE_BUCKET": "${LakeBucket}",
    "LAKE_PREFIX": "${LakePrefix}",
    "ATHENA_RESULTS_BUCKET": "${LakeBucket}",
    "ATHENA_RESULTS_PREFIX": "athena-results",
    "REGION": "${AWS::Region}",
    "ACCOUNT_ID": "${AWS::AccountId}",
    "ATHENA_WORKGROUP": "${AthenaWorkgroupName}",
    "GLUE_DATABASE": "${GlueDatabaseName}",
    "SEARCH_DOMAIN": "${SearchDomainName}",
}
# Whole resources the template names by reference.
REFERENCES = {
    "arn:aws:sns:REGION:ACCOUNT_ID:ALERT_TOPIC": {"Ref": "AlertTopic"},
    "arn:aws:es:REGION:ACCOUNT_ID:domain/SEARCH_DOMAIN/*": [
        {"Fn::Sub": "arn:${AWS::Partition}:es:${AWS::Region}:${AWS::AccountId}:domain/${SearchDomainName}/*"},
        {"Fn::Sub": "${SearchDomainArn}/*"},
    ],
}
OMITTED = {
    "KmsForLakeAndTopic": "the stack's bucket and topic use AWS-managed keys, which need no grant",
    "S3SourceReadObjects": "the AMI's config reads Kafka, not the S3 source",
    "S3SourceDoneMarkers": "the AMI's config reads Kafka, not the S3 source",
    "S3SourceBuckets": "the AMI's config reads Kafka, not the S3 source",
    "S3SourceQueue": "the AMI's config reads Kafka, not the S3 source",
    "ConfigSecrets": "the stack's config references no secret; a deployment that does grants its own ARNs",
    "ConfigParameters": "the stack's config references no parameter; a deployment that does grants its own",
    "MskConnect": "the stack takes brokers, not an MSK cluster, and sets no Kafka security",
    "MskReadSource": "the stack takes brokers, not an MSK cluster, and sets no Kafka security",
    "MskConsumerGroup": "the stack takes brokers, not an MSK cluster, and sets no Kafka security",
    "MskWriteSinks": "the stack takes brokers, not an MSK cluster, and sets no Kafka security",
    "MskPluginStateTopic": "the stack takes brokers, not an MSK cluster, and sets no Kafka security",
    "MskExactlyOnce": "the stack takes brokers, not an MSK cluster, and sets no Kafka security",
}


def as_list(x):
    return x if isinstance(x, list) else [x]


def expected(resource):
    if resource in REFERENCES:
        return as_list(REFERENCES[resource])
    out = resource
    for k, v in PLACEHOLDERS.items():
        out = out.replace(k, v)
    return [{"Fn::Sub": out}]


def branches(stmt):
    """The statements a (possibly conditional) entry stands for."""
    if isinstance(stmt, dict) and "Fn::If" in stmt:
        _, yes, no = stmt["Fn::If"]
        return branches(yes) + branches(no)
    if stmt == {"Ref": "AWS::NoValue"}:
        return []
    return [stmt]


def main(template_path, policy_path):
    template, matches = decode(template_path)
    if matches:
        sys.exit(f"policy_match: cannot read {template_path}: {matches}")
    policy = {s["Sid"]: s for s in json.load(open(policy_path))["Statement"]}
    role = template["Resources"]["HostRole"]["Properties"]["Policies"]
    statements = [b for p in role for s in p["PolicyDocument"]["Statement"] for b in branches(s)]
    problems, seen = [], set()
    for st in statements:
        sid = st.get("Sid")
        want = policy.get(sid)
        if want is None:
            problems.append(f"template statement {sid}: not in {policy_path}")
            continue
        seen.add(sid)
        if sorted(as_list(st["Action"])) != sorted(as_list(want["Action"])):
            problems.append(f"{sid}: actions {sorted(as_list(st['Action']))} != {sorted(as_list(want['Action']))}")
        allowed = [e for r in as_list(want["Resource"]) for e in expected(r)]
        for r in as_list(st["Resource"]):
            if r not in allowed:
                problems.append(f"{sid}: resource {r} is none of {allowed}")
        if len(as_list(st["Resource"])) != len(as_list(want["Resource"])):
            problems.append(f"{sid}: {len(as_list(st['Resource']))} resources, the policy has "
                            f"{len(as_list(want['Resource']))}")
        if st.get("Condition") != want.get("Condition"):
            problems.append(f"{sid}: conditions differ")
    for sid in policy:
        if sid not in seen and sid not in OMITTED:
            problems.append(f"{policy_path} statement {sid} is not in the template's role (nor in OMITTED)")
    for p in problems:
        print(f"policy_match: {p}", file=sys.stderr)
    print(f"policy_match: {len(statements)} statements of the role checked against {policy_path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
