"""Create (or check) the AWS resources of the local stack in moto.

Usage: aws_setup.py ENDPOINT [--check] [--timeout SECONDS]

Idempotent: the S3 bucket, the SNS topic, the SQS queue and the queue's
subscription to the topic are created only when missing. With --check nothing
is created; the script reports what exists and exits non-zero if something
is missing.
"""

import argparse
import json
import os
import sys
import time

import boto3
import botocore.config
import botocore.exceptions

REGION = os.environ.get("AWS_REGION", "us-east-1")
BUCKET = "sluice-lake"
TOPIC = "sluice-alerts"
QUEUE = "sluice-alerts-tap"


def clients(endpoint):
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"),
        region_name=REGION,
    )
    cfg = botocore.config.Config(
        connect_timeout=2, read_timeout=10, retries={"max_attempts": 1}
    )
    return tuple(
        session.client(name, endpoint_url=endpoint, config=cfg)
        for name in ("s3", "sns", "sqs")
    )


def wait_ready(s3, timeout):
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3.list_buckets()
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if time.monotonic() > deadline:
                sys.exit(f"aws: endpoint does not answer: {e}")
            time.sleep(0.3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--timeout", type=float, default=30)
    args = ap.parse_args()

    s3, sns, sqs = clients(args.endpoint)
    wait_ready(s3, args.timeout)
    missing = []

    buckets = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if BUCKET not in buckets:
        if args.check:
            missing.append(f"bucket {BUCKET}")
        else:
            s3.create_bucket(Bucket=BUCKET)
            print(f"aws: created bucket s3://{BUCKET}")

    topic_arn = None
    for page in sns.get_paginator("list_topics").paginate():
        for t in page.get("Topics", []):
            if t["TopicArn"].rsplit(":", 1)[-1] == TOPIC:
                topic_arn = t["TopicArn"]
    if topic_arn is None:
        if args.check:
            missing.append(f"topic {TOPIC}")
        else:
            topic_arn = sns.create_topic(Name=TOPIC)["TopicArn"]
            print(f"aws: created topic {topic_arn}")

    try:
        queue_url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        queue_url = None
    if queue_url is None:
        if args.check:
            missing.append(f"queue {QUEUE}")
        else:
            queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
            print(f"aws: created queue {queue_url}")

    if topic_arn and queue_url:
        queue_arn = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        subscribed = any(
            s.get("Endpoint") == queue_arn and s.get("Protocol") == "sqs"
            for page in sns.get_paginator("list_subscriptions_by_topic").paginate(
                TopicArn=topic_arn
            )
            for s in page.get("Subscriptions", [])
        )
        if not subscribed:
            if args.check:
                missing.append(f"subscription {QUEUE} -> {TOPIC}")
            else:
                policy = {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "sns.amazonaws.com"},
                            "Action": "sqs:SendMessage",
                            "Resource": queue_arn,
                            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
                        }
                    ],
                }
                sqs.set_queue_attributes(
                    QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)}
                )
                sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
                print(f"aws: subscribed {QUEUE} to {TOPIC}")

    if missing:
        sys.exit("aws: missing: " + ", ".join(missing))
    print(f"aws: ready: s3://{BUCKET}, {topic_arn}, {queue_url}")


if __name__ == "__main__":
    main()
