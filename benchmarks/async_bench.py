"""dynamongo's awaitable calls against the async DynamoDB clients.

    pip install -e . -r benchmarks/requirements-async.txt
    npm ci
    python benchmarks/async_bench.py [--requests 2000] [--in-flight 64]
        [--rounds 3]

Starts its own dynalite (from node_modules) and fills a table. Then, in a
fresh process per contender, contenders alternating round after round:
``--requests`` GetItem and as many PutItem requests, ``--in-flight`` at
once -- on one event loop for aioboto3, aiodynamo (over aiohttp, its
fastest client) and dynamongo's awaitable calls; on as many threads for
dynamongo's sync calls. Client figures are the contender's process CPU time
(all its threads; the server runs in another process) per request, and
wall time; each is the median over the rounds. Last, how long dynamongo's
asave_many of 3,000 items holds up the other tasks of its loop (the longest
gap between two ticks of a task that only ticks). Prints the issue's
targets, met or missed.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from bench import start_dynalite  # noqa: E402

REGION, KEY, SECRET = "us-east-1", "bench", "bench"
TABLE = "async_bench"
CONTENDERS = ("aioboto3", "aiodynamo", "dynamongo threads",
              "dynamongo async")


def item(number):
    return {"id": f"user-{number:06d}", "name": f"User {number}",
            "age": number % 90, "email": f"u{number}@example.com"}


def model():
    import dynamongo

    class User(dynamongo.Model):
        __table__ = TABLE
        __hash_key__ = "id"
        __billing_mode__ = "PAY_PER_REQUEST"
        id = dynamongo.StringField(required=True)
        name = dynamongo.StringField()
        age = dynamongo.IntField()
        email = dynamongo.StringField()
    return User


def configure(endpoint, in_flight):
    from dynamongo import Connection

    Connection.set_config(endpoint_url=endpoint, region=REGION,
                          access_key_id=KEY, secret_access_key=SECRET,
                          max_pool_connections=in_flight)


# -- Contenders: each runs in a process of its own ---------------------------

async def in_flight_calls(call, count, width):
    """``call(number)`` for each number below ``count``, ``width`` at
    once."""
    numbers = iter(range(count))

    async def worker():
        for number in numbers:
            await call(number)
    await asyncio.gather(*[worker() for _ in range(width)])


async def with_aioboto3(endpoint, count, width):
    import aioboto3
    from botocore.config import Config

    session = aioboto3.Session(aws_access_key_id=KEY,
                               aws_secret_access_key=SECRET,
                               region_name=REGION)
    async with session.client(
            "dynamodb", endpoint_url=endpoint,
            config=Config(max_pool_connections=width)) as client:
        async def get(number):
            await client.get_item(TableName=TABLE, Key={
                "id": {"S": item(number % count)["id"]}})

        async def put(number):
            await client.put_item(TableName=TABLE, Item={
                "id": {"S": f"put-{number:06d}"}, "name": {"S": "x"},
                "age": {"N": str(number % 90)},
                "email": {"S": f"p{number}@example.com"}})
        return await timed(get, put, count, width)


async def with_aiodynamo(endpoint, count, width):
    from aiodynamo.client import Client
    from aiodynamo.credentials import Key, StaticCredentials
    from aiodynamo.http.aiohttp import AIOHTTP
    from aiohttp import ClientSession, TCPConnector
    from yarl import URL

    async with ClientSession(connector=TCPConnector(limit=width)) as http:
        client = Client(AIOHTTP(http), StaticCredentials(Key(KEY, SECRET)),
                        REGION, endpoint=URL(endpoint))
        table = client.table(TABLE)

        async def get(number):
            await table.get_item({"id": item(number % count)["id"]})

        async def put(number):
            await table.put_item(dict(item(number), id=f"put-{number:06d}"))
        return await timed(get, put, count, width)


async def with_dynamongo_async(endpoint, count, width):
    configure(endpoint, width)
    User = model()

    async def get(number):
        await User.aget_one(item(number % count)["id"])

    async def put(number):
        await User.asave_one(dict(item(number), id=f"put-{number:06d}"))
    return await timed(get, put, count, width)


def with_dynamongo_threads(endpoint, count, width):
    from concurrent.futures import ThreadPoolExecutor

    configure(endpoint, width)
    User = model()

    def get(number):
        User.get_one(item(number % count)["id"])

    def put(number):
        User.save_one(dict(item(number), id=f"put-{number:06d}"))

    figures = {}
    with ThreadPoolExecutor(width) as threads:
        list(threads.map(get, range(width)))  # warm: connections, threads
        for name, call in (("get", get), ("put", put)):
            cpu, wall = time.process_time(), time.perf_counter()
            list(threads.map(call, range(count)))
            figures[name] = (time.process_time() - cpu,
                             time.perf_counter() - wall)
    return figures


async def timed(get, put, count, width):
    """{"get": (CPU s, wall s), "put": ...} of ``count`` calls each."""
    await in_flight_calls(get, width, width)  # warm: connections
    figures = {}
    for name, call in (("get", get), ("put", put)):
        cpu, wall = time.process_time(), time.perf_counter()
        await in_flight_calls(call, count, width)
        figures[name] = (time.process_time() - cpu,
                         time.perf_counter() - wall)
    return figures


def contend(name, endpoint, count, width):
    """Run one contender here and print its figures as JSON."""
    if name == "dynamongo threads":
        figures = with_dynamongo_threads(endpoint, count, width)
    else:
        run = {"aioboto3": with_aioboto3, "aiodynamo": with_aiodynamo,
               "dynamongo async": with_dynamongo_async}[name]
        figures = asyncio.run(run(endpoint, count, width))
    print(json.dumps(figures))


def longest_stall(endpoint, count=3000):
    """The longest time (s) asave_many of ``count`` items keeps a ticking
    task of its loop from running."""
    configure(endpoint, 16)
    User = model()
    items = [dict(item(number), id=f"stall-{number:06d}")
             for number in range(count)]
    User.save_one(items[0])  # (compiles the model's codec, once a process)

    async def saving():
        gaps, running = [], True

        async def ticker():
            last = time.perf_counter()
            while running:
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticking = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        result = await User.asave_many(items)
        running = False
        await ticking
        assert len(result.success) == count
        return max(gaps)
    return asyncio.run(saving())


# -- The run -----------------------------------------------------------------

def fill(endpoint, count):
    configure(endpoint, 16)
    User = model()
    User.create_table(exist_ok=True)
    result = User.save_many([item(number) for number in range(count)])
    assert result.fail == [], result.fail[:1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--contend", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--stall", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contend:
        return contend(args.contend, args.endpoint, args.requests,
                       args.in_flight)
    if args.stall:
        return print(json.dumps(longest_stall(args.endpoint)))
    server, endpoint = start_dynalite()
    try:
        fill(endpoint, args.requests)
        figures = {name: {"get": [], "put": []} for name in CONTENDERS}
        for round_ in range(args.rounds):
            order = CONTENDERS[round_ % len(CONTENDERS):] \
                + CONTENDERS[:round_ % len(CONTENDERS)]
            for name in order:
                out = subprocess.run(
                    [sys.executable, __file__, "--contend", name,
                     "--endpoint", endpoint, "--requests",
                     str(args.requests), "--in-flight", str(args.in_flight)],
                    check=True, capture_output=True, text=True)
                for kind, value in json.loads(out.stdout).items():
                    figures[name][kind].append(value)
        stall = json.loads(subprocess.run(
            [sys.executable, __file__, "--stall", "--endpoint", endpoint],
            check=True, capture_output=True, text=True).stdout)
    finally:
        server.terminate()
    report(figures, args, stall)


def report(figures, args, stall):
    count = args.requests
    print(f"{count} GetItem and {count} PutItem, {args.in_flight} in flight, "
          f"against dynalite; median of {args.rounds} rounds, a fresh "
          f"process per contender (Python {sys.version.split()[0]})\n")
    print(f"{'contender':20} {'get CPU/req':>12} {'put CPU/req':>12} "
          f"{'get wall':>9} {'put wall':>9}")
    medians = {}
    for name, kinds in figures.items():
        cpu = {kind: statistics.median(run[0] for run in runs) / count
               for kind, runs in kinds.items()}
        wall = {kind: statistics.median(run[1] for run in runs)
                for kind, runs in kinds.items()}
        medians[name] = cpu, wall
        print(f"{name:20} {cpu['get'] * 1e6:>9.0f} µs "
              f"{cpu['put'] * 1e6:>9.0f} µs {wall['get']:>7.2f} s "
              f"{wall['put']:>7.2f} s")
    ours_cpu, ours_wall = medians["dynamongo async"]
    print("\ntargets:")
    for kind in ("get", "put"):
        checks = (
            ("CPU/request vs aiodynamo", ours_cpu[kind]
             / medians["aiodynamo"][0][kind], 0.35),
            ("CPU/request vs dynamongo threads", ours_cpu[kind]
             / medians["dynamongo threads"][0][kind], 1.0),
            ("wall vs aioboto3", ours_wall[kind]
             / medians["aioboto3"][1][kind], 0.5))
        for what, ratio, target in checks:
            print(f"  {kind} {what}: {ratio:.2f}x (target <= {target}x) "
                  f"{'met' if ratio <= target else 'MISSED'}")
    print(f"\nasave_many of 3,000 items: the loop's other tasks waited at "
          f"most {stall * 1e3:.1f} ms at a time")


if __name__ == "__main__":
    main()
