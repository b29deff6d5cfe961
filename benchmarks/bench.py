"""dynamongo against hand-written boto3 client code and PynamoDB.

    pip install -e '.[test]' -r benchmarks/requirements.txt
    npm ci
    python benchmarks/bench.py [--items 3000] [--bulk 5000] [--plot FILE]
        [--json FILE] [--scale 1000,10000,100000,300000] [--only-scaling]

Starts its own dynalite (from node_modules) and, for the bulk test, a
loopback proxy in another process that holds every request 5 ms. Client
figures are this process's CPU time (the servers run in other processes),
so they measure what a caller pays, not the server. Measures client CPU
per item, conversion, import, a whole cold-start process, bulk wall time
against boto3's helpers and boto3 client code on 16 threads, and a
scaling table (CPU per item and peak memory from 1,000 to 300,000 items,
each in a fresh process); prints them with the project's targets, met or
missed.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CREDENTIALS = dict(region_name="us-east-1", aws_access_key_id="bench",
                   aws_secret_access_key="bench")
GROUP = "bench"


# -- Servers -----------------------------------------------------------------

def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def start_dynalite():
    cli = os.path.join(ROOT, "node_modules", "dynalite", "cli.js")
    if not os.path.exists(cli):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=ROOT,
                       check=True)
    port = free_port()
    server = subprocess.Popen(
        ["node", cli, "--port", str(port), "--createTableMs", "0",
         "--deleteTableMs", "0"], stdout=subprocess.DEVNULL)
    wait_for(port)
    return server, f"http://127.0.0.1:{port}"


class SlowProxy(http.server.BaseHTTPRequestHandler):
    """Forwards each request to the target after holding it 5 ms. Its
    sockets set TCP_NODELAY, as AWS's endpoints and every HTTP client here
    do: without it Nagle's algorithm and delayed ACKs add up to 40 ms to a
    request, which punishes clients sending one request at a time."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # (http.client sets it upstream)
    target = None
    local = threading.local()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.005)
        headers = {name: value for name, value in self.headers.items()
                   if name.lower() != "host"}
        for attempt in range(2):  # the server may have closed an idle one
            connection = getattr(self.local, "connection", None)
            if connection is None:
                connection = self.local.connection = \
                    http.client.HTTPConnection(*self.target)
            try:
                connection.request("POST", self.path, body, headers)
                response = connection.getresponse()
                answer = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                connection.close()
                self.local.connection = None
                if attempt:
                    raise
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "keep-alive",
                                    "transfer-encoding", "date"):
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


def run_proxy(port, target_port):
    SlowProxy.target = ("127.0.0.1", target_port)
    http.server.ThreadingHTTPServer.request_queue_size = 256  # 16 threads+
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), SlowProxy)
    server.daemon_threads = True
    server.serve_forever()


def start_proxy(endpoint):
    port = free_port()
    target_port = endpoint.rsplit(":", 1)[1]
    proxy = subprocess.Popen([sys.executable, __file__, "--proxy", str(port),
                              target_port])
    wait_for(port)
    return proxy, f"http://127.0.0.1:{port}"


# -- The three contenders ----------------------------------------------------

def make_items(count):
    moment = datetime.datetime(2024, 5, 6, 7, 8, 9, 123456,
                               tzinfo=datetime.timezone.utc)
    return [{"group": GROUP, "email": f"user{number:06d}@example.com",
             "name": f"User Number {number}",
             "year_of_birth": 1950 + number % 60,
             "cities_visited": ["Nairobi", "New York", "Lima"][:number % 4],
             "created_at": moment + datetime.timedelta(seconds=number)}
            for number in range(count)]


