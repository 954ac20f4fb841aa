#!/usr/bin/env python3
"""Deploys deploy/cloudformation/sluice.yaml into the local AWS emulator and inspects it.

    stack.py deploy NAME USER_DATA_OUT [PARAM=VALUE...]
                                         create the stack (with these parameters too), check
                                         what it made, write the launch template's user
                                         data; prints the outputs as KEY=VALUE lines
    stack.py tap TOPIC_ARN               subscribe a new SQS queue to the topic; prints its URL
    stack.py lake BUCKET PREFIX          prints `table objects records` for raw, cleaned, metrics
    stack.py drain QUEUE_URL             prints how many messages the queue holds
    stack.py delete NAME [BUCKET]        delete the stack (and empty and delete its bucket)

Runs with the local stack's Python (boto3) and environment (dev/stack env). moto's
CloudFormation does not implement AWS::Glue::*, AWS::Athena::WorkGroup,
AWS::OpenSearchService::Domain or AWS::S3::BucketPolicy: the stack is created with
CreateGlueTables=false and no search domain, and the bucket policy is skipped by moto.
"""

import ast
import base64
import gzip
import io
import os
import sys
import time
import urllib.parse

import boto3
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "..", "cloudformation", "sluice.yaml")
ENDPOINT = os.environ["SLUICE_AWS_ENDPOINT"]


def client(name):
    return boto3.client(name, endpoint_url=ENDPOINT)


def fail(message):
    print(f"stack.py: {message}", file=sys.stderr)
    sys.exit(1)


def deploy(name, user_data_out, *extra):
    cf, ec2 = client("cloudformation"), client("ec2")
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    params = {
        "AmiId": ami,
        "InstanceType": "t3.micro",
        "DesiredCapacity": "1",
        "KafkaBrokers": os.environ.get("SLUICE_KAFKA", "127.0.0.1:9092"),
        "CreateGlueTables": "false",
        "AlertEmail": "ops@example.com",
        "AwsEndpointUrl": ENDPOINT,
    }
    params.update(p.split("=", 1) for p in extra)
    cf.create_stack(StackName=name, TemplateBody=open(TEMPLATE).read(), Capabilities=["CAPABILITY_IAM"],
                    Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()])
    deadline = time.time() + 60
    while True:
        stack = cf.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("IN_PROGRESS") or time.time() > deadline:
            break
        time.sleep(0.5)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        events = [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
                  for e in cf.describe_stack_events(StackName=name)["StackEvents"] if "FAILED" in e["ResourceStatus"]]
        fail(f"stack {name} is {stack['StackStatus']}: {stack.get('StackStatusReason')} {events}")
    out = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    check_made(out)
    versions = ec2.describe_launch_template_versions(LaunchTemplateId=out["LaunchTemplateId"])
    user_data = base64.b64decode(versions["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"])
    with open(user_data_out, "wb") as f:
        f.write(user_data)
    for k, v in out.items():
        print(f"{k}={v}")


def check_made(out):
    """What the stack must have made, as the emulator reports it."""
    s3, sns, iam, asg, ec2 = (client(n) for n in ("s3", "sns", "iam", "autoscaling", "ec2"))
    bucket = out["LakeBucketName"]
    # moto's CloudFormation applies a bucket's encryption and tags only: the public access
    # block and versioning are checkov's to check (CKV_AWS_53-56, CKV_AWS_21).
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    if not enc:
        fail(f"bucket {bucket}: no default encryption")
    subs = sns.list_subscriptions_by_topic(TopicArn=out["AlertTopicArn"])["Subscriptions"]
    if not any(s["Protocol"] == "email" and s["Endpoint"] == "ops@example.com" for s in subs):
        fail(f"topic {out['AlertTopicArn']}: no email subscription: {subs}")
    role = out["HostRoleArn"].rsplit("/", 1)[1]
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=role, PolicyName=names[0])["PolicyDocument"]
    if isinstance(doc, str):  # moto keeps a CloudFormation policy as the text of a dict
        doc = ast.literal_eval(urllib.parse.unquote(doc))
    sids = {s["Sid"] for s in doc["Statement"] if s}
    if not {"LakeWriteObjects", "LakeBucket", "PublishAlerts"} <= sids:
        fail(f"role {role}: statements {sorted(sids)}")
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[out["AutoScalingGroupName"]])
    lt = groups["AutoScalingGroups"][0].get("LaunchTemplate", {})
    if lt.get("LaunchTemplateId") != out["LaunchTemplateId"]:
        fail(f"auto scaling group: launch template {lt}, not {out['LaunchTemplateId']}")
    sg = ec2.describe_security_groups(GroupIds=[out["HostSecurityGroupId"]])["SecurityGroups"][0]
    for rule in sg["IpPermissions"]:
        cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])]
        if rule.get("FromPort") == 9898 and cidrs != ["10.42.0.0/16"]:
            fail(f"security group: admin port open to {cidrs}, not only the VPC")
    if not any(r.get("FromPort") == 9898 for r in sg["IpPermissions"]):
        fail("security group: no admin port rule")
    if any(r.get("FromPort") != 9898 for r in sg["IpPermissions"]):
        fail(f"security group: ingress other than the admin port: {sg['IpPermissions']}")


def tap(topic_arn):
    sqs, sns = client("sqs"), client("sns")
    name = "tap-" + topic_arn.rsplit(":", 1)[1][-60:]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    print(url)


def lake(bucket, prefix):
    s3 = client("s3")
    for table in ("raw", "cleaned", "metrics"):
        objects = records = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/{table}/"):
            for o in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                objects += 1
                if table == "raw":
                    records += sum(1 for line in gzip.decompress(body).splitlines() if line.strip())
                else:
                    records += pq.read_table(io.BytesIO(body)).num_rows
        print(f"{table} {objects} {records}")


def drain(url):
    sqs, n = client("sqs"), 0
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not got:
            break
        n += len(got)
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    print(n)


def delete(name, bucket=None):
    """Delete the lake bucket the stack retains (DeletionPolicy: Retain), then the stack (which
    moto may refuse: it cannot delete a VPC its group's instances still use)."""
    if bucket:
        s3 = client("s3")
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
        s3.delete_bucket(Bucket=bucket)
    client("cloudformation").delete_stack(StackName=name)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"deploy": deploy, "tap": tap, "lake": lake, "drain": drain, "delete": delete}[cmd](*args)
    # pyarrow's threads can abort the interpreter's teardown ("terminate called without an
    # active exception"); everything is printed by now.
    sys.stdout.flush()
    os._exit(0)
