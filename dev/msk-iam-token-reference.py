#!/usr/bin/env python3
"""The MSK IAM token of host/src/kafka_security/msk_iam.rs's known-answer test, made
independently: aws-msk-iam-sasl-signer-python's `__construct_auth_token` reproduced with
botocore (SigV4QueryAuth for `kafka-cluster`, 900 s, then `User-Agent`, base64url without
padding), the test's fixed credentials and its fixed clock.

    python3 -m pip install botocore && python3 dev/msk-iam-token-reference.py
"""
import base64
import datetime
from unittest import mock

import botocore.auth
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REGION = "eu-west-1"
USER_AGENT = "sluice-test/1.0"
NOW = datetime.datetime(2024, 1, 2, 3, 4, 5)  # UTC, as botocore's clock returns it
CREDENTIALS = Credentials(
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "FwoGZXIvYXdzEXAMPLE/session+token==",
)


def token():
    signer = SigV4QueryAuth(CREDENTIALS, "kafka-cluster", REGION, expires=900)
    request = AWSRequest(
        method="GET",
        url=f"https://kafka.{REGION}.amazonaws.com/",
        params={"Action": "kafka-cluster:Connect"},
    )
    with mock.patch.object(botocore.auth.datetime, "datetime") as clock:
        clock.utcnow.return_value = NOW
        clock.now.return_value = NOW.replace(tzinfo=datetime.timezone.utc)
        clock.strptime = datetime.datetime.strptime
        signer.add_auth(request)
    request.params = {"User-Agent": USER_AGENT}
    url = request.prepare().url
    return url, base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


if __name__ == "__main__":
    url, encoded = token()
    print(url)
    print(encoded)