def dynamongo_model(endpoint, table):
    import dynamongo as dm

    dm.Connection.set_config(endpoint_url=endpoint, access_key_id="bench",
                             secret_access_key="bench", region="us-east-1",
                             table_prefix="")

    class BenchUser(dm.Model):
        __table__ = table
        __hash_key__ = "group"
        __range_key__ = "email"
        __billing_mode__ = "PAY_PER_REQUEST"

        group = dm.StringField(required=True)
        email = dm.EmailField(required=True)
        name = dm.StringField(required=True)
        year_of_birth = dm.IntField(min_value=1900, max_value=2018)
        cities_visited = dm.ListField(dm.StringField)
        created_at = dm.DateTimeField()

    return BenchUser


def pynamodb_model(endpoint, table):
    from pynamodb.attributes import (ListAttribute, NumberAttribute,
                                     UnicodeAttribute, UTCDateTimeAttribute)
    from pynamodb.models import Model

    class PynamoUser(Model):
        class Meta:
            table_name = table
            host = endpoint
            region = "us-east-1"
            aws_access_key_id = "bench"
            aws_secret_access_key = "bench"
            billing_mode = "PAY_PER_REQUEST"

        group = UnicodeAttribute(hash_key=True)
        email = UnicodeAttribute(range_key=True)
        name = UnicodeAttribute()
        year_of_birth = NumberAttribute(null=True)
        cities_visited = ListAttribute(of=UnicodeAttribute, null=True)
        created_at = UTCDateTimeAttribute(null=True)

    return PynamoUser


def to_av(item):
    """The hand-written conversion boto3 users write."""
    return {"group": {"S": item["group"]}, "email": {"S": item["email"]},
            "name": {"S": item["name"]},
            "year_of_birth": {"N": str(item["year_of_birth"])},
            "cities_visited": {"L": [{"S": city}
                                     for city in item["cities_visited"]]},
            "created_at": {"S": item["created_at"].isoformat()}}


def from_av(item):
    return {"group": item["group"]["S"], "email": item["email"]["S"],
            "name": item["name"]["S"],
            "year_of_birth": int(item["year_of_birth"]["N"]),
            "cities_visited": [city["S"]
                               for city in item["cities_visited"]["L"]],
            "created_at": datetime.datetime.fromisoformat(
                item["created_at"]["S"])}


def boto3_write(client, table, items):
    requests = [{"PutRequest": {"Item": to_av(item)}} for item in items]
    for start in range(0, len(requests), 25):
        pending = {table: requests[start:start + 25]}
        while pending:
            pending = client.batch_write_item(
                RequestItems=pending)["UnprocessedItems"]


def boto3_query(client, table):
    items, params = [], dict(
        TableName=table, KeyConditionExpression="#g = :g",
        ExpressionAttributeNames={"#g": "group"},
        ExpressionAttributeValues={":g": {"S": GROUP}})
    while True:
        page = client.query(**params)
        items.extend(from_av(item) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def cpu(function, repeat=7):
    """Least process CPU seconds of ``repeat`` calls (all threads)."""
    best = None
    for _ in range(repeat):
        start = time.process_time()
        function()
        spent = time.process_time() - start
        best = spent if best is None else min(best, spent)
    return best


def per_item(seconds, count):
    return seconds / count * 1e6


# -- Measurements ------------------------------------------------------------

def measure_requests(endpoint, count):
    import boto3

    items = make_items(count)
    client = boto3.client("dynamodb", endpoint_url=endpoint, **CREDENTIALS)
    Dyn = dynamongo_model(endpoint, "bench-dynamongo")
    Pyn = pynamodb_model(endpoint, "bench-pynamodb")
    Dyn.create_table(exist_ok=True)
    if not Pyn.exists():
        Pyn.create_table(wait=True)
    client.create_table(
        TableName="bench-boto3", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "group", "KeyType": "HASH"},
                   {"AttributeName": "email", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "group", "AttributeType": "S"},
                              {"AttributeName": "email",
                               "AttributeType": "S"}])

    def pynamodb_write():
        with Pyn.batch_write() as batch:
            for item in items:
                batch.save(Pyn(**item))

    writes = {
        "boto3": cpu(lambda: boto3_write(client, "bench-boto3", items)),
        "PynamoDB": cpu(pynamodb_write),
        "dynamongo": cpu(lambda: Dyn.save_many(items)),
    }
    reads = {
        "boto3": cpu(lambda: boto3_query(client, "bench-boto3")),
        "PynamoDB": cpu(lambda: list(Pyn.query(GROUP))),
        "dynamongo": cpu(lambda: Dyn.get_many(Dyn.group == GROUP)),
    }
    assert len(Dyn.get_many(Dyn.group == GROUP)) == count
    assert len(list(Pyn.query(GROUP))) == count
    assert len(boto3_query(client, "bench-boto3")) == count
    return ({name: per_item(spent, count) for name, spent in writes.items()},
            {name: per_item(spent, count) for name, spent in reads.items()})


