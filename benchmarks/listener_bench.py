"""What watching requests costs a call: get_one with the wire stubbed out
in-process (a canned answer, no network), so that the engine's own cost
is what is measured.

    python benchmarks/listener_bench.py [--calls 20000] [--module DIR]

Prints CPU per call: with no listener (logging not imported; then
imported, the dynamongo logger at its default level), with a listener
that does nothing, with opentelemetry_listener (the OpenTelemetry SDK
making spans, exporting none; "(not in this module)" without the SDK), and
with the dynamongo logger at DEBUG (records dropped by a null handler);
then, for scale, boto3's get_item (its HTTP answered in-process) without
and with opentelemetry-instrumentation-botocore. ``--module DIR``
measures the dynamongo.py in DIR instead (an older release, for a
before/after comparison); each case runs in a fresh process, best of 7
repeats.
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CASE = """
import sys, time
sys.path.insert(0, {folder!r})
import dynamongo

class User(dynamongo.Model):
    __table__ = "users"
    __hash_key__ = "email"
    email = dynamongo.StringField(required=True)
    name = dynamongo.StringField()

ITEM = {{"Item": {{"email": {{"S": "a@b.io"}}, "name": {{"S": "Ann"}}}}}}
dynamongo._send = lambda operation, params: dict(ITEM)
dynamongo.Connection.set_config(access_key_id="a", secret_access_key="b",
                                region="us-east-1")
case = {case!r}
if case != "plain":
    import logging
if case == "listener":
    class Quiet:
        def started(self, event): pass
        def succeeded(self, event): pass
        def failed(self, event): pass
    dynamongo.Connection.add_listener(Quiet())
if case == "opentelemetry":  # spans made and ended, none exported
    from opentelemetry.sdk.trace import TracerProvider
    dynamongo.Connection.add_listener(
        dynamongo.opentelemetry_listener(TracerProvider()))
if case == "debug log":
    logger = logging.getLogger("dynamongo")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
for _ in range(2000):
    User.get_one("a@b.io")
best = float("inf")
for _ in range(7):
    start = time.process_time()
    for _ in range({calls}):
        User.get_one("a@b.io")
    best = min(best, (time.process_time() - start) / {calls})
print(best)
"""

CASES = ("plain", "logging imported", "listener", "opentelemetry",
         "debug log")

# For scale: boto3's get_item, its HTTP answered by a before-send handler,
# without and with opentelemetry-instrumentation-botocore.
BOTO3 = """
import json, sys, time
import boto3
from botocore.awsrequest import AWSResponse

client = boto3.client("dynamodb", region_name="us-east-1",
                      aws_access_key_id="a", aws_secret_access_key="b")
body = json.dumps({{"Item": {{"email": {{"S": "a@b.io"}}}}}}).encode()

def answer(request, **kwargs):
    response = AWSResponse(request.url, 200, {{
        "x-amzn-RequestId": "r", "content-length": str(len(body))}}, None)
    response._content = body
    return response

client.meta.events.register("before-send.dynamodb", answer)
if {case!r} == "boto3, instrumented":
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    BotocoreInstrumentor().instrument(tracer_provider=TracerProvider())
key = {{"email": {{"S": "a@b.io"}}}}
for _ in range(500):
    client.get_item(TableName="users", Key=key)
best = float("inf")
for _ in range(7):
    start = time.process_time()
    for _ in range({calls} // 10):
        client.get_item(TableName="users", Key=key)
    best = min(best, (time.process_time() - start) / ({calls} // 10))
print(best)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--module", default=ROOT)
    args = parser.parse_args()
    print(f"get_one, wire stubbed, CPU per call (best of 7 x {args.calls}), "
          f"{os.path.join(args.module, 'dynamongo.py')}:")
    cases = [(case, CASE) for case in CASES] + [
        ("boto3", BOTO3), ("boto3, instrumented", BOTO3)]
    for case, code in cases:
        out = subprocess.run(
            [sys.executable, "-c", code.format(
                folder=args.module, case=case, calls=args.calls)],
            capture_output=True, text=True)
        print(f"  {case:20} " + (f"{float(out.stdout) * 1e6:6.2f} µs"
                                 if out.returncode == 0 else
                                 "(not in this module)"))


if __name__ == "__main__":
    main()
