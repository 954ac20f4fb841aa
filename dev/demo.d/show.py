"""What one dev/demo run put in the lake, the search engine and SNS, read back the way a
user would: the lake's Parquet with DuckDB, the index with a Kibana-style query, the alerts
as delivered to the topic's SQS subscription.

usage: show.py PREFIX NAMESPACE SINCE_EPOCH_S   (environment from `dev/stack env`)
"""
import json
import os
import sys
import tempfile
import urllib.request

import boto3
import duckdb

prefix, namespace, since = sys.argv[1], sys.argv[2], float(sys.argv[3])
endpoint = os.environ["SLUICE_AWS_ENDPOINT"]
bucket = os.environ["SLUICE_S3_BUCKET"]
s3 = boto3.client("s3", endpoint_url=endpoint)


def lake():
    print(f"==> the lake: s3://{bucket}/{prefix}/ read back with DuckDB")
    with tempfile.TemporaryDirectory() as tmp:
        counts = {}
        for table in ("raw", "cleaned", "metrics"):
            os.makedirs(f"{tmp}/{table}")
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}/{table}/"
            )
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
            counts[table] = len(keys)
            for i, key in enumerate(keys):
                name = f"{i}.{'ndjson.gz' if table == 'raw' else 'parquet'}"
                s3.download_file(bucket, key, f"{tmp}/{table}/{name}")
        print("  objects: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
        if not counts["cleaned"]:
            print("  (no cleaned objects)")
            return
        db = duckdb.connect()
        raw = db.sql(f"select count(*) from read_json_auto('{tmp}/raw/*.ndjson.gz')").fetchall()[0]
        print(f"  raw rows: {raw[0]}")
        print("  cleaned, per service (error = log_level error or worse):")
        rows = db.sql(
            f"""select service_name, count(*) as records,
                   round(100 * avg(case when severity_number >= 17 then 1 else 0 end), 1)
                     as error_pct
                from read_parquet('{tmp}/cleaned/*.parquet')
                group by 1 order by error_pct desc, records desc"""
        ).fetchall()
        for service, records, pct in rows:
            print(f"    {service or '(none)':<14} {records:>7} records  {pct:>5}% errors")
        if counts["metrics"]:
            worst = db.sql(
                f"""select service_name, cast(window_start as varchar), count, error_rate
                    from read_parquet('{tmp}/metrics/*.parquet')
                    order by error_rate desc limit 1"""
            ).fetchall()[0]
            print(
                f"  metrics: worst window {worst[0]} at {worst[1]}: "
                f"{worst[2]} records, error rate {worst[3]:.1%}"
            )


def search():
    url = os.environ["SLUICE_SEARCH_URL"]
    index = f"logs-sluice-{namespace}"
    print(f"==> search: {index}, as Kibana Discover asks for checkout's errors")
    urllib.request.urlopen(urllib.request.Request(f"{url}/{index}/_refresh", method="POST"))
    query = {
        "size": 3,
        "sort": [{"@timestamp": "desc"}],
        "track_total_hits": True,
        "query": {
            "bool": {
                "filter": [
                    {"term": {"service.name": "checkout"}},
                    {"terms": {"log.level": ["error", "fatal", "critical"]}},
                ]
            }
        },
    }
    request = urllib.request.Request(
        f"{url}/{index}/_search",
        data=json.dumps(query).encode(),
        headers={"Content-Type": "application/json"},
    )
    body = json.load(urllib.request.urlopen(request))
    total = json.load(urllib.request.urlopen(f"{url}/{index}/_count"))["count"]
    hits = body["hits"]
    print(f"  {total} documents; checkout errors: {hits['total']['value']}")
    for hit in hits["hits"]:
        doc = hit["_source"]
        print(f"    {doc.get('@timestamp')} {doc.get('message', '')[:90]}")


def alerts():
    queue = os.environ["SLUICE_SQS_TAP_URL"]
    sqs = boto3.client("sqs", endpoint_url=endpoint)
    print("==> SNS: alerts as the topic's SQS subscription received them")
    seen = 0
    for _ in range(5):
        got = sqs.receive_message(
            QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1,
            AttributeNames=["SentTimestamp"],
        ).get("Messages", [])
        if not got:
            break
        for m in got:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            if int(m["Attributes"]["SentTimestamp"]) / 1000 < since:
                continue
            note = json.loads(m["Body"])
            subject = note.get("Subject") or ""
            if seen < 3:
                print(f"    {subject[:100]}")
            seen += 1
    print(f"  {seen} notifications in this run")


lake()
search()
alerts()