def measure_conversion(endpoint, count=2000):
    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    items = make_items(count)
    avs = [to_av(item) for item in items]
    Dyn = dynamongo_model(endpoint, "bench-dynamongo")
    Pyn = pynamodb_model(endpoint, "bench-pynamodb")
    serializer, deserializer = TypeSerializer(), TypeDeserializer()

    def timed(contenders, rounds=7):
        """Least µs per item of each ``name: (function, data)``, timed in
        turns so that all of them meet the machine in the same moods."""
        best = dict.fromkeys(contenders, float("inf"))
        for _ in range(rounds):
            for name, (function, data) in contenders.items():
                spent = min(timeit.repeat(lambda: [function(value)
                                                   for value in data],
                                          number=1, repeat=3))
                best[name] = min(best[name], per_item(spent, len(data)))
        return best

    return {
        "serialize": timed({
            "hand-written": (to_av, items),
            "boto3 TypeSerializer": (lambda item: {
                name: serializer.serialize(value if name != "created_at"
                                           else value.isoformat())
                for name, value in item.items()}, items),
            "PynamoDB": (lambda item: Pyn(**item).serialize(), items),
            "dynamongo (validated)": (Dyn._meta.validate_item, items),
        }),
        "deserialize": timed({
            "hand-written": (from_av, avs),
            "boto3 TypeDeserializer": (lambda item: {
                name: deserializer.deserialize(value)
                for name, value in item.items()}, avs),
            "PynamoDB": (Pyn.from_raw_data, [Pyn(**item).serialize()
                                             for item in items]),
            "dynamongo (to instances)": (Dyn._meta.from_item, avs),
        }),
    }


def measure_bulk(endpoint, count):
    """Wall seconds for ``count`` items through the 5 ms proxy: boto3's
    helpers (``Table.batch_writer()``, a BatchGetItem loop), boto3 client
    code on 16 threads sharing one client (the best plain boto3 does), and
    dynamongo's save_many, get_many and delete_many (16 threads too)."""
    import boto3
    from botocore.config import Config

    proxy, slow = start_proxy(endpoint)
    try:
        items = make_items(count)
        Dyn = dynamongo_model(slow, "bench-bulk-dynamongo")
        Dyn.create_table(exist_ok=True)
        resource = boto3.resource("dynamodb", endpoint_url=slow,
                                  **CREDENTIALS)
        client = boto3.client("dynamodb", endpoint_url=slow,
                              config=Config(max_pool_connections=16),
                              **CREDENTIALS)
        for name in ("bench-bulk-helpers", "bench-bulk-threads"):
            resource.create_table(
                TableName=name, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "group", "KeyType": "HASH"},
                           {"AttributeName": "email", "KeyType": "RANGE"}],
                AttributeDefinitions=[
                    {"AttributeName": "group", "AttributeType": "S"},
                    {"AttributeName": "email", "AttributeType": "S"}])
        table = resource.Table("bench-bulk-helpers")
        keys = [{"group": GROUP, "email": item["email"]} for item in items]
        av_keys = [{"group": {"S": GROUP}, "email": {"S": item["email"]}}
                   for item in items]

        def wall(function):
            """(wall seconds, this process's CPU seconds) of a call."""
            start, cpu = time.perf_counter(), time.process_time()
            function()
            return time.perf_counter() - start, time.process_time() - cpu

        def batch_writer_put():
            with table.batch_writer() as batch:
                for item in items:
                    batch.put_item(Item=dict(
                        item, created_at=item["created_at"].isoformat()))

        def batch_get_loop():
            found = 0
            for start in range(0, len(keys), 100):
                pending = {table.name: {"Keys": keys[start:start + 100]}}
                while pending:
                    answer = resource.batch_get_item(RequestItems=pending)
                    found += len(answer["Responses"][table.name])
                    pending = answer["UnprocessedKeys"]
            assert found == count

        def batch_writer_delete():
            with table.batch_writer() as batch:
                for key in keys:
                    batch.delete_item(Key=key)

        def on_threads(function, tasks):
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(16) as pool:
                return list(pool.map(function, tasks))

        def write_chunk(requests):
            pending = {"bench-bulk-threads": requests}
            while pending:
                pending = client.batch_write_item(
                    RequestItems=pending)["UnprocessedItems"]

        def threads_put():
            requests = [{"PutRequest": {"Item": to_av(item)}}
                        for item in items]
            on_threads(write_chunk, [requests[start:start + 25] for start
                                     in range(0, count, 25)])

        def read_chunk(chunk):
            found, pending = [], {"bench-bulk-threads": {"Keys": chunk}}
            while pending:
                answer = client.batch_get_item(RequestItems=pending)
                found += [from_av(item) for item in
                          answer["Responses"]["bench-bulk-threads"]]
                pending = answer["UnprocessedKeys"]
            return found

        def threads_get():
            found = on_threads(read_chunk, [av_keys[start:start + 100]
                                            for start in range(0, count,
                                                               100)])
            assert sum(map(len, found)) == count

        def threads_delete():
            requests = [{"DeleteRequest": {"Key": key}} for key in av_keys]
            on_threads(write_chunk, [requests[start:start + 25] for start
                                     in range(0, count, 25)])

        def dynamongo_get():
            assert len(Dyn.get_many([(GROUP, item["email"])
                                     for item in items])) == count

        def dynamongo_delete():
            assert Dyn.delete_many([(GROUP, item["email"])
                                    for item in items]).fail_count == 0

        # (boto3's helpers, boto3 client code on 16 threads, dynamongo),
        # each a write, read and delete in turn; the median of 3 rounds.
        contenders = (
            (batch_writer_put, batch_get_loop, batch_writer_delete),
            (threads_put, threads_get, threads_delete),
            (lambda: Dyn.save_many(items), dynamongo_get, dynamongo_delete))
        rounds = [[[wall(step) for step in steps] for steps in contenders]
                  for _ in range(3)]
        for name in ("bench-bulk-helpers", "bench-bulk-threads"):
            assert client.scan(TableName=name)["Count"] == 0

        def median(contender, step, part):
            return sorted(figures[contender][step][part]
                          for figures in rounds)[1]

        kinds = ("write", "read", "delete")
        return tuple({kind: [median(contender, step, part)
                             for contender in range(3)]
                      for step, kind in enumerate(kinds)}
                     for part in (0, 1))
    finally:
        proxy.terminate()


COLD = {
    "dynamongo": """
import dynamongo as dm

class User(dm.Model):
    __table__ = "bench-cold"
    __hash_key__ = "group"
    __range_key__ = "email"
    group = dm.StringField(required=True)
    email = dm.EmailField(required=True)
    name = dm.StringField(required=True)

user = User.get_one(("bench", "user000001@example.com"))
assert user.name == "User Number 1"
""",
    "boto3 client code": """
import boto3

client = boto3.client("dynamodb")
item = client.get_item(TableName="bench-cold", Key={
    "group": {"S": "bench"}, "email": {"S": "user000001@example.com"}})["Item"]
assert item["name"]["S"] == "User Number 1"
""",
    "PynamoDB": """
import os
from pynamodb.attributes import UnicodeAttribute
from pynamodb.models import Model

class User(Model):
    class Meta:
        table_name = "bench-cold"
        host = os.environ["AWS_ENDPOINT_URL"]
        region = os.environ["AWS_REGION"]
    group = UnicodeAttribute(hash_key=True)
    email = UnicodeAttribute(range_key=True)
    name = UnicodeAttribute()

assert User.get("bench", "user000001@example.com").name == "User Number 1"
""",
}


def lambda_bundles(folder):
    """Two copies of dynamongo.py as a Lambda bundle holds it, in a
    read-only folder, unzipped with new modification times: without
    bytecode (Python compiles the module at every cold start, unable to
    keep the result), and with the bytecode README's Lambda section says
    to ship (compileall's unchecked-hash mode, which no timestamp
    invalidates). Returns {name: folder}."""
    import shutil

    bundles = {}
    for name, compiled in (("no bytecode", False),
                           ("unchecked-hash bytecode", True)):
        bundle = os.path.join(folder, name.replace(" ", "-"))
        os.makedirs(bundle)
        shutil.copy(os.path.join(ROOT, "dynamongo.py"), bundle)
        if compiled:
            subprocess.run([sys.executable, "-m", "compileall", "-q",
                            "--invalidation-mode", "unchecked-hash",
                            bundle], check=True)
        os.utime(os.path.join(bundle, "dynamongo.py"))  # as unzipped
        imported = subprocess.run(
            [sys.executable, "-c",
             "import dynamongo; print(dynamongo.__file__)"],
            cwd=bundle, capture_output=True, text=True, check=True).stdout
        assert imported.startswith(bundle), imported  # not an installed copy
        bundles[name] = bundle
    return bundles


def measure_cold_start(endpoint, runs=11):
    """Median wall seconds of a whole fresh process that imports, defines a
    model and reads one item, as a Lambda function's cold start does (the
    credentials and region in the environment), the contenders in turns:
    dynamongo from a Lambda-like bundle with and without bytecode
    (lambda_bundles), boto3 and PynamoDB as installed (compiled); and of a
    bare interpreter, for reference."""
    import tempfile

    Dyn = dynamongo_model(endpoint, "bench-cold")
    Dyn.create_table(exist_ok=True)
    Dyn.save_one(make_items(2)[1])
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AWS_")}
    # As a read-only Lambda bundle: nothing compiled is written.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_SESSION_TOKEN="bench-token", AWS_REGION="us-east-1",
               AWS_DEFAULT_REGION="us-east-1",  # (Lambda sets both)
               AWS_ENDPOINT_URL=endpoint)
    with tempfile.TemporaryDirectory() as folder:
        bundles = lambda_bundles(folder)
        contenders = {f"dynamongo, {name}": (COLD["dynamongo"], bundle)
                      for name, bundle in bundles.items()}
        contenders.update({name: (code, folder) for name, code in
                           COLD.items() if name != "dynamongo"})
        contenders["bare interpreter"] = ("pass", folder)
        times = {name: [] for name in contenders}
        for _ in range(runs):
            for name, (code, cwd) in contenders.items():
                start = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], cwd=cwd,
                               env=env, check=True)
                times[name].append(time.perf_counter() - start)
    return {name: sorted(spent)[len(spent) // 2]
            for name, spent in times.items()}


def measure_import():
    environment = dict(os.environ)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed code runs

    def least(code, runs=9):
        times = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", "import time; t = time.perf_counter()"
                 f"; {code}; print(time.perf_counter() - t)"],
                cwd=ROOT, capture_output=True, text=True, check=True,
                env=environment)
            times.append(float(out.stdout))
        return min(times) * 1e3

    import dynamongo as dm

    def define():
        class Defined(dm.Model):
            __table__ = "defined"
            __hash_key__ = "email"
            email = dm.EmailField(required=True)
            name = dm.StringField(required=True)
            year_of_birth = dm.IntField(max_value=2018, min_value=1900)
            cities_visited = dm.ListField(dm.StringField)
            created_at = dm.DateTimeField(default=datetime.datetime.now)
        return Defined

    def define_and_use():
        # A model's own functions are written out when first used.
        model = define()
        native, stored = model._meta.validate_item({"email": "a@b.io",
                                                    "name": "A"})
        model._meta.item_json(stored)
        model._meta.identity(stored)
        model._meta.from_item(stored)

    def ms(function):
        return min(timeit.repeat(function, number=100, repeat=5)) * 10

    return {"import dynamongo": least("import dynamongo"),
            "import boto3": least("import boto3"),
            "import pynamodb.models": least("import pynamodb.models"),
            "define a model": ms(define),
            "define, then save and read once": ms(define_and_use)}


SCALING_KINDS = ("dynamongo get_many", "dynamongo iter_many",
                 "PynamoDB query()", "dynamongo save_many")


def measure_scaling(endpoint, sizes):
    """For each size: client CPU per item and peak memory of reading that
    many items by a Query (dynamongo's get_many and iter_many, PynamoDB's
    query() iterator) and of save_many writing them, each in a fresh
    process; and the peak of get_many over the result it returns, traced
    by tracemalloc."""
    Dyn = dynamongo_model(endpoint, "bench-scale")
    Dyn.create_table(exist_ok=True)
    for count in sizes:
        if Dyn.count(Dyn.group == f"g{count}") != count:
            # Without created_at, which PynamoDB writes in a format of its
            # own.
            Dyn.save_many([dict(item, group=f"g{count}", created_at=None)
                           for item in make_items(count)])
    figures = {}
    for count in sizes:
        # Small reads take a few milliseconds: the median of 5 processes
        # (of 3 at 100,000 and fewer).
        runs = 5 if count <= 10000 else 3 if count <= 100000 else 1
        for kind in SCALING_KINDS + ("dynamongo get_many traced",):
            results = []
            for _ in range(runs):
                out = subprocess.run(
                    [sys.executable, __file__, "--scaling-run", kind,
                     endpoint, str(count)], capture_output=True, text=True)
                if out.returncode:
                    raise SystemExit(f"{kind}: {out.stderr}")
                results.append([float(number)
                                for number in out.stdout.split()])
            figures.setdefault(kind, {})[count] = sorted(results)[runs // 2]
            print(count, kind, figures[kind][count], file=sys.stderr)
    return figures


def scaling_run(kind, endpoint, count):
    """In a fresh process: one scaling measurement, printed as "CPU us per
    item, peak MB above the baseline" (traced: "peak / result")."""
    def peak():  # the process's high-water mark of resident memory, KB
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    Dyn = dynamongo_model(endpoint, "bench-scale")
    Pyn = pynamodb_model(endpoint, "bench-scale")
    group = f"g{count}"
    # Connections made, modules imported and the model's functions written
    # before measuring.
    Dyn.get_many(Dyn.group == "g1000", limit=5)
    list(Pyn.query("g1000", limit=5))
    items = [dict(item, group=f"w{count}", created_at=None)
             for item in make_items(count)] \
        if kind == "dynamongo save_many" else None
    if kind == "dynamongo get_many traced":
        import tracemalloc

        tracemalloc.start()
        result = Dyn.get_many(Dyn.group == group)
        current, most = tracemalloc.get_traced_memory()
        assert len(result) == count
        print(most / current)
        return
    base, start = peak(), time.process_time()
    if kind == "dynamongo get_many":
        read = len(Dyn.get_many(Dyn.group == group))
    elif kind == "dynamongo iter_many":
        read = sum(1 for _ in Dyn.iter_many(Dyn.group == group))
    elif kind == "PynamoDB query()":
        read = sum(1 for _ in Pyn.query(group))
    else:
        read = Dyn.save_many(items).success_count
    spent = time.process_time() - start
    assert read == count, (kind, read)
    print(per_item(spent, count), (peak() - base) / 1024)


# -- Report ------------------------------------------------------------------

def report(args):
    server, endpoint = start_dynalite()
    sizes = [int(size) for size in args.scale.split(",") if size]
    try:
        scaling = measure_scaling(endpoint, sizes) if sizes else None
        if args.only_scaling:
            print(json.dumps(scaling, indent=2))
            return
        cold = measure_cold_start(endpoint)
        writes, reads = measure_requests(endpoint, args.items)
        conversion = measure_conversion(endpoint)
        bulk, bulk_cpu = measure_bulk(endpoint, args.bulk) if args.bulk \
            else (None, None)
    finally:
        server.terminate()
    imports = measure_import()
    lines = [f"dynamongo benchmark, {datetime.date.today()}, "
             f"{os.cpu_count()} cores, Python {sys.version.split()[0]}",
             "", f"Client CPU per item, {args.items} items, dynalite:",
             f"  {'':12} {'write us':>9} {'read us':>9}"]
    for name in ("boto3", "PynamoDB", "dynamongo"):
        lines.append(f"  {name:12} {writes[name]:9.1f} {reads[name]:9.1f}")
    ratios = {
        "write vs boto3": writes["dynamongo"] / writes["boto3"],
        "read vs boto3": reads["dynamongo"] / reads["boto3"],
        "write vs PynamoDB": writes["dynamongo"] / writes["PynamoDB"],
        "read vs PynamoDB": reads["dynamongo"] / reads["PynamoDB"],
    }
    lines += [f"  ratio {name}: {value:.2f}x"
              for name, value in ratios.items()]
    lines += ["", "Conversion alone, us per item:"]
    for kind, figures in conversion.items():
        hand = figures["hand-written"]
        for name, value in figures.items():
            lines.append(f"  {kind:12} {name:26} {value:7.2f} "
                         f"({value / hand:.2f}x)")
    lines += ["", "Import and definition:"]
    lines += [f"  {name:32} {value:8.2f} ms" for name, value in
              imports.items()]
    lines += ["", "Cold start: a fresh process imports, defines a model and "
              "reads one item (median wall time):"]
    lines += [f"  {name:20} {value * 1e3:7.1f} ms" for name, value in
              cold.items()]
    targets = {
        "cold get_one <= 0.3x boto3 client code (bytecode shipped)": (
            cold["dynamongo, unchecked-hash bytecode"]
            / cold["boto3 client code"], 0.3),
        "write CPU <= 0.3x boto3": (ratios["write vs boto3"], 0.3),
        "read CPU <= 0.3x boto3": (ratios["read vs boto3"], 0.3),
        "write CPU <= 0.25x PynamoDB": (ratios["write vs PynamoDB"], 0.25),
        "read CPU <= 0.25x PynamoDB": (ratios["read vs PynamoDB"], 0.25),
        "import <= 15 ms": (imports["import dynamongo"], 15),
    }
    if bulk:
        lines += ["", f"Bulk wall time, {args.bulk} items through a 5 ms "
                  "proxy (boto3's helpers; boto3 client code on 16 threads "
                  "sharing a client; dynamongo):"]
        for name, (helpers, threads, ours) in bulk.items():
            lines.append(f"  {name:7} helpers {helpers:6.2f} s  16 threads "
                         f"{threads:6.2f} s  dynamongo {ours:6.2f} s  "
                         f"{ours / threads:.2f}x threads' time, "
                         f"{helpers / ours:.1f}x faster than helpers")
            lines.append(f"  {'':7} client CPU: helpers "
                         f"{bulk_cpu[name][0]:.2f} s, 16 threads "
                         f"{bulk_cpu[name][1]:.2f} s, dynamongo "
                         f"{bulk_cpu[name][2]:.2f} s")
            targets[f"bulk {name} <= 0.6x 16 threads"] = (ours / threads,
                                                          0.6)
            targets[f"bulk {name} >= 2.5x faster than helpers"] = (
                -helpers / ours, -2.5)
    if scaling:
        lines += ["", "Scaling, items read by a Query (or written): client "
                  "CPU us per item / peak MB above the baseline:"]
        lines.append(f"  {'':22}" + "".join(f"{size:>18,}" for size in sizes))
        for kind in SCALING_KINDS:
            lines.append(f"  {kind:22}" + "".join(
                f"{scaling[kind][size][0]:8.2f} /{scaling[kind][size][1]:7.1f}"
                for size in sizes))
        lines.append(f"  {'get_many peak/result':22}" + "".join(
            f"{scaling['dynamongo get_many traced'][size][0]:18.2f}"
            for size in sizes))
        small, large = min(sizes), max(sizes)
        get_many = scaling["dynamongo get_many"]
        targets[f"get_many CPU at {large:,} <= 1.3x at {small:,}"] = (
            get_many[large][0] / get_many[small][0], 1.3)
        targets[f"get_many peak <= 1.5x its result at {large:,}"] = (
            scaling["dynamongo get_many traced"][large][0], 1.5)
        writes_at = max(size for size in sizes if size <= 100000)
        targets[f"save_many peak <= 1 KB per item at {writes_at:,}"] = (
            scaling["dynamongo save_many"][writes_at][1] * 1024 / writes_at,
            1.0)
    lines += ["", "Targets:"]
    for name, (value, target) in targets.items():
        lines.append(f"  {name:46} {abs(value):7.2f}  "
                     f"{'met' if value <= target else 'MISSED'}")
    print("\n".join(lines))
    figures = {"writes": writes, "reads": reads, "ratios": ratios,
               "conversion": conversion, "imports": imports, "cold": cold,
               "bulk": bulk, "bulk_cpu": bulk_cpu, "scaling": scaling,
               "targets": {name: [abs(value), abs(target), value <= target]
                           for name, (value, target) in targets.items()}}
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    if args.plot:
        plot(figures, args.plot)


def plot(figures, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["boto3", "PynamoDB", "dynamongo"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.38
    places = range(len(names))
    left.bar([p - width / 2 for p in places],
             [figures["writes"][n] for n in names], width, label="write")
    left.bar([p + width / 2 for p in places],
             [figures["reads"][n] for n in names], width, label="read")
    left.set_xticks(list(places), names)
    left.set_ylabel("client CPU, us per item (lower is better)")
    left.set_title("Requests against dynalite")
    left.legend()
    cold = figures["cold"]
    middle.bar(list(range(len(cold))), [value * 1e3 for value in
                                        cold.values()], 0.6)
    middle.set_xticks(list(range(len(cold))),
                      [textwrap.fill(name, 11) for name in cold],
                      fontsize="small")
    middle.set_ylabel("wall ms (lower is better)")
    middle.set_title("Cold start: import, define, one get_one")
    if figures["bulk"]:
        kinds = list(figures["bulk"])
        third = 0.27
        for offset, (label, column) in zip(
                (-third, 0, third), (("boto3 helpers", 0),
                                     ("boto3, 16 threads", 1),
                                     ("dynamongo", 2))):
            right.bar([p + offset for p in range(len(kinds))],
                      [figures["bulk"][k][column] for k in kinds], third,
                      label=label)
        right.set_xticks(list(range(len(kinds))), kinds)
        right.set_ylabel("wall seconds (lower is better)")
        right.set_title("Bulk items through a 5 ms proxy")
        right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--bulk", type=int, default=5000,
                        help="items of the bulk test (0 skips it)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--plot", help="also draw them in this PNG")
    parser.add_argument("--scale", default="1000,10000,100000,300000",
                        help="item counts of the scaling table ('' skips "
                             "it)")
    parser.add_argument("--only-scaling", action="store_true",
                        help="run the scaling table alone")
    parser.add_argument("--proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scaling-run", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        run_proxy(*args.proxy)
    elif args.scaling_run:
        kind, endpoint, count = args.scaling_run
        scaling_run(kind, endpoint, int(count))
    else:
        report(args)


if __name__ == "__main__":
    main()
