"""Tests of dynamongo, in the module's order.

Sections: fixture models; fixtures and helpers (the fault injector among
them); errors and helpers; validators; fields; conditions and the expression
compiler; connection and the wire (signing, the HTTP client); model schema;
a model's codec (its generated functions); tables; single-item operations;
updates; many-item operations; indexes and plans; large reads;
transactions; optimistic locking; binary and sets; TTL; stream records;
retries; faults; property tests; misuse; security; the manual's
quickstart.

Every test gets a fresh backend and its own table prefix: moto in-process
by default, or the DynamoDB server at DYNAMONGO_TEST_ENDPOINT
(``http://127.0.0.1:PORT``: dynalite, moto server, DynamoDB Local), named by
DYNAMONGO_TEST_BACKEND for its known gaps. DYNAMONGO_TEST_FAST_PATH=0 runs
everything on the plain boto3 client path; DYNAMONGO_TEST_DRIVER=asyncio
runs every model call through the asyncio driver.
"""

import asyncio
import collections
import datetime
import decimal
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dynamongo
from dynamongo import (
    BinaryField, BooleanField, ConditionalCheckFailedException, Connection,
    CursorError, DateField, DateTimeField, DictField, DoesNotExist,
    DynamoDBError, EmailField, ExpressionError, FieldNotLoaded, FloatField,
    GlobalIndex, IntField, IPAddressField, KeyTemplate, ListField,
    LocalIndex, Model,
    SchemaError, SetField, StringField, TableNotFoundError, ThrottlingError,
    TimedeltaField, TTLField, TruthValueError, UnknownFieldError,
    UnprocessedError, URLField, UUIDField, ValidationError)

ENDPOINT = os.environ.get("DYNAMONGO_TEST_ENDPOINT")
# "asyncio" runs every model call of the suite through the asyncio driver
# (each call awaited on a new event loop) instead of the threads' one.
DRIVER = os.environ.get("DYNAMONGO_TEST_DRIVER", "threads")
# "0" runs the suite on the plain boto3 client path instead of the fast one.
FAST_PATH = os.environ.get("DYNAMONGO_TEST_FAST_PATH", "1") != "0"
# Which server ENDPOINT is ("dynalite", "moto server", ...), for its gaps.
BACKEND = os.environ.get("DYNAMONGO_TEST_BACKEND",
                         "server" if ENDPOINT else "moto")
# What a backend does differently from DynamoDB; tests of those features
# are skipped there, with the gap as the reason.
MOTO_GAPS = {
    "mixed-type comparisons": "moto fails (TypeError) comparing an "
                              "attribute holding a string with a number, "
                              "where DynamoDB's comparison is false",
    "size of a missing attribute": "moto refuses a filter whose size() "
                                   "names an attribute an item lacks "
                                   "(Invalid attribute name)",
}
GAPS = {
    "moto": dict(MOTO_GAPS, **{
        "atomic conditional writes": "moto in-process lets two racing "
                                     "conditional writes both succeed"}),
    "moto server": MOTO_GAPS,
    "dynalite": {
        "empty strings": "dynalite's BETWEEN and IN never match an "
                         "attribute holding the empty string",
        "multi-attribute keys": "dynalite refuses index key schemas of "
                                "more than two fields",
        "indexes on existing tables": "dynalite accepts UpdateTable "
                                      "creating or deleting a global index "
                                      "and never does it",
        "transactions": "dynalite has no TransactWriteItems or "
                        "TransactGetItems (UnknownOperationException)",
        "ttl": "dynalite has no UpdateTimeToLive or DescribeTimeToLive "
               "(UnknownOperationException)",
        "streams": "dynalite ignores StreamSpecification",
        "conflict items": "dynalite ignores "
                          "ReturnValuesOnConditionCheckFailure: a refused "
                          "write sends no stored item back",
    },
}


def skip_on_gap(feature):
    gap = GAPS.get(BACKEND, {}).get(feature)
    if gap:
        pytest.skip(f"{BACKEND} gap: {gap}")


UTC = datetime.timezone.utc
EAT = datetime.timezone(datetime.timedelta(hours=3))


# -- Fixture models ----------------------------------------------------------

# The manual's User: a hash key, validated fields, a default.
class User(Model):
    __table__ = "users"
    __hash_key__ = "email"

    email = EmailField(required=True)
    name = StringField(required=True)
    year_of_birth = IntField(max_value=2018, min_value=1900)
    cities_visited = ListField(StringField)
    created_at = DateTimeField(default=datetime.datetime.now)


# The manual's composite-key example.
class Contacts(Model):
    __table__ = "user-contacts"
    __hash_key__ = "user_id"
    __range_key__ = "email"

    user_id = UUIDField(required=True)
    email = EmailField(required=True)
    created_at = DateTimeField(default=datetime.datetime.now)


# Reserved words as attribute names, nested maps with awkward key names.
class Profile(Model):
    __table__ = "profiles"
    __hash_key__ = "name"
    __billing_mode__ = "PAY_PER_REQUEST"

    name = StringField(required=True)
    year = IntField()
    status = StringField()
    data = DictField(**{"first-name": StringField(), "a.b": IntField(),
                        "#x": StringField(), ":y": StringField()})
    address = DictField(city=StringField(), zip=IntField(),
                        geo=DictField(lat=FloatField(), lng=FloatField()))
    tags = ListField(DictField(label=StringField(required=True)))
    score = IntField(min_value=0, max_value=10)


# Number keys: DynamoDB normalises their text.
class Reading(Model):
    __table__ = "readings"
    __hash_key__ = "sensor"
    __range_key__ = "at"

    sensor = IntField(required=True)
    at = FloatField(required=True)
    value = FloatField()


# An abstract base and a model extending it.
class Stamped(Model):
    __abstract__ = True

    created_at = DateTimeField(default=datetime.datetime.now)
    note = StringField()


class Article(Stamped):
    __table__ = "articles"
    __hash_key__ = "slug"

    slug = StringField(required=True, regex=r"[a-z0-9-]+")
    note = StringField(max_length=10)  # overrides the base's field


# Query planning: a string hash key, a number range key, a payload.
class Event(Model):
    __table__ = "events"
    __hash_key__ = "user"
    __range_key__ = "seq"
    __billing_mode__ = "PAY_PER_REQUEST"

    user = StringField(required=True)
    seq = IntField(required=True)
    kind = StringField()
    payload = StringField()


# The manual's indexes: global, local, partial projections, a sparse one.
class Order(Model):
    __table__ = "orders"
    __hash_key__ = "customer"
    __range_key__ = "order_id"
    __indexes__ = (
        GlobalIndex("by_status", hash_key="status", range_key="created_at"),
        GlobalIndex("by_sku", hash_key="sku", projection=["qty"]),
        LocalIndex("by_total", range_key="total", projection="KEYS_ONLY"),
        GlobalIndex("by_region", hash_key="region", range_key="total",
                    read_units=2, write_units=3),
    )
    customer = StringField(required=True)
    order_id = StringField(required=True)
    status = StringField()
    created_at = DateTimeField(required=True, default=datetime.datetime.now)
    sku = StringField()
    qty = IntField()
    total = FloatField()
    region = StringField()


# String keys, for DynamoDB's limits on key sizes (2,048 and 1,024 bytes).
class Page(Model):
    __table__ = "pages"
    __hash_key__ = "site"
    __range_key__ = "path"
    __billing_mode__ = "PAY_PER_REQUEST"

    site = StringField(required=True)
    path = StringField(required=True)
    title = StringField()


# One field of every type, for round trips.
class Everything(Model):
    __table__ = "everything"
    __hash_key__ = "id"

    id = UUIDField(required=True)
    tally = IntField()
    ratio = FloatField()
    flag = BooleanField()
    text = StringField()
    email = EmailField()
    url = URLField()
    ip = IPAddressField()
    moment = DateTimeField()
    day = DateField()
    span = TimedeltaField()
    span_weeks = TimedeltaField(precision="weeks")
    numbers = ListField(IntField())
    matrix = ListField(ListField(UUIDField))
    nested = DictField(items=ListField(FloatField), when=DateTimeField())
    free = DictField()
    blob = BinaryField()
    tags = SetField(StringField)
    counts = SetField(IntField)
    ratios = SetField(FloatField)
    blobs = SetField(BinaryField)


# -- Fixtures and helpers ----------------------------------------------------

AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_REGION_NAME", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_TABLE_PREFIX", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE",
                 "AWS_DEFAULT_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                 "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT",
                 "AWS_USE_DUALSTACK_ENDPOINT")


@pytest.fixture(autouse=True)
def backend(monkeypatch, tmp_path):
    """A fresh backend and table prefix per test; Connection reset after.
    The machine's own AWS settings and files are out of the way."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE",
                       str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    prefix = f"t{uuid.uuid4().hex[:12]}-"
    if DRIVER == "asyncio":
        monkeypatch.setattr(dynamongo, "_perform", on_a_loop)
    settings = dict(access_key_id="testing", secret_access_key="testing",
                    region="us-east-1", table_prefix=prefix,
                    fast_path=FAST_PATH)
    if ENDPOINT:
        Connection.set_config(endpoint_url=ENDPOINT, **settings)
        yield prefix
        # Clean up with the machine-independent settings, whatever the
        # test changed.
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        Connection.reset()
        Connection.set_config(endpoint_url=ENDPOINT, **settings)
        client = Connection.client()
        for name in client.list_tables()["TableNames"]:
            if name.startswith(prefix):
                client.delete_table(TableName=name)
    else:
        from moto import mock_aws

        with mock_aws():
            Connection.set_config(**settings)
            yield prefix
    Connection.reset()


@pytest.fixture
def users():
    User.create_table()
    return User


@pytest.fixture
def contacts():
    Contacts.create_table()
    return Contacts


@pytest.fixture
def calls(monkeypatch):
    """Records (operation, params) of every request dynamongo sends."""
    recorded = []
    request = dynamongo._request

    def recording(operation, params):
        recorded.append((operation, params))
        return request(operation, params)

    monkeypatch.setattr(dynamongo, "_request", recording)
    return recorded


def operations(recorded):
    return [operation for operation, _ in recorded]


@pytest.fixture
def no_sleep(monkeypatch):
    """Retries without waiting; the pauses asked for are recorded."""
    pauses = []

    async def pause(seconds):
        pauses.append(seconds)

    monkeypatch.setattr(dynamongo, "_sleep", pauses.append)
    monkeypatch.setattr(dynamongo, "_asleep", pause)
    return pauses


def replace_send(monkeypatch, send):
    """Put ``send(operation, params)`` where dynamongo sends requests, for
    both drivers (the asyncio driver's calls it as it is)."""
    async def asend(operation, params):
        return send(operation, params)

    monkeypatch.setattr(dynamongo, "_send", send)
    monkeypatch.setattr(dynamongo, "_asend", asend)


def on_a_loop(procedure, state=None, perform=dynamongo._perform):
    """dynamongo._perform through the asyncio driver: the procedure
    awaited in a new event loop -- unless a loop runs on this thread
    already (a sync call inside a coroutine), where it runs as usual."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(dynamongo._aperform(procedure, state))
    return perform(procedure, state)


def client_error(code, status=400, operation="BatchWriteItem"):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}},
                       operation)


class Faults:
    """Sits where dynamongo sends requests (dynamongo._send, and _asend for
    the asyncio driver) and, at the rates given and from a seeded random
    generator: throttles requests, answers 500, drops the connection before
    the request reaches the server or after the server acted (the answer
    is lost), and hands back a share of every batch as unprocessed.
    ``enabled = False`` lets requests through untouched."""

    def __init__(self, monkeypatch, seed=0, unprocessed=0.0, throttle=0.0,
                 server_error=0.0, drop_before=0.0, drop_after=0.0):
        self.seed, self.seen = seed, collections.Counter()
        self.lock = threading.Lock()
        self.unprocessed, self.throttle = unprocessed, throttle
        self.server_error = server_error
        self.drop_before, self.drop_after = drop_before, drop_after
        self.injected = collections.Counter()
        self.enabled = True
        self.send, self.asend = dynamongo._send, dynamongo._asend
        monkeypatch.setattr(dynamongo, "_send", self)
        monkeypatch.setattr(dynamongo, "_asend", self.awaited)

    def __call__(self, operation, params):
        script = self._script(operation, params)
        answer = None
        try:
            while True:
                answer = self.send(*script.send(answer))
        except StopIteration as done:
            return done.value

    async def awaited(self, operation, params):
        script = self._script(operation, params)
        answer = None
        try:
            while True:
                answer = await self.asend(*script.send(answer))
        except StopIteration as done:
            return done.value

    def _script(self, operation, params):
        """Yields each request to send on, is sent its answer; returns the
        answer to give, or raises the fault injected."""
        from botocore.exceptions import ConnectionClosedError

        if not self.enabled:
            return (yield operation, params)
        # Draws depend on the request and how often it was seen, not on
        # the order threads send requests in: runs repeat exactly.
        request = f"{operation} {json.dumps(dict(params), sort_keys=True)}" \
            .replace(Connection.table_prefix(), "")  # random per test
        with self.lock:
            self.seen[request] += 1
            chance = random.Random(
                f"{self.seed} {self.seen[request]} {request}")
        draw = chance.random()
        for kind, rate in (("throttle", self.throttle),
                           ("500", self.server_error),
                           ("drop before", self.drop_before),
                           ("drop after", self.drop_after)):
            if draw < rate:
                break
            draw -= rate
        else:
            kind = None
        if kind:
            with self.lock:
                self.injected[kind] += 1
        if kind == "throttle":
            raise client_error("ProvisionedThroughputExceededException",
                               operation=operation)
        if kind == "500":
            raise client_error("InternalServerError", 500, operation)
        if kind == "drop before":
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1")
        if kind == "drop after":
            yield operation, params
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1")
        if operation == "BatchWriteItem":
            (table, requests), = params["RequestItems"].items()
            sent, held = self._split(requests, chance)
            response = (yield from self._send_part(operation, table, sent))
            return self._hold(response, "UnprocessedItems", table, held)
        if operation == "BatchGetItem":
            (table, request), = params["RequestItems"].items()
            sent, held = self._split(request["Keys"], chance)
            response = (yield from self._send_part(
                operation, table, dict(request, Keys=sent)))
            return self._hold(response, "UnprocessedKeys", table,
                              dict(request, Keys=held) if held else None)
        return (yield operation, params)

    def _split(self, entries, chance):
        sent, held = [], []
        for entry in entries:
            (held if chance.random() < self.unprocessed
             else sent).append(entry)
        with self.lock:
            self.injected["unprocessed"] += len(held)
        return sent, held

    @staticmethod
    def _send_part(operation, table, part):
        if not part or (isinstance(part, dict) and not part["Keys"]):
            return {}
        return (yield operation, {"RequestItems": {table: part}})

    @staticmethod
    def _hold(response, name, table, held):
        response = dict(response)
        response[name] = {table: held} if held else {}
        return response


def assert_expression(condition, text, names, values, model=None):
    expression = dynamongo._Expression(model=model)
    assert condition._render(expression) == text
    assert expression.names == names
    assert expression.values == values


def raw_items(model):
    """Every stored item of ``model``'s table, as DynamoDB returns it."""
    response = Connection.client().scan(TableName=model.table_name())
    return response["Items"]


JOHN = {"email": "johndoe@gmail.com", "name": "John Doe",
        "year_of_birth": 1990, "cities_visited": ["Nairobi", "New York"]}


# -- Errors and helpers ------------------------------------------------------

def test_exception_hierarchy():
    for error in (SchemaError, ExpressionError, ValidationError,
                  DoesNotExist, DynamoDBError):
        assert issubclass(error, dynamongo.DynamongoError)
    assert issubclass(ConditionalCheckFailedException, DynamoDBError)
    assert issubclass(User.DoesNotExist, DoesNotExist)
    assert User.DoesNotExist is not Contacts.DoesNotExist


def test_public_names_are_sorted_and_exist():
    assert dynamongo.__all__ == sorted(dynamongo.__all__)
    for name in dynamongo.__all__:
        assert hasattr(dynamongo, name)


@pytest.mark.parametrize("number, text", [
    (0, "0"), (-12, "-12"), (10 ** 37, str(10 ** 37)),
    (10 ** 40, str(10 ** 40)),  # one significant digit: storable
    (0.1, "0.1"), (1e-05, "1e-05"), (1e16, "1e+16"),
    (decimal.Decimal("1.50"), "1.50"), (1e-130, "1e-130"),
])
def test_number_text(number, text):
    assert dynamongo._number_text(number) == text


@pytest.mark.parametrize("number", [
    float("nan"), float("inf"), -float("inf"), 1e-131, 1e126,
    10 ** 38 + 1, decimal.Decimal("NaN"),
])
def test_number_text_refuses_what_dynamodb_cannot_hold(number):
    with pytest.raises(ValueError, match=(
            "DynamoDB can store|DynamoDB holds at most 38|must "
            "be a finite number")):
        dynamongo._number_text(number)


def test_every_public_class_is_in_all():
    public = {name for name, value in vars(dynamongo).items()
              if isinstance(value, type) and not name.startswith("_")
              and value.__module__ == "dynamongo"}
    assert public - set(dynamongo.__all__) == {"Generic"}  # for checkers
    assert {"CredentialsError", "DynamoDBConnectionError"} <= \
        set(dynamongo.__all__)
    assert dynamongo.__all__ == sorted(dynamongo.__all__)


# -- Validators --------------------------------------------------------------

@pytest.mark.parametrize("text, valid", [
    ("johndoe@gmail.com", True), ("a.b+tag@sub.example.co.ke", True),
    ("user@xn--bcher-kva.ch", True), ("jöhn@bücher.de", True),
    ("plainaddress", False), ("@example.com", False), ("a@b", False),
    ("a@@b.com", False), ("a..b@example.com", False), ("a@-b.com", False),
    ("a b@example.com", False), ("a@example.c", False),
    ("x" * 65 + "@example.com", False),
])
def test_email_validator(text, valid):
    assert dynamongo._is_email(text) is valid


@pytest.mark.parametrize("text, fqdn, valid", [
    ("https://example.com", True, True),
    ("http://sub.example.co.uk:8080/path?q=1#frag", True, True),
    ("ftp://files.example.org/a.txt", True, True),
    ("http://127.0.0.1:8000/", True, True),
    ("http://[::1]:8000/", True, True),
    ("http://localhost:8000/", True, False),
    ("http://localhost:8000/", False, True),
    ("http://intranet/", False, True),
    ("http://intranet/", True, False),
    ("example.com", True, False), ("mailto:a@example.com", True, False),
    ("http://", True, False), ("http://exa mple.com", True, False),
    ("http://example.com:99999/", True, False),
    ("http://-bad-.com/", True, False),
])
def test_url_validator(text, fqdn, valid):
    assert dynamongo._is_url(text, fqdn) is valid


# -- Fields ------------------------------------------------------------------

@pytest.mark.parametrize("field, value, native", [
    (IntField(), 5, 5), (IntField(), "1990", 1990), (IntField(), 3.0, 3),
    (IntField(), decimal.Decimal("7"), 7), (FloatField(), 2, 2.0),
    (FloatField(), "1.5", 1.5), (BooleanField(), False, False),
    (StringField(), "", ""),
    (UUIDField(), str(uuid.UUID(int=7)), uuid.UUID(int=7)),
    (DateField(), "2020-02-29", datetime.date(2020, 2, 29)),
    (DateField(formats="%d/%m/%Y"), "29/02/2020", datetime.date(2020, 2, 29)),
    (DateTimeField(), "2020-01-02T03:04:05.000006Z",
     datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=UTC)),
    (DateTimeField(formats=["%Y/%m/%d %H:%M"]), "2020/01/02 03:04",
     datetime.datetime(2020, 1, 2, 3, 4)),
    (TimedeltaField(), 1.5, datetime.timedelta(seconds=1.5)),
    (TimedeltaField(precision="days"), 2, datetime.timedelta(days=2)),
    (IPAddressField(), "::1", "::1"),
    (ListField(IntField), ("1", 2), [1, 2]),
])
def test_to_native_converts(field, value, native):
    assert field.to_native(value) == native
    assert type(field.to_native(value)) is type(native)


@pytest.mark.parametrize("field, value", [
    (IntField(), True), (IntField(), 1.5), (IntField(), "1.5"),
    (IntField(), "abc"), (IntField(), [1]), (IntField(), float("nan")),
    (IntField(), 10 ** 38 + 1), (IntField(), "1_000"),
    (FloatField(), float("inf")), (FloatField(), float("nan")),
    (FloatField(), "nan"), (FloatField(), 1e-200), (FloatField(), 1e200),
    (FloatField(), True), (FloatField(), None.__class__),
    (BooleanField(), 1), (BooleanField(), "true"),
    (StringField(), 5), (StringField(), b"bytes"),
    (UUIDField(), "not-a-uuid"), (UUIDField(), 5),
    (DateField(), "2020-02-30"), (DateField(), datetime.datetime.now()),
    (DateTimeField(), "yesterday"), (DateTimeField(), 1234567890),
    (DateTimeField(), datetime.date(2020, 1, 1)),
    (TimedeltaField(), "1s"), (TimedeltaField(), True),
    (TimedeltaField(), float("nan")), (TimedeltaField(), 10 ** 30),
    (ListField(StringField), "abc"), (ListField(StringField), ["a", None]),
    (DictField(a=IntField()), ["a"]), (DictField(a=IntField()), {"b": 1}),
    (DictField(), {"x": object()}), (DictField(), {1: "a"}),
])
def test_wrong_types_raise_validation_error(field, value):
    with pytest.raises(ValidationError, match=(
            "must be |is not a valid|cannot store|invalid "
            "(list items|sub-fields)|out of the range|DynamoDB "
            "can store|DynamoDB holds at most|keys must be "
            "UTF-8")):
        field.validate(value)


@pytest.mark.parametrize("field, value, message", [
    (IntField(min_value=1900), 1899, "at least 1900"),
    (IntField(max_value=2018), 2019, "at most 2018"),
    (FloatField(min_value=0.5), 0.25, "at least 0.5"),
    (StringField(min_length=2), "a", "at least 2"),
    (StringField(max_length=2), "abc", "at most 2"),
    (StringField(regex=r"[a-z]+"), "abc1", "pattern"),
    (EmailField(), "nope", "e-mail"),
    (URLField(), "http://localhost/", "URL"),
    (IPAddressField(), "300.1.1.1", "IP address"),
])
def test_constraints(field, value, message):
    field.to_native(value)  # the type is right: only validate refuses
    with pytest.raises(ValidationError, match=message):
        field.validate(value)


def test_datetime_time_zone_options():
    aware = datetime.datetime(2020, 1, 1, 12, 0, tzinfo=EAT)
    naive = datetime.datetime(2020, 1, 1, 12, 0)
    assert DateTimeField(tzd="utc").validate(naive).tzinfo is UTC
    converted = DateTimeField(convert_tz=True).validate(aware)
    assert converted == aware and converted.utcoffset() == datetime.timedelta()
    dropped = DateTimeField(convert_tz=True, drop_tzinfo=True).validate(aware)
    assert dropped == datetime.datetime(2020, 1, 1, 9, 0)
    assert dropped.tzinfo is None
    parsed = DateTimeField(parser=lambda text: datetime.datetime(
        2001, 2, 3)).validate("anything")
    assert parsed == datetime.datetime(2001, 2, 3)
    with pytest.raises(ValidationError, match="must have a time zone"):
        DateTimeField(tzd="require").validate(naive)
    with pytest.raises(ValidationError, match="must not have a time zone"):
        DateTimeField(tzd="reject").validate(aware)
    with pytest.raises(SchemaError, match="tzd must be one of"):
        DateTimeField(tzd="sometimes")


def test_datetime_primitive_keeps_microseconds_and_offset():
    field = DateTimeField()
    moment = datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=EAT)
    assert field.to_primitive(moment) == "2020-01-02T03:04:05.000006+03:00"
    assert field.to_primitive(moment.replace(tzinfo=None)) == \
        "2020-01-02T03:04:05.000006"
    custom = DateTimeField(serialized_format="%Y%m%d%H%M%S%f")
    assert custom.to_primitive(moment.replace(tzinfo=None)) == \
        "20200102030405000006"
    assert custom._load({"S": "20200102030405000006"}) == \
        moment.replace(tzinfo=None)


def test_timedelta_precision_round_trips_to_the_microsecond():
    value = datetime.timedelta(days=3, microseconds=1)
    for precision in dynamongo._MICROSECONDS:
        field = TimedeltaField(precision=precision)
        assert field._load(field._dump(value)) == value
    assert TimedeltaField().to_primitive(datetime.timedelta(seconds=90)) == 90
    assert TimedeltaField(precision="minutes").to_primitive(
        datetime.timedelta(seconds=90)) == decimal.Decimal("1.5")
    with pytest.raises(SchemaError, match="precision must be one of"):
        TimedeltaField(precision="fortnights")


def test_to_primitive_gives_the_stored_form():
    assert UUIDField().to_primitive(uuid.UUID(int=1)) == \
        "00000000-0000-0000-0000-000000000001"
    assert DateField().to_primitive(datetime.date(2020, 1, 2)) == "2020-01-02"
    assert ListField(DateField).to_primitive([datetime.date(2020, 1, 2)]) == \
        ["2020-01-02"]
    assert DictField(day=DateField()).to_primitive(
        {"day": datetime.date(2020, 1, 2)}) == {"day": "2020-01-02"}


def test_container_fields_accept_classes_and_refuse_non_fields():
    assert isinstance(ListField(StringField).field, StringField)
    with pytest.raises(SchemaError, match="ListField"):
        ListField(str)
    with pytest.raises(SchemaError, match="'city'"):
        DictField(city="text")


def test_list_and_dict_errors_name_the_element():
    with pytest.raises(ValidationError) as caught:
        Profile._meta.validate_item({"name": "x", "tags": [{"label": "a"}, {}],
                                     "address": {"geo": {"lat": "north"}}})
    assert set(caught.value.errors) == {"tags[1].label", "address.geo.lat"}
    assert "tags[1].label" in str(caught.value)


def test_defaults_are_values_or_callables_and_not_shared():
    class Defaults(Model):
        __table__ = "defaults"
        __hash_key__ = "id"
        id = IntField()
        tags = ListField(StringField, default=[])
        level = IntField(default=3)
        stamp = DateTimeField(default=lambda: datetime.datetime(2020, 1, 1))

    first, _ = Defaults._meta.validate_item({"id": 1})
    second, _ = Defaults._meta.validate_item({"id": 2})
    assert first == {"id": 1, "tags": [], "level": 3,
                     "stamp": datetime.datetime(2020, 1, 1)}
    first["tags"].append("x")
    assert second["tags"] == []


def test_field_repr_names_model_and_path():
    assert repr(User.email) == "<EmailField User.email>"
    assert repr(Profile.address.geo.lat) == \
        "<FloatField Profile.address.geo.lat>"
    assert repr(User.cities_visited[2]) == \
        "<StringField User.cities_visited[2]>"


# -- Conditions and the expression compiler ----------------------------------

def test_comparisons_compile_with_placeholders():
    assert_expression(User.email == "a@b.io", "#n0 = :v0",
                      {"#n0": "email"}, {":v0": {"S": "a@b.io"}})
    assert_expression(User.year_of_birth != 1990, "#n0 <> :v0",
                      {"#n0": "year_of_birth"}, {":v0": {"N": "1990"}})
    for condition, operator in ((User.year_of_birth < 1, "<"),
                                (User.year_of_birth <= 1, "<="),
                                (User.year_of_birth > 1, ">"),
                                (User.year_of_birth >= 1, ">=")):
        assert_expression(condition, f"#n0 {operator} :v0",
                          {"#n0": "year_of_birth"}, {":v0": {"N": "1"}})


def test_functions_between_and_in():
    assert_expression(User.year_of_birth.between(1990, 2000),
                      "#n0 BETWEEN :v0 AND :v1", {"#n0": "year_of_birth"},
                      {":v0": {"N": "1990"}, ":v1": {"N": "2000"}})
    assert_expression(User.email.in_(["a@b.io", "c@d.io"]),
                      "#n0 IN (:v0, :v1)", {"#n0": "email"},
                      {":v0": {"S": "a@b.io"}, ":v1": {"S": "c@d.io"}})
    assert_expression(User.cities_visited.contains("Nairobi"),
                      "contains(#n0, :v0)", {"#n0": "cities_visited"},
                      {":v0": {"S": "Nairobi"}})
    assert_expression(User.name.begins_with("Jo"), "begins_with(#n0, :v0)",
                      {"#n0": "name"}, {":v0": {"S": "Jo"}})
    assert_expression(User.name.exists(), "attribute_exists(#n0)",
                      {"#n0": "name"}, {})
    assert_expression(User.name.not_exists(), "attribute_not_exists(#n0)",
                      {"#n0": "name"}, {})
    assert_expression(User.name == None, "attribute_not_exists(#n0)",  # noqa
                      {"#n0": "name"}, {})


def test_and_or_not_compile_and_flatten():
    condition = ((User.email == "a@b.io") & (User.year_of_birth > 2000)
                 & ~User.cities_visited.contains("Nairobi"))
    assert_expression(
        condition,
        "(#n0 = :v0) AND (#n1 > :v1) AND (NOT (contains(#n2, :v2)))",
        {"#n0": "email", "#n1": "year_of_birth", "#n2": "cities_visited"},
        {":v0": {"S": "a@b.io"}, ":v1": {"N": "2000"},
         ":v2": {"S": "Nairobi"}})
    assert_expression((User.name == "a") | (User.name == "b"),
                      "(#n0 = :v0) OR (#n0 = :v1)", {"#n0": "name"},
                      {":v0": {"S": "a"}, ":v1": {"S": "b"}})


def test_reserved_words_dots_dashes_and_nested_paths():
    condition = ((Profile.name == "x") & (Profile.year > 1)
                 & (Profile.data["a.b"] == 2)
                 & (Profile.data["first-name"] == "y")
                 & (Profile.data["#x"] == "z") & (Profile.data[":y"] == "w")
                 & (Profile.address.geo.lat > 1.5)
                 & (Profile.tags[3].label == "l"))
    expression = dynamongo._Expression()
    text = condition._render(expression)
    assert text == ("(#n0 = :v0) AND (#n1 > :v1) AND (#n2.#n3 = :v2) AND "
                    "(#n2.#n4 = :v3) AND (#n2.#n5 = :v4) AND "
                    "(#n2.#n6 = :v5) AND (#n7.#n8.#n9 > :v6) AND "
                    "(#n10[3].#n11 = :v7)")
    assert expression.names == {
        "#n0": "name", "#n1": "year", "#n2": "data", "#n3": "a.b",
        "#n4": "first-name", "#n5": "#x", "#n6": ":y", "#n7": "address",
        "#n8": "geo", "#n9": "lat", "#n10": "tags", "#n11": "label"}
    assert expression.values[":v6"] == {"N": "1.5"}


def test_operands_are_converted_by_the_field_but_not_constrained():
    assert_expression(User.year_of_birth > "2020", "#n0 > :v0",
                      {"#n0": "year_of_birth"}, {":v0": {"N": "2020"}})
    assert_expression(Contacts.email.begins_with("d1"),
                      "begins_with(#n0, :v0)", {"#n0": "email"},
                      {":v0": {"S": "d1"}})
    moment = datetime.datetime(2020, 1, 1, tzinfo=UTC)
    assert (User.created_at > moment).value == \
        {"S": "2020-01-01T00:00:00.000000+00:00"}
    with pytest.raises(ValidationError, match="year_of_birth"):
        User.year_of_birth > "recent"
    with pytest.raises(ValidationError, match="cities_visited"):
        User.cities_visited.contains(5)


def test_python_boolean_operators_are_refused():
    condition = User.email == "a@b.io"
    advice = r"no truth value: combine conditions with & \(and\), \| \(or\) " \
             r"and ~ \(not\)"
    with pytest.raises(TruthValueError, match=advice):
        not condition
    with pytest.raises(TruthValueError, match=advice):
        condition and condition
    with pytest.raises(TruthValueError, match=advice):
        condition or condition
    with pytest.raises(TruthValueError, match=advice):
        if condition:
            pass
    with pytest.raises(TypeError, match="combines two conditions"):
        condition & True


def test_condition_misuse_raises_expression_error():
    with pytest.raises(ExpressionError, match="100"):
        User.email.in_([f"u{i}@x.io" for i in range(101)])
    with pytest.raises(ExpressionError, match="at least one"):
        User.email.in_([])
    with pytest.raises(ExpressionError, match="cities_visited"):
        User.cities_visited > 1
    with pytest.raises(ExpressionError, match="string"):
        User.year_of_birth.begins_with("19")
    with pytest.raises(ExpressionError, match="None"):
        User.year_of_birth > None
    with pytest.raises(UnknownFieldError, match="sub-field 'country'"):
        Profile.address["country"]
    with pytest.raises(AttributeError,  # UnknownFieldError is one
                       match="sub-field 'country'"):
        Profile.address.country
    with pytest.raises(ExpressionError, match="of Contacts, not of User"):
        (Contacts.email == "a@b.io")._render(dynamongo._Expression(User))


def test_condition_repr_is_readable():
    condition = (User.email == "a@b.io") & (User.year_of_birth > 2000)
    assert repr(condition) == \
        "<Condition (email = 'a@b.io') AND (year_of_birth > 2000)>"


def test_expression_sends_no_empty_maps():
    params = dynamongo._Expression().into({})
    assert params == {}
    expression = dynamongo._Expression()
    User.name.exists()._render(expression)
    assert expression.into({}) == {"ExpressionAttributeNames":
                                   {"#n0": "name"}}


def test_operators_misused_on_fields_say_what_to_write():
    with pytest.raises(ExpressionError, match=r"parentheses.*\(User\.name "
                                              r"== 'A'\) & "):
        User.name == "A" & User.year_of_birth > 1990  # noqa: B015
    with pytest.raises(ExpressionError, match="parentheses"):
        User.name == "A" | User.year_of_birth  # noqa: B015
    with pytest.raises(ExpressionError, match="combine conditions"):
        ~User.name  # noqa: B018
    with pytest.raises(ExpressionError,
                       match=r"write User\.cities_visited\.contains"
                             r"\('Nairobi'\)"):
        "Nairobi" in User.cities_visited  # noqa: B015
    with pytest.raises(ExpressionError, match="cannot be iterated"):
        list(User.cities_visited)


# -- Connection and the wire ------------------------------------------------

def test_settings_from_environment(monkeypatch):
    Connection.reset()
    assert Connection.settings()["region"] == "us-east-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    Connection.reset()
    assert Connection.settings()["region"] == "eu-west-2"
    monkeypatch.setenv("AWS_REGION_NAME", "eu-west-3")
    monkeypatch.setenv("AWS_TABLE_PREFIX", "prod-")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    Connection.reset()
    settings = Connection.settings()
    assert settings["region"] == "eu-west-3"
    assert settings["table_prefix"] == "prod-"
    assert settings["endpoint_url"] == "http://127.0.0.1:9"
    assert settings["access_key_id"] == "AKIDENV"
    assert User.table_name() == "prod-users"


def test_set_config_merges_and_overrides_environment(monkeypatch):
    monkeypatch.setenv("AWS_TABLE_PREFIX", "env-")
    monkeypatch.setenv("AWS_REGION_NAME", "eu-west-1")
    Connection.reset()
    Connection.set_config(table_prefix="mine-")
    Connection.set_config(region="ap-south-1")
    assert Connection.table_prefix() == "mine-"
    assert Connection.settings()["region"] == "ap-south-1"
    assert User.table_name() == "mine-users"
    Connection.reset()
    assert User.table_name() == "env-users"
    assert Connection.settings()["region"] == "eu-west-1"


def test_client_is_made_once_and_rebuilt_after_set_config():
    first = Connection.client()
    assert Connection.client() is first
    assert first.meta.region_name == "us-east-1"
    Connection.set_config(region="eu-central-1")
    second = Connection.client()
    assert second is not first
    assert second.meta.region_name == "eu-central-1"
    assert Connection.resource() is Connection.resource()
    assert Connection.get_table("x-table").name == "x-table"
    assert User.table().name == User.table_name()


def test_client_creation_is_thread_safe():
    Connection.set_config(region="eu-west-1")
    seen = []
    barrier = threading.Barrier(8)

    def grab():
        barrier.wait()
        seen.append(Connection.client())

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in seen}) == 1


def test_endpoint_url_is_used():
    Connection.set_config(endpoint_url="http://127.0.0.1:1")
    assert Connection.client().meta.endpoint_url == "http://127.0.0.1:1"


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("url", [
    "htps://dynamodb.us-east-1.amazonaws.com", "htp://localhost:8000",
    "ftp://localhost:8000", "localhost:8000", "http://", "http://:8000",
    "http://localhost:99999", "http://localhost:port", "//localhost:8000"])
def test_an_endpoint_url_that_is_no_url_is_refused_before_sending(
        monkeypatch, tmp_path, calls, url, fast_path):
    expected = (f"endpoint_url {re.escape(repr(url))} \\(from {{}}\\) is not "
                "an endpoint URL: expected http:// or https:// followed by "
                "a host and an optional port")
    with pytest.raises(ValidationError, match=expected.format("set_config")):
        Connection.set_config(endpoint_url=url, fast_path=fast_path)
    Connection.reset()  # keys, region and endpoint from elsewhere
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    Connection.set_config(fast_path=fast_path)
    with pytest.raises(ValidationError,
                       match=expected.format("AWS_ENDPOINT_URL")):
        User.get_one("john@example.com")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    config = tmp_path / "config"
    config.write_text(f"[default]\nendpoint_url = {url}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    with pytest.raises(ValidationError, match=expected.format(
            re.escape(f"[default] of {config}: endpoint_url"))):
        User.get_one("john@example.com")
    assert calls == []
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def test_wire_path_follows_the_setting(users):
    Connection.set_config(fast_path=True)
    assert isinstance(dynamongo._state().wire(), dynamongo._FastWire)
    User.save_one(JOHN)
    Connection.set_config(fast_path=False)
    assert isinstance(dynamongo._state().wire(), dynamongo._ClientWire)
    assert User.get_one(JOHN["email"]).name == "John Doe"


def fake_answers(monkeypatch, answers):
    """Answer the fast path's next requests with ``answers`` (status,
    headers, body), through botocore's before-send event, then let requests
    through."""
    from botocore.awsrequest import AWSResponse

    class Raw:
        def __init__(self, body):
            self.body = body

        def stream(self, **_):
            yield self.body

    def answer(request, **_):
        if answers:
            status, headers, body = answers.pop(0)
            return AWSResponse(request.url, status, headers, Raw(body))
        return None

    dynamongo._state().session().events.register("before-send.dynamodb",
                                                 answer)


def test_fast_path_errors_and_checksums(users, no_sleep, monkeypatch):
    if not FAST_PATH:
        pytest.skip("checks the fast path's own parsing")
    User.save_one(JOHN)
    answers = [(502, {}, b"<html>Bad Gateway</html>"),
               (200, {"x-amz-crc32": "1"}, b'{"Item": {}}')]
    fake_answers(monkeypatch, answers)
    assert User.get_one(JOHN["email"]).name == "John Doe"  # third try
    assert answers == [] and len(no_sleep) == 2
    answers += [(400, {"x-amzn-RequestId": "R1"}, json.dumps({
        "__type": "com.amazonaws.dynamodb.v20120810#ValidationException",
        "message": "One or more parameter values were invalid"}).encode())]
    with pytest.raises(DynamoDBError, match="parameter values") as caught:
        User.get_one(JOHN["email"])
    assert caught.value.code == "ValidationException"
    assert caught.value.status == 400
    assert caught.value.response["ResponseMetadata"]["RequestId"] == "R1"
    assert caught.value.__cause__.response["Error"]["Code"] == \
        "ValidationException"


@pytest.mark.parametrize("url, token, body", [
    ("https://dynamodb.us-east-1.amazonaws.com/", None, b'{"TableName":"t"}'),
    ("https://dynamodb.eu-west-1.amazonaws.com/", "FwoGZXIvYXdzEJr//token=",
     '{"Item":{"name":{"S":"Zoë ✓"}}}'.encode()),
    ("http://127.0.0.1:8000/", None, b"{}"),
    ("http://localhost:80/", "t", b'{"Key":{"k":{"N":"1"}}}'),
    ("https://[::1]:8443/", None, b"{}"),
])
def test_signature_matches_botocore(monkeypatch, url, token, body):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfi",
                              token).get_frozen_credentials()
    region = url.split(".")[1] if "amazonaws" in url else "us-east-1"
    moment = datetime.datetime(2026, 11, 27, 3, 4, 5)
    import botocore.auth

    if hasattr(botocore.auth, "get_current_datetime"):
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda: moment)
    else:  # botocore 1.34 asks datetime.datetime.utcnow()
        class Clock(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return moment

        monkeypatch.setattr(botocore.auth.datetime, "datetime", Clock)
    request = AWSRequest("POST", url, data=body, headers={
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "DynamoDB_20120810.PutItem",
        "User-Agent": "anything"})
    SigV4Auth(credentials, "dynamodb", region).add_auth(request)
    ours = dynamongo._SigV4(region, url).headers(
        credentials, "DynamoDB_20120810.PutItem", body,
        moment.timetuple())
    assert ours["Authorization"] == request.headers["Authorization"]
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    assert ours.get("X-Amz-Security-Token") == \
        request.headers.get("X-Amz-Security-Token")


class ScriptedServer:
    """A loopback server answering each request with the next scripted
    reply: bytes to send, "close" to drop the connection unanswered,
    "silence" to keep it open unanswered, ("then close", bytes) to answer
    and then drop the connection as an idle server does, ("after",
    seconds, bytes) to answer after a while, or ("late", bytes) to answer
    after half a second -- having interrupted the main thread
    (interrupt_main_thread) as the request arrived. Its threads are
    named "scripted"."""

    def __init__(self, replies, tls=None):
        import socket

        self.replies, self.connections = list(replies), 0
        self.requests = []  # the head of each request received
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.tls = tls
        port = self.listener.getsockname()[1]
        self.url = (f"https://localhost:{port}/" if tls  # the certificate's
                    else f"http://127.0.0.1:{port}/")
        threading.Thread(target=self._serve, daemon=True,
                         name="scripted").start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(connection,),
                             daemon=True, name="scripted").start()

    def _answer(self, connection):
        if self.tls:
            try:
                connection = self.tls.wrap_socket(connection,
                                                  server_side=True)
            except OSError:
                return connection.close()
        reader = connection.makefile("rb")
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                try:
                    line = reader.readline()
                except OSError:  # a client that closed with data unread
                    line = b""
                if not line:
                    return connection.close()
                head += line
            length = int(re.search(rb"Content-Length: (\d+)", head)[1])
            reader.read(length)
            self.requests.append(head.decode("latin-1"))
            reply = self.replies.pop(0) if self.replies else "close"
            if reply == "close":
                return connection.close()
            if reply == "silence":
                time.sleep(2)
                return connection.close()
            if isinstance(reply, tuple) and reply[0] == "after":
                time.sleep(reply[1])
                try:
                    connection.sendall(reply[2])
                except OSError:  # the client has gone
                    return connection.close()
                continue
            if isinstance(reply, tuple) and reply[0] == "late":
                interrupt_main_thread()
                time.sleep(0.5)
                try:
                    connection.sendall(reply[1])
                except OSError:  # the client has gone
                    return connection.close()
                continue
            if isinstance(reply, tuple):
                connection.sendall(reply[1])
                time.sleep(0.05)
                return connection.close()
            connection.sendall(reply)
            if b"Connection: close" in reply:
                return connection.close()

    def close(self):
        self.listener.close()


@pytest.fixture
def scripted():
    """ScriptedServer(replies, tls=None), closed when the test ends."""
    servers = []

    def start(replies, tls=None):
        servers.append(ScriptedServer(replies, tls))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.fixture
def refusing_port():
    """A loopback port that refuses connections for the whole test: bound
    by a socket that never listens (a port found free and released could
    be taken by another process meanwhile)."""
    import socket

    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def http_reply(body, headers=""):
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n").encode() + body


def post(client, body=b"{}"):
    return client.post({"Content-Length": str(len(body))}, body)


def test_http_client_keeps_alive_and_reads_every_framing(scripted):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n")
    server = scripted([http_reply(b'{"n":1}'), chunked,
                       http_reply(b"{}", "Connection: close\r\n"),
                       http_reply(b'{"n":2}')])
    client = dynamongo._Http(server.url, 1, 1)
    assert post(client) == (200, {"content-length": "7"}, b'{"n":1}')
    status, headers, body = post(client)
    assert (status, body) == (200, b'{"a":1}')
    assert post(client)[2] == b"{}"
    assert post(client)[2] == b'{"n":2}'  # on a new connection
    assert server.connections == 2


def test_http_client_failures_say_whether_the_request_was_sent(
        refusing_port, scripted):
    server = scripted([http_reply(b"{}"), "close",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"
                       b"Connection: close\r\n\r\n{}", "silence"])
    client = dynamongo._Http(server.url, 1, 0.3)
    assert post(client)[2] == b"{}"
    for failure in ("the connection failed", "the connection failed: the "
                    "answer was cut short", "no answer within 0.3 s"):
        with pytest.raises(dynamongo._NoAnswer, match=failure) as caught:
            post(client)  # answer lost: the server may have acted
        assert caught.value.sent is True
    with pytest.raises(dynamongo._NoAnswer, match="could not connect") \
            as caught:
        post(dynamongo._Http(f"http://127.0.0.1:{refusing_port}/", 1, 1))
    assert caught.value.sent is False  # never sent


def test_http_client_verifies_tls(tmp_path, scripted):
    import shutil
    import ssl

    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed to make a test certificate")
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(certificate)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server = scripted([http_reply(b'{"tls":1}')] * 2, tls=context)
    trusted = dynamongo._Http(server.url, 1, 1, ca_bundle=str(certificate))
    assert post(trusted)[2] == b'{"tls":1}'
    with pytest.raises(dynamongo._NoAnswer, match="TLS failed") as caught:
        post(dynamongo._Http(server.url, 1, 1))  # not signed by a known CA
    assert caught.value.sent is False


def test_fast_path_sends_through_a_configured_proxy(monkeypatch, scripted):
    server = scripted([http_reply(b'{"TableNames":[]}')])
    monkeypatch.setenv("HTTP_PROXY", server.url)  # a proxy sees the request
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    Connection.set_config(endpoint_url="http://dynamodb.invalid:8000",
                          fast_path=True)
    assert dynamongo._send("ListTables", {})["TableNames"] == []
    assert server.connections == 1
    monkeypatch.delenv("HTTP_PROXY")  # before the backend's cleanup


def test_http_client_reconnects_after_an_idle_close():
    import select

    server = ScriptedServer([("then close", http_reply(b"{}")),
                             http_reply(b'{"again":1}')])
    try:
        client = dynamongo._Http(server.url, 1, 1)
        assert post(client)[2] == b"{}"
        idle, = client.idle
        # Wait until the server's close has reached the idle connection.
        assert select.select([idle], [], [], 5)[0] == [idle]
        assert post(client)[2] == b'{"again":1}'
        assert server.connections == 2
    finally:
        server.close()


def interrupt_main_thread():
    """Ctrl-C: a SIGINT, which ends a blocking read in the main thread
    with KeyboardInterrupt."""
    import signal

    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


@pytest.mark.parametrize("fast_path", [True, False])
def test_an_answer_interrupted_is_never_read_by_the_next_call(fast_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")

    def answer(email):
        return http_reply(json.dumps({"Item": {
            "email": {"S": email}, "name": {"S": email}}}).encode())

    server = ScriptedServer([("late", answer("one@example.com")),
                             answer("two@example.com")])
    try:
        Connection.set_config(endpoint_url=server.url, fast_path=fast_path,
                              max_attempts=1)
        with pytest.raises(KeyboardInterrupt):  # once the server has it
            User.get_one("one@example.com")
        # Sent before the late answer arrives, which must not be read.
        assert User.get_one("two@example.com").email == "two@example.com"
        # (A boto3 client awaited runs in a worker thread, which reads the
        # late answer as its own and keeps the connection.)
        assert server.connections == (
            1 if DRIVER == "asyncio" and not fast_path else 2)
    finally:
        server.close()


def test_http_client_closes_a_connection_on_any_interruption(monkeypatch):
    server = ScriptedServer([http_reply(b'{"n":1}'), http_reply(b'{"n":2}')])
    client = dynamongo._Http(server.url, 1, 1)

    def interrupted(reader):
        raise SystemExit("interrupted")  # any BaseException

    try:
        monkeypatch.setattr(client, "_read", interrupted)
        with pytest.raises(SystemExit, match="interrupted"):
            post(client)
        monkeypatch.undo()
        assert client.idle == []  # closed, not kept
        deadline = time.monotonic() + 5  # the server takes the first reply
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        assert post(client)[2] == b'{"n":2}'
        assert server.connections == 2
    finally:
        server.close()


def test_http_client_shares_idle_connections_between_threads():
    server = ScriptedServer([http_reply(b"{}")] * 3)
    client = dynamongo._Http(server.url, 1, 1)
    try:
        for _ in range(3):  # one after another: one connection
            thread = threading.Thread(target=post, args=(client,))
            thread.start()
            thread.join()
        assert server.connections == 1 and len(client.idle) == 1
    finally:
        server.close()


def test_import_does_not_import_boto3():
    code = ("import sys, dynamongo; "
            "assert 'boto3' not in sys.modules, 'boto3'; "
            "assert 'botocore' not in sys.modules, 'botocore'; "
            "assert 'asyncio' not in sys.modules, 'asyncio'; "
            "assert 'opentelemetry' not in sys.modules, 'opentelemetry'")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.abspath(dynamongo.__file__)))


COLD_MODEL = """
import sys
import dynamongo as dm

class Cold(dm.Model):
    __table__ = "cold"
    __hash_key__ = "email"
    email = dm.EmailField(required=True)
    name = dm.StringField()
"""


def run_cold(code, tmp_path, **variables):
    """Run ``code`` after COLD_MODEL in a fresh process whose environment
    holds Lambda's AWS variables (and ``variables``); its output lines."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("AWS_") and not name.lower().endswith(
               "_proxy")}
    env.update(AWS_ACCESS_KEY_ID="AKIDCOLD", AWS_SECRET_ACCESS_KEY="cold",
               AWS_SESSION_TOKEN="token/cold", AWS_REGION="eu-west-1",
               AWS_CONFIG_FILE=str(tmp_path / "no-config"), **variables)
    out = subprocess.run(
        [sys.executable, "-c", COLD_MODEL + code], env=env, text=True,
        capture_output=True,
        cwd=os.path.dirname(os.path.abspath(dynamongo.__file__)))
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_cold_start_sends_without_botocore(tmp_path, scripted):
    item = b'{"Item": {"email": {"S": "a@b.io"}, "name": {"S": "Ann"}}}'
    server = scripted([http_reply(item), http_reply(b"{}")])
    code = ("print(Cold.get_one('a@b.io').name)\n"
            "Cold.delete_one('a@b.io')\n"
            "print('botocore' in sys.modules, 'boto3' in sys.modules)\n")
    assert run_cold(code, tmp_path, AWS_ENDPOINT_URL=server.url) == \
        ["Ann", "False", "False"]
    get, delete = server.requests
    assert "X-Amz-Target: DynamoDB_20120810.GetItem" in get
    assert "X-Amz-Target: DynamoDB_20120810.DeleteItem" in delete
    assert re.search(r"Authorization: AWS4-HMAC-SHA256 Credential=AKIDCOLD/"
                     r"\d{8}/eu-west-1/dynamodb/aws4_request, SignedHeaders="
                     r"content-type;host;x-amz-date;x-amz-security-token;"
                     r"x-amz-target, Signature=[0-9a-f]{64}", get)
    assert "X-Amz-Security-Token: token/cold" in get
    assert re.search(r"User-Agent: dynamongo/\S+ Python/3", get)
    assert server.connections == 1  # kept alive


def test_requests_go_through_botocore_once_it_is_loaded(tmp_path):
    # The first request is signed and sent by dynamongo alone, to AWS's
    # endpoint (its HTTP client answers here); once moto is imported, the
    # same connection's requests go through botocore's before-send event,
    # so mock_aws answers them all and none reaches the network.
    code = """
posts = []

def post(self, headers, body):
    posts.append(headers["X-Amz-Target"])
    return 200, {}, b'{"Item": {"email": {"S": "a@b.io"}}}'

dm._Http.post = post
print(Cold.get_one("a@b.io").email, "botocore" in sys.modules)
from moto import mock_aws

with mock_aws():
    Cold.create_table()
    Cold.save_one({"email": "b@c.io", "name": "Moto"})
    print(Cold.get_one("b@c.io").name, len(posts), posts[0])
"""
    assert run_cold(code, tmp_path) == [
        "a@b.io", "False", "Moto", "1", "DynamoDB_20120810.GetItem"]


@pytest.mark.parametrize("fast_path", [True, False])
def test_mock_aws_answers_every_request_on_both_paths(monkeypatch, fast_path):
    import socket

    from moto import mock_aws

    def no_network(*args, **kwargs):
        raise AssertionError(f"a request reached the network: {args}")

    with monkeypatch.context() as patch, mock_aws():
        patch.setattr(socket, "create_connection", no_network)
        patch.setattr(socket.socket, "connect", no_network)
        Connection.reset()
        Connection.set_config(access_key_id="k", secret_access_key="s",
                              region="eu-west-1", fast_path=fast_path)
        User.create_table()
        User.save_many([JOHN, dict(JOHN, email="jane@example.com")])
        assert User.get_one(JOHN["email"]).name == "John Doe"
        assert len(User.get_many(User.name == "John Doe")) == 2


@pytest.mark.parametrize("region, url", [
    ("eu-west-1", "https://dynamodb.eu-west-1.amazonaws.com/"),
    ("cn-north-1", "https://dynamodb.cn-north-1.amazonaws.com.cn/"),
    ("us-gov-west-1", "https://dynamodb.us-gov-west-1.amazonaws.com/"),
    ("us-iso-east-1", "https://dynamodb.us-iso-east-1.c2s.ic.gov/"),
    ("us-isob-east-1", "https://dynamodb.us-isob-east-1.sc2s.sgov.gov/"),
    ("eusc-de-east-1", "https://dynamodb.eusc-de-east-1.amazonaws.eu/"),
])
def test_the_regional_endpoint_is_in_the_regions_partition(region, url):
    settings = dict(Connection.settings(), region=region, endpoint_url=None)
    assert dynamongo._endpoint_of(settings) == url


def test_certificates_are_botocores(monkeypatch):
    import certifi

    assert dynamongo._ca_bundle() == certifi.where()
    monkeypatch.setitem(sys.modules, "certifi", None)  # not installed
    bundle = dynamongo._ca_bundle()
    assert bundle.endswith(os.path.join("botocore", "cacert.pem"))
    assert os.path.exists(bundle)


def test_a_region_that_is_no_region_name_is_refused():
    Connection.set_config(region="us east 1")
    with pytest.raises(ValidationError, match="region 'us east 1' is not "
                                              "an AWS region name"):
        User.get_one("a@b.io")


@pytest.mark.parametrize("variables, own", [
    ({}, True),
    ({"AWS_CA_BUNDLE": "/etc/ca.pem"}, True),  # dynamongo applies it
    ({"AWS_USE_FIPS_ENDPOINT": "true"}, False),
    ({"HTTPS_PROXY": "http://proxy:3128"}, False),
    ({"AWS_PROFILE": "dev"}, False),
    ({"AWS_ACCESS_KEY_ID": ""}, False),  # the chain: a role, SSO
])
def test_botocore_is_needed_only_for_what_it_alone_does(monkeypatch,
                                                        variables, own):
    Connection.reset()
    with monkeypatch.context() as patch:  # undone before the cleanup
        for name in os.environ:
            if name.lower().endswith("_proxy"):
                patch.delenv(name)
        patch.setenv("AWS_ACCESS_KEY_ID", "k")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        for name, value in variables.items():
            patch.setenv(name, value)
        route = dynamongo._own_route(dynamongo._state().settings)
    assert (route is not None) == own
    if own:
        assert route[0] == ("k", "s", None)
        assert route[1] == variables.get("AWS_CA_BUNDLE")


def test_secret_key_never_shown(users, caplog):
    secret = "SECRETsecretSECRET1234"
    Connection.set_config(secret_access_key=secret)
    assert secret not in repr(Connection.settings())
    assert Connection.settings()["secret_access_key"] == "****"
    caplog.set_level(logging.DEBUG)
    User.save_one(JOHN)
    with pytest.raises(ConditionalCheckFailedException) as caught:
        User.save_one(JOHN, overwrite=False)
    error = caught.value
    assert secret not in str(error) and secret not in repr(error)
    assert secret not in repr(error.response)
    assert secret not in caplog.text


AWS_CONFIG = """\
[default]
region = eu-north-1

[profile dev]
region = ap-south-1
services = dev-services

[services dev-services]
dynamodb =
  endpoint_url = http://127.0.0.1:8111

[profile plain]
endpoint_url = http://127.0.0.1:8222
"""


def test_region_and_endpoint_come_from_the_aws_profile(monkeypatch,
                                                       tmp_path):
    config = tmp_path / "config"
    config.write_text(AWS_CONFIG)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))

    def resolved():
        Connection.reset()
        settings = Connection.settings()
        return (settings["region"], settings["endpoint_url"],
                settings["sources"]["region"],
                settings["sources"]["endpoint_url"])

    monkeypatch.setenv("AWS_PROFILE", "dev")
    assert resolved() == (
        "ap-south-1", "http://127.0.0.1:8111",
        f"[profile dev] of {config}: region",
        f"[profile dev] of {config}: services dev-services, dynamodb")
    assert Connection.settings()["sources"]["profile_name"] == "AWS_PROFILE"
    assert Connection.client().meta.region_name == "ap-south-1"
    # The environment comes before the profile.
    monkeypatch.setenv("AWS_REGION", "eu-west-2")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    assert resolved() == ("eu-west-2", "http://127.0.0.1:8333",
                          "AWS_REGION", "AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8444")
    assert resolved()[1::2] == ("http://127.0.0.1:8444",
                                "AWS_ENDPOINT_URL_DYNAMODB")
    # set_config comes before both.
    Connection.set_config(region="us-west-1",
                          endpoint_url="http://127.0.0.1:8555")
    settings = Connection.settings()
    assert (settings["region"], settings["endpoint_url"]) == (
        "us-west-1", "http://127.0.0.1:8555")
    assert settings["sources"]["region"] == "set_config"
    for name in ("AWS_REGION", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_DYNAMODB"):
        monkeypatch.delenv(name)
    # A profile named by set_config: only its own settings count.
    Connection.reset()
    Connection.set_config(profile_name="plain")
    settings = Connection.settings()
    assert (settings["region"], settings["endpoint_url"]) == (
        "us-east-2", "http://127.0.0.1:8222")
    assert settings["sources"]["region"] == "default"
    # botocore's switch for endpoints configured outside the code.
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert resolved()[:2] == ("ap-south-1", None)
    monkeypatch.delenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
    monkeypatch.delenv("AWS_PROFILE")
    assert resolved()[::2] == ("eu-north-1", f"[default] of {config}: region")


@pytest.mark.parametrize("fast_path", [True, False])
def test_requests_go_where_the_profile_says(monkeypatch, tmp_path,
                                            fast_path, scripted):
    server = scripted([http_reply(json.dumps({"Item": {
        "email": {"S": "a@b.io"}, "name": {"S": "A"}}}).encode())])
    config = tmp_path / "config"
    config.write_text(f"[profile dev]\nregion = ap-south-1\n"
                      f"endpoint_url = {server.url}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    Connection.reset()
    Connection.set_config(profile_name="dev", fast_path=fast_path,
                          access_key_id="AKIDPROFILE",
                          secret_access_key="secret")
    assert User.get_one("a@b.io").name == "A"
    head, = server.requests
    assert "Credential=AKIDPROFILE/" in head
    assert "/ap-south-1/dynamodb/aws4_request" in head


def test_every_setting_is_declared_once_and_documented():
    import inspect

    declared = dynamongo._SETTINGS
    parameters = list(inspect.signature(Connection.set_config).parameters)
    assert parameters == list(declared)
    doc = inspect.getdoc(Connection.set_config)
    table = readme().split("## Connection", 1)[1].split("\n\n## ", 1)[0]
    for name, setting in declared.items():
        assert f":param {name}: {setting.doc}" in doc
        assert f"`{name}`" in table, name
        for variable in setting.variables:
            assert f"``{variable}``" in doc and f"`{variable}`" in table
    # Each check is the one set_config applies, naming the setting.
    for name, bad in (("region", 5), ("concurrency", 0),
                      ("read_timeout", -1), ("fast_path", "yes"),
                      ("cursor_secret", "text"), ("scan", "never")):
        with pytest.raises(ValidationError, match=f"^{name} must be"):
            Connection.set_config(**{name: bad})
    assert Connection.settings()["concurrency"] == 16


def test_settings_name_their_sources_and_hide_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    monkeypatch.setenv("AWS_TABLE_PREFIX", "env-")
    Connection.reset()
    Connection.set_config(read_timeout=3)
    settings = Connection.settings()
    assert settings["secret_access_key"] == "****"
    assert "very-secret" not in repr(settings)
    assert settings["sources"]["secret_access_key"] == \
        "AWS_SECRET_ACCESS_KEY"
    assert settings["sources"]["table_prefix"] == "AWS_TABLE_PREFIX"
    assert settings["sources"]["read_timeout"] == "set_config"
    assert settings["sources"]["concurrency"] == "default"
    assert set(settings["sources"]) == set(settings) - {"sources"}


def test_a_broken_aws_config_file_is_a_dynamongo_error(monkeypatch,
                                                       tmp_path):
    config = tmp_path / "config"
    config.write_text("[profile dev\nregion = x\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    Connection.reset()
    with pytest.raises(dynamongo.DynamongoError, match="AWS config file"):
        Connection.settings()


@pytest.mark.parametrize("fast_path", [True, False])
def test_missing_credentials_raise_credentials_error(monkeypatch, fast_path,
                                                     refusing_port):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "")  # (moto's mock_aws restores them)
    Connection.reset()
    endpoint = f"http://127.0.0.1:{refusing_port}"
    Connection.set_config(region="us-east-1", table_prefix="nokeys-",
                          endpoint_url=endpoint, fast_path=fast_path)
    with pytest.raises(dynamongo.CredentialsError,
                       match=f"GetItem on table 'nokeys-users': no usable AWS "
                       f"credentials to sign the request to {endpoint}/ "
                       ) as caught:
        User.get_one("a@b.io")
    assert type(caught.value.__cause__).__name__ == "NoCredentialsError"
    # A batch raises it too, with what was done and not done.
    with pytest.raises(dynamongo.CredentialsError) as caught:
        User.save_many([JOHN, dict(JOHN, email="jane@example.com")])
    result = caught.value.result
    assert (result.success_count, result.fail_count) == (0, 2)
    assert [failure.item["email"] for failure in result.fail] == [
        JOHN["email"], "jane@example.com"]
    # A profile that is not there.
    Connection.set_config(profile_name="nowhere")
    with pytest.raises(dynamongo.CredentialsError, match="nowhere"):
        User.get_one("a@b.io")


@pytest.mark.parametrize("fast_path", [True, False])
def test_an_unreachable_endpoint_raises_connection_error(no_sleep,
                                                         fast_path,
                                                         refusing_port):
    port = refusing_port
    Connection.set_config(endpoint_url=f"http://127.0.0.1:{port}",
                          fast_path=fast_path, max_attempts=3)
    with pytest.raises(dynamongo.DynamoDBConnectionError,
                       match=rf"GetItem on table '\S+users'.*"
                             rf"127.0.0.1:{port}") as caught:
        User.get_one("a@b.io")
    assert caught.value.endpoint == f"http://127.0.0.1:{port}/"
    assert caught.value.operation == "GetItem"
    assert type(caught.value.__cause__).__name__ in (
        "EndpointConnectionError", "_NoAnswer")
    assert len(no_sleep) == 2  # retried first
    assert isinstance(caught.value, DynamoDBError)


@pytest.mark.parametrize("fast_path", [True, False])
def test_a_silent_endpoint_raises_connection_error(fast_path, scripted):
    server = scripted(["silence"])
    Connection.set_config(endpoint_url=server.url, fast_path=fast_path,
                          max_attempts=1, read_timeout=0.3)
    with pytest.raises(dynamongo.DynamoDBConnectionError) as caught:
        User.get_one("a@b.io")
    assert re.search("read timeout|no answer within 0.3 s",
                     str(caught.value), re.I)
    assert caught.value.maybe_applied  # the server may have acted


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("reply", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",  # not HTTP
    http_reply(b"<html><body>Sign in to the Wi-Fi</body></html>"),
    http_reply(b'["not", "an", "object"]'),
    ("then close", b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n"
                   b'{"Item": {"email": {"S": "a@b.io"}}'),  # cut short
    http_reply(b'{"Item": {"email": {"S": "a@b.io"}, "name": {"S": "A"}}}',
               "x-amz-crc32: 12345\r\n"),  # fails its checksum
], ids=["not http", "html", "json array", "cut short", "checksum"])
def test_a_malformed_answer_is_an_error_never_data(fast_path, reply,
                                                   scripted):
    server = scripted([reply])
    Connection.set_config(endpoint_url=server.url, fast_path=fast_path,
                          max_attempts=1)
    with pytest.raises(DynamoDBError, match="GetItem on table") as caught:
        User.get_one("a@b.io")
    assert caught.value.__cause__ is not None


def test_forked_children_get_their_own_connections(users):
    import multiprocessing

    emails = [f"child{number}@example.com" for number in range(3)]
    User.save_many([{"email": email, "name": email} for email in emails])
    Connection.set_config(concurrency=4)
    # The parent keeps a connection alive and starts its worker pool.
    assert User.get_one(emails[0]).name == emails[0]
    keys = emails + [f"nobody{number}@example.com" for number in range(200)]
    assert len(User.get_many(keys)) == 3
    context = multiprocessing.get_context("fork")
    answers = context.Queue()

    def child(email):
        try:
            names = [User.get_one(email).name for _ in range(20)]
            found = sorted(user.email for user in User.get_many(keys))
            answers.put((email, names, found))
        except BaseException as exc:  # reported to the parent
            answers.put((email, repr(exc), None))

    children = [context.Process(target=child, args=(email,))
                for email in emails]
    for process in children:
        process.start()
    results = sorted(answers.get(timeout=60) for _ in children)
    for process in children:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert results == [(email, [email] * 20, sorted(emails))
                       for email in emails]
    assert User.get_one(emails[1]).name == emails[1]  # the parent goes on


def test_a_call_finishes_on_the_settings_it_began_with(monkeypatch):
    Event.create_table()
    began_with = Event.table_name()
    Connection.set_config(concurrency=4)
    tables = []
    send = dynamongo._send

    def switching(operation, params):
        tables.append(next(iter(params["RequestItems"])))
        # Another part of the program changes the settings meanwhile.
        Connection.set_config(table_prefix="other-", batch_attempts=1)
        return send(operation, params)

    replace_send(monkeypatch, switching)
    result = Event.save_many(events("ann", 200))
    assert result.success_count == 200 and result.fail == []
    assert tables == [began_with] * 8
    replace_send(monkeypatch, send)
    assert Event.table_name() == "other-events"
    Connection.set_config(table_prefix=began_with[:-len("events")])
    assert len(Event.get_many(Event.user == "ann")) == 200


def test_set_config_from_another_thread_breaks_no_call():
    Event.create_table()
    # Each partition's first item, written before the threads start: moto
    # can lose concurrent first writes to a new partition (a backend gap).
    Event.save_many([events(f"user{number}", 1)[0] for number in range(16)])
    errors, done = [], threading.Event()

    def work(number):
        try:
            for _ in range(3):
                items = events(f"user{number}", 60)
                assert Event.save_many(items).success_count == 60
                found = Event.get_many([(f"user{number}", seq)
                                        for seq in range(60)])
                assert [item.seq for item in found] == list(range(60))
        except Exception as exc:  # collected: the test fails on any
            errors.append(exc)

    def configure():
        widths = random.Random(0)  # the same sequence every run
        while not done.is_set():
            Connection.set_config(concurrency=widths.choice([2, 4, 8]))
            time.sleep(0.002)

    workers = [threading.Thread(target=work, args=(number,))
               for number in range(16)]
    configurer = threading.Thread(target=configure)
    configurer.start()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    done.set()
    configurer.join()
    assert errors == []


# -- Model schema ------------------------------------------------------------

def test_schema_errors_when_the_class_is_made():
    with pytest.raises(SchemaError, match="__table__"):
        class NoTable(Model):
            __hash_key__ = "id"
            id = IntField()
    with pytest.raises(SchemaError, match="__hash_key__"):
        class NoHash(Model):
            __table__ = "nohash"
            id = IntField()
    with pytest.raises(SchemaError, match="'uid'"):
        class KeyWithoutField(Model):
            __table__ = "nofield"
            __hash_key__ = "uid"
            id = IntField()
    with pytest.raises(SchemaError, match="ListField"):
        class ListKey(Model):
            __table__ = "listkey"
            __hash_key__ = "id"
            id = ListField(IntField)
    with pytest.raises(SchemaError, match="BooleanField"):
        class BoolRange(Model):
            __table__ = "boolrange"
            __hash_key__ = "id"
            __range_key__ = "flag"
            id = IntField()
            flag = BooleanField()
    with pytest.raises(SchemaError, match="may hold only"):
        class BadName(Model):
            __table__ = "users; drop"
            __hash_key__ = "id"
            id = IntField()
    with pytest.raises(SchemaError, match="'table'"):
        class Shadowing(Model):
            __table__ = "shadowing"
            __hash_key__ = "id"
            id = IntField()
            table = StringField()
    with pytest.raises(SchemaError, match="'_meta'"):
        class ShadowingItsMetadata(Model):
            __table__ = "shadowing"
            __hash_key__ = "id"
            id = IntField()
            _meta = StringField()
    with pytest.raises(SchemaError, match="__billing_mode__"):
        class Billing(Model):
            __table__ = "billing"
            __hash_key__ = "id"
            __billing_mode__ = "FREE"
            id = IntField()


def test_full_table_name_is_checked_on_the_client():
    class Short(Model):
        __table__ = "ab"
        __hash_key__ = "id"
        id = IntField()

    Connection.set_config(table_prefix="")
    with pytest.raises(SchemaError, match="3 to 255"):
        Short.table_name()
    Connection.set_config(table_prefix="p-")
    assert Short.table_name() == "p-ab"
    Connection.set_config(table_prefix="x" * 254)
    with pytest.raises(SchemaError, match=r"\(Short\) must be 3 to 255"):
        Short.create_table()
    with pytest.raises(SchemaError, match="table_prefix"):
        Connection.set_config(table_prefix="a/b")


def test_abstract_models_and_inheritance():
    assert list(Article._meta.fields) == ["created_at", "note", "slug"]
    assert Article.note.max_length == 10
    assert Stamped.note.max_length is None
    for operation in (Stamped.table_name, Stamped.create_table,
                      lambda: Stamped.save_one({"note": "x"}),
                      lambda: Stamped.get_one("x"),
                      lambda: Stamped.delete_one("x")):
        with pytest.raises(SchemaError, match="abstract"):
            operation()

    class Draft(Article):
        __table__ = "drafts"
        words = IntField()

    assert list(Draft._meta.fields) == ["created_at", "note", "slug", "words"]
    assert issubclass(Draft.DoesNotExist, Article.DoesNotExist)
    Draft.create_table()
    saved = Draft.save_one({"slug": "a-b", "words": 3})
    assert Draft.get_one("a-b") == saved
    assert isinstance(saved.created_at, datetime.datetime)


def test_instances_hold_values_without_checking_required():
    user = User(email="x@y.io")
    assert user.email == "x@y.io"
    assert user.name is None
    user.year_of_birth = 1990
    assert user.to_dict() == {"email": "x@y.io", "year_of_birth": 1990}
    with pytest.raises(ValidationError, match="'age'"):
        User(age=3)


def test_a_field_declared_as_a_class_is_refused():
    with pytest.raises(SchemaError,
                       match=r"Person\.name is the class StringField, not a "
                             r"field: did you mean StringField\(\)\?"):
        class Person(Model):
            __table__ = "people"
            __hash_key__ = "id"
            id = StringField(required=True)
            name = StringField


@pytest.mark.parametrize("declare, message", [
    (lambda: StringField(hash_key=True),
     r"StringField\(\) takes no option 'hash_key': the model names its "
     r"key, as __hash_key__ = \"<field name>\"$"),
    (lambda: IntField(range_key=True),
     r"IntField\(\) takes no option 'range_key': the model names its "
     r"key, as __range_key__ = \"<field name>\"$"),
    (lambda: StringField(null=True),
     r"StringField\(\) takes no option 'null'; it takes regex, min_length, "
     r"max_length, required, default, attr_name$"),
    (lambda: ListField(IntField, max_len=3),
     r"ListField\(\) takes no option 'max_len'; it takes field, required, "
     r"default, attr_name$"),
    (lambda: dynamongo.VersionField(required=True),
     r"VersionField\(\) takes no option 'required'; it takes attr_name$"),
    (lambda: KeyTemplate("A#{a}", regex="x"),
     r"KeyTemplate\(\) takes no option 'regex'; it takes template, "
     r"attr_name$"),
], ids=["hash_key", "range_key", "null", "ListField", "VersionField",
        "KeyTemplate"])
def test_a_field_option_no_field_takes_is_a_schema_error(declare, message):
    with pytest.raises(SchemaError, match=message):
        declare()


def test_map_sub_fields_named_like_field_attributes_are_reachable():
    class Person(Model):
        __table__ = "people"
        __hash_key__ = "id"
        id = StringField(required=True)
        address = DictField(name=StringField(), path=StringField())

    for field in (Person.address.name, Person.address["name"]):
        assert_expression(field == "x", "#n0.#n1 = :v0",
                          {"#n0": "address", "#n1": "name"},
                          {":v0": {"S": "x"}})
    assert_expression(Person.address["path"] == "p", "#n0.#n1 = :v0",
                      {"#n0": "address", "#n1": "path"}, {":v0": {"S": "p"}})
    # The attribute form would reach the field's own path: refused.
    with pytest.raises(ExpressionError,
                       match=r"Person\.address\.path would be the field's own "
                             r"'path'.*write Person\.address\['path'\]"):
        Person.address.path == "p"  # noqa: B015
    with pytest.raises(ExpressionError, match=r"Shadows\.box\['set'\]"):
        class Shadows(Model):
            __table__ = "shadows"
            __hash_key__ = "id"
            id = StringField(required=True)
            box = DictField(set=IntField(), contains=StringField())

        Shadows.box.set(1)


# -- A model's codec ---------------------------------------------------------

class ZuluTime(DateTimeField):
    """Stores UTC times as ``...05Z`` (an override of to_primitive)."""

    def to_primitive(self, value):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EvenInt(IntField):
    """Even numbers only (an override of validate)."""

    def validate(self, value):
        value = super().validate(value)
        if value % 2:
            raise ValidationError("must be even")
        return value


# Field subclasses that change conversion: the fast paths must step aside.
class Overridden(Model):
    __table__ = "overridden"
    __hash_key__ = "id"
    id = StringField(required=True)
    at = ZuluTime()
    even = EvenInt()
    evens = ListField(EvenInt)


def test_generated_functions_show_their_source():
    import inspect
    import traceback

    meta = User._meta
    assert meta.validate_item.__qualname__ == "User._meta.validate_item"
    assert meta.validate_item.__module__ == __name__
    assert meta.from_item.__code__.co_filename == \
        f"<dynamongo {__name__}.User.from_item>"
    assert inspect.getsource(meta.validate_item) == \
        meta.source("validate_item")
    # Locals are named after the fields.
    assert "year_of_birth_value = get('year_of_birth')" in \
        meta.source("validate_item")
    with pytest.raises(ValidationError, match="source"):
        meta.source("validate")
    # A traceback through a generated function shows its line.
    broken = {"email": {"S": "a@b.io"}, "name": {"S": "A"},
              "year_of_birth": {"S": "old"}}
    with pytest.raises(ValidationError) as caught:
        meta.from_item(broken)
    text = "".join(traceback.format_exception(caught.value))
    assert f'File "<dynamongo {__name__}.User.from_item>"' in text
    assert "instance.__dict__ = read_stored(item)" in text
    assert "User item email='a@b.io' as stored cannot be read: " \
           "year_of_birth: is stored as S 'old'" in text


def test_models_of_one_name_keep_their_own_source():
    def make(field):
        return type("Twin", (Model,), {"__table__": "twins",
                                       "__hash_key__": "id", "id": field,
                                       "__module__": __name__})

    first, second = make(StringField(required=True)), make(IntField())
    first_code = first._meta.identity.__code__
    second_code = second._meta.identity.__code__
    assert first_code.co_filename != second_code.co_filename
    assert "['S']" in first._meta.source("identity")
    assert "number_identity" in second._meta.source("identity")
    import linecache
    assert "".join(linecache.getlines(first_code.co_filename)) == \
        first._meta.source("identity")
    assert "".join(linecache.getlines(second_code.co_filename)) == \
        second._meta.source("identity")


def test_field_overrides_are_honoured_everywhere(calls):
    Overridden.create_table()
    moment = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    del calls[:]
    # Stored by the subclass's to_primitive, on every write path.
    Overridden.save_one({"id": "one", "at": moment, "even": 2})
    Overridden.save_many([{"id": "two", "at": moment}])
    Overridden.save_many([{"id": "three", "at": "2020-01-02T03:04:05Z"}],
                         overwrite=False)
    assert {item["id"]["S"]: item["at"] for item in raw_items(Overridden)} \
        == {name: {"S": "2020-01-02T03:04:05Z"}
            for name in ("one", "two", "three")}
    # Its validate refuses on every path, the value's type notwithstanding.
    for odd in (3, "3", 3.0):
        with pytest.raises(ValidationError, match="even: must be even"):
            Overridden.save_one({"id": "four", "even": odd})
        with pytest.raises(ValidationError, match=r"\[0\]\.even"):
            Overridden.save_many([{"id": "four", "even": odd}])
    with pytest.raises(ValidationError, match=r"evens\[1\]: must be even"):
        Overridden.save_one({"id": "four", "evens": [2, 3]})
    with pytest.raises(ValidationError, match="must be even"):
        Overridden.update_one("one", Overridden.even.set(5))
    assert "four" not in {item["id"]["S"]
                          for item in raw_items(Overridden)}
    # Conditions and updates convert operands alike.
    assert {item.id for item in Overridden.get_many(
        Overridden.at == moment)} == {"one", "two", "three"}
    later = moment + datetime.timedelta(hours=1)
    updated = Overridden.update_one("one", Overridden.at.set(later))
    assert updated.at == later
    assert {item["id"]["S"]: item["at"]["S"] for item in raw_items(
        Overridden)}["one"] == "2020-01-02T04:04:05Z"


def test_required_fields_with_defaults_are_filled():
    class Ticket(Model):
        __table__ = "tickets"
        __hash_key__ = "id"
        id = StringField(required=True)
        state = StringField(required=True, default="open")
        opened = DateTimeField(required=True, default=lambda: None)

    Ticket.create_table()
    with pytest.raises(ValidationError, match="opened: is required"):
        Ticket.save_one({"id": "t1"})
    moment = datetime.datetime(2020, 1, 2)
    saved = Ticket.save_one({"id": "t1", "opened": moment})
    assert saved.state == "open"
    assert Ticket.get_one("t1") == saved
    assert saved.to_dict() == {"id": "t1", "state": "open", "opened": moment}


def test_ip_addresses_of_any_length_are_measured():
    # ipaddress takes a scoped IPv6 address of any length.
    class Host(Model):
        __table__ = "hosts"
        __hash_key__ = "id"
        id = IntField(required=True)
        address = IPAddressField()

    Host.create_table()
    long_address = "fe80::1%" + "x" * 20_000
    items = [{"id": index, "address": long_address} for index in range(28)]
    assert Host.save_one(items[0]).address == long_address
    Host.delete_one(0)
    with pytest.raises(ValidationError, match=r"\[\d+\]\.address"):
        Host.save_many([dict(item, address=long_address * 25)
                        if index == 27 else item
                        for index, item in enumerate(items)])
    assert raw_items(Host) == []


def test_fields_may_take_private_names():
    # Only _meta and the public API are reserved.
    assert dynamongo._RESERVED_NAMES == {"_meta"} | {
        name for name in dir(Model) if not name.startswith("_")}

    class Private(Model):
        __table__ = "private"
        __hash_key__ = "_key"
        _key = StringField(required=True)
        _plan = IntField()
        _identity = StringField()
        _strategy = ListField(IntField)

    Private.create_table()
    item = {"_key": "k", "_plan": 3, "_identity": "i", "_strategy": [1]}
    Private.save_many([item])
    assert Private.get_one("k").to_dict() == item
    assert Private.get_many(Private._plan == 3)[0].to_dict() == item
    assert Private.update_one("k", Private._plan.add(1))._plan == 4


# -- Tables ------------------------------------------------------------------

def test_create_table_provisioned_and_on_demand(calls):
    User.create_table()
    Profile.create_table()
    client = Connection.client()
    users = client.describe_table(TableName=User.table_name())["Table"]
    assert users["TableStatus"] == "ACTIVE"
    assert users["KeySchema"] == [{"AttributeName": "email",
                                   "KeyType": "HASH"}]
    assert users["ProvisionedThroughput"]["ReadCapacityUnits"] == 8
    assert users["ProvisionedThroughput"]["WriteCapacityUnits"] == 8
    profiles = client.describe_table(TableName=Profile.table_name())["Table"]
    assert profiles["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    create = [params for operation, params in calls
              if operation == "CreateTable"][1]
    assert "ProvisionedThroughput" not in create
    Contacts.create_table()
    described = client.describe_table(TableName=Contacts.table_name())
    assert {(a["AttributeName"], a["AttributeType"]) for a in
            described["Table"]["AttributeDefinitions"]} == \
        {("user_id", "S"), ("email", "S")}


def test_create_table_twice_and_delete_table():
    User.create_table()
    with pytest.raises(DynamoDBError) as caught:
        User.create_table()
    assert caught.value.code == "ResourceInUseException"
    assert str(caught.value) == (
        f"User.create_table: table {User.table_name()!r} exists already (or "
        "is being created or deleted); create_table(exist_ok=True) accepts "
        "it")
    User.create_table(exist_ok=True)
    User.delete_table()
    settings = Connection.settings()
    endpoint = dynamongo._endpoint_of(settings)
    with pytest.raises(TableNotFoundError, match=re.escape(
            f"(no table {User.table_name()!r} in region "
            f"{settings['region']} at {endpoint}: the model's create_table() "
            "makes it)")) as caught:
        User.get_one("a@b.io")
    assert str(caught.value).startswith(
        f"GetItem on table {User.table_name()!r} failed: "
        "ResourceNotFoundException: ")


def test_a_refusal_without_a_message_says_what_its_code_means(monkeypatch):
    wire = dynamongo._FastWire._error
    for body, message in (
            (b'{"__type":"com.amazon#ResourceInUseException","message":""}',
             "ResourceInUseException: the table exists already, or is being "
             "created, changed or deleted"),
            (b'{"__type":"com.amazon#SomethingNewException"}',
             "SomethingNewException: no message"),
            (b"<html>Bad gateway</html>", "502: <html>Bad gateway</html>")):
        response = wire(body, 502, {})
        error = dynamongo._translate_error(
            dynamongo._Refusal(response, "CreateTable"), "CreateTable",
            {"TableName": "t"}, Connection.settings())[0]
        assert str(error) == f"CreateTable on table 't' failed: {message}"


# -- Single-item operations --------------------------------------------------

def test_save_one_validates_and_returns_the_instance(users, calls):
    john = User.save_one(JOHN)
    assert operations(calls) == ["PutItem"]
    assert isinstance(john, User)
    assert john.email == "johndoe@gmail.com"
    assert john.name == "John Doe"
    assert john.year_of_birth == 1990
    assert john.cities_visited == ["Nairobi", "New York"]
    assert isinstance(john.created_at, datetime.datetime)
    assert User.get_one("johndoe@gmail.com") == john


def test_save_one_does_not_store_none(users):
    User.save_one({"email": "a@b.io", "name": "A", "year_of_birth": None})
    [item] = raw_items(User)
    assert set(item) == {"email", "name", "created_at"}


def test_save_one_collects_every_error_and_writes_nothing(users, calls):
    with pytest.raises(ValidationError) as caught:
        User.save_one({"email": "not-an-email", "year_of_birth": 3000,
                       "cities_visited": ["ok", 5], "shoe_size": 9})
    errors = caught.value.errors
    assert set(errors) == {"email", "name", "year_of_birth",
                           "cities_visited[1]", "shoe_size"}
    assert errors["name"] == ["is required"]
    assert errors["year_of_birth"] == ["must be at most 2018"]
    for name in errors:
        assert name in str(caught.value)
    assert calls == []
    assert raw_items(User) == []


def test_save_one_refuses_missing_or_empty_keys(users):
    with pytest.raises(ValidationError, match="email"):
        User.save_one({"name": "x"})
    with pytest.raises(ValidationError, match="email"):
        User.save_one(User(name="x"))
    with pytest.raises(ValidationError, match="User instance"):
        User.save_one(["email", "name"])
    with pytest.raises(ValidationError, match="overwrite"):
        User.save_one(JOHN, overwrite="yes")
    assert raw_items(User) == []
    # DynamoDB refuses an empty string as a key value, hash or range.
    Page.create_table()
    for key in ({"site": "", "path": "p1"}, {"site": "s1", "path": ""}):
        empty = next(name for name, value in key.items() if value == "")
        with pytest.raises(ValidationError,
                           match=rf"{empty}: is a key, so it must not be "
                                 "empty") as caught:
            Page.save_one(dict(key, title="x"))
        assert list(caught.value.errors) == [empty]
        with pytest.raises(ValidationError, match=rf"\[1\]\.{empty}"):
            Page.save_many([{"site": "s", "path": "p", "title": "x"},
                            dict(key, title="x")])
    assert raw_items(Page) == []


def test_save_one_overwrite(users):
    User.save_one(JOHN)
    with pytest.raises(ConditionalCheckFailedException) as caught:
        User.save_one(dict(JOHN, name="Other"), overwrite=False)
    assert caught.value.operation == "PutItem"
    assert User.get_one(JOHN["email"]).name == "John Doe"
    User.save_one(dict(JOHN, name="Younger"),
                  overwrite=User.year_of_birth < 2000)
    assert User.get_one(JOHN["email"]).name == "Younger"
    with pytest.raises(ConditionalCheckFailedException, match=(
            "PutItem on table .* ConditionalCheckFailed")):
        User.save_one(dict(JOHN, name="Older"),
                      overwrite=User.year_of_birth > 2000)
    assert User.get_one(JOHN["email"]).name == "Younger"
    new = User.save_one({"email": "new@b.io", "name": "New"},
                        overwrite=False)
    assert User.get_one("new@b.io") == new


def test_get_one_strategies(users, calls):
    john = User.save_one(JOHN)
    del calls[:]
    for strategy in ("johndoe@gmail.com", {"email": "johndoe@gmail.com",
                                           "name": "ignored"},
                     User(email="johndoe@gmail.com"),
                     User.email == "johndoe@gmail.com"):
        assert User.get_one(strategy) == john
    assert operations(calls) == ["GetItem"] * 4
    assert all(params["Key"] == {"email": {"S": "johndoe@gmail.com"}}
               for _, params in calls)


def test_item_size_limit(users):
    # An item just under DynamoDB's 400 KB is stored; one over it is
    # refused before anything is sent, naming its largest attribute.
    User.save_one(dict(JOHN, name="x" * 400_000))
    assert len(User.get_one(JOHN["email"]).name) == 400_000
    for too_big, largest in (
            ({"cities_visited": ["y" * 1000] * 410}, "cities_visited"),
            ({"name": "\u20ac" * 140_000}, "name")):  # 3 bytes each
        with pytest.raises(ValidationError) as caught:
            User.save_many([dict(JOHN, email="b@b.io"),
                            dict(JOHN, email="c@b.io", **too_big)])
        assert list(caught.value.errors) == [f"[1].{largest}"]
    assert [user.email for user in User.get_many(User.email.exists())] \
        == [JOHN["email"]]


def test_reading_items_written_by_others(users):
    # Attributes the model lacks are ignored, missing ones read as None,
    # whether or not the item has as many attributes as the model fields.
    moment = "2024-05-06T07:08:09.000001+00:00"
    full = {"email": {"S": "a@b.io"}, "name": {"S": "A"},
            "year_of_birth": {"N": "1990"},
            "cities_visited": {"L": [{"S": "Lima"}]},
            "created_at": {"S": moment}}
    swapped = dict(full, email={"S": "b@b.io"}, nickname={"S": "bee"})
    del swapped["created_at"]
    sparse = {"email": {"S": "c@b.io"}, "age": {"N": "3"}}
    client = Connection.client()
    for item in (full, swapped, sparse):
        client.put_item(TableName=User.table_name(), Item=item)
    a, b, c = User.get_many(["a@b.io", "b@b.io", "c@b.io"])
    assert a.to_dict() == {
        "email": "a@b.io", "name": "A", "year_of_birth": 1990,
        "cities_visited": ["Lima"],
        "created_at": datetime.datetime.fromisoformat(moment)}
    assert b.to_dict() == {"email": "b@b.io", "name": "A",
                           "year_of_birth": 1990,
                           "cities_visited": ["Lima"]}
    assert b.created_at is None and not hasattr(b, "nickname")
    assert c.to_dict() == {"email": "c@b.io"}


def test_reading_null_and_other_types_written_by_others(users):
    # boto3's Table resource stores None as NULL.
    Connection.resource().Table(User.table_name()).put_item(Item={
        "email": "n@b.io", "name": None, "year_of_birth": None,
        "cities_visited": None, "created_at": None})
    assert User.get_one("n@b.io").to_dict() == {"email": "n@b.io"}
    assert [user.email for user in User.get_many(User.name.not_exists()
                                                 | User.email.exists())] \
        == ["n@b.io"]
    client = Connection.client()
    # A number stored as text reads as the number it holds.
    client.put_item(TableName=User.table_name(), Item={
        "email": {"S": "t@b.io"}, "name": {"S": "T"},
        "year_of_birth": {"S": "1990"}})
    assert User.get_one("t@b.io").year_of_birth == 1990
    Reading.create_table()
    client.put_item(TableName=Reading.table_name(), Item={
        "sensor": {"N": "1"}, "at": {"N": "2.5"}, "value": {"S": " 0.25 "}})
    assert Reading.get_one((1, 2.5)).value == 0.25
    # What cannot be read is named: model, key and attribute.
    client.put_item(TableName=User.table_name(), Item={
        "email": {"S": "w@b.io"}, "name": {"N": "7"}})
    with pytest.raises(ValidationError,
                       match=r"User item email='w@b\.io'.*name: is stored "
                             r"as N 7, which a StringField") as caught:
        User.get_one("w@b.io")
    assert list(caught.value.errors) == ["name"]
    with pytest.raises(ValidationError, match="w@b.io"):
        User.get_many(User.email.exists())
    client.put_item(TableName=Reading.table_name(), Item={
        "sensor": {"N": "1"}, "at": {"N": "3"}, "value": {"S": "high"}})
    with pytest.raises(ValidationError, match="sensor=1, at=3.*value"):
        Reading.get_one((1, 3))
    # Nested maps and lists: NULL sub-fields read as absent.
    Profile.create_table()
    client.put_item(TableName=Profile.table_name(), Item={
        "name": {"S": "p"}, "address": {"M": {
            "city": {"NULL": True}, "zip": {"S": "100"}}},
        "tags": {"NULL": True}})
    assert Profile.get_one("p").to_dict() == {"name": "p",
                                              "address": {"zip": 100}}
    # A free-form map holds a map, not a string or a list.
    Everything.create_table()
    key = uuid.UUID(int=7)
    for stored in ({"S": "x"}, {"L": [{"S": "x"}]}, {"N": "1"}):
        client.put_item(TableName=Everything.table_name(), Item={
            "id": {"S": str(key)}, "free": stored})
        kind = next(iter(stored))
        with pytest.raises(ValidationError, match=(
                rf"Everything item id='{key}' as stored cannot be read: "
                rf"free: is stored as {kind} ")) as caught:
            Everything.get_one(key)
        assert list(caught.value.errors) == ["free"]
        with pytest.raises(ValidationError, match=f"id='{key}'"):
            Everything.get_many([key])


def test_a_bound_kept_on_a_number_written_by_others_as_text(users):
    skip_on_gap("mixed-type comparisons")
    Connection.client().put_item(TableName=User.table_name(), Item={
        "email": {"S": "t@b.io"}, "name": {"S": "T"},
        "year_of_birth": {"S": "1990"}})
    # The guard condition fails on the text; the refusal names the bound.
    with pytest.raises(ValidationError, match="would be 2020, above max"):
        User.update_one("t@b.io", User.year_of_birth.add(30))


def test_key_values_within_dynamodbs_byte_limits():
    Page.create_table()
    site, path = "é" * 1024, "ü" * 512  # 2,048 and 1,024 bytes
    Page.save_one({"site": site, "path": path, "title": "at the limit"})
    assert Page.get_one((site, path)).title == "at the limit"
    for too_long in ({"site": site + "x", "path": "p"},
                     {"site": "s", "path": path + "x"}):
        name = "site" if len(too_long["site"]) > 1 else "path"
        with pytest.raises(ValidationError,
                           match=f"{name}: is a key of 20(49|50)|"
                                 f"{name}: is a key of 10(25|26)"):
            Page.save_one(too_long)
        with pytest.raises(ValidationError, match=f"key field '{name}'"):
            Page.get_one((too_long["site"], too_long["path"]))
    items = [{"site": "s", "path": f"p{number}"} for number in range(30)]
    items[7]["site"] = "s" * 2049
    with pytest.raises(ValidationError, match=r"\[7\]\.site: is a key"):
        Page.save_many(items)
    assert len(raw_items(Page)) == 1  # nothing of the batch was written


def test_nesting_and_unicode_dynamodb_cannot_take_are_refused(users):
    Everything.create_table()

    def nested(levels):
        value = "deep"
        for _ in range(levels):
            value = {"a": value}
        return value

    key = uuid.uuid4()
    Everything.save_one({"id": key, "free": nested(32)})
    assert Everything.get_one(key).free == nested(32)
    with pytest.raises(ValidationError, match="more than 32 levels"):
        Everything.save_one({"id": uuid.uuid4(), "free": nested(33)})
    looped = {}
    looped["self"] = looped
    with pytest.raises(ValidationError, match="more than 32 levels"):
        Everything.save_one({"id": uuid.uuid4(), "free": looped})
    items = [{"email": f"u{number}@b.io", "name": "ok"}
             for number in range(30)]
    items[5]["name"] = "half \ud800 a pair"
    with pytest.raises(ValidationError,
                       match=r"\[5\]\.name: holds a lone surrogate"):
        User.save_many(items)
    with pytest.raises(ValidationError, match="lone surrogate"):
        User.save_one({"email": "a@b.io", "name": "ok",
                       "cities_visited": ["\udfff"]})
    with pytest.raises(ValidationError, match="lone surrogate"):
        User.get_many(User.name.begins_with("\ud800"))
    assert raw_items(User) == []


def test_consistent_reads_are_asked_for(users, calls):
    User.save_one(JOHN)
    del calls[:]
    assert User.get_one(JOHN["email"], consistent_read=True).name == \
        "John Doe"
    assert User.get_many([JOHN["email"]], consistent_read=True)[0].name == \
        "John Doe"
    assert len(User.get_many(User.name == "John Doe",
                             consistent_read=True)) == 1
    get, batch, scan = (params for _, params in calls)
    assert get["ConsistentRead"] is True
    assert batch["RequestItems"][User.table_name()]["ConsistentRead"] is True
    assert scan["ConsistentRead"] is True


def test_get_one_missing_raises_does_not_exist(users):
    with pytest.raises(User.DoesNotExist, match="nobody@b.io"):
        User.get_one("nobody@b.io")
    with pytest.raises(DoesNotExist, match=(
            "User with email='nobody@b.io' does not exist")):
        User.get_one(User.email == "nobody@b.io")


def test_get_one_refuses_non_key_conditions(users, calls):
    with pytest.raises(ExpressionError, match="get_many"):
        User.get_one((User.email == "a@b.io") & (User.year_of_birth > 1))
    assert calls == []


@pytest.mark.parametrize("strategy, error, message", [
    ((User.email == "a@b.io") | (User.year_of_birth > 2000),
     ExpressionError, "ORed"),
    (User.year_of_birth > 2000, ExpressionError, "no == condition on email"),
    (User.email.begins_with("a"), ExpressionError, "equality"),
    (User.email.in_(["a@b.io"]), ExpressionError, "equality"),
    ((User.email == "a@b.io") & (User.email == "c@d.io"), ExpressionError,
     "twice"),
    ((Contacts.email == "a@b.io"), ExpressionError, "Contacts"),
    (None, ValidationError, "email"),
    ({"name": "x"}, ValidationError, "email"),
    ({"email": ""}, ValidationError, "empty"),
    (5, ValidationError, "email"),
    (Contacts(email="a@b.io"), ValidationError, "Contacts"),
])
def test_bad_strategies_raise_before_any_request(users, calls, strategy,
                                                 error, message):
    for operation in (User.get_one, User.delete_one):
        with pytest.raises(error, match=message):
            operation(strategy)
    assert calls == []


def test_composite_key_strategies(contacts, calls):
    owner = uuid.uuid4()
    saved = Contacts.save_one({"user_id": owner, "email": "a@b.io"})
    assert saved.user_id == owner
    by_owner, by_email = Contacts.user_id == owner, Contacts.email == "a@b.io"
    for strategy in ((owner, "a@b.io"), (str(owner), "a@b.io"),
                     {"user_id": owner, "email": "a@b.io"},
                     Contacts(user_id=owner, email="a@b.io"),
                     by_owner & by_email, by_email & by_owner):
        found = Contacts.get_one(strategy)
        assert found == saved
        assert isinstance(found.user_id, uuid.UUID)
    with pytest.raises(ValidationError, match=r"\(user_id, email\) tuple"):
        Contacts.get_one(owner)
    with pytest.raises(ExpressionError, match="email"):
        Contacts.get_one(Contacts.user_id == owner)
    with pytest.raises(ExpressionError, match="equality"):
        Contacts.delete_one((Contacts.user_id == owner)
                            & (Contacts.email > "a"))
    with pytest.raises(ValidationError, match="email"):
        Contacts.get_one({"user_id": owner})


def test_delete_one_strategies(users):
    emails = [f"user{i}@b.io" for i in range(4)]
    for email in emails:
        User.save_one({"email": email, "name": email})
    strategies = [emails[0], {"email": emails[1]}, User(email=emails[2]),
                  User.email == emails[3]]
    for email, strategy in zip(emails, strategies):
        deleted = User.delete_one(strategy)
        assert isinstance(deleted, User) and deleted.email == email
        assert deleted.name == email
    assert raw_items(User) == []
    assert User.delete_one("gone@b.io") is None


def test_delete_one_with_extra_conditions(users):
    User.save_one(JOHN)  # born 1990, visited Nairobi
    assert User.delete_one((User.email == JOHN["email"])
                           & (User.year_of_birth > 2000)) is None
    assert User.delete_one((User.email == JOHN["email"])
                           & ~User.cities_visited.contains("Nairobi")) is None
    assert len(raw_items(User)) == 1
    deleted = User.delete_one(
        (User.email == JOHN["email"])
        & ((User.year_of_birth > 2000)
           | User.cities_visited.contains("Nairobi")))
    assert deleted.email == JOHN["email"]
    assert raw_items(User) == []
    assert User.delete_one((User.email == "missing@b.io")
                           & (User.year_of_birth <= 2000)) is None


def test_reserved_word_attributes_round_trip():
    Profile.create_table()
    saved = Profile.save_one({
        "name": "n", "year": 2020, "status": "active",
        "data": {"first-name": "F", "a.b": 3, "#x": "h", ":y": "c"},
        "address": {"city": "Nairobi", "geo": {"lat": -1.28, "lng": 36.8}},
        "tags": [{"label": "one"}, {"label": "two"}]})
    assert Profile.get_one("n") == saved
    deleted = Profile.delete_one(
        (Profile.name == "n") & (Profile.status == "active")
        & (Profile.year == 2020) & (Profile.data["a.b"] == 3)
        & (Profile.address.city == "Nairobi")
        & (Profile.address.geo.lat < 0) & (Profile.tags[1].label == "two"))
    assert deleted == saved


def test_every_field_type_round_trips_exactly():
    Everything.create_table()
    values = {
        "id": uuid.uuid4(), "tally": -(10 ** 37) - 7,
        "ratio": 0.1 + 0.2, "flag": False, "text": "ünïcødé ✓ 𝄞",
        "email": "a@b.io", "url": "https://example.com/x?y=1",
        "ip": "2001:db8::1",
        "moment": datetime.datetime(1999, 12, 31, 23, 59, 59, 999999,
                                    tzinfo=EAT),
        "day": datetime.date(2000, 2, 29),
        "span": datetime.timedelta(days=-1, microseconds=5),
        "span_weeks": datetime.timedelta(weeks=3, microseconds=1),
        "numbers": [0, -1, 10 ** 20],
        "matrix": [[uuid.UUID(int=1)], [], [uuid.UUID(int=2)] * 2],
        "nested": {"items": [1.5, 5e-130, 1.7976931348623157e+125],
                   "when": datetime.datetime(2020, 1, 1, 0, 0, 0, 1)},
        "free": {"a": [1, "two", None, True, {"b": 2.5}], "c": {},
                 "d": b"\x00\xff", "e": {"x", "y"}, "f": {1, 2.5},
                 "g": {b"\x80"}},
        "blob": b"\x00\x80\xff", "tags": {"a", "ünï"},
        "counts": {-1, 0, 10 ** 37}, "ratios": {0.5, 1e-130, 2.0},
        "blobs": {b"\x00", b"\xff\xfe"},
    }
    saved = Everything.save_one(values)
    loaded = Everything.get_one(values["id"])
    assert loaded == saved
    for name, value in values.items():
        got = getattr(loaded, name)
        assert got == value, name
        assert type(got) is type(value), name
    assert loaded.moment.utcoffset() == datetime.timedelta(hours=3)
    assert loaded.nested["when"].tzinfo is None
    assert type(loaded.nested["items"][0]) is float


@pytest.mark.parametrize("value", [1.0, 1e-05, 1e16, 123456789.123456789,
                                   2 ** -30, 1990.0])
def test_number_keys_are_matched_by_value(value):
    Reading.create_table()
    saved = Reading.save_one({"sensor": 7, "at": value, "value": value})
    found = Reading.get_one((7, value))
    assert found == saved
    assert type(found.at) is float and found.at == value
    assert Reading.get_one({"sensor": "7", "at": str(value)}) == saved
    assert Reading.delete_one((Reading.sensor == 7) & (Reading.at == value)
                              & (Reading.value == value)) == saved


def test_validation_errors_on_composite_models_write_nothing(contacts):
    with pytest.raises(ValidationError) as caught:
        Contacts.save_one({"user_id": "user_id_1", "email": "john@gmail.com"})
    assert set(caught.value.errors) == {"user_id"}
    assert raw_items(Contacts) == []


# -- Updates -----------------------------------------------------------------

def assert_update(updates, text, names, values):
    assert dynamongo.UpdateBuilder.create(updates) == dict(
        {"UpdateExpression": text},
        **({"ExpressionAttributeNames": names} if names else {}),
        **({"ExpressionAttributeValues": values} if values else {}))


def test_update_builder_renders_every_kind():
    assert_update(User.name.set("New"), "SET #n0 = :v0", {"#n0": "name"},
                  {":v0": {"S": "New"}})
    assert_update(User.name.set_if_not_exists("New"),
                  "SET #n0 = if_not_exists(#n0, :v0)", {"#n0": "name"},
                  {":v0": {"S": "New"}})
    assert_update(User.year_of_birth.remove(), "REMOVE #n0",
                  {"#n0": "year_of_birth"}, {})
    assert_update(User.year_of_birth.set(None), "REMOVE #n0",
                  {"#n0": "year_of_birth"}, {})
    assert_update(User.cities_visited.append("A", "B"),
                  "SET #n0 = list_append(if_not_exists(#n0, :v0), :v1)",
                  {"#n0": "cities_visited"},
                  {":v0": {"L": []}, ":v1": {"L": [{"S": "A"}, {"S": "B"}]}})
    assert_update(User.cities_visited.prepend("Z"),
                  "SET #n0 = list_append(:v1, if_not_exists(#n0, :v0))",
                  {"#n0": "cities_visited"},
                  {":v0": {"L": []}, ":v1": {"L": [{"S": "Z"}]}})
    assert_update(Event.seq.add(2), "SET #n0 = if_not_exists(#n0, :v0) + :v1",
                  {"#n0": "seq"}, {":v0": {"N": "0"}, ":v1": {"N": "2"}})
    assert_update([Profile.address.city.set("N"), Profile.tags[1].remove(),
                   Profile.status.set("on")],
                  "SET #n0.#n1 = :v0, #n3 = :v1 REMOVE #n2[1]",
                  {"#n0": "address", "#n1": "city", "#n2": "tags",
                   "#n3": "status"},
                  {":v0": {"S": "N"}, ":v1": {"S": "on"}})


def test_add_guards_the_bounds():
    # A missing score counts as 0, and 0 + 3 is within 0..10.
    assert repr(Profile.score.add(3)._guard()) == (
        "<Condition (attribute_not_exists(score)) OR ((score >= -3) AND "
        "(score <= 7))>")
    # A missing year counts as 0, and 0 + 3 is below 1900: it must exist.
    assert repr(User.year_of_birth.add(3)._guard()) == (
        "<Condition (year_of_birth >= 1897) AND (year_of_birth <= 2015)>")
    assert User.year_of_birth.subtract(2).number == -2
    assert Event.seq.add(5)._guard() is None  # no bounds, no guard
    with pytest.raises(ValidationError, match="int"):
        User.year_of_birth.add(1.5)
    with pytest.raises(ValidationError, match="int"):
        User.year_of_birth.add(True)
    with pytest.raises(ValidationError, match="number"):
        Reading.value.add("1")
    assert Reading.value.add(1.5).delta == {"N": "1.5"}


def test_update_values_are_validated_when_made():
    with pytest.raises(ValidationError, match="name"):
        User.name.set(5)
    with pytest.raises(ValidationError, match="year_of_birth"):
        User.year_of_birth.set(3000)
    with pytest.raises(ValidationError, match=r"cities_visited\[1\]"):
        User.cities_visited.append("A", 3)
    with pytest.raises(ValidationError, match="required"):
        User.name.set(None)
    with pytest.raises(ValidationError, match="required"):
        User.name.remove()
    with pytest.raises(ValidationError, match="label"):
        Profile.tags[0].label.remove()
    with pytest.raises(ValidationError, match="at least one"):
        User.cities_visited.append()
    with pytest.raises(ValidationError, match="needs a value"):
        User.name.set_if_not_exists(None)


def test_update_one_example_from_the_issue(users, calls):
    User.save_one(JOHN)
    del calls[:]
    updated = User.update_one(User.email == JOHN["email"], [
        User.name.set("New"), User.cities_visited.append("B"),
        User.year_of_birth.add(1)])
    assert operations(calls) == ["UpdateItem"]
    assert updated.name == "New"
    assert updated.cities_visited == ["Nairobi", "New York", "B"]
    assert updated.year_of_birth == 1991
    assert User.get_one(JOHN["email"]) == updated
    params = calls[0][1]
    assert params["ConditionExpression"].startswith("(attribute_exists(#n")


def test_update_one_each_kind(users):
    User.save_one(JOHN)
    email = JOHN["email"]
    assert User.update_one(email, User.year_of_birth.subtract(10)) \
        .year_of_birth == 1980
    assert User.update_one(email, User.cities_visited.prepend("Z", "Y")) \
        .cities_visited == ["Z", "Y", "Nairobi", "New York"]
    assert User.update_one(email, User.name.set_if_not_exists("Other")) \
        .name == "John Doe"
    assert User.update_one(email, User.year_of_birth.remove()) \
        .year_of_birth is None
    assert User.update_one(email, User.year_of_birth.add(1950)) \
        .year_of_birth == 1950  # a missing number counts as 0
    assert User.update_one(email, User.year_of_birth.set_if_not_exists(
        2000)).year_of_birth == 1950
    assert User.update_one(email, User.cities_visited[1].set("Q")) \
        .cities_visited == ["Z", "Q", "Nairobi", "New York"]
    assert User.update_one(email, User.cities_visited[0].remove()) \
        .cities_visited == ["Q", "Nairobi", "New York"]
    User.update_one(email, User.cities_visited.remove())
    assert User.update_one(email, User.cities_visited.append("A")) \
        .cities_visited == ["A"]  # made when missing


def test_update_one_reserved_words_and_nested_paths():
    Profile.create_table()
    Profile.save_one({"name": "n", "year": 1, "status": "new",
                      "data": {"a.b": 1}, "address": {"city": "Nairobi"},
                      "tags": [{"label": "x"}]})
    updated = Profile.update_one(
        (Profile.name == "n") & (Profile.address.city == "Nairobi"),
        [Profile.year.add(1), Profile.status.set("active"),
         Profile.data["a.b"].add(2), Profile.data["first-name"].set("F"),
         Profile.address.city.set("Mombasa"),
         Profile.address.geo.set({"lat": 1.5, "lng": -2.5}),
         Profile.tags[0].label.set("y")])
    assert updated.year == 2 and updated.status == "active"
    assert updated.data == {"a.b": 3, "first-name": "F"}
    assert updated.address == {"city": "Mombasa",
                               "geo": {"lat": 1.5, "lng": -2.5}}
    assert updated.tags == [{"label": "y"}]
    assert Profile.get_one("n") == updated
    assert Profile.update_one(Profile.name == "n",
                              Profile.address.geo.lat.remove()).address == \
        {"city": "Mombasa", "geo": {"lng": -2.5}}


def test_update_one_return_values(users):
    User.save_one(JOHN)
    email = JOHN["email"]
    old = User.update_one(email, User.name.set("A"), return_values="ALL_OLD")
    assert old.name == "John Doe" and old.year_of_birth == 1990
    new = User.update_one(email, User.name.set("B"),
                          return_values="UPDATED_NEW")
    assert new.to_dict() == {"email": email, "name": "B"}
    was = User.update_one(email, User.name.set("C"),
                          return_values="UPDATED_OLD")
    assert was.to_dict() == {"email": email, "name": "B"}
    key_only = User.update_one(email, User.name.set("D"),
                               return_values="NONE")
    assert key_only.to_dict() == {"email": email}
    assert User.get_one(email).name == "D"
    with pytest.raises(ValidationError, match="return_values"):
        User.update_one(email, User.name.set("E"), return_values="ALL")


def test_update_one_never_creates_and_honours_conditions(users):
    assert User.update_one("nobody@b.io", User.name.set("x")) is None
    assert raw_items(User) == []
    User.save_one(JOHN)
    assert User.update_one((User.email == JOHN["email"])
                           & (User.year_of_birth > 2000),
                           User.name.set("Young")) is None
    assert User.get_one(JOHN["email"]).name == "John Doe"
    assert User.update_one((User.email == JOHN["email"])
                           & User.cities_visited.contains("Nairobi"),
                           User.name.set("Traveller")).name == "Traveller"


def test_update_one_add_out_of_bounds_names_the_bound(users):
    User.save_one(JOHN)  # born 1990, max_value 2018
    with pytest.raises(ValidationError, match="above max_value 2018") \
            as caught:
        User.update_one(JOHN["email"], [User.year_of_birth.add(29),
                                        User.name.set("Changed")])
    assert list(caught.value.errors) == ["year_of_birth"]
    with pytest.raises(ValidationError, match="below min_value 1900"):
        User.update_one(JOHN["email"], User.year_of_birth.subtract(91))
    stored = User.get_one(JOHN["email"])
    assert (stored.year_of_birth, stored.name) == (1990, "John Doe")
    assert User.update_one(JOHN["email"], User.year_of_birth.add(28)) \
        .year_of_birth == 2018
    # A failed condition of the caller's is not a bound: None.
    assert User.update_one((User.email == JOHN["email"])
                           & (User.name == "Someone"),
                           User.year_of_birth.subtract(1)) is None
    assert User.update_one("nobody@b.io", User.year_of_birth.add(1)) is None


def test_update_one_refusals_before_any_request(users, calls):
    User.save_one(JOHN)
    del calls[:]
    email = JOHN["email"]
    for updates, error, message in (
            ([], ValidationError, "empty"),
            ("name", ValidationError, "Update"),
            ([User.name.set("a"), "x"], ValidationError, "Update"),
            ([User.name.set("a"), User.name.set("b")], ExpressionError,
             "overlapping"),
            ([User.cities_visited.set(["a"]), User.cities_visited[0].set("b")],
             ExpressionError, "overlapping"),
            ([User.email.set("new@b.io")], ValidationError, "key"),
            ([Contacts.email.set("a@b.io")], ExpressionError, "Contacts")):
        with pytest.raises(error, match=message):
            User.update_one(email, updates)
    with pytest.raises(ExpressionError, match="overlapping"):
        Profile.update_one("n", [Profile.address.set({"city": "x"}),
                                 Profile.address.city.set("y")])
    with pytest.raises(ExpressionError, match="ORed"):
        User.update_one((User.email == email) | (User.name == "x"),
                        User.name.set("y"))
    assert calls == []
    assert User.get_one(email).name == "John Doe"


def test_update_from_dict(users):
    User.save_one(JOHN)
    updated = User.update_from_dict({"email": JOHN["email"], "name": "Jo",
                                     "year_of_birth": None,
                                     "cities_visited": ["Lima"]})
    assert updated.to_dict() == {
        "email": JOHN["email"], "name": "Jo", "cities_visited": ["Lima"],
        "created_at": updated.created_at}
    assert updated.year_of_birth is None
    assert User.get_one(JOHN["email"]) == updated
    assert User.update_from_dict({"email": "nobody@b.io", "name": "x"}) is None
    # The update created no item: the table holds the updated one only.
    assert [User._meta.from_item(item) for item in raw_items(User)] == \
        [updated]


def test_update_from_dict_refusals_write_nothing(users, calls):
    User.save_one(JOHN)
    del calls[:]
    for item, message in (({"name": "x"}, "email"),
                          ({"email": JOHN["email"], "name": None}, "name"),
                          ({"email": JOHN["email"], "shoe": 3}, "shoe"),
                          ({"email": JOHN["email"], "year_of_birth": 1800},
                           "year_of_birth"),
                          ({"email": JOHN["email"]}, "nothing to update"),
                          ("john", "dict")):
        with pytest.raises(ValidationError, match=message):
            User.update_from_dict(item)
    assert calls == []


# -- Many-item operations ----------------------------------------------------

def user(index, **values):
    return dict({"email": f"user{index}@example.com", "name": f"User {index}",
                 "year_of_birth": 1950 + index % 60}, **values)


def events(user_name, count, **values):
    return [dict({"user": user_name, "seq": seq, "kind": "even" if seq % 2
                  == 0 else "odd"}, **values) for seq in range(count)]


def test_batch_result_is_fresh_per_call(users):
    first = User.save_many([user(1)])
    second = User.save_many([user(2)])
    assert first is not second and first.success is not second.success
    assert (first.success_count, first.fail_count) == (1, 0)
    assert [saved.email for saved in second.success] == ["user2@example.com"]
    assert repr(second) == "<BatchResult success_count=1 fail_count=0>"


def test_save_many_mixes_dicts_and_instances_in_chunks_of_25(users, calls):
    items = [user(index) if index % 2 else User(**user(index))
             for index in range(60)]
    result = User.save_many(items)
    assert operations(calls) == ["BatchWriteItem"] * 3
    # Chunks go out concurrently: their sizes, in whatever order.
    assert sorted(len(params["RequestItems"][User.table_name()])
                  for _, params in calls) == [10, 25, 25]
    assert result.success_count == 60 and result.fail == []
    stored = {item["email"]["S"]: item for item in raw_items(User)}
    assert len(stored) == 60
    for index, saved in enumerate(result.success):
        assert saved.email == f"user{index}@example.com"
        assert stored[saved.email]["name"] == {"S": f"User {index}"}
        assert User.get_one(saved.email) == saved


def test_save_many_validates_everything_first(users, calls):
    items = [user(0), user(1, email="broken"), user(2), {"name": "x"},
             user(4, year_of_birth=1800), "not an item"]
    with pytest.raises(ValidationError) as caught:
        User.save_many(items)
    assert set(caught.value.errors) == {"[1].email", "[3].email",
                                        "[4].year_of_birth", "[5]"}
    for path in caught.value.errors:
        assert path in str(caught.value)
    assert calls == []
    assert raw_items(User) == []


def test_save_many_refuses_what_is_not_a_list(users):
    for items in ({"email": "a@b.io"}, "abc", User(email="a@b.io"), 5, []):
        with pytest.raises(ValidationError, match="save_many"):
            User.save_many(items)


def test_save_many_duplicates_last_one_wins(users, calls):
    result = User.save_many([user(1, name="first"), user(2),
                             user(1, name="last")])
    [(_, params)] = calls
    sent = params["RequestItems"][User.table_name()]
    assert [request["PutRequest"]["Item"]["email"]["S"] for request in sent] \
        == ["user2@example.com", "user1@example.com"]
    assert result.success_count == 2
    assert User.get_one("user1@example.com").name == "last"


def test_save_many_duplicate_number_keys_match_by_value():
    Reading.create_table()
    result = Reading.save_many([{"sensor": 1, "at": 1.0, "value": 1.0},
                                {"sensor": "1", "at": 1, "value": 2.0},
                                {"sensor": 1, "at": "1e0", "value": 3.0}])
    assert result.success_count == 1
    assert Reading.get_one((1, 1.0)).value == 3.0


def test_save_many_overwrite_false_fails_existing_keys(users, calls):
    User.save_one(user(1, name="original"))
    del calls[:]
    result = User.save_many([user(0), user(1, name="new"), user(2)],
                            overwrite=False)
    assert operations(calls) == ["PutItem"] * 3
    assert [saved.email for saved in result.success] == \
        ["user0@example.com", "user2@example.com"]
    [failure] = result.fail
    assert failure.item == user(1, name="new")
    assert isinstance(failure.error, ConditionalCheckFailedException)
    assert User.get_one("user1@example.com").name == "original"


def test_save_many_with_a_condition(users):
    User.save_many([user(1, year_of_birth=1990), user(2, year_of_birth=2010)])
    result = User.save_many([user(1, name="A"), user(2, name="B")],
                            overwrite=User.year_of_birth < 2000)
    assert [saved.email for saved in result.success] == ["user1@example.com"]
    assert [failure.item["email"] for failure in result.fail] == \
        ["user2@example.com"]
    assert User.get_one("user1@example.com").name == "A"
    assert User.get_one("user2@example.com").name == "User 2"


def test_get_many_list_of_strategies_reads_in_key_order(users, calls):
    User.save_many([user(index) for index in range(6)])
    del calls[:]
    found = User.get_many(["user4@example.com", {"email": "user1@example.com"},
                           User(email="user3@example.com"),
                           User.email == "user0@example.com",
                           "missing@example.com", "user4@example.com"])
    assert [item.email for item in found] == [
        "user4@example.com", "user1@example.com", "user3@example.com",
        "user0@example.com"]
    assert found[0] == User.get_one("user4@example.com")
    [(operation, params)] = calls[:1]
    assert operation == "BatchGetItem"
    keys = params["RequestItems"][User.table_name()]["Keys"]
    assert len(keys) == 5  # the duplicate is sent once


def test_get_many_chunks_batch_gets_by_100(users, calls):
    User.save_many([user(index) for index in range(150)])
    del calls[:]
    emails = [f"user{index}@example.com" for index in reversed(range(150))]
    found = User.get_many(emails)
    assert [item.email for item in found] == emails
    assert operations(calls) == ["BatchGetItem", "BatchGetItem"]
    assert found[149].name == "User 0"


def test_get_many_keys_in_and_hash_in(users, contacts, calls):
    User.save_many([user(index) for index in range(3)])
    emails = ["user2@example.com", "user0@example.com"]
    del calls[:]
    assert [item.email for item in User.get_many(User.keys_in(emails))] == \
        emails
    assert [item.email for item in User.get_many(User.email.in_(emails))] == \
        emails
    assert operations(calls) == ["BatchGetItem"] * 2
    owners = [uuid.uuid4(), uuid.uuid4()]
    Contacts.save_many([{"user_id": owner, "email": f"c{index}@b.io"}
                        for owner in owners for index in range(3)])
    keys = [(owners[1], "c2@b.io"), (owners[0], "c0@b.io"),
            (str(owners[0]), "c9@b.io")]
    found = Contacts.get_many(Contacts.keys_in(keys))
    assert [(item.user_id, item.email) for item in found] == keys[:2]
    with pytest.raises(ValidationError, match="keys_in"):
        Contacts.keys_in([owners[0]])
    with pytest.raises(ValidationError, match="Contacts.keys_in"):
        User.get_many(Contacts.keys_in(keys))


def test_get_many_query_plans(calls):
    Event.create_table()
    Event.save_many(events("ann", 10) + events("bob", 3))
    del calls[:]

    def plan(condition, **options):
        del calls[:]
        found = Event.get_many(condition, **options)
        return operations(calls), [(item.user, item.seq) for item in found]

    ann = Event.user == "ann"
    assert plan(ann) == (["Query"], [("ann", seq) for seq in range(10)])
    assert plan(ann, descending=True)[1] == \
        [("ann", seq) for seq in reversed(range(10))]
    assert plan(ann & (Event.seq >= 7)) == \
        (["Query"], [("ann", 7), ("ann", 8), ("ann", 9)])
    assert plan(ann & Event.seq.between(2, 3))[1] == [("ann", 2), ("ann", 3)]
    assert plan(ann & (Event.seq == 4))[1] == [("ann", 4)]
    assert plan((Event.kind == "odd") & ann & (Event.seq < 5)) == \
        (["Query"], [("ann", 1), ("ann", 3)])
    params = calls[0][1]
    assert params["KeyConditionExpression"] == "(#n0 = :v0) AND (#n1 < :v1)"
    assert params["FilterExpression"] == "#n2 = :v2"
    assert params["ExpressionAttributeNames"] == \
        {"#n0": "user", "#n1": "seq", "#n2": "kind"}
    # A filter naming a key attribute is refused in a Query: Scan instead.
    assert plan(ann & (Event.seq > 2) & (Event.seq < 5)) == \
        (["Scan"], [("ann", 3), ("ann", 4)])
    assert plan(ann & ((Event.seq == 1) | (Event.kind == "even")))[0] == \
        ["Scan"]
    assert sorted(plan(Event.kind == "odd")[1]) == \
        sorted([("ann", seq) for seq in range(1, 10, 2)] + [("bob", 1)])
    assert calls[0][0] == "Scan"
    # in_ on the hash of a composite key: one Query per value, in order.
    assert plan(Event.user.in_(["bob", "ann"]), limit=5) == \
        (["Query", "Query"], [("bob", 0), ("bob", 1), ("bob", 2),
                              ("ann", 0), ("ann", 1)])
    # in_ ANDed with more: a Query per value, the rest as a filter.
    found = plan(Event.user.in_(["bob", "cy"]) & (Event.kind == "even"))
    assert found == (["Query", "Query"], [("bob", 0), ("bob", 2)])


def test_get_many_limit_caps_every_strategy(users):
    User.save_many([user(index) for index in range(30)])
    emails = [f"user{index}@example.com" for index in range(30)]
    assert len(User.get_many(emails, limit=7)) == 7
    assert [item.email for item in User.get_many(emails, limit=3)] == \
        emails[:3]
    assert len(User.get_many(User.name.begins_with("User"), limit=11)) == 11
    Event.create_table()
    Event.save_many(events("ann", 40))
    found = Event.get_many(Event.user == "ann", limit=12, descending=True)
    assert [item.seq for item in found] == list(range(39, 27, -1))
    for limit in (0, -1, 1.5, "3"):
        with pytest.raises(ValidationError, match="limit"):
            User.get_many(emails, limit=limit)


def test_query_and_scan_follow_pages_past_1_mb(calls):
    Event.create_table()
    payload = "x" * 1000
    Event.save_many(events("ann", 1500, payload=payload))
    del calls[:]
    found = Event.get_many(Event.user == "ann")
    assert [item.seq for item in found] == list(range(1500))
    assert all(item.payload == payload for item in found)
    assert operations(calls).count("Query") >= 2
    assert "ExclusiveStartKey" in calls[1][1]
    del calls[:]
    found = Event.get_many(Event.payload.begins_with("x"))
    assert sorted(item.seq for item in found) == list(range(1500))
    assert operations(calls).count("Scan") >= 2


def test_get_many_refuses_bad_strategies(users, calls):
    for strategy, error in (("user@example.com", ValidationError),
                            ({"email": "a@b.io"}, ValidationError),
                            ([], ValidationError), (None, ValidationError),
                            ([{"name": "no key"}], ValidationError),
                            ([(User.email == "a@b.io") & (User.name == "x")],
                             ExpressionError)):
        with pytest.raises(error, match="get_many"):
            User.get_many(strategy)
    with pytest.raises(ValidationError, match="entry 1: email") as caught:
        User.get_many(["a@b.io", 5])
    assert list(caught.value.errors) == ["[1].email"]
    assert calls == []


def test_delete_many_strategies(users, calls):
    User.save_many([user(index) for index in range(10)])
    del calls[:]
    result = User.delete_many(["user0@example.com", {"email":
                                                     "user1@example.com"}])
    assert operations(calls) == ["BatchWriteItem"]
    assert [item.email for item in result.success] == \
        ["user0@example.com", "user1@example.com"]
    del calls[:]
    result = User.delete_many(User.keys_in(["user2@example.com"]))
    assert operations(calls) == ["BatchWriteItem"]
    del calls[:]
    result = User.delete_many(User.email.in_(["user3@example.com",
                                              "user4@example.com"]))
    assert result.success_count == 2
    del calls[:]
    result = User.delete_many(User.year_of_birth >= 1958)  # users 8 and 9
    assert operations(calls) == ["Scan", "BatchWriteItem"]
    assert calls[0][1]["ProjectionExpression"] == "#n1"
    assert sorted(item.email for item in result.success) == \
        ["user8@example.com", "user9@example.com"]
    remaining = sorted(item["email"]["S"] for item in raw_items(User))
    assert remaining == [f"user{index}@example.com" for index in range(5, 8)]


def test_delete_many_conditional_entries_report_failures(users):
    User.save_many([user(1, year_of_birth=1990), user(2, year_of_birth=2010),
                    user(3)])
    result = User.delete_many([
        "user3@example.com",
        (User.email == "user1@example.com") & (User.year_of_birth <= 2000),
        (User.email == "user2@example.com") & (User.year_of_birth <= 2000)])
    assert sorted(item.email for item in result.success) == \
        ["user1@example.com", "user3@example.com"]
    [failure] = result.fail
    assert isinstance(failure.error, ConditionalCheckFailedException)
    assert [item["email"]["S"] for item in raw_items(User)] == \
        ["user2@example.com"]


def test_delete_many_by_query_on_a_composite_key(calls):
    Event.create_table()
    Event.save_many(events("ann", 60) + events("bob", 5))
    del calls[:]
    result = Event.delete_many((Event.user == "ann") & (Event.seq >= 10))
    assert result.success_count == 50
    assert operations(calls) == ["Query"] + ["BatchWriteItem"] * 2
    assert calls[0][1]["ProjectionExpression"] == "#n0, #n1"
    left = sorted((item["user"]["S"], int(item["seq"]["N"]))
                  for item in raw_items(Event))
    assert left == [("ann", seq) for seq in range(10)] + \
        [("bob", seq) for seq in range(5)]
    result = Event.delete_many(Event.user.in_(["ann", "bob"]))
    assert result.success_count == 15
    assert raw_items(Event) == []


def test_ten_thousand_items_round_trip(calls):
    Event.create_table()
    items = events("ann", 5000) + events("bob", 5000)
    result = Event.save_many(items)
    assert result.success_count == 10_000 and result.fail == []
    assert operations(calls).count("BatchWriteItem") == 400
    keys = [(item["user"], item["seq"]) for item in items]
    found = Event.get_many(keys)
    assert [(item.user, item.seq) for item in found] == keys
    assert all(item.kind == ("even" if item.seq % 2 == 0 else "odd")
               for item in found)
    queried = Event.get_many(Event.user == "bob")
    assert [item.seq for item in queried] == list(range(5000))
    result = Event.delete_many(Event.user.in_(["ann", "bob"]))
    assert result.success_count == 10_000 and result.fail == []
    assert raw_items(Event) == []


def test_parallel_scan_reads_every_segment(calls):
    Event.create_table()
    Event.save_many(events("ann", 120) + events("bob", 80))
    del calls[:]
    found = Event.get_many(Event.kind == "odd", segments=4)
    assert sorted((item.user, item.seq) for item in found) == sorted(
        [("ann", seq) for seq in range(1, 120, 2)]
        + [("bob", seq) for seq in range(1, 80, 2)])
    scans = [params for operation, params in calls if operation == "Scan"]
    assert sorted(params["Segment"] for params in scans
                  if "ExclusiveStartKey" not in params) == [0, 1, 2, 3]
    assert {params["TotalSegments"] for params in scans} == {4}
    Connection.set_config(scan_segments=3)
    del calls[:]
    assert len(Event.get_many(Event.kind == "even", limit=7)) == 7
    assert {params["TotalSegments"] for _, params in calls} == {3}
    result = Event.delete_many(Event.kind == "even")
    assert result.success_count == 100
    assert sorted(item.seq for item in Event.get_many(
        Event.user == "bob")) == list(range(1, 80, 2))
    for segments in (0, "2", 1.5):
        with pytest.raises(ValidationError, match="segments"):
            Event.get_many(Event.kind == "odd", segments=segments)


def test_segments_beyond_dynamodbs_limit_are_refused_before_anything(calls):
    Event.create_table()
    del calls[:]
    odd = Event.kind == "odd"
    for segments in (1_000_001, 10 ** 30):
        message = (f"segments must be an int from 1 to 1,000,000 "
                   f"\\(DynamoDB's limit\\), not {segments}")
        for call in (lambda: Event.get_many(odd, segments=segments),
                     lambda: Event.iter_many(odd, segments=segments),
                     lambda: Event.delete_many(odd, segments=segments),
                     lambda: Event.explain(odd, segments=segments)):
            with pytest.raises(ValidationError, match=message):
                call()
        with pytest.raises(ValidationError, match="scan_segments must be at "
                           "most 1,000,000"):
            Connection.set_config(scan_segments=segments)
    assert calls == []
    # A million segments are planned without making a million requests.
    import tracemalloc

    tracemalloc.start()
    try:
        plan = Event.explain(odd, segments=1_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plan.operation == "Scan" and peak < 1_000_000
    assert len(plan._requests) == 1_000_000
    assert plan._requests[999_999][1]["Segment"] == 999_999


def test_chunks_are_sent_by_a_bounded_pool(monkeypatch, calls):
    if DRIVER == "asyncio":
        pytest.skip("threads: the asyncio driver's window is tested apart")
    Event.create_table()
    threads = set()
    send = dynamongo._send

    def recording(operation, params):
        threads.add(threading.current_thread().name)
        return send(operation, params)

    replace_send(monkeypatch, recording)
    Connection.set_config(concurrency=4)
    Event.save_many(events("ann", 400))
    workers = {name for name in threads if name.startswith("dynamongo")}
    assert 1 < len(workers) <= 4
    assert len(Event.get_many([("ann", seq) for seq in range(400)])) == 400
    Connection.set_config(concurrency=1)
    threads.clear()
    result = Event.delete_many([("ann", seq) for seq in range(400)])
    assert result.success_count == 400
    assert threads == {threading.current_thread().name}


def dynamongo_threads():
    return [thread for thread in threading.enumerate()
            if thread.name.startswith("dynamongo")]


def wait_for_no_dynamongo_thread():
    deadline = time.monotonic() + 10
    while dynamongo_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not dynamongo_threads()


@pytest.mark.parametrize("interrupt", [RuntimeError, KeyboardInterrupt])
def test_a_batch_that_raised_sends_nothing_more(monkeypatch, interrupt):
    Event.create_table()
    Connection.set_config(concurrency=2)
    send, gate, lock = dynamongo._send, threading.Event(), threading.Lock()
    sent = []  # the items of each BatchWriteItem sent

    def gated(operation, params):
        if operation != "BatchWriteItem":
            return send(operation, params)
        (table, requests), = params["RequestItems"].items()
        with lock:
            sent.append(tuple(sorted(
                request["PutRequest"]["Item"]["seq"]["N"]
                for request in requests)))
            first = len(sent) == 1
        if first:
            return send(operation, params)
        gate.wait(10)  # in flight while the call raises
        return {"UnprocessedItems": {table: requests}}  # asks for a resend

    def progress(done, total):
        raise interrupt("stop")

    replace_send(monkeypatch, gated)
    try:
        with pytest.raises(interrupt, match="stop"):
            Event.save_many(events("ann", 250), progress=progress)
    finally:
        gate.set()
    wait_for_no_dynamongo_thread()
    # The first chunk and at most one more per thread were sent; none of
    # the chunks queued and no resend of those in flight.
    assert len(sent) <= 3 and len(set(sent)) == len(sent)
    monkeypatch.undo()
    assert Event.save_many(events("bob", 30)).success_count == 30


def test_no_thread_outlives_a_call(calls):
    Event.create_table()
    Connection.set_config(concurrency=4)
    keys = [("ann", seq) for seq in range(300)]
    Event.save_many(events("ann", 300))
    assert not dynamongo_threads()
    assert len(Event.get_many(keys)) == 300
    assert not dynamongo_threads()
    assert len(list(itertools.islice(Event.iter_many(keys), 150))) == 150
    wait_for_no_dynamongo_thread()  # the iterator left unfinished is gone
    assert Event.delete_many(keys).success_count == 300
    assert not dynamongo_threads()


def test_a_fork_after_a_batch_is_single_threaded(tmp_path):
    code = textwrap.dedent("""
        import os, sys, threading, warnings
        import dynamongo as dm
        from moto import mock_aws

        class Item(dm.Model):
            __table__ = "items"
            __hash_key__ = "id"
            id = dm.IntField(required=True)

        warnings.simplefilter("error")  # 3.12+ warns at fork with threads
        with mock_aws():
            dm.Connection.set_config(access_key_id="k", secret_access_key="s",
                                     region="us-east-1", concurrency=4)
            Item.create_table()
            assert Item.save_many([{"id": n} for n in range(200)]) \
                .success_count == 200
            assert len(Item.get_many(list(range(200)))) == 200
            assert threading.active_count() == 1, threading.enumerate()
            child = os.fork()
            if child == 0:
                os._exit(0 if Item.get_one(7).id == 7 else 1)
            assert os.waitpid(child, 0)[1] == 0
        print("ok")
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        cwd=os.path.dirname(os.path.abspath(dynamongo.__file__)))
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), \
        result.stderr


def test_batches_on_a_missing_table_raise_with_their_result(calls):
    items = [dict(JOHN, email=f"user{number}@example.com")
             for number in range(60)]
    with pytest.raises(TableNotFoundError) as caught:
        User.save_many(items)
    result = caught.value.result
    assert (result.success_count, result.fail_count) == (0, 60)
    assert sorted(failure.item["email"] for failure in result.fail) == \
        sorted(item["email"] for item in items)
    assert all(isinstance(failure.error, TableNotFoundError)
               for failure in result.fail)
    emails = [item["email"] for item in items]
    for call in (lambda: User.delete_many(emails),
                 lambda: User.get_many(emails),
                 lambda: User.get_many(User.name == "x")):
        with pytest.raises(TableNotFoundError, match=(
                "ResourceNotFoundException: .*no table .* in "
                "region us-east-1")):
            call()
    # Conditional writes go out concurrently: those sent before the first
    # refusal came back (at most two per thread) are all that is sent.
    most = 2 * Connection.settings()["concurrency"]
    del calls[:]
    with pytest.raises(TableNotFoundError) as caught:
        User.save_many(items, overwrite=False)
    assert set(operations(calls)) == {"PutItem"} and len(calls) <= most < 60
    assert caught.value.result.fail_count == 60
    del calls[:]
    with pytest.raises(TableNotFoundError) as caught:
        User.delete_many([(User.email == email) & User.name.exists()
                          for email in emails])
    assert set(operations(calls)) == {"DeleteItem"} and len(calls) <= most
    assert caught.value.result.fail_count == 60
    Connection.set_config(concurrency=1)  # one after another: one is sent
    del calls[:]
    with pytest.raises(TableNotFoundError, match=(
            "PutItem on table .* ResourceNotFoundException")):
        User.save_many(items, overwrite=False)
    assert operations(calls) == ["PutItem"]


def test_a_batch_stops_at_an_error_that_fails_every_item(monkeypatch,
                                                         users):
    Connection.set_config(concurrency=1)
    send, sent = dynamongo._send, []

    def denying(operation, params):
        sent.append(operation)
        if len(sent) == 3:
            raise client_error("AccessDeniedException")
        return send(operation, params)

    replace_send(monkeypatch, denying)
    items = [dict(JOHN, email=f"user{number:03}@example.com")
             for number in range(100)]
    with pytest.raises(DynamoDBError, match="AccessDenied") as caught:
        User.save_many(items)
    assert sent == ["BatchWriteItem"] * 3  # no chunk after the refusal
    result = caught.value.result
    assert sorted(user.email for user in result.success) == \
        [item["email"] for item in items[:50]]
    assert sorted(failure.item["email"] for failure in result.fail) == \
        [item["email"] for item in items[50:]]
    replace_send(monkeypatch, send)
    assert sorted(user.email for user in User.get_many(
        User.email.exists())) == [item["email"] for item in items[:50]]


def test_per_item_failures_stay_in_the_batch_result(monkeypatch, users,
                                                    no_sleep):
    User.save_one(JOHN)
    Connection.set_config(max_attempts=2)
    throttle = [client_error("ProvisionedThroughputExceededException",
                             operation="PutItem")] * 2
    send = dynamongo._send

    def throttling(operation, params):
        if throttle and params["Item"]["email"]["S"] == "jane@example.com":
            raise throttle.pop()
        return send(operation, params)

    replace_send(monkeypatch, throttling)
    result = User.save_many([JOHN, dict(JOHN, email="jane@example.com"),
                             dict(JOHN, email="ann@example.com")],
                            overwrite=False)
    assert [user.email for user in result.success] == ["ann@example.com"]
    assert [(failure.item["email"], type(failure.error))
            for failure in result.fail] == [
        (JOHN["email"], ConditionalCheckFailedException),
        ("jane@example.com", ThrottlingError)]


# -- Indexes and plans -------------------------------------------------------

def order(customer, number, **values):
    return dict({"customer": customer, "order_id": f"o{number:03d}",
                 "created_at": datetime.datetime(2020, 1, 1, number)},
                **values)


@pytest.fixture
def orders():
    Order.create_table()
    Order.save_many([
        order("ann", 1, status="open", sku="s1", qty=1, total=5.0),
        order("ann", 2, status="shipped", sku="s2", qty=2, total=15.0,
              region="eu"),
        order("ann", 3, status="open", total=25.0, region="eu"),
        order("bob", 4, status="open", sku="s1", qty=4),
        order("bob", 5, status="open", sku="s1", qty=5, region="eu"),
    ])
    return Order


def ids(items):
    return [item.order_id for item in items]


def test_create_table_creates_the_indexes(orders):
    table = Connection.client().describe_table(
        TableName=Order.table_name())["Table"]
    globals_ = {index["IndexName"]: index
                for index in table["GlobalSecondaryIndexes"]}
    locals_ = {index["IndexName"]: index
               for index in table["LocalSecondaryIndexes"]}
    assert sorted(globals_) == ["by_region", "by_sku", "by_status"]
    assert list(locals_) == ["by_total"]
    assert globals_["by_status"]["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"}]
    assert globals_["by_status"]["Projection"] == {"ProjectionType": "ALL"}
    assert globals_["by_sku"]["Projection"] == {
        "ProjectionType": "INCLUDE", "NonKeyAttributes": ["qty"]}
    assert locals_["by_total"]["KeySchema"] == [
        {"AttributeName": "customer", "KeyType": "HASH"},
        {"AttributeName": "total", "KeyType": "RANGE"}]
    assert locals_["by_total"]["Projection"] == {
        "ProjectionType": "KEYS_ONLY"}
    assert globals_["by_region"]["ProvisionedThroughput"][
        "ReadCapacityUnits"] == 2
    assert globals_["by_status"]["ProvisionedThroughput"][
        "WriteCapacityUnits"] == Order.__write_units__
    assert {item["AttributeName"]: item["AttributeType"]
            for item in table["AttributeDefinitions"]} == {
        "customer": "S", "order_id": "S", "status": "S", "created_at": "S",
        "sku": "S", "total": "N", "region": "S"}


@pytest.mark.parametrize("indexes, fields, message", [
    ((GlobalIndex("by_x", hash_key="x"),), {}, "'x' is not a field"),
    ((GlobalIndex("by_tags", hash_key="tags"),), {}, "string, number or "),
    ((GlobalIndex("ab", hash_key="status"),), {}, "3 to 255"),
    ((GlobalIndex("by status", hash_key="status"),), {}, "3 to 255"),
    ((GlobalIndex("twice", hash_key="status"),
      GlobalIndex("twice", hash_key="note")), {}, "declared twice"),
    ((LocalIndex("by_note", range_key="note"),), {"range": False},
     "no range key"),
    ((LocalIndex("by_seq", range_key="seq"),), {}, "table's own"),
    ((GlobalIndex("by_status", hash_key="status", projection="SOME"),), {},
     "projection"),
    ((GlobalIndex("by_status", hash_key="status", projection=["shoe"]),),
     {}, "'shoe'"),
    ((GlobalIndex("by_status", hash_key="status", read_units=0),), {},
     "read_units"),
    ((GlobalIndex("by_status", hash_key=("status",) * 5),), {},
     "1 to 4"),
    (tuple(GlobalIndex(f"gsi{index}", hash_key="status")
           for index in range(21)), {}, "at most 20"),
    (tuple(LocalIndex(f"lsi{index}", range_key="note")
           for index in range(6)), {}, "at most 5"),
    ((GlobalIndex("wide", hash_key="status", projection=[
        f"f{index}" for index in range(101)]),), {"wide": True},
     "at most 100"),
    ("by_status", {}, "tuple of GlobalIndex"),
    (GlobalIndex("by_status", hash_key="status"), {}, "with a comma"),
    ((GlobalIndex("by_status", hash_key=StringField()),), {}, "by name"),
    ((GlobalIndex("by_status", hash_key="status",
                  projection=[StringField()]),), {}, "strings"),
])
def test_index_schema_errors(indexes, fields, message):
    namespace = {"__table__": "indexed", "__hash_key__": "id",
                 "__range_key__": "seq", "__indexes__": indexes,
                 "id": StringField(required=True), "seq": IntField(),
                 "status": StringField(), "note": StringField(),
                 "tags": ListField(StringField)}
    if fields.get("range") is False:
        del namespace["__range_key__"]
    if fields.get("wide"):
        namespace.update({f"f{index}": IntField() for index in range(101)})
    with pytest.raises(SchemaError, match=message):
        type("Indexed", (Model,), namespace)


def test_index_keys_are_checked_on_save(orders):
    # Absent: the item is left out of the index (a sparse index).
    Order.save_one(order("cy", 1, total=1.0))
    for bad in ({"status": ""}, {"sku": ""}, {"region": "x" * 3000}):
        name = next(iter(bad))
        with pytest.raises(ValidationError, match=name) as caught:
            Order.save_one(order("cy", 2, **bad))
        assert list(caught.value.errors) == [name]
        with pytest.raises(ValidationError, match=rf"\[0\]\.{name}"):
            Order.save_many([order("cy", 2, **bad)])
    assert [item.order_id for item in Order.get_many(
        Order.customer == "cy")] == ["o001"]


def test_planner_queries_an_index(orders, calls):
    found = Order.get_many(Order.status == "open")
    assert ids(found) == ["o001", "o003", "o004", "o005"]  # index order
    assert calls[-1][0] == "Query"
    assert calls[-1][1]["IndexName"] == "by_status"
    assert found[0] == Order.get_one(("ann", "o001"))  # every field
    found = Order.get_many((Order.status == "open")
                           & (Order.created_at > datetime.datetime(
                               2020, 1, 1, 2)) & (Order.qty > 3),
                           descending=True)
    assert ids(found) == ["o005", "o004"]
    assert calls[-1][1]["IndexName"] == "by_status"
    assert "created_at" in str(calls[-1][1]["ExpressionAttributeNames"])
    # in_ on an index's hash key: a Query per value, in the values' order.
    del calls[:]
    found = Order.get_many(Order.status.in_(["shipped", "open"]))
    assert ids(found) == ["o002", "o001", "o003", "o004", "o005"]
    assert [(operation, params.get("IndexName"))
            for operation, params in calls] == [("Query", "by_status")] * 2
    # The table's key comes first, even when an index matches too.
    del calls[:]
    found = Order.get_many((Order.customer == "ann")
                           & (Order.status == "open"))
    assert ids(found) == ["o001", "o003"]
    assert calls[0][0] == "Query" and "IndexName" not in calls[0][1]
    assert Order.get_many(Order.status == "lost") == []


def test_planner_leaves_out_indexes_that_would_miss_items(orders, calls):
    # by_sku holds only qty: not every field.
    assert Order.explain(Order.sku == "s1").operation == "Scan"
    assert "does not hold" in Order.explain(Order.sku == "s1").reason
    assert sorted(ids(Order.get_many(Order.sku == "s1"))) == \
        ["o001", "o004", "o005"]
    assert calls[-1][0] == "Scan"
    # A forced partial index gives instances holding what it projects.
    found = Order.get_many(Order.sku == "s1", index="by_sku")
    assert sorted((item.order_id, item.qty) for item in found) == \
        [("o001", 1), ("o004", 4), ("o005", 5)]
    assert calls[-1][1]["IndexName"] == "by_sku"
    with pytest.raises(FieldNotLoaded, match=r"Order\.status was not read: "
                       "its read loaded customer, order_id, qty, sku only"):
        found[0].status  # noqa: B018
    # by_region leaves out items without total (not required): sparse.
    plan = Order.explain(Order.region == "eu")
    assert plan.operation == "Scan" and "without total" in plan.reason
    assert sorted(ids(Order.get_many(Order.region == "eu"))) == \
        ["o002", "o003", "o005"]
    # ... unless the condition holds only items that have it.
    plan = Order.explain((Order.region == "eu") & (Order.total > 10))
    assert (plan.operation, plan.index) == ("Query", "by_region")
    assert ids(Order.get_many((Order.region == "eu")
                              & (Order.total > 10))) == ["o002", "o003"]
    # ... or when forced: only the items in the index.
    assert ids(Order.get_many(Order.region == "eu", index="by_region")) == \
        ["o002", "o003"]
    # A global index never reads consistently.
    plan = Order.explain(Order.status == "open", consistent_read=True)
    assert plan.operation == "Scan" and "consistent" in plan.reason
    # A local index does (when it holds what the read needs).
    found = Order.get_many((Order.customer == "ann") & (Order.total > 10),
                           index="by_total", consistent_read=True)
    assert [(item.order_id, item.total) for item in found] == \
        [("o002", 15.0), ("o003", 25.0)]
    assert found[0].to_dict() == {"customer": "ann", "order_id": "o002",
                                  "total": 15.0}


def test_planner_ranks_the_indexes_that_can_serve():
    class Ticket(Model):
        __table__ = "tickets"
        __hash_key__ = "id"
        __range_key__ = "at"
        __indexes__ = (
            GlobalIndex("g_state", hash_key="state"),
            GlobalIndex("g_state_rank", hash_key="state", range_key="rank"),
            GlobalIndex("g_id_rank", hash_key="id", range_key="rank"),
            LocalIndex("l_rank", range_key="rank"),
        )
        id = StringField(required=True)
        at = IntField(required=True)
        state = StringField(required=True)
        rank = IntField(required=True)

    def chosen(condition):
        plan = Ticket.explain(condition)
        return plan.operation, plan.index

    # The table first, whatever else matches.
    assert chosen((Ticket.id == "a") & (Ticket.rank > 1)) == ("Query", None)
    # Equal keys: the first declared.
    assert chosen(Ticket.state == "s") == ("Query", "g_state")
    # More conditions in the key win.
    assert chosen((Ticket.state == "s") & (Ticket.rank > 1)) == \
        ("Query", "g_state_rank")
    # The table's filter would name its range key: a local index before a
    # global one with as many conditions in its key.
    assert chosen((Ticket.id == "a") & (Ticket.rank > 1) & (Ticket.at > 1)
                  & (Ticket.at < 5)) == ("Query", "l_rank")


def test_forcing_an_index_is_checked_before_sending(orders, calls):
    del calls[:]
    for condition, index, kwargs, message in (
            (Order.sku == "s1", "by_status", {}, "needs == on status"),
            (Order.status == "open", "by_nothing", {}, "no index named"),
            (Order.status == "open", "by_status",
             {"consistent_read": True}, "never strongly consistent"),
            ((Order.status == "open") & (Order.created_at.exists()),
             "by_status", {}, "filter would name its key created_at")):
        with pytest.raises(ExpressionError, match=message):
            Order.get_many(condition, index=index, **kwargs)
    assert calls == []


def test_delete_many_finds_keys_through_an_index(orders, calls):
    result = Order.delete_many(Order.status == "open")
    assert sorted((item.customer, item.order_id) for item in result.success) \
        == [("ann", "o001"), ("ann", "o003"), ("bob", "o004"),
            ("bob", "o005")]
    assert calls[0][1]["IndexName"] == "by_status"
    assert ids(Order.get_many(Order.customer.in_(["ann", "bob"]))) == \
        ["o002"]


def test_fields_reads_only_what_it_names(users, calls):
    User.save_many([JOHN, user(1), user(2)])
    del calls[:]
    john = User.get_one(JOHN["email"], fields=[User.name])
    assert calls[0][1]["ProjectionExpression"] == "#n0, #n1"
    assert calls[0][1]["ExpressionAttributeNames"] == {"#n0": "email",
                                                       "#n1": "name"}
    assert (john.email, john.name) == (JOHN["email"], JOHN["name"])
    assert john.to_dict() == {"email": JOHN["email"], "name": JOHN["name"]}
    with pytest.raises(FieldNotLoaded, match=r"User\.year_of_birth was not "
                       "read: its read loaded email, name only"):
        john.year_of_birth  # noqa: B018
    with pytest.raises(AttributeError,  # FieldNotLoaded is one
                       match="User.cities_visited was not read"):
        getattr(john, "cities_visited")
    assert getattr(john, "cities_visited", "absent") == "absent"
    # Saving it would erase what was not read.
    for save in (User.save_one, lambda item: User.save_many([item])):
        with pytest.raises(ValidationError, match="update_one"):
            save(john)
    assert User.get_one(JOHN["email"]).year_of_birth == 1990
    assert User.update_one(john, User.name.set("Jo")).year_of_birth == 1990
    # Every plan projects: keys, Query, Scan.
    emails = [user(1)["email"], user(2)["email"]]
    for strategy, operation in ((emails, "BatchGetItem"),
                                (User.email == emails[0], "Query"),
                                (User.name == "User 2", "Scan")):
        del calls[:]
        found = User.get_many(strategy, fields=["year_of_birth"])
        assert calls[0][0] == operation
        assert all(set(item.to_dict()) == {"email", "year_of_birth"}
                   for item in found) and found
        with pytest.raises(FieldNotLoaded, match="User.name was not read"):
            found[0].name  # noqa: B018
    for fields, error, message in (
            ("name", ValidationError, "list of fields"),
            (["shoe"], UnknownFieldError, "'shoe'"),
            ([Contacts.email], ExpressionError, "Contacts")):
        with pytest.raises(error, match=message):
            User.get_many(emails, fields=fields)


def test_fields_may_let_an_index_serve(orders, calls):
    # by_sku holds qty: enough for a read of qty.
    plan = Order.explain(Order.sku == "s1", fields=["qty"])
    assert (plan.operation, plan.index) == ("Query", "by_sku")
    found = Order.get_many(Order.sku == "s1", fields=[Order.qty])
    assert sorted((item.order_id, item.qty) for item in found) == \
        [("o001", 1), ("o004", 4), ("o005", 5)]
    assert calls[-1][1]["IndexName"] == "by_sku"
    with pytest.raises(FieldNotLoaded, match="Order.sku was not read"):
        found[0].sku  # noqa: B018


def sync_models():
    """One table, "syncs", as four versions of a model would have it."""
    def version(name, *indexes):
        return type(name, (Model,), {
            "__table__": "syncs", "__hash_key__": "id",
            "__range_key__": "seq", "__indexes__": indexes,
            "__module__": __name__, "id": StringField(required=True),
            "seq": IntField(required=True), "kind": StringField(required=True),
            "note": StringField(required=True)})

    return (version("Plain"),
            version("Kinds", GlobalIndex("by_kind", hash_key="kind")),
            version("KindKeys", GlobalIndex("by_kind", hash_key="kind",
                                            projection="KEYS_ONLY")),
            version("Notes", LocalIndex("by_note", range_key="note")))


def index_names(model):
    table = Connection.client().describe_table(
        TableName=model.table_name())["Table"]
    return sorted(index["IndexName"] for index in
                  table.get("GlobalSecondaryIndexes") or ())


def test_sync_table_steps(calls):
    plain, kinds, kind_keys, notes = sync_models()
    assert kinds.sync_table(dry_run=True) == [
        f"create table {kinds.table_name()!r} with its indexes"]
    with pytest.raises(Connection.client().exceptions
                       .ResourceNotFoundException, match="not found"):
        index_names(kinds)
    assert kinds.sync_table() == [
        f"create table {kinds.table_name()!r} with its indexes"]
    assert index_names(kinds) == ["by_kind"]
    assert kinds.sync_table() == []
    # An index the model does not declare is left alone...
    assert plain.sync_table() == []
    assert plain.sync_table(dry_run=True, delete_indexes=True) == [
        "delete global index 'by_kind'"]
    # ... and one that differs is replaced only when asked.
    with pytest.raises(SchemaError, match=r"'by_kind' has other keys or "
                       r"projection.*delete_indexes=True"):
        kind_keys.sync_table()
    assert kind_keys.sync_table(dry_run=True, delete_indexes=True) == [
        "delete global index 'by_kind'", "create global index 'by_kind'"]
    # Local indexes exist only from a table's creation.
    with pytest.raises(SchemaError, match=r"local indexes \(none\) differ "
                       r"from the model's \(by_note\)"):
        notes.sync_table(dry_run=True)
    assert "UpdateTable" not in operations(calls)
    assert index_names(kinds) == ["by_kind"]


def test_sync_table_deletes_an_index_when_asked():
    plain, kinds, _, _ = sync_models()
    kinds.create_table()
    if "indexes on existing tables" in GAPS.get(BACKEND, {}):
        with pytest.raises(dynamongo.DynamongoError, match="does not delete "
                           "indexes on an existing table"):
            plain.sync_table(delete_indexes=True)
        pytest.skip(GAPS[BACKEND]["indexes on existing tables"])
    assert plain.sync_table(delete_indexes=True) == [
        "delete global index 'by_kind'"]
    assert index_names(plain) == []


def test_sync_table_creates_an_index_on_a_table_with_items():
    plain, kinds, _, _ = sync_models()
    plain.create_table()
    plain.save_many([{"id": "a", "seq": seq, "kind": "odd" if seq % 2
                      else "even", "note": "n"} for seq in range(6)])
    if "indexes on existing tables" in GAPS.get(BACKEND, {}):
        with pytest.raises(dynamongo.DynamongoError, match="does not create "
                           "indexes on an existing table"):
            kinds.sync_table()
        pytest.skip(GAPS[BACKEND]["indexes on existing tables"])
    assert kinds.sync_table() == ["create global index 'by_kind'"]
    assert index_names(kinds) == ["by_kind"]
    plan = kinds.explain(kinds.kind == "odd")
    assert (plan.operation, plan.index) == ("Query", "by_kind")
    assert sorted(item.seq for item in kinds.get_many(
        kinds.kind == "odd")) == [1, 3, 5]


# A global index keyed by several fields (DynamoDB's multi-attribute keys).
class Sale(Model):
    __table__ = "sales"
    __hash_key__ = "id"
    __indexes__ = (GlobalIndex("by_place_month", hash_key=("tenant", "region"),
                               range_key=("year", "month")),)
    id = StringField(required=True)
    tenant = StringField(required=True)
    region = StringField(required=True)
    year = IntField(required=True)
    month = IntField(required=True)
    amount = IntField()


def test_multi_attribute_index_keys(calls):
    skip_on_gap("multi-attribute keys")
    Sale.create_table()
    definition = Connection.client().describe_table(
        TableName=Sale.table_name())["Table"]["GlobalSecondaryIndexes"][0]
    assert definition["KeySchema"] == [
        {"AttributeName": "tenant", "KeyType": "HASH"},
        {"AttributeName": "region", "KeyType": "HASH"},
        {"AttributeName": "year", "KeyType": "RANGE"},
        {"AttributeName": "month", "KeyType": "RANGE"}]
    Sale.save_many([{"id": f"s{number}", "tenant": tenant, "region": region,
                     "year": year, "month": month, "amount": number}
                    for number, (tenant, region, year, month) in enumerate([
                        ("t1", "eu", 2024, 12), ("t1", "eu", 2025, 1),
                        ("t1", "eu", 2025, 3), ("t1", "us", 2025, 2),
                        ("t2", "eu", 2025, 2)])])
    place = (Sale.tenant == "t1") & (Sale.region == "eu")
    plan = Sale.explain(place & (Sale.year == 2025) & (Sale.month >= 2))
    assert (plan.operation, plan.index) == ("Query", "by_place_month")
    assert plan.key_condition == ("(tenant = 't1') AND (region = 'eu') AND "
                                  "(year = 2025) AND (month >= 2)")
    assert [sale.id for sale in Sale.get_many(
        place & (Sale.year == 2025) & (Sale.month >= 2))] == ["s2"]
    assert [sale.id for sale in Sale.get_many(place)] == ["s0", "s1", "s2"]
    assert [sale.id for sale in Sale.get_many(
        place & (Sale.year > 2024), descending=True)] == ["s2", "s1"]
    # A range condition ends the key: month goes to the filter... which
    # may not name a key field: the read looks further (a Scan here).
    plan = Sale.explain(place & (Sale.year > 2024) & (Sale.month == 3))
    assert plan.operation == "Scan" and "month" in plan.reason
    # Every hash field needs ==.
    assert Sale.explain(Sale.tenant == "t1").operation == "Scan"
    with pytest.raises(ExpressionError, match="needs == on region"):
        Sale.get_many(Sale.tenant == "t1", index="by_place_month")


def test_explain_says_what_a_read_does(orders, calls):
    del calls[:]
    plan = Order.explain((Order.status == "open") & (Order.qty > 1))
    assert (plan.operation, plan.index) == ("Query", "by_status")
    assert plan.key_condition == "status = 'open'"
    assert plan.filter == "qty > 1"
    assert str(plan) == (
        "Query on index by_status\n"
        "  key condition: status = 'open'\n"
        "  filter: qty > 1\n"
        f"  why: {plan.reason}")
    assert plan.reason.startswith(
        "status in the key of global index 'by_status'; the table needs "
        "== on customer")
    plan = Order.explain({"customer": "ann", "order_id": "o001"})
    assert (plan.operation, plan.key_condition) == (
        "GetItem", "customer='ann', order_id='o001'")
    assert Order.explain([("ann", "o001")]).operation == "BatchGetItem"
    assert Order.explain(Order.keys_in([("ann", "o001")])).operation == \
        "BatchGetItem"
    assert User.explain(User.email.in_(["a@b.io"])).operation == \
        "BatchGetItem"
    scan = Order.explain(Order.qty > 1)
    assert (scan.operation, scan.index, scan.filter) == ("Scan", None,
                                                         "qty > 1")
    assert "needs == on customer" in scan.reason
    assert calls == []


def test_scan_setting_warns_or_refuses(orders, calls, caplog):
    Connection.set_config(scan="warn")
    with caplog.at_level("WARNING", logger="dynamongo"):
        assert ids(Order.get_many(Order.qty == 2)) == ["o002"]
    assert "Order.get_many scans the whole table" in caplog.text
    assert "needs == on customer" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="dynamongo"):
        assert Order.explain(Order.qty == 2).operation == "Scan"
    assert caplog.text == ""  # explain() runs nothing: nothing to warn of
    Connection.set_config(scan="refuse")
    del calls[:]
    with pytest.raises(ExpressionError, match="would Scan the whole table"):
        Order.get_many(Order.qty == 2)
    with pytest.raises(ExpressionError, match="delete_many would Scan"):
        Order.delete_many(Order.qty == 2)
    assert calls == []
    # Reads by key or index are untouched, and so is counting every item.
    assert ids(Order.get_many(Order.status == "shipped")) == ["o002"]
    assert Order.explain(Order.qty == 2).operation == "Scan"
    assert Order.count() == len(raw_items(Order))


# -- Large reads: iterate, count, progress -----------------------------------

def test_iter_many_reads_as_it_is_consumed(calls):
    Event.create_table()
    Event.save_many(events("ann", 250) + events("bob", 3))
    Connection.set_config(concurrency=1)
    keys = [("ann", seq) for seq in range(250)]
    del calls[:]
    items = Event.iter_many(keys)
    assert calls == []  # nothing read before it is consumed
    first = [next(items) for _ in range(150)]
    assert [item.seq for item in first] == list(range(150))
    assert operations(calls) == ["BatchGetItem"] * 2  # 100 keys a window
    del items  # abandoned: no further request
    assert operations(calls) == ["BatchGetItem"] * 2
    # Queries: one in_ value after another, lazily.
    del calls[:]
    items = Event.iter_many(Event.user.in_(["bob", "ann"]))
    assert [next(items).seq for _ in range(3)] == [0, 1, 2]
    assert operations(calls) == ["Query"]
    assert len(list(items)) == 250
    assert operations(calls) == ["Query", "Query"]
    # Every plan, as get_many reads it.
    for strategy in (keys[:30], Event.user == "ann",
                     Event.kind == "odd", Event.keys_in(keys[:5])):
        assert list(Event.iter_many(strategy, limit=20)) == \
            Event.get_many(strategy, limit=20)
    assert [item.to_dict() for item in Event.iter_many(
        Event.user == "bob", fields=["kind"])] == [
        {"user": "bob", "seq": seq, "kind": kind}
        for seq, kind in ((0, "even"), (1, "odd"), (2, "even"))]


def test_iter_many_reads_on_the_settings_it_began_with():
    Event.create_table()
    Event.save_many(events("ann", 5))
    items = Event.iter_many(Event.user == "ann")
    prefix = Connection.table_prefix()
    Connection.set_config(table_prefix="elsewhere-")
    assert [item.seq for item in items] == list(range(5))
    Connection.set_config(table_prefix=prefix)


def test_get_many_with_a_limit_reads_only_the_keys_it_needs(users, calls):
    User.save_many([user(index) for index in range(20)])
    emails = [user(index)["email"] for index in range(20)]
    del calls[:]
    assert [item.email for item in User.get_many(emails * 80, limit=5)] == \
        emails[:5]
    assert [len(params["RequestItems"][User.table_name()]["Keys"])
            for _, params in calls] == [5]
    # Missing keys: the next window asks for twice the keys still wanted.
    del calls[:]
    wanted = ["no1@b.io", emails[0], "no2@b.io", emails[1], emails[2],
              emails[3], emails[4], emails[5]]
    assert [item.email for item in User.get_many(wanted, limit=4)] == \
        emails[:4]
    assert [len(params["RequestItems"][User.table_name()]["Keys"])
            for _, params in calls] == [4, 4]


def test_count_matches_get_many(orders, calls):
    assert Order.count() == 5
    for strategy in ([("ann", "o001"), ("ann", "o009"), ("bob", "o004")],
                     Order.customer == "ann",
                     (Order.customer == "ann") & (Order.total > 10),
                     Order.status == "open", Order.qty > 1,
                     Order.keys_in([("bob", "o005")])):
        del calls[:]
        count = Order.count(strategy)
        # Counted by DynamoDB, or by reading keys only.
        for operation, params in calls:
            if operation == "BatchGetItem":
                request, = params["RequestItems"].values()
                assert request["ProjectionExpression"] == "#n0, #n1"
            else:
                assert params["Select"] == "COUNT"
        assert count == len(Order.get_many(strategy))
    del calls[:]
    assert Order.count(Order.status == "open") == 4
    assert calls[0][1]["IndexName"] == "by_status"
    assert Order.count(index="by_region") == 2  # sparse: items with total
    with pytest.raises(ExpressionError, match="never strongly consistent"):
        Order.count(index="by_status", consistent_read=True)
    assert isinstance(Order.estimated_count(), int)


def test_delete_many_deletes_as_it_finds(calls):
    Event.create_table()
    Event.save_many(events("ann", 60) + events("bob", 30))
    Connection.set_config(concurrency=1)  # 25 keys a batch
    del calls[:]
    result = Event.delete_many(Event.user.in_(["ann", "bob", "ann"]))
    # ann's 60 keys, then bob's 30 (ann given twice is queried once):
    # batches of 25 go out as the keys come in.
    assert operations(calls) == ["Query", "BatchWriteItem", "BatchWriteItem",
                                 "Query", "BatchWriteItem", "BatchWriteItem"]
    assert sorted((item.user, item.seq) for item in result.success) == \
        sorted([("ann", seq) for seq in range(60)]
               + [("bob", seq) for seq in range(30)])
    assert result.fail == [] and raw_items(Event) == []


def every_page(read, **kwargs):
    """(items of every page in order, the pages' sizes) of a paged read."""
    items, sizes, cursor = [], [], None
    while True:
        page = read(cursor=cursor, **kwargs)
        assert page or cursor is None  # a cursor never leads to nothing
        items += page
        sizes.append(len(page))
        cursor = page.cursor
        if cursor is None:
            return items, sizes
        assert cursor.isascii() and re.fullmatch(r"[A-Za-z0-9_.-]+", cursor)


def test_get_page_returns_every_item_once_across_cursors(calls):
    Event.create_table()
    Event.save_many(events("ann", 1500) + events("bob", 1500))
    Event.save_many([{"user": "ann", "seq": seq, "kind": "rare"}
                     for seq in range(0, 1500, 13)])
    every = Event.seq >= 0
    for condition, expected in (
            ((Event.user == "ann") & (Event.kind == "rare"),
             [("ann", seq) for seq in range(0, 1500, 13)]),
            ((Event.user == "ann") & (Event.kind == "odd"),
             [("ann", seq) for seq in range(1, 1500, 2) if seq % 13]),
            ((Event.user == "bob") & (Event.seq.between(100, 1399)),
             [("bob", seq) for seq in range(100, 1400)])):
        found, sizes = every_page(lambda **kwargs: Event.get_page(
            condition, 50, **kwargs))
        assert [(item.user, item.seq) for item in found] == expected
        assert set(sizes[:-1]) == {50}
    # A Scan whose filter drops most items: each match once.
    found, sizes = every_page(lambda **kwargs: Event.get_page(
        Event.seq.between(1000, 1199), 50, **kwargs))
    assert sorted((item.user, item.seq) for item in found) == sorted(
        (user, seq) for user in ("ann", "bob") for seq in range(1000, 1200))
    assert set(sizes[:-1]) == {50} and len(found) == 400
    # Pages smaller than what DynamoDB filters out.
    few = Event.seq.in_([7, 700, 1499])
    found, sizes = every_page(lambda **kwargs: Event.get_page(
        few & every, 2, **kwargs))
    assert sorted((item.user, item.seq) for item in found) == sorted(
        (user, seq) for user in ("ann", "bob") for seq in (7, 700, 1499))
    assert set(sizes[:-1]) == {2}
    # Newest first, the fields asked for.
    page = Event.get_page(Event.user == "ann", 3, descending=True,
                          fields=["kind"])
    assert [(item.seq, item.kind) for item in page] == [
        (1499, "odd"), (1498, "even"), (1497, "odd")]
    with pytest.raises(FieldNotLoaded, match="Event.payload was not read"):
        page[0].payload  # noqa: B018
    page = Event.get_page(Event.user == "ann", 3, descending=True,
                          fields=["kind"], cursor=page.cursor)
    assert [item.seq for item in page] == [1496, 1495, 1494]


def test_a_page_ending_at_the_last_item_has_no_cursor(orders):
    Event.create_table()
    Event.save_many(events("ann", 6) + events("bob", 6))
    for read, size in (
            (lambda **kwargs: Event.get_page(Event.user == "ann", 3,
                                             **kwargs), 3),  # table Query
            (lambda **kwargs: Event.get_page(  # a Query per in_() value
                Event.user.in_(["ann", "bob"]), 4, **kwargs), 4),
            (lambda **kwargs: Event.get_page(  # a filtered Query
                (Event.user == "ann") & (Event.kind == "odd"), 3,
                **kwargs), 3),
            (lambda **kwargs: Event.get_page(Event.seq >= 3, 3,
                                             **kwargs), 3),  # a Scan
            (lambda **kwargs: Order.get_page(  # an index Query
                Order.status == "open", 2, **kwargs), 2)):
        found, sizes = every_page(read)
        assert sizes[-1] == size and len(found) == size * len(sizes)
    page = Event.get_page(Event.user == "ann", 6)
    assert len(page) == 6 and page.cursor is None
    page = Event.get_page(Event.user == "ann", 5)
    assert [item.seq for item in page] == [0, 1, 2, 3, 4] and page.cursor
    last = Event.get_page(Event.user == "ann", 5, cursor=page.cursor)
    assert [item.seq for item in last] == [5] and last.cursor is None


def test_get_page_max_scanned_stops_short_and_resumes():
    Event.create_table()
    Event.save_many(events("ann", 100))
    condition = (Event.user == "ann") & (Event.kind == "odd")
    page = Event.get_page(condition, 50, max_scanned=10)
    assert page.scanned_count == 10
    assert [item.seq for item in page] == [1, 3, 5, 7, 9]
    rest, _ = every_page(lambda **kwargs: Event.get_page(
        condition, 50, **kwargs))
    resumed = Event.get_page(condition, 50, cursor=page.cursor)
    assert [item.seq for item in resumed] == list(range(11, 100, 2))
    assert resumed.cursor is None
    assert [item.seq for item in rest] == list(range(1, 100, 2))


def test_get_page_through_an_index(orders):
    found, sizes = every_page(lambda **kwargs: Order.get_page(
        Order.status.in_(["open", "shipped"]), 2, **kwargs))
    assert [item.order_id for item in found] == \
        ["o001", "o003", "o004", "o005", "o002"]
    assert sizes == [2, 2, 1]


def test_cursors_are_bound_to_their_query():
    Event.create_table()
    Event.save_many(events("ann", 10) + events("bob", 10))
    page = Event.get_page(Event.user == "ann", 3)
    for condition, kwargs in ((Event.user == "bob", {}),
                              (Event.user == "ann", {"descending": True}),
                              (Event.user == "ann", {"fields": ["kind"]}),
                              (Event.kind == "odd", {})):
        with pytest.raises(CursorError, match="another query"):
            Event.get_page(condition, 3, cursor=page.cursor, **kwargs)
    with pytest.raises(CursorError, match="another query"):
        Page.get_page(Page.site == "ann", 3, cursor=page.cursor)
    # A model of the same name on another table, and the same model under
    # another table prefix, are other queries.
    namesake = dynamongo._ModelType("Event", (Model,), {
        "__module__": Event.__module__, "__qualname__": Event.__qualname__,
        "__table__": "events-archive", "__hash_key__": "user",
        "__range_key__": "seq", "user": StringField(required=True),
        "seq": IntField(required=True), "kind": StringField(),
        "payload": StringField()})
    with pytest.raises(CursorError, match="another query"):
        namesake.get_page(namesake.user == "ann", 3, cursor=page.cursor)
    prefix = Connection.table_prefix()
    Connection.set_config(table_prefix="other-" + prefix)
    with pytest.raises(CursorError, match="another query"):
        Event.get_page(Event.user == "ann", 3, cursor=page.cursor)
    Connection.set_config(table_prefix=prefix)
    import base64
    body = json.loads(base64.urlsafe_b64decode(page.cursor + "=="))
    for start in ({"user": {"S": "bob"}, "seq": {"N": "1"}},
                  {"user": {"S": "ann"}, "seq": {"S": "1"}},
                  {"user": {"S": "ann"}, "seq": {"N": "one"}},
                  {"user": {"S": "ann"}},
                  {"user": {"S": "ann"}, "seq": {"N": "1"}, "x": {"S": "y"}},
                  "ann"):
        forged = base64.urlsafe_b64encode(json.dumps(
            dict(body, k=start)).encode()).decode()
        with pytest.raises(CursorError, match=(
                "Event.get_page: the cursor('s key is not in| "
                "does not hold a key of) this query")):
            Event.get_page(Event.user == "ann", 3, cursor=forged)
    for junk in ("", "not a cursor", "e30", 5, "é"):
        with pytest.raises(CursorError, match=(
                "Event.get_page: (a cursor is the text a Page gave|"
                ".* is not a cursor)")):
            Event.get_page(Event.user == "ann", 3, cursor=junk)
    # Signed: a flipped byte is refused.
    Connection.set_config(cursor_secret=b"s3cret")
    page = Event.get_page(Event.user == "ann", 3)
    assert "." in page.cursor
    flipped = page.cursor[:5] + ("A" if page.cursor[5] != "A" else "B") + \
        page.cursor[6:]
    with pytest.raises(CursorError, match="altered"):
        Event.get_page(Event.user == "ann", 3, cursor=flipped)
    assert [item.seq for item in Event.get_page(
        Event.user == "ann", 3, cursor=page.cursor)] == [3, 4, 5]
    # Keys are already a page.
    with pytest.raises(ExpressionError, match="already a page"):
        Event.get_page([("ann", 1)], 3)
    with pytest.raises(ValidationError, match="limit"):
        Event.get_page(Event.user == "ann", 0)
    with pytest.raises(ExpressionError, match="segments"):
        Event.get_page(Event.seq > 1, 3, segments=2)


def test_progress_reports_from_the_calling_thread(calls):
    Event.create_table()
    Connection.set_config(concurrency=4)
    reports, threads = [], set()

    def progress(done, total):
        reports.append((done, total))
        threads.add(threading.current_thread())

    Event.save_many(events("ann", 60), progress=progress)
    assert reports == [(25, 60), (50, 60), (60, 60)]
    del reports[:]
    Event.save_many(events("bob", 3), overwrite=False, progress=progress)
    assert reports == [(1, 3), (2, 3), (3, 3)]
    del reports[:]
    keys = [("ann", seq) for seq in range(60)]
    assert len(Event.get_many(keys, progress=progress)) == 60
    assert reports == [(60, 60)]
    del reports[:]
    assert len(list(Event.iter_many(Event.user == "ann",
                                    progress=progress))) == 60
    assert reports == [(60, None)]
    del reports[:]
    Event.delete_many(keys[:30], progress=progress)
    assert reports == [(25, 30), (30, 30)]
    assert threads == {threading.current_thread()}


def test_many_item_calls_pause_the_collector_while_they_run(monkeypatch):
    import gc

    Event.create_table()
    seen = []

    def progress(done, total):
        seen.append(gc.isenabled())

    assert gc.isenabled()
    Event.save_many(events("ann", 30), progress=progress)
    assert len(Event.get_many(Event.user == "ann", progress=progress)) == 30
    assert len(list(Event.iter_many(Event.user == "ann",
                                    progress=progress))) == 30
    Event.delete_many([("ann", 0)], progress=progress)
    assert seen == [False, False, False, True, False] and gc.isenabled()
    # Resumed after an error; not resumed when it was off to begin with.
    with pytest.raises(ValidationError, match=(
            r"Event.save_many: invalid items: \[0\].seq: is "
            r"required")):
        Event.save_many([{"user": "ann"}])
    assert gc.isenabled()
    gc.disable()
    try:
        Event.get_many(Event.user == "ann")
        assert not gc.isenabled()
    finally:
        gc.enable()
    # Overlapping calls in two threads: the last one to end resumes it.
    entered, release = threading.Event(), threading.Event()

    def wait(done, total):
        entered.set()
        release.wait(5)

    worker = threading.Thread(target=Event.get_many, args=(
        Event.user == "ann",), kwargs={"progress": wait})
    worker.start()
    entered.wait(5)
    Event.get_many(Event.user == "ann")
    assert not gc.isenabled()  # the other call still runs
    release.set()
    worker.join()
    assert gc.isenabled()
    # A child forked while another thread's call has it paused runs with
    # the collector on.
    import multiprocessing

    entered.clear()
    release.clear()
    worker = threading.Thread(target=Event.get_many, args=(
        Event.user == "ann",), kwargs={"progress": wait})
    worker.start()
    entered.wait(5)
    assert not gc.isenabled()
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    child = context.Process(target=lambda: answers.put(
        (gc.isenabled(), len(Event.get_many(Event.user == "ann")),
         gc.isenabled())))
    child.start()
    assert answers.get(timeout=60) == (True, 29, True)
    child.join(timeout=30)
    release.set()
    worker.join()
    assert gc.isenabled()
    # pause_gc=False leaves it running.
    Connection.set_config(pause_gc=False)
    del seen[:]
    Event.get_many(Event.user == "ann", progress=progress)
    assert seen == [True]
    with pytest.raises(ValidationError, match="pause_gc must be True or "
                                              "False, not 'no'"):
        Connection.set_config(pause_gc="no")


# -- Transactions ------------------------------------------------------------

# Transactions: balances with a bound, an owner to validate.
class Account(Model):
    __table__ = "accounts"
    __hash_key__ = "id"
    id = StringField(required=True)
    owner = EmailField()
    balance = IntField(min_value=0)


@pytest.fixture
def accounts():
    skip_on_gap("transactions")
    Account.create_table()
    Event.create_table()
    Account.save_many([{"id": "a", "balance": 100}, {"id": "b", "balance": 0},
                       {"id": "z", "balance": 7}])
    Event.save_one({"user": "ann", "seq": 1, "kind": "cart"})
    return Account


def balances():
    return {account.id: account.balance for account in
            Account.get_many(Account.id.exists(), consistent_read=True)}


def test_a_transaction_applies_all_its_actions_together(accounts):
    with dynamongo.transaction() as t:
        t.update_one(Account, (Account.id == "a") & (Account.balance >= 40),
                     Account.balance.add(-40))
        t.update_one(Account, "b", Account.balance.add(40))
        saved = t.save_one(Account, {"id": "n", "balance": 5},
                           overwrite=False)
        t.delete_one(Event, ("ann", 1))
        t.check(Account, (Account.id == "z") & (Account.balance == 7))
    assert saved == Account(id="n", balance=5)
    assert balances() == {"a": 60, "b": 40, "n": 5, "z": 7}
    assert Event.get_many(Event.user == "ann") == []
    # commit() without a with block works the same way.
    t = dynamongo.transaction(token="checkout-8812")
    t.delete_one(Account, "n")
    assert "checkout-8812" in repr(t)
    t.commit()
    assert balances() == {"a": 60, "b": 40, "z": 7}


def test_a_cancelled_transaction_gives_its_reasons_in_call_order(accounts):
    t = dynamongo.transaction()
    t.update_one(Account, "a", Account.balance.add(-10))
    t.update_one(Account, (Account.id == "z") & (Account.balance > 10),
                 Account.balance.add(-10))
    t.save_one(Account, {"id": "c", "balance": 1})
    with pytest.raises(dynamongo.TransactionCanceled) as caught:
        t.commit()
    assert isinstance(caught.value, DynamoDBError)
    reasons = caught.value.reasons
    assert [reason.code for reason in reasons] == [
        None, "ConditionalCheckFailed", None]
    assert [reason.action for reason in reasons] == [
        "update_one Account id='a'", "update_one Account id='z'",
        "save_one Account id='c'"]
    assert reasons[1].item == Account(id="z", balance=7)
    assert reasons[0].item is None and reasons[2].item is None
    assert balances() == {"a": 100, "b": 0, "z": 7}  # nothing applied


def test_a_transaction_is_checked_before_anything_is_sent(accounts, calls):
    t = dynamongo.transaction()
    t.save_one(Account, {"id": "c", "balance": 1})
    with pytest.raises(ValidationError, match=r"\[1\]\.owner") as caught:
        t.save_one(Account, {"id": "d", "owner": "not an e-mail"})
    assert list(caught.value.errors) == ["[1].owner"]
    with pytest.raises(ValidationError, match=r"\[1\]: update_one Account "
                                              r"id='c': another action"):
        t.update_one(Account, "c", Account.balance.add(1))
    with pytest.raises(ExpressionError, match=r"\[1\]: check: "):
        t.check(Account, Account.balance > 1)  # names no item
    with pytest.raises(ExpressionError, match="beyond the key"):
        t.check(Account, Account.id == "a")
    with pytest.raises(ValidationError, match="takes a model"):
        t.delete_one("Account", "a")
    for number in range(99):
        t.delete_one(Account, f"x{number}")
    with pytest.raises(ValidationError, match="at most 100 actions"):
        t.delete_one(Account, "y")
    assert calls == []
    big = dynamongo.transaction()
    for number in range(12):
        big.save_one(Event, {"user": "big", "seq": number,
                             "payload": "x" * 390_000})
    with pytest.raises(ValidationError, match="over DynamoDB's limit of "
                                              "4 MB"):
        big.commit()
    assert calls == []
    # An exception inside the block sends nothing; a transaction is used
    # once.
    with pytest.raises(KeyError, match="the caller's own error"):
        with dynamongo.transaction() as t:
            t.delete_one(Account, "a")
            raise KeyError("the caller's own error")
    assert calls == []
    with pytest.raises(ExpressionError, match="is over"):
        t.delete_one(Account, "b")
    with pytest.raises(ValidationError, match="token"):
        dynamongo.transaction(token="x" * 37)
    assert balances()["a"] == 100


def test_a_transaction_whose_answer_was_lost_is_applied_once(
        accounts, monkeypatch, no_sleep):
    # DynamoDB applies a token once (moto does not: its rule is emulated).
    send, tokens = dynamongo._send, []

    def losing(operation, params):
        if operation != "TransactWriteItems":
            return send(operation, params)
        tokens.append(params["ClientRequestToken"])
        if tokens.count(params["ClientRequestToken"]) > 1:
            return {}  # already applied under this token
        send(operation, params)
        raise dynamongo._NoAnswer("the connection failed", sent=True)

    replace_send(monkeypatch, losing)
    with dynamongo.transaction() as t:
        t.update_one(Account, "a", Account.balance.add(-1))
    assert len(tokens) == 2 and tokens[0] == tokens[1] == t.token
    assert balances()["a"] == 99


def test_a_transaction_cancelled_by_conflicts_alone_is_retried(
        accounts, monkeypatch, no_sleep):
    send, tokens = dynamongo._send, []

    def conflicting(operation, params):
        if operation == "TransactWriteItems":
            tokens.append(params["ClientRequestToken"])
            if len(tokens) < 3:
                raise dynamongo._Refusal({
                    "Error": {"Code": "TransactionCanceledException",
                              "Message": "Transaction cancelled"},
                    "CancellationReasons": [{"Code": "None"}, {
                        "Code": "TransactionConflict",
                        "Message": "Transaction is ongoing for the item"}],
                    "ResponseMetadata": {"HTTPStatusCode": 400}}, operation)
        return send(operation, params)

    replace_send(monkeypatch, conflicting)
    with dynamongo.transaction() as t:
        t.update_one(Account, "a", Account.balance.add(-1))
        t.update_one(Account, "b", Account.balance.add(1))
        t.commit()  # inside the block: leaving it sends nothing more
    assert len(tokens) == 3 and set(tokens) == {t.token}
    assert len(no_sleep) == 2
    assert balances() == {"a": 99, "b": 1, "z": 7}
    # Conflicts every time: cancelled after max_attempts.
    Connection.set_config(max_attempts=2)
    del tokens[:]
    t = dynamongo.transaction()
    t.update_one(Account, "a", Account.balance.add(-1))
    t.update_one(Account, "b", Account.balance.add(1))
    with pytest.raises(dynamongo.TransactionCanceled) as caught:
        t.commit()
    assert [reason.code for reason in caught.value.reasons] == [
        None, "TransactionConflict"]
    assert len(tokens) == 2


def test_transact_get_reads_items_in_the_order_asked(accounts):
    found = dynamongo.transact_get([(Account, "z"), (Event, ("ann", 1)),
                                    (Account, "missing"),
                                    (Account, Account.id == "a")])
    assert found == [Account(id="z", balance=7),
                     Event(user="ann", seq=1, kind="cart"), None,
                     Account(id="a", balance=100)]
    partial = dynamongo.transact_get([(Account, "a")], fields=["id"])[0]
    assert partial.id == "a"
    with pytest.raises(FieldNotLoaded, match="Account.balance was not read"):
        partial.balance
    with pytest.raises(ExpressionError, match=r"\[0\]: transact_get: takes "
                                              "a key only"):
        dynamongo.transact_get([(Account, (Account.id == "a")
                                 & (Account.balance > 1))])
    with pytest.raises(ValidationError, match="1 to 100"):
        dynamongo.transact_get([])


# -- Optimistic locking ------------------------------------------------------

# Optimistic locking: a version, a bounded number to add to.
class Note(Model):
    __table__ = "notes"
    __hash_key__ = "id"
    __billing_mode__ = "PAY_PER_REQUEST"
    id = StringField(required=True)
    text = StringField()
    words = IntField(min_value=0, max_value=1000)
    version = dynamongo.VersionField()


@pytest.fixture
def notes():
    Note.create_table()
    return Note


def stored_note(key):
    return Note.get_one(key, consistent_read=True)


def assert_current(conflict, expected):
    """VersionConflict.current is the stored item (None: gone), and its
    message says what it holds, where the backend sends it back with a
    refused write."""
    assert isinstance(conflict, dynamongo.VersionConflict)
    assert isinstance(conflict, ConditionalCheckFailedException)
    if "conflict items" not in GAPS.get(BACKEND, {}):
        assert conflict.current == expected
        assert str(conflict).endswith(
            "but it is gone" if expected is None else
            f"but it is at version {expected.version}" if expected.version
            else "but it has no version")


def test_manual_optimistic_locking_example(notes):
    doc = Note.save_one({"id": "d1", "text": "draft"})
    assert doc.version == 1
    mine = Note.get_one("d1")
    doc.text = "final"
    doc = Note.save_one(doc)
    assert doc.version == 2
    with pytest.raises(dynamongo.VersionConflict) as caught:
        Note.update_one(mine, Note.text.set("mine"))
    assert_current(caught.value, Note(id="d1", text="final", version=2))
    if "conflict items" not in GAPS.get(BACKEND, {}):
        assert repr(caught.value.current) == \
            "Note(id='d1', text='final', version=2)"


def test_a_model_has_at_most_one_version_field_at_its_top_level():
    with pytest.raises(SchemaError, match="2 VersionFields"):
        class Twice(Model):
            __table__ = "twice"
            __hash_key__ = "id"
            id = StringField()
            version = dynamongo.VersionField()
            revision = dynamongo.VersionField()
    with pytest.raises(SchemaError, match="cannot be a key"):
        class Keyed(Model):
            __table__ = "keyed"
            __hash_key__ = "version"
            version = dynamongo.VersionField()
    for nested in (lambda: ListField(dynamongo.VersionField),
                   lambda: DictField(version=dynamongo.VersionField())):
        with pytest.raises(SchemaError, match="top level"):
            nested()

    class Versioned(Model):
        __abstract__ = True
        version = dynamongo.VersionField()

    with pytest.raises(SchemaError, match="version, revision"):
        class Inherited(Versioned):
            __table__ = "inherited"
            __hash_key__ = "id"
            id = StringField()
            revision = dynamongo.VersionField()
    for update in (lambda: Note.version.set(3), lambda: Note.version.add(1),
                   lambda: Note.version.remove(),
                   lambda: Note.version.set_if_not_exists(1)):
        with pytest.raises(ValidationError, match="Note.version is a "
                                                  "VersionField"):
            update()


def test_save_one_requires_the_version_it_holds_and_stores_the_next(
        notes, calls):
    first = Note.save_one({"id": "d", "text": "one"})
    assert first == Note(id="d", text="one", version=1)
    second = Note.save_one(Note(id="d", text="two", version=1))
    assert second.version == 2
    stale = Note(id="d", text="stale", version=1)
    del calls[:]
    with pytest.raises(dynamongo.VersionConflict,
                       match="was to be at version 1") as caught:
        Note.save_one(stale)
    assert operations(calls) == ["PutItem"]  # the item came with the refusal
    assert_current(caught.value, Note(id="d", text="two", version=2))
    assert stale.version == 1  # the caller's instance is left as it was
    assert stored_note("d") == second
    # An item without a version is new: there must be no versioned item.
    state = "has one \\(the refusal came without the stored item\\)" \
        if "conflict items" in GAPS.get(BACKEND, {}) else "is at version 2"
    with pytest.raises(dynamongo.VersionConflict,
                       match=f"was to be new, but it {state}"):
        Note.save_one({"id": "d", "text": "new again"})
    assert stored_note("d") == second
    # A version of an item that is gone.
    with pytest.raises(dynamongo.VersionConflict) as caught:
        Note.save_one({"id": "gone", "version": 4})
    assert_current(caught.value, None)
    # overwrite's condition and the version's together.
    with pytest.raises(ConditionalCheckFailedException) as caught:
        Note.save_one(second, overwrite=Note.text == "other")
    assert not isinstance(caught.value, dynamongo.VersionConflict) or \
        "conflict items" in GAPS.get(BACKEND, {})
    assert Note.save_one(second, overwrite=Note.text == "two").version == 3
    with pytest.raises(ValidationError, match="version"):
        Note.save_one({"id": "d", "version": 0})


def test_a_refusal_without_the_stored_item_is_a_conflict_of_the_version(
        notes, monkeypatch):
    send = dynamongo._send

    def without_item(operation, params):  # as dynalite refuses
        try:
            return send(operation, params)
        except Exception as exc:
            getattr(exc, "response", {}).pop("Item", None)
            raise

    Note.save_one({"id": "d", "text": "one"})
    Note.save_one(Note(id="d", text="two", version=1))
    replace_send(monkeypatch, without_item)
    for stale, wanted in (
            ({"id": "d", "text": "new again"}, "new, but it has one "
             r"\(the refusal came without the stored item\)"),
            (Note(id="d", text="x", version=1), "at version 1")):
        with pytest.raises(dynamongo.VersionConflict,
                           match=f"was to be {wanted}") as caught:
            Note.save_one(stale)
        assert caught.value.current is None
        result = Note.save_many([stale])
        assert isinstance(result.fail[0].error, dynamongo.VersionConflict)
    # With another condition, the refusal of a new item may be that one's.
    with pytest.raises(ConditionalCheckFailedException) as caught:
        Note.save_one({"id": "d", "text": "x"},
                      overwrite=Note.text == "other")
    assert not isinstance(caught.value, dynamongo.VersionConflict)
    assert stored_note("d").text == "two"


def test_an_item_written_without_a_version_is_versioned_by_its_next_write(
        notes):
    Connection.client().put_item(TableName=Note.table_name(), Item={
        "id": {"S": "plain"}, "text": {"S": "by another client"}})
    with pytest.raises(dynamongo.VersionConflict,
                       match="was to be at version 1") as caught:
        Note.save_one({"id": "plain", "version": 1})
    assert_current(caught.value, Note(id="plain", text="by another client"))
    assert Note.save_one({"id": "plain", "text": "mine"}).version == 1
    Connection.client().put_item(TableName=Note.table_name(), Item={
        "id": {"S": "other"}})
    assert Note.update_one("other", Note.words.set(3)) == Note(
        id="other", words=3, version=1)


def test_update_one_requires_a_held_version_and_increments_it(notes):
    saved = Note.save_one({"id": "d", "text": "one", "words": 1})
    updated = Note.update_one(saved, Note.text.set("two"))
    assert updated == Note(id="d", text="two", words=1, version=2)
    with pytest.raises(dynamongo.VersionConflict,
                       match="UpdateItem .* was to be at version 1") \
            as caught:
        Note.update_one(saved, Note.text.set("lost"))
    assert_current(caught.value, updated)
    # A dict holding the version does the same; update_from_dict too.
    assert Note.update_one({"id": "d", "version": 2},
                           Note.words.add(1)).version == 3
    with pytest.raises(dynamongo.VersionConflict, match=(
            "UpdateItem .* was to be at version 2")):
        Note.update_one({"id": "d", "version": 2}, Note.words.add(1))
    assert Note.update_from_dict({"id": "d", "version": 3,
                                 "text": "three"}).version == 4
    with pytest.raises(dynamongo.VersionConflict, match=(
            "UpdateItem .* was to be at version 3")):
        Note.update_from_dict({"id": "d", "version": 3, "text": "lost"})
    with pytest.raises(ValidationError, match="only id, version: nothing"):
        Note.update_from_dict({"id": "d", "version": 4})
    # A plain key or a key condition increments without requiring one.
    assert Note.update_one("d", Note.words.add(1)).version == 5
    assert Note.update_one((Note.id == "d") & (Note.words == 3),
                           Note.text.set("four")).version == 6
    assert Note.update_one((Note.id == "d") & (Note.words == 0),
                           Note.text.set("no")) is None
    assert stored_note("d") == Note(id="d", text="four", words=3, version=6)
    # At the held version, a broken bound is the update's own refusal.
    if "conflict items" not in GAPS.get(BACKEND, {}):
        with pytest.raises(ValidationError, match="above max_value"):
            Note.update_one({"id": "d", "version": 6}, Note.words.add(5000))
    # An update of a gone item at a held version is a conflict.
    with pytest.raises(dynamongo.VersionConflict) as caught:
        Note.update_one({"id": "nobody", "version": 1}, Note.words.add(1))
    assert_current(caught.value, None)
    assert Note.update_one("nobody", Note.words.add(1)) is None
    with pytest.raises(ValidationError, match="version"):
        Note.update_one({"id": "d", "version": "six"}, Note.words.add(1))
    assert stored_note("d").version == 6


def test_delete_one_of_an_instance_requires_its_version(notes):
    saved = Note.save_one({"id": "d", "text": "one"})
    newer = Note.save_one(saved)
    with pytest.raises(dynamongo.VersionConflict) as caught:
        Note.delete_one(saved)
    assert_current(caught.value, newer)
    assert stored_note("d") == newer
    assert Note.delete_one(newer) == newer
    with pytest.raises(dynamongo.VersionConflict) as caught:
        Note.delete_one(newer)
    assert_current(caught.value, None)
    Note.save_one({"id": "e"})
    assert Note.delete_one("e") == Note(id="e", version=1)  # unconditional


def test_a_versioned_write_whose_answer_was_lost_is_not_its_own_conflict(
        notes, monkeypatch, no_sleep):
    saved = Note.save_one({"id": "d", "words": 1})
    send, lost = dynamongo._send, []

    def losing(operation, params):
        answer = send(operation, params)
        if operation in ("PutItem", "UpdateItem") and not lost:
            lost.append(operation)
            raise dynamongo._NoAnswer("the connection failed", sent=True)
        return answer

    replace_send(monkeypatch, losing)
    saved = Note.save_one(dict(saved.to_dict(), text="two"))
    assert lost == ["PutItem"] and saved.version == 2
    del lost[:]
    assert Note.update_one(saved, Note.text.set("three")).version == 3
    assert lost == ["UpdateItem"]
    assert stored_note("d") == Note(id="d", words=1, text="three", version=3)


def test_save_many_of_a_versioned_model_puts_each_item_on_its_condition(
        notes, calls):
    Note.save_many([{"id": "a"}, {"id": "b"}])
    del calls[:]
    result = Note.save_many([{"id": "a", "version": 1, "text": "a2"},
                            {"id": "b", "version": 7},
                            {"id": "c", "text": "new"},
                            {"id": "gone", "version": 2}])
    assert set(operations(calls)) == {"PutItem"}
    assert result.success == [Note(id="a", text="a2", version=2),
                              Note(id="c", text="new", version=1)]
    assert [failure.item for failure in result.fail] == [
        {"id": "b", "version": 7}, {"id": "gone", "version": 2}]
    for failure in result.fail:
        assert isinstance(failure.error, dynamongo.VersionConflict)
    assert_current(result.fail[0].error, Note(id="b", version=1))
    assert_current(result.fail[1].error, None)
    assert stored_note("b") == Note(id="b", version=1)


def test_a_transaction_applies_version_conditions(notes):
    skip_on_gap("transactions")
    saved = Note.save_one({"id": "d", "words": 1})
    with dynamongo.transaction() as t:
        created = t.save_one(Note, {"id": "n"})
        t.update_one(Note, saved, Note.words.add(1))
    assert created == Note(id="n", version=1)
    assert stored_note("n") == created
    assert stored_note("d") == Note(id="d", words=2, version=2)
    t = dynamongo.transaction()
    t.save_one(Note, {"id": "m"})
    t.delete_one(Note, saved)  # at version 1, now 2
    with pytest.raises(dynamongo.TransactionCanceled) as caught:
        t.commit()
    assert [reason.code for reason in caught.value.reasons] == [
        None, "ConditionalCheckFailed"]
    assert caught.value.reasons[1].item == Note(id="d", words=2, version=2)
    with pytest.raises(Note.DoesNotExist, match=(
            "Note with id='m' does not exist")):
        stored_note("m")


def test_of_two_racing_updates_of_one_version_exactly_one_wins(notes):
    skip_on_gap("atomic conditional writes")
    saved = Note.save_one({"id": "d", "words": 0})
    start = threading.Barrier(2)
    outcomes = [None, None]

    def update(index):
        start.wait()
        try:
            outcomes[index] = Note.update_one(saved,
                                              Note.text.set(f"by {index}"))
        except dynamongo.VersionConflict as conflict:
            outcomes[index] = conflict

    for attempt in range(10):
        threads = [threading.Thread(target=update, args=(index,))
                   for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        won = [outcome for outcome in outcomes if isinstance(outcome, Note)]
        lost = [outcome for outcome in outcomes
                if isinstance(outcome, dynamongo.VersionConflict)]
        assert len(won) == len(lost) == 1
        assert won[0].version == saved.version + 1
        assert_current(lost[0], won[0])
        assert stored_note("d") == won[0]
        saved = won[0]


# -- Binary and sets ---------------------------------------------------------

# Binary keys (a range key and an index key) and values.
class Blob(Model):
    __table__ = "blobs"
    __hash_key__ = "owner"
    __range_key__ = "digest"
    __billing_mode__ = "PAY_PER_REQUEST"
    __indexes__ = (GlobalIndex("by_data", hash_key="data"),)
    owner = StringField(required=True)
    digest = BinaryField(required=True)
    data = BinaryField()


# Sets of every element type, one in a map; lists and strings for size().
class Tagged(Model):
    __table__ = "tagged"
    __hash_key__ = "id"
    __billing_mode__ = "PAY_PER_REQUEST"
    id = StringField(required=True)
    name = StringField()
    tags = SetField(StringField)
    scores = SetField(IntField(min_value=0))
    weights = SetField(FloatField)
    emails = SetField(EmailField)
    digests = SetField(BinaryField)
    history = ListField(StringField)
    extra = DictField(flags=SetField(StringField), note=StringField())


@pytest.fixture
def blobs():
    Blob.create_table()
    return Blob


@pytest.fixture
def tagged():
    Tagged.create_table()
    return Tagged


DIGESTS = [b"\xff", b"\x00", b"\x80", b"\x7f", b"\x01\x00", b"\x00\x01"]


def test_binary_keys_round_trip_and_sort_as_unsigned_bytes(blobs):
    saved = Blob.save_many([{"owner": "o", "digest": digest,
                             "data": bytearray(digest * 2)}
                            for digest in DIGESTS])
    assert saved.fail == []
    ordered = sorted(DIGESTS)  # Python orders bytes as unsigned, too
    assert ordered == [b"\x00", b"\x00\x01", b"\x01\x00", b"\x7f",
                       b"\x80", b"\xff"]
    found = Blob.get_many(Blob.owner == "o")
    assert [blob.digest for blob in found] == ordered
    assert all(type(blob.data) is bytes and blob.data == blob.digest * 2
               for blob in found)
    assert [blob.digest for blob in Blob.get_many(
        Blob.owner == "o", descending=True)] == ordered[::-1]
    assert [blob.digest for blob in Blob.get_many(
        (Blob.owner == "o") & (Blob.digest > b"\x7f"))] == [b"\x80", b"\xff"]
    assert [blob.digest for blob in Blob.get_many(
        (Blob.owner == "o") & Blob.digest.between(b"\x00\x01", b"\x7f"))] \
        == [b"\x00\x01", b"\x01\x00", b"\x7f"]
    assert Blob.get_one(("o", memoryview(b"\x80"))).data == b"\x80\x80"
    # A binary index key.
    assert Blob.explain(Blob.data == b"\x80\x80").index == "by_data"
    assert [blob.digest for blob in Blob.get_many(
        Blob.data == b"\x80\x80")] == [b"\x80"]
    keys = [("o", digest) for digest in DIGESTS] + [("o", b"none")]
    assert [blob.digest for blob in Blob.get_many(keys)] == DIGESTS
    # A cursor carries a binary key across pages, on either path.
    page = Blob.get_page(Blob.owner == "o", limit=4)
    rest = Blob.get_page(Blob.owner == "o", limit=4, cursor=page.cursor)
    assert [blob.digest for blob in page + rest] == ordered
    assert rest.cursor is None
    assert Blob.update_one(("o", b"\xff"), Blob.data.set(b"")).data == b""
    assert Blob.delete_one(("o", b"\x00")).digest == b"\x00"
    assert Blob.count(Blob.owner == "o") == 5
    result = Blob.delete_many(Blob.owner == "o")
    assert sorted(blob.digest for blob in result.success) == ordered[1:]
    # Binary keys are held to DynamoDB's rules before anything is sent.
    for digest, message in ((b"", "must not be empty"),
                            (b"x" * 1025, "at most 1024")):
        with pytest.raises(ValidationError, match=message):
            Blob.save_one({"owner": "o", "digest": digest})
    with pytest.raises(ValidationError, match="must be bytes, not str"):
        Blob.save_one({"owner": "o", "digest": "text"})
    assert raw_items(Blob) == []


def test_sets_round_trip_and_an_empty_set_is_not_stored(tagged):
    saved = Tagged.save_one({
        "id": "a", "tags": ["x", "y"], "scores": (3, 1),
        "weights": frozenset({0.5, 2.0}), "emails": {"a@b.io"},
        "digests": [b"\x00", bytearray(b"\xff")], "history": [],
        "extra": {"flags": set(), "note": "n"}})
    loaded = Tagged.get_one("a")
    assert loaded == saved
    assert loaded.tags == {"x", "y"} and loaded.scores == {1, 3}
    assert loaded.weights == {0.5, 2.0} and loaded.digests == {b"\x00",
                                                               b"\xff"}
    assert all(type(score) is int for score in loaded.scores)
    assert all(type(weight) is float for weight in loaded.weights)
    assert loaded.extra == {"note": "n"}
    [raw] = raw_items(Tagged)
    assert sorted(raw["tags"]["SS"]) == ["x", "y"]
    assert sorted(raw["scores"]["NS"]) == ["1", "3"]
    assert "flags" not in raw["extra"]["M"]
    # No empty set in DynamoDB: left out, and read back as absent.
    empty = Tagged.save_one({"id": "e", "tags": set(), "scores": []})
    assert empty.tags is None and empty.scores is None
    assert Tagged.get_one("e") == Tagged(id="e")
    assert [sorted(raw) for raw in raw_items(Tagged)
            if raw["id"] == {"S": "e"}] == [["id"]]
    with pytest.raises(ValidationError, match="tags"):
        Tagged.save_one({"id": "e", "tags": {"x", 3}})
    with pytest.raises(ValidationError, match=r"emails\['nope'\]"):
        Tagged.save_one({"id": "e", "emails": {"nope"}})
    with pytest.raises(ValidationError, match="more than once"):
        Tagged.save_one({"id": "e", "tags": ["x", "x"]})
    with pytest.raises(ValidationError, match="at least 0"):
        Tagged.save_one({"id": "e", "scores": {-1}})
    with pytest.raises(ValidationError, match="a set"):
        Tagged.save_one({"id": "e", "tags": "xy"})
    with pytest.raises(SchemaError, match="string, number or binary"):
        SetField(ListField(StringField))


def test_set_updates_add_and_discard_elements(tagged):
    Tagged.save_one({"id": "a", "tags": {"x"}, "scores": {1, 2}})
    updated = Tagged.update_one("a", [Tagged.tags.add({"y", "z"}),
                                      Tagged.scores.discard(1),
                                      Tagged.digests.add(b"\x01")])
    assert updated.tags == {"x", "y", "z"} and updated.scores == {2}
    assert updated.digests == {b"\x01"}
    # Discarding the last element removes the attribute.
    updated = Tagged.update_one("a", Tagged.scores.discard([2, 5]))
    assert updated.scores is None and "scores" not in raw_items(Tagged)[0]
    assert Tagged.update_one("a", Tagged.tags.set(set())).tags is None
    with pytest.raises(ValidationError, match="at least 0"):
        Tagged.scores.add({-4})
    with pytest.raises(ValidationError, match="at least one element"):
        Tagged.tags.add([])
    assert repr(Tagged.tags.add("q")) == \
        "<SetElementsUpdate ADD tags ['q']>"
    assert Tagged.get_one("a").digests == {b"\x01"}


def test_set_and_size_conditions(tagged):
    Tagged.save_many([
        {"id": "a", "name": "ann", "tags": {"x", "y"}, "history": ["1"],
         "digests": {b"\x00\x01"}, "extra": {"note": "one"}},
        {"id": "b", "name": "bartholomew", "tags": {"y"},
         "history": ["1", "2", "3"], "digests": {b"\x02"},
         "extra": {"note": "two", "flags": {"f"}}},
    ])

    def ids(condition):
        return sorted(item.id for item in Tagged.get_many(condition))

    assert ids(Tagged.tags.contains("x")) == ["a"]
    assert ids(Tagged.tags.contains("y")) == ["a", "b"]
    assert ids(Tagged.digests.contains(b"\x02")) == ["b"]
    assert ids(Tagged.name.size() > 3) == ["b"]
    assert ids(Tagged.tags.size() == 1) == ["b"]
    assert ids(Tagged.history.size() >= 2) == ["b"]
    assert ids(Tagged.extra.size() == 2) == ["b"]
    assert ids((Tagged.name.size() <= 3) & (Tagged.tags.size() != 1)) \
        == ["a"]
    assert Tagged.update_one((Tagged.id == "a") & (Tagged.tags.size() > 5),
                             Tagged.name.set("no")) is None
    assert Tagged.delete_one((Tagged.id == "b") & (Tagged.id.size() == 1)) \
        .name == "bartholomew"
    assert ids(Tagged.tags == set()) == []  # no set at all
    Tagged.save_one({"id": "c"})
    assert ids(Tagged.tags == set()) == ["c"]
    with pytest.raises(ExpressionError, match=r"size\(name\) > takes an int"):
        Tagged.name.size() > "3"
    with pytest.raises(ExpressionError, match="compares numbers"):
        Tagged.tags > {"x"}


def test_size_of_a_missing_attribute_is_no_match(tagged):
    skip_on_gap("size of a missing attribute")
    Tagged.save_many([{"id": "a", "name": "ann"}, {"id": "b"}])
    assert [item.id for item in Tagged.get_many(Tagged.name.size() < 9)] \
        == ["a"]
    assert [item.id for item in Tagged.get_many(
        ~(Tagged.name.size() < 9))] == ["b"]


# -- TTL ---------------------------------------------------------------------

# Items that expire, several per hash key.
class Session(Model):
    __table__ = "sessions"
    __hash_key__ = "user"
    __range_key__ = "id"
    __billing_mode__ = "PAY_PER_REQUEST"
    user = StringField(required=True)
    id = IntField(required=True)
    expires = TTLField()
    note = StringField()


NOW = 1_800_000_000  # the tests' clock (2027-01-15)


@pytest.fixture
def clock(monkeypatch):
    """dynamongo's clock, which a test moves on: ``clock[0]``, in epoch
    seconds."""
    now = [NOW]
    monkeypatch.setattr(dynamongo, "_clock", lambda: now[0])
    return now


@pytest.fixture
def sessions():
    try:
        Session.create_table()
    except DynamoDBError as exc:
        # The table is made; a server without TTL refuses turning it on.
        if "ttl" not in GAPS.get(BACKEND, {}) or \
                exc.operation != "UpdateTimeToLive":
            raise
    return Session


def utc(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def test_ttl_field_takes_datetimes_timedeltas_and_epoch_seconds(clock):
    field = Session.expires
    assert field.validate(datetime.datetime(2030, 1, 1, 12, 0, 0, 999,
                                            tzinfo=EAT)) == \
        datetime.datetime(2030, 1, 1, 9, tzinfo=datetime.timezone.utc)
    assert field.validate(datetime.datetime(2030, 1, 1)) == \
        datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    assert field.validate(datetime.timedelta(hours=1)) == utc(NOW + 3600)
    assert field.validate(1_900_000_000) == utc(1_900_000_000)
    assert field._dump(utc(NOW)) == {"N": str(NOW)}
    assert field._load({"N": "1.8E+9"}) == utc(NOW)
    for wrong in ("tomorrow", 1.5, True, datetime.date(2030, 1, 1),
                  10 ** 20):
        with pytest.raises(ValidationError, match=(
                r"must be a datetime, a timedelta or an int \(epoch "
                r"seconds\)|is not a time in epoch seconds")):
            field.validate(wrong)
    with pytest.raises(SchemaError, match="2 TTLFields"):
        class Twice(Model):
            __table__ = "twice"
            __hash_key__ = "id"
            id = StringField()
            ends = TTLField()
            stops = TTLField()
    with pytest.raises(SchemaError, match="top level"):
        DictField(ends=TTLField())


def test_expired_items_are_left_out_of_every_read(sessions, clock):
    # ann's items 1 to 4 expire a minute apart; item 0 never does.
    Session.save_many(
        [{"user": "ann", "id": number, "note": f"n{number}",
          "expires": datetime.timedelta(minutes=number) if number else None}
         for number in range(5)]
        + [{"user": "bob", "id": 1, "note": "b", "expires": NOW + 60}])
    assert Session.count() == 6
    clock[0] = NOW + 150  # 1, 2 and bob's have expired since

    def ids(found):
        return [(session.user, session.id) for session in found]

    live = [("ann", 0), ("ann", 3), ("ann", 4)]
    with pytest.raises(Session.DoesNotExist, match="has expired"):
        Session.get_one(("ann", 1))
    with pytest.raises(Session.DoesNotExist, match="has expired"):
        Session.get_one(("ann", 2), fields=["note"])
    assert Session.get_one(("ann", 1), include_expired=True).expires == \
        utc(NOW + 60)
    assert Session.get_one(("ann", 3)).expires == utc(NOW + 180)
    assert ids(Session.get_many(Session.user == "ann")) == live
    assert ids(Session.get_many(Session.note.exists())) == sorted(live)
    assert len(Session.get_many(Session.note.exists(),
                                include_expired=True)) == 6
    keys = [("bob", 1)] + [("ann", number) for number in range(5)]
    assert ids(Session.get_many(keys)) == live
    assert ids(Session.get_many(keys, limit=2)) == live[:2]
    assert ids(Session.get_many(keys, fields=["note"])) == live
    assert ids(Session.iter_many(Session.user == "ann", limit=2)) == live[:2]
    assert ids(Session.iter_many(keys, include_expired=True)) == keys
    page = Session.get_page(Session.user == "ann", limit=2)
    rest = Session.get_page(Session.user == "ann", limit=2,
                            cursor=page.cursor)
    assert ids(page) == live[:2] and ids(rest) == live[2:]
    assert Session.count(Session.user == "ann") == 3
    assert Session.count(keys) == 3
    assert Session.count() == 3
    assert Session.count(include_expired=True) == 6
    assert "expired items (expires passed) left out" in str(
        Session.explain(Session.user == "ann"))
    # An item whose TTL is reached during the reads goes too.
    clock[0] = NOW + 181
    assert ids(Session.get_many(Session.user == "ann")) == live[::2]
    # Deleting by condition reaches expired items as well.
    assert Session.delete_many(Session.user == "ann").success_count == 5


def test_manual_ttl_example(clock):
    class Session(Model):
        __table__ = "sessions"
        __hash_key__ = "token"
        token = StringField(required=True)
        expires = TTLField()

    try:
        Session.create_table()
    except DynamoDBError:
        if "ttl" not in GAPS.get(BACKEND, {}):
            raise
    Session.save_one({"token": "t1", "expires": datetime.timedelta(hours=1)})
    assert Session.get_one("t1").expires == utc(NOW + 3600)
    clock[0] = NOW + 3601
    with pytest.raises(Session.DoesNotExist, match="has expired"):
        Session.get_one("t1")


def test_create_table_and_sync_table_turn_ttl_on(sessions):
    skip_on_gap("ttl")
    client = Connection.client()
    name = Session.table_name()
    described = client.describe_time_to_live(TableName=name)[
        "TimeToLiveDescription"]
    assert described["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
    assert described["AttributeName"] == "expires"
    assert Session.sync_table(dry_run=True) == []
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
        "Enabled": False, "AttributeName": "expires"})
    assert Session.sync_table(dry_run=True) == ["turn TTL on for 'expires'"]
    assert Session.sync_table() == ["turn TTL on for 'expires'"]
    assert client.describe_time_to_live(TableName=name)[
        "TimeToLiveDescription"]["TimeToLiveStatus"] in ("ENABLED",
                                                         "ENABLING")
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
        "Enabled": False, "AttributeName": "expires"})
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": "note"})
    with pytest.raises(SchemaError, match="one TTL attribute"):
        Session.sync_table()


# -- Stored attribute names (attr_name) --------------------------------------

# A table other clients made: names Python cannot use, or Model uses.
class Legacy(Model):
    __table__ = "legacy"
    __hash_key__ = "user_id"
    __range_key__ = "seq"
    __indexes__ = (
        GlobalIndex("by_first", hash_key="first_name", range_key="count_",
                    projection=["home"]),
        LocalIndex("by_count", range_key="count_"))

    user_id = StringField(required=True, attr_name="user-id")
    seq = IntField(required=True, attr_name="#seq")
    first_name = StringField(attr_name="first-name")
    count_ = IntField(attr_name="count")
    home = DictField(attr_name="home.address", city=StringField())
    tags = ListField(StringField, attr_name="tags:")
    version = dynamongo.VersionField(attr_name="v")
    note = StringField()


def legacy(user, seq, **values):
    return dict({"user_id": user, "seq": seq}, **values)


@pytest.fixture
def legacies():
    Legacy.create_table()
    Legacy.save_many([
        legacy("u1", 1, first_name="Ann", count_=3, home={"city": "Nairobi"},
               tags=["a"]),
        legacy("u1", 2, first_name="Bob", count_=1, note="x"),
        legacy("u1", 3, first_name="Ann", count_=7),
        legacy("u2", 1, first_name="Cy", count_=2),
    ])
    return Legacy


def stored(model, **key):
    """The item of ``key`` (stored names) as DynamoDB holds it."""
    return Connection.client().get_item(
        TableName=model.table_name(), Key=key, ConsistentRead=True)["Item"]


def test_attr_name_stores_fields_under_their_attribute_names(legacies):
    assert stored(Legacy, **{"user-id": {"S": "u1"}, "#seq": {"N": "1"}}) \
        == {"user-id": {"S": "u1"}, "#seq": {"N": "1"},
            "first-name": {"S": "Ann"}, "count": {"N": "3"},
            "home.address": {"M": {"city": {"S": "Nairobi"}}},
            "tags:": {"L": [{"S": "a"}]}, "v": {"N": "1"}}
    one = Legacy.get_one(("u1", 1))
    assert (one.first_name, one.count_, one.home, one.tags, one.version) \
        == ("Ann", 3, {"city": "Nairobi"}, ["a"], 1)
    assert one.to_dict() == {
        "user_id": "u1", "seq": 1, "first_name": "Ann", "count_": 3,
        "home": {"city": "Nairobi"}, "tags": ["a"], "version": 1}
    assert Legacy.count() == 4  # (Model's own count is still there)
    # The table and its indexes are keyed by the stored names.
    table = Connection.client().describe_table(
        TableName=Legacy.table_name())["Table"]
    assert sorted(key["AttributeName"] for key in table["KeySchema"]) == [
        "#seq", "user-id"]
    index, = table["GlobalSecondaryIndexes"]
    assert [key["AttributeName"] for key in index["KeySchema"]] == [
        "first-name", "count"]
    assert index["Projection"]["NonKeyAttributes"] == ["home.address"]
    assert Legacy.sync_table(dry_run=True) == []


def test_attr_name_reads_writes_and_pages_by_the_stored_names(legacies):
    assert [item.seq for item in Legacy.get_many(
        (Legacy.user_id == "u1") & (Legacy.count_ > 2))] == [1, 3]
    plan = Legacy.explain((Legacy.user_id == "u1") & (Legacy.seq >= 2))
    assert plan.operation == "Query" and "#seq >= 2" in plan.key_condition
    by_first = Legacy.get_many(Legacy.first_name == "Ann", index="by_first")
    assert [(item.seq, item.count_) for item in by_first] == [(1, 3), (3, 7)]
    assert by_first[0].home == {"city": "Nairobi"}
    with pytest.raises(FieldNotLoaded, match="note"):
        by_first[0].note
    assert [item.note for item in Legacy.get_many(
        Legacy.home.city == "Nairobi")] == [None]
    partial = Legacy.get_one(("u1", 2), fields=[Legacy.count_, "note"])
    assert (partial.count_, partial.note) == (1, "x")
    with pytest.raises(FieldNotLoaded, match="first_name"):
        partial.first_name
    # Pages and their cursors.
    first = Legacy.get_page(Legacy.user_id == "u1", 2)
    rest = Legacy.get_page(Legacy.user_id == "u1", 2, cursor=first.cursor)
    assert [item.seq for item in first + rest] == [1, 2, 3]
    assert rest.cursor is None
    scan = Legacy.get_page(Legacy.count_ >= 1, 3, fields=["count_"])
    after = Legacy.get_page(Legacy.count_ >= 1, 3, cursor=scan.cursor,
                            fields=["count_"])
    assert sorted(item.count_ for item in scan + after) == [1, 2, 3, 7]
    # Updates, with their conditions and the version.
    updated = Legacy.update_one(
        (Legacy.user_id == "u1") & (Legacy.seq == 1) & (Legacy.count_ == 3),
        [Legacy.count_.add(1), Legacy.home.city.set("Mombasa"),
         Legacy.tags.append("b"), Legacy.first_name.remove()])
    assert (updated.count_, updated.home, updated.tags, updated.first_name,
            updated.version) == (4, {"city": "Mombasa"}, ["a", "b"], None, 2)
    assert Legacy.update_from_dict(legacy("u2", 1, count_=9)).count_ == 9
    item = stored(Legacy, **{"user-id": {"S": "u2"}, "#seq": {"N": "1"}})
    assert item["count"] == {"N": "9"} and item["v"] == {"N": "2"}
    with pytest.raises(dynamongo.VersionConflict, match="was to be at "
                                                        "version 1"):
        Legacy.save_one(dict(legacy("u2", 1), version=1))
    # Deletes: by key, by condition (keys found through the index).
    assert Legacy.delete_one((Legacy.user_id == "u1") & (Legacy.seq == 2)
                             & (Legacy.count_ == 5)) is None
    assert Legacy.delete_one(("u1", 2)).note == "x"
    deleted = Legacy.delete_many(Legacy.first_name == "Ann")
    assert [(item.user_id, item.seq) for item in deleted.success] == [
        ("u1", 3)]
    assert Legacy.delete_many([("u2", 1)]).success_count == 1
    assert [(item.user_id, item.seq) for item in Legacy.get_many(
        Legacy.count_ >= 0)] == [("u1", 1)]


def test_attr_name_in_batches_transactions_and_stream_images(legacies):
    result = Legacy.save_many([legacy("u3", n, count_=n) for n in range(30)],
                              overwrite=False)
    assert result.success_count == 30
    found = Legacy.get_many([("u3", n) for n in (5, 0, 29)])
    assert [item.count_ for item in found] == [5, 0, 29]
    assert Legacy.from_image({"user-id": {"S": "u9"}, "#seq": {"N": "4"},
                              "count": {"N": "2"}}).count_ == 2
    skip_on_gap("transactions")
    with dynamongo.transaction() as transaction:
        transaction.save_one(Legacy, legacy("u4", 1, count_=1))
        transaction.update_one(Legacy, ("u3", 5), Legacy.count_.add(10))
    assert Legacy.get_one(("u4", 1)).count_ == 1
    assert dynamongo.transact_get([(Legacy, ("u3", 5))])[0].count_ == 15


def test_attr_name_of_a_ttl_field(clock):
    skip_on_gap("ttl")

    class Expiring(Model):
        __table__ = "expiring"
        __hash_key__ = "id"
        id = StringField(required=True)
        expires = TTLField(attr_name="expires-at")

    Expiring.create_table()
    described = Connection.client().describe_time_to_live(
        TableName=Expiring.table_name())["TimeToLiveDescription"]
    assert described["AttributeName"] == "expires-at"
    assert Expiring.sync_table(dry_run=True) == []
    Expiring.save_one({"id": "gone", "expires": utc(NOW - 10)})
    Expiring.save_one({"id": "kept", "expires": utc(NOW + 10)})
    assert [item.id for item in Expiring.get_many(Expiring.id.in_(
        ["gone", "kept"]))] == ["kept"]
    with pytest.raises(Expiring.DoesNotExist, match="expires has passed"):
        Expiring.get_one("gone")


def test_attr_name_of_a_hash_key_alone():
    class Tag(Model):
        __table__ = "tags"
        __hash_key__ = "name"
        name = StringField(required=True, attr_name="tag-name")
        uses = IntField(attr_name="count")

    Tag.create_table()
    Tag.save_many([{"name": f"t{n}", "uses": n} for n in range(5)])
    assert Tag.explain(Tag.name.in_(["t1", "t3"])).operation == \
        "BatchGetItem"
    assert [tag.uses for tag in Tag.get_many(Tag.name.in_(
        ["t3", "t1", "t9"]))] == [3, 1]
    assert Tag.count(Tag.name.in_(["t3", "t9"])) == 1
    assert Tag.delete_many(Tag.name.in_(["t0", "t4"])).success_count == 2
    assert sorted(item["tag-name"]["S"] for item in raw_items(Tag)) == [
        "t1", "t2", "t3"]


def test_attr_name_mistakes_are_schema_errors():
    with pytest.raises(SchemaError, match=r"Twice.a and Twice.b are both "
                                          r"stored as 'x'"):
        class Twice(Model):
            __table__ = "twice"
            __hash_key__ = "a"
            a = StringField(attr_name="x")
            b = StringField(attr_name="x")
    with pytest.raises(SchemaError, match=r"Clash.a and Clash.b are both "
                                          r"stored as 'b'"):
        class Clash(Model):
            __table__ = "clash"
            __hash_key__ = "a"
            a = StringField(attr_name="b")
            b = StringField()
    for name in ("", 5, None.__class__):
        with pytest.raises(SchemaError, match="attr_name must be a "
                                              "non-empty string"):
            StringField(attr_name=name)
    with pytest.raises(SchemaError, match="sub-field 'city' cannot take "
                                          "attr_name"):
        DictField(city=StringField(attr_name="town"))


# -- Single-table design: key templates and entities ------------------------

# The README's shop: customers and their orders in one table.
class Customer(Model):
    __table__ = "shop"
    __hash_key__ = "pk"
    __range_key__ = "sk"
    __entity__ = "customer"
    pk = KeyTemplate("CUSTOMER#{customer_id}")
    sk = KeyTemplate("PROFILE")
    customer_id = StringField(required=True)
    name = StringField()


class ShopOrder(Model):
    __table__ = "shop"
    __hash_key__ = "pk"
    __range_key__ = "sk"
    __entity__ = "order"
    __indexes__ = (GlobalIndex("gsi1", hash_key="gsi1pk",
                               range_key="gsi1sk"),)
    pk = KeyTemplate("CUSTOMER#{customer_id}")
    sk = KeyTemplate("ORDER#{placed_at}#{order_id}")
    gsi1pk = KeyTemplate("STATUS#{status}")
    gsi1sk = KeyTemplate("{placed_at}")
    customer_id = StringField(required=True)
    order_id = StringField(required=True)
    placed_at = DateTimeField(required=True)
    status = StringField()
    lines = IntField()
    note = StringField()


def placed(day):
    return datetime.datetime(2024, 5, day, 12, 0, tzinfo=UTC)


@pytest.fixture
def shop():
    ShopOrder.create_table()
    Customer.save_one({"customer_id": "c1", "name": "Ann"})
    ShopOrder.save_many([
        {"customer_id": "c1", "order_id": "o1", "placed_at": placed(1),
         "status": "shipped", "lines": 2},
        {"customer_id": "c1", "order_id": "o2", "placed_at": placed(3),
         "status": "open"},
        {"customer_id": "c2", "order_id": "o3", "placed_at": placed(2)}])
    return ShopOrder


def shop_item(pk, sk):
    return stored(ShopOrder, pk={"S": pk}, sk={"S": sk})


def test_key_templates_are_written_on_every_save(shop):
    assert shop_item("CUSTOMER#c1", "PROFILE") == {
        "pk": {"S": "CUSTOMER#c1"}, "sk": {"S": "PROFILE"},
        "customer_id": {"S": "c1"}, "name": {"S": "Ann"},
        "_type": {"S": "customer"}}
    first = "ORDER#2024-05-01T12:00:00.000000+00:00#o1"
    assert shop_item("CUSTOMER#c1", first) == {
        "pk": {"S": "CUSTOMER#c1"},
        "sk": {"S": first},
        "gsi1pk": {"S": "STATUS#shipped"},
        "gsi1sk": {"S": "2024-05-01T12:00:00.000000+00:00"},
        "customer_id": {"S": "c1"}, "order_id": {"S": "o1"},
        "placed_at": {"S": "2024-05-01T12:00:00.000000+00:00"},
        "status": {"S": "shipped"}, "lines": {"N": "2"},
        "_type": {"S": "order"}}
    # No status: no gsi1pk (the item stays out of the index).
    third = shop_item("CUSTOMER#c2",
                      "ORDER#2024-05-02T12:00:00.000000+00:00#o3")
    assert "gsi1pk" not in third and third["gsi1sk"] == {
        "S": "2024-05-02T12:00:00.000000+00:00"}
    # Readable on instances, by key values or by their fields.
    order = ShopOrder.get_one({"customer_id": "c1", "order_id": "o1",
                               "placed_at": placed(1)})
    assert (order.pk, order.sk, order.gsi1pk) == (
        "CUSTOMER#c1", "ORDER#2024-05-01T12:00:00.000000+00:00#o1",
        "STATUS#shipped")
    assert ShopOrder.get_one((order.pk, order.sk)).lines == 2
    # Conditional puts and transactions write them too.
    ShopOrder.save_many([{"customer_id": "c3", "order_id": "o4",
                          "placed_at": placed(4), "status": "open"}],
                        overwrite=False)
    assert shop_item("CUSTOMER#c3",
                     "ORDER#2024-05-04T12:00:00.000000+00:00#o4")[
        "gsi1pk"] == {"S": "STATUS#open"}
    # An instance's templates are made again from its fields.
    order.status = "returned"
    assert ShopOrder.save_one(order).gsi1pk == "STATUS#returned"
    skip_on_gap("transactions")
    with dynamongo.transaction() as transaction:
        transaction.save_one(Customer, {"customer_id": "c9"})
    assert shop_item("CUSTOMER#c9", "PROFILE")["_type"] == {
        "S": "customer"}


def test_each_entity_reads_its_own_items(shop):
    assert [order.order_id for order in ShopOrder.get_many(
        ShopOrder.pk == "CUSTOMER#c1")] == ["o1", "o2"]
    assert [customer.name for customer in Customer.get_many(
        Customer.pk == "CUSTOMER#c1")] == ["Ann"]
    assert ShopOrder.count(ShopOrder.pk == "CUSTOMER#c1") == 2
    assert Customer.count() == 1 and ShopOrder.count() == 3
    assert sorted(order.order_id for order in ShopOrder.iter_many(
        ShopOrder.lines.not_exists())) == ["o2", "o3"]
    page = ShopOrder.get_page(ShopOrder.pk == "CUSTOMER#c1", 1)
    assert [order.order_id for order in page] == ["o1"]
    assert [order.order_id for order in ShopOrder.get_page(
        ShopOrder.pk == "CUSTOMER#c1", 1, cursor=page.cursor)] == ["o2"]
    assert "items of other entities than 'order' left out" in str(
        ShopOrder.explain(ShopOrder.pk == "CUSTOMER#c1"))
    # Keys: another entity's item is not found.
    profile = ("CUSTOMER#c1", "PROFILE")
    second = ("CUSTOMER#c1", "ORDER#2024-05-03T12:00:00.000000+00:00#o2")
    assert ShopOrder.get_many([profile, second])[0].order_id == "o2"
    with pytest.raises(ShopOrder.DoesNotExist, match=r"the item there is a "
                                                     r"'customer'"):
        ShopOrder.get_one(profile)
    assert Customer.get_one(profile, fields=["name"]).name == "Ann"
    # Deleting what a condition finds deletes only the entity's items.
    assert ShopOrder.delete_many(ShopOrder.pk == "CUSTOMER#c1"
                                 ).success_count == 2
    assert Customer.get_one(profile).name == "Ann"


def test_reads_by_the_fields_of_key_templates(shop, calls):
    def orders(condition, **options):
        return [order.order_id for order in ShopOrder.get_many(
            condition, **options)]

    by_customer = ShopOrder.customer_id == "c1"
    plan = ShopOrder.explain(by_customer)
    assert (plan.operation, plan.index, plan.key_condition) == (
        "Query", None, "(pk = 'CUSTOMER#c1') AND (begins_with(sk, 'ORDER#'))")
    assert orders(by_customer) == ["o1", "o2"]
    assert orders(by_customer, descending=True) == ["o2", "o1"]
    # A range on the next field, within the entity's prefix.
    since = by_customer & (ShopOrder.placed_at >= placed(2))
    assert ShopOrder.explain(since).key_condition == (
        "(pk = 'CUSTOMER#c1') AND (sk BETWEEN "
        "'ORDER#2024-05-02T12:00:00.000000+00:00' AND 'ORDER#\\U0010ffff')")
    assert orders(since) == ["o2"]
    assert orders(by_customer & (ShopOrder.placed_at < placed(3))) == ["o1"]
    assert orders(by_customer & ShopOrder.placed_at.between(
        placed(1), placed(3))) == ["o1", "o2"]
    # Every field of the key: one GetItem, by get_one.
    calls.clear()
    one = ShopOrder.get_one(by_customer & (ShopOrder.placed_at == placed(3))
                            & (ShopOrder.order_id == "o2"))
    assert one.status == "open" and operations(calls) == ["GetItem"]
    assert Customer.get_one(Customer.customer_id == "c1").name == "Ann"
    assert [customer.name for customer in Customer.get_many(
        Customer.customer_id == "c1")] == ["Ann"]
    # An index's templates: status == ... queries gsi1.
    shipped = ShopOrder.explain(ShopOrder.status == "shipped")
    assert (shipped.index, shipped.key_condition) == (
        "gsi1", "gsi1pk = 'STATUS#shipped'")
    assert orders(ShopOrder.status == "shipped") == ["o1"]
    # The other reads go the same way.
    assert ShopOrder.count(by_customer) == 2
    assert [order.order_id for order in ShopOrder.iter_many(by_customer)] \
        == ["o1", "o2"]
    page = ShopOrder.get_page(by_customer, 1)
    assert [order.order_id for order in ShopOrder.get_page(
        by_customer, 1, cursor=page.cursor)] == ["o2"]
    calls.clear()
    assert ShopOrder.delete_many(since).success_count == 1
    assert operations(calls)[0] == "Query"
    assert orders(by_customer) == ["o1"]


def test_a_key_condition_alone_selects_an_entitys_items(shop, monkeypatch):
    answers, send = [], dynamongo._send

    def whole(operation, params):  # (answers read whole, counts and all)
        answer = send(operation, dict(params))
        if operation == "Query":
            answers.append(answer)
        return answer

    replace_send(monkeypatch, whole)
    assert len(ShopOrder.get_many(ShopOrder.customer_id == "c1")) == 2
    assert len(Customer.get_many(Customer.customer_id == "c1")) == 1
    assert len(ShopOrder.get_many(ShopOrder.status == "shipped")) == 1
    assert len(dynamongo.get_collection(Customer, ShopOrder,
                                        customer_id="c1")[ShopOrder]) == 2
    # The entity's filter left out nothing the key condition selected.
    assert len(answers) == 4
    assert [answer["Count"] for answer in answers] == [2, 1, 1, 3]
    assert all(answer["Count"] == answer["ScannedCount"]
               for answer in answers)


def test_key_templates_of_numbers_read_in_value_order():
    class Reading(Model):
        __table__ = "templated-readings"
        __hash_key__ = "pk"
        __range_key__ = "sk"
        __billing_mode__ = "PAY_PER_REQUEST"
        pk = KeyTemplate("SENSOR#{sensor}")
        sk = KeyTemplate("N#{n}")  # no padding: "10" < "9" as text
        padded = KeyTemplate("P#{n:04d}")
        sensor = StringField(required=True)
        n = IntField(required=True)

    Reading.create_table()
    Reading.save_many([{"sensor": "s", "n": n} for n in range(1, 13)])
    at_least_9 = (Reading.sensor == "s") & (Reading.n >= 9)
    assert Reading.explain(at_least_9).key_condition == \
        "(pk = 'SENSOR#s') AND (begins_with(sk, 'N#'))"
    assert sorted(reading.n for reading in Reading.get_many(at_least_9)) \
        == [9, 10, 11, 12]
    assert Reading.count((Reading.sensor == "s") & Reading.n.between(
        2, 10)) == 9


def test_updates_rewrite_the_index_templates_of_their_fields(shop, calls):
    key = (ShopOrder.customer_id == "c1") & (
        ShopOrder.placed_at == placed(1)) & (ShopOrder.order_id == "o1")
    sk = "ORDER#2024-05-01T12:00:00.000000+00:00#o1"
    calls.clear()
    assert ShopOrder.update_one(key, ShopOrder.status.set("returned")
                                ).gsi1pk == "STATUS#returned"
    assert operations(calls) == ["UpdateItem"]
    assert shop_item("CUSTOMER#c1", sk)["gsi1pk"] == {"S": "STATUS#returned"}
    assert [order.order_id for order in ShopOrder.get_many(
        ShopOrder.status == "returned")] == ["o1"]
    # None removes the index attribute: out of the index.
    ShopOrder.update_one(key, ShopOrder.status.remove())
    assert "gsi1pk" not in shop_item("CUSTOMER#c1", sk)
    assert ShopOrder.update_from_dict({
        "customer_id": "c1", "placed_at": placed(1), "order_id": "o1",
        "status": "open", "lines": 5}).gsi1pk == "STATUS#open"
    assert shop_item("CUSTOMER#c1", sk)["gsi1pk"] == {"S": "STATUS#open"}
    # What no single UpdateItem can do.
    calls.clear()
    for updates, message in (
            (ShopOrder.customer_id.set("c2"), "customer_id makes the key "
                                              "pk ('CUSTOMER#{customer_id}')"),
            (ShopOrder.gsi1pk.set("STATUS#x"), "gsi1pk is made from its "
                                               "KeyTemplate"),
            (ShopOrder.placed_at.set(placed(5)), "placed_at makes the key "
                                                 "sk")):
        with pytest.raises(ExpressionError, match=re.escape(message)):
            ShopOrder.update_one(key, updates)
    assert calls == []

    class Pair(Model):
        __table__ = "pairs"
        __hash_key__ = "id"
        __indexes__ = (GlobalIndex("by_ab", hash_key="ab"),)
        id = StringField(required=True)
        ab = KeyTemplate("{a}#{b}")
        a = StringField()
        b = StringField()

    with pytest.raises(ExpressionError, match=re.escape(
            "an update of a rewrites ab ('{a}#{b}'), so it must set every "
            "field it names: b too")):
        Pair.update_one("p1", Pair.a.set("x"))
    assert calls == []
    Pair.create_table()
    Pair.save_one({"id": "p1", "a": "x", "b": "y"})
    assert Pair.update_one("p1", [Pair.a.set("z"), Pair.b.set("w")]).ab \
        == "z#w"
    assert Pair.get_one("p1").ab == "z#w"


def test_a_collection_is_one_query_of_a_partition(shop, calls):
    ShopOrder.save_many([{"customer_id": "c1", "order_id": f"p{n:02d}",
                          "placed_at": placed(10 + n)} for n in range(12)])
    calls.clear()
    found = dynamongo.get_collection(Customer, ShopOrder, customer_id="c1")
    assert operations(calls) == ["Query"]
    assert calls[0][1]["KeyConditionExpression"] == "#n0 = :v0"
    assert calls[0][1]["ExpressionAttributeValues"] == {
        ":v0": {"S": "CUSTOMER#c1"}}
    assert [customer.name for customer in found[Customer]] == ["Ann"]
    assert [order.order_id for order in found[ShopOrder]] == [
        "o1", "o2"] + [f"p{n:02d}" for n in range(12)]
    assert asyncio.run(dynamongo.aget_collection(
        ShopOrder, customer_id="c2"))[ShopOrder][0].order_id == "o3"
    assert dynamongo.get_collection(Customer, customer_id="c7") == {
        Customer: []}


def test_a_collection_is_read_to_its_last_page(shop, monkeypatch, calls):
    big = "x" * 300_000  # (a page holds 1 MB: four pages)
    Customer.save_one({"customer_id": "c5", "name": big})
    ShopOrder.save_many([{"customer_id": "c5", "order_id": f"q{n}",
                          "placed_at": placed(n + 1), "note": big}
                         for n in range(9)])
    calls.clear()
    found = dynamongo.get_collection(ShopOrder, Customer, customer_id="c5")
    assert len(found[ShopOrder]) == 9 and len(found[Customer]) == 1
    assert operations(calls) == ["Query"] * len(calls) and len(calls) > 1


def test_entities_sharing_a_table_share_its_keys_and_indexes():
    def entity(name, indexes=(), **fields):
        return type(name, (Model,), dict(
            __table__="mall", __hash_key__="pk", __range_key__="sk",
            __entity__=name.lower(), __indexes__=indexes,
            pk=KeyTemplate("CUSTOMER#{customer_id}"),
            customer_id=StringField(required=True), **fields))

    buyer = entity("Buyer", sk=KeyTemplate("PROFILE"))
    entity("Purchase", (GlobalIndex("gsi1", hash_key="gsi1pk"),),
           sk=KeyTemplate("P#{n}"), n=IntField(required=True),
           gsi1pk=KeyTemplate("S#{status}"), status=StringField())
    visit = entity("Visit", (GlobalIndex("gsi1", hash_key="gsi1pk"),
                             GlobalIndex("by_page", hash_key="page")),
                   sk=KeyTemplate("V#{n}"), n=IntField(required=True),
                   gsi1pk=KeyTemplate("P#{page}"), page=StringField())
    # Made by any of them, the table has every index they declare (gsi1,
    # declared alike twice, once).
    buyer.create_table()
    table = Connection.client().describe_table(
        TableName=buyer.table_name())["Table"]
    assert sorted(index["IndexName"] for index in table[
        "GlobalSecondaryIndexes"]) == ["by_page", "gsi1"]
    assert visit.sync_table(dry_run=True) == []
    visit.save_one({"customer_id": "c1", "n": 1, "page": "/"})
    assert [item.page for item in visit.get_many(visit.page == "/")] == [
        "/"]
    with pytest.raises(SchemaError, match=r"Stray and \w+ share the table "
                                          r"'mall' but not its key"):
        type("Stray", (Model,), dict(
            __table__="mall", __hash_key__="id", __entity__="stray",
            id=StringField(required=True)))
    clashing = entity("Clashing", (GlobalIndex("gsi1", hash_key="other"),),
                      sk=StringField(required=True), other=StringField())
    with pytest.raises(SchemaError, match=r"declare the index 'gsi1' of "
                                          r"their table differently"):
        clashing.create_table()


def test_three_entities_of_one_table_each_see_their_own():
    def animal(kind):
        return type(kind, (Model,), dict(
            __table__="zoo", __hash_key__="pk", __range_key__="sk",
            __billing_mode__="PAY_PER_REQUEST", __entity__=kind.lower(),
            pk=KeyTemplate("OWNER#{owner}"),
            sk=KeyTemplate(kind.upper() + "#{n:05d}"),
            owner=StringField(required=True), n=IntField(required=True),
            weight=IntField()))

    kinds = [animal(kind) for kind in ("Cat", "Dog", "Bird")]
    kinds[0].create_table()
    stored = {kind: [] for kind in kinds}
    for number in range(2000):
        kind = kinds[number % 3]
        stored[kind].append({"owner": f"o{number % 5}", "n": number,
                             "weight": number % 17})
    for kind, items in stored.items():
        assert kind.save_many(items).success_count == len(items)
    for kind, items in stored.items():
        assert kind.count() == len(items)
        mine = [item["n"] for item in items if item["owner"] == "o1"]
        assert [found.n for found in kind.get_many(kind.owner == "o1")] \
            == sorted(mine)
        heavy = [item for item in items if item["weight"] > 12]
        assert kind.count(kind.weight > 12) == len(heavy)
        assert sorted(found.n for found in kind.iter_many(
            kind.weight > 12)) == sorted(item["n"] for item in heavy)
        after = (kind.owner == "o3") & (kind.n >= 1000)
        assert [found.n for found in kind.get_many(after)] == sorted(
            item["n"] for item in items
            if item["owner"] == "o3" and item["n"] >= 1000)
    cats, dogs, birds = kinds
    deleted = dogs.delete_many(dogs.owner == "o2")
    assert deleted.success_count == sum(
        item["owner"] == "o2" for item in stored[dogs])
    assert dogs.count(dogs.owner == "o2") == 0
    assert cats.count() == len(stored[cats]) and \
        birds.count(birds.owner == "o2") == sum(
            item["owner"] == "o2" for item in stored[birds])


def test_key_template_values_and_mistakes(shop, monkeypatch):
    sent = sent_requests(monkeypatch)
    with pytest.raises(ValidationError, match=r"order_id: is required; "
                                              r"placed_at: is required"):
        ShopOrder.save_one({"customer_id": "c1"})
    with pytest.raises(ValidationError, match=r"pk: is 'CUSTOMER#c1' by "
                                              r"its KeyTemplate"):
        ShopOrder.save_one({"customer_id": "c1", "order_id": "o9",
                            "placed_at": placed(9), "pk": "CUSTOMER#c2"})
    with pytest.raises(ValidationError, match=r"needs customer_id"):
        ShopOrder.get_one({"order_id": "o1", "placed_at": placed(1)})
    assert sent == []

    class Numbered(Model):
        __table__ = "numbered"
        __hash_key__ = "pk"
        pk = KeyTemplate("N#{n:08d}#{label}")
        n = IntField()
        label = StringField()

    with pytest.raises(ValidationError, match=r"pk: needs label \(KeyTemplate"
                                              r" 'N#{n:08d}#{label}'\)"):
        Numbered.save_one({"n": 42})
    with pytest.raises(ValidationError, match=r"Numbered: the key field "
                                              r"'pk': n: must be an integer"):
        Numbered.get_one({"n": "x", "label": "y"})

    class Ratio(Model):
        __table__ = "ratio"
        __hash_key__ = "pk"
        pk = KeyTemplate("R#{r:d}")
        r = FloatField()

    with pytest.raises(ValidationError, match=r"pk: {r:d} cannot format "
                                              r"1.5: Unknown format code"):
        Ratio.save_one({"r": 1.5})
    assert sent == []
    Numbered.create_table()
    assert Numbered.save_one({"n": 42, "label": "x"}).pk == "N#00000042#x"
    assert Numbered.get_one({"n": 42, "label": "x"}).n == 42
    for template, why in (("A#{nope}", "'nope', which is not a field"),
                          ("A#{pk2}", "'pk2', which is a KeyTemplate too"),
                          ("A#{flag}", "'flag', which is a BooleanField"),
                          ("A#{}", "names a field of the model"),
                          ("A#{n!r}", "names a field of the model"),
                          ("A#{n", "expected '}'")):
        with pytest.raises(SchemaError, match=re.escape(why)):
            type("Bad", (Model,), {
                "__table__": "bad", "__hash_key__": "pk",
                "pk": KeyTemplate(template), "pk2": KeyTemplate("x"),
                "n": IntField(), "flag": BooleanField()})
    with pytest.raises(SchemaError, match="stored as '_type', which holds "
                                          "the entity's name"):
        type("Typed", (Model,), {
            "__table__": "typed", "__hash_key__": "id", "__entity__": "t",
            "id": StringField(), "kind": StringField(attr_name="_type")})


# -- Stream records ----------------------------------------------------------

# A table with a stream, named as AWS's example event names its attributes.
class Feed(Model):
    __table__ = "feed"
    __hash_key__ = "Id"
    __billing_mode__ = "PAY_PER_REQUEST"
    __stream__ = "NEW_AND_OLD_IMAGES"
    Id = IntField(required=True)
    Message = StringField()
    Picture = BinaryField()
    Tags = SetField(StringField)


def stream_record(event, table, keys, old=None, new=None, ttl=False):
    """A record of a Lambda event from a DynamoDB stream, shaped as in
    AWS's documentation of such events."""
    data = {"ApproximateCreationDateTime": 1718047576.0, "Keys": keys,
            "SequenceNumber": "111", "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES"}
    if old is not None:
        data["OldImage"] = old
    if new is not None:
        data["NewImage"] = new
    record = {"eventID": "1", "eventVersion": "1.1", "dynamodb": data,
              "awsRegion": "us-east-2", "eventName": event,
              "eventSourceARN": (f"arn:aws:dynamodb:us-east-2:123456789012:"
                                 f"table/{table}/stream/"
                                 "2024-06-10T19:26:16.525"),
              "eventSource": "aws:dynamodb"}
    if ttl:
        record["userIdentity"] = {"type": "Service",
                                  "principalId": "dynamodb.amazonaws.com"}
    return record


def test_changes_reads_each_record_of_a_stream_event():
    table = Feed.table_name()  # the table prefix included
    key = {"Id": {"N": "101"}}
    first = {"Id": {"N": "101"}, "Message": {"S": "New item!"},
             "Picture": {"B": "AP8="}, "Tags": {"SS": ["a", "b"]}}
    second = {"Id": {"N": "101"}, "Message": {"S": "This item has changed"}}
    event = {"Records": [
        stream_record("INSERT", table, key, new=first),
        stream_record("MODIFY", table, key, old=first, new=second),
        stream_record("INSERT", "another-table", key, new=first),
        stream_record("REMOVE", table, key, old=second),
        stream_record("REMOVE", table, {"Id": {"N": "7"}},
                      old={"Id": {"N": "7"}}, ttl=True),
    ]}
    found = list(dynamongo.changes(json.loads(json.dumps(event)), Feed))
    assert [(change.event, change.model, change.keys, change.expired)
            for change in found] == [
        ("INSERT", Feed, Feed(Id=101), False),
        ("MODIFY", Feed, Feed(Id=101), False),
        ("REMOVE", Feed, Feed(Id=101), False),
        ("REMOVE", Feed, Feed(Id=7), True)]
    inserted = Feed(Id=101, Message="New item!", Picture=b"\x00\xff",
                    Tags={"a", "b"})
    changed = Feed(Id=101, Message="This item has changed")
    assert [(change.old, change.new) for change in found] == [
        (None, inserted), (inserted, changed), (changed, None),
        (Feed(Id=7), None)]
    assert Feed.from_image(first) == inserted
    assert list(dynamongo.changes({"Records": []}, Feed)) == []
    with pytest.raises(ValidationError, match="Records"):
        dynamongo.changes([], Feed)
    with pytest.raises(ValidationError, match="models"):
        dynamongo.changes(event, "Feed")
    with pytest.raises(ValidationError, match="DynamoDB-JSON image"):
        Feed.from_image({"Id": 101})


def test_changes_of_entities_sharing_a_table():
    table = ShopOrder.table_name()
    key = {"pk": {"S": "CUSTOMER#c1"}, "sk": {"S": "PROFILE"}}
    customer = dict(key, customer_id={"S": "c1"}, _type={"S": "customer"})
    order_key = {"pk": {"S": "CUSTOMER#c1"}, "sk": {"S": "ORDER#x#o1"}}
    order = dict(order_key, customer_id={"S": "c1"}, order_id={"S": "o1"},
                 placed_at={"S": "2024-05-01T12:00:00.000000+00:00"},
                 _type={"S": "order"})
    event = {"Records": [
        stream_record("INSERT", table, key, new=customer),
        stream_record("INSERT", table, order_key, new=order),
        stream_record("REMOVE", table, order_key, old=order),
        stream_record("REMOVE", table, key)]}  # (keys only: which entity?)
    found = list(dynamongo.changes(event, Customer, ShopOrder))
    assert [(change.event, change.model.__name__) for change in found] == [
        ("INSERT", "Customer"), ("INSERT", "ShopOrder"),
        ("REMOVE", "ShopOrder")]
    assert found[1].new.order_id == "o1" and found[0].new.customer_id == "c1"
    # One model of the table: records without an image are taken as its.
    assert [change.model for change in dynamongo.changes(
        event, ShopOrder)] == [ShopOrder] * 3


def test_transact_get_leaves_out_other_entities(shop):
    skip_on_gap("transactions")
    profile = ("CUSTOMER#c1", "PROFILE")
    assert dynamongo.transact_get([(ShopOrder, profile), (Customer, profile)
                                   ])[0] is None
    assert dynamongo.transact_get([(Customer, profile)])[0].name == "Ann"


def test_create_table_and_sync_table_turn_the_stream_on():
    skip_on_gap("streams")
    Feed.create_table()
    client = Connection.client()
    name = Feed.table_name()
    assert client.describe_table(TableName=name)["Table"][
        "StreamSpecification"] == {"StreamEnabled": True,
                                   "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert Feed.sync_table(dry_run=True) == []
    Feed.delete_table()
    plain = dict(dynamongo._SchemaManager(Feed._meta).definition(),
                 TableName=name)
    del plain["StreamSpecification"]
    client.create_table(**plain)
    assert Feed.sync_table() == ["turn the stream on (NEW_AND_OLD_IMAGES)"]
    assert client.describe_table(TableName=name)["Table"][
        "StreamSpecification"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
    with pytest.raises(SchemaError, match="__stream__"):
        class Wrong(Model):
            __table__ = "wrong"
            __hash_key__ = "id"
            __stream__ = "NEW"
            id = StringField()


# -- Retries -----------------------------------------------------------------

def test_unprocessed_items_are_resent_until_all_land(monkeypatch, no_sleep):
    Event.create_table()
    faults = Faults(monkeypatch, seed=1, unprocessed=0.3)
    items = events("ann", 2000)
    result = Event.save_many(items)
    assert result.success_count == 2000 and result.fail == []
    assert faults.injected["unprocessed"] > 600
    found = Event.get_many([(item["user"], item["seq"]) for item in items])
    assert [item.seq for item in found] == list(range(2000))
    result = Event.delete_many([(item["user"], item["seq"])
                                for item in items])
    assert result.success_count == 2000
    assert raw_items(Event) == []
    assert no_sleep and max(no_sleep) <= 5.0


def test_throttles_and_server_errors_are_retried(monkeypatch, no_sleep):
    Event.create_table()
    faults = Faults(monkeypatch, seed=2, unprocessed=0.2, throttle=0.2,
                    server_error=0.1)
    items = events("ann", 500)
    result = Event.save_many(items)
    assert result.success_count == 500, result.fail[:1]
    assert faults.injected["throttle"] > 0 and faults.injected["500"] > 0
    assert len(Event.get_many(Event.user == "ann")) == 500
    stored = {int(item["seq"]["N"]) for item in raw_items(Event)}
    assert stored == set(range(500))


def test_what_stays_unprocessed_is_reported(monkeypatch, no_sleep, calls):
    Event.create_table()
    Event.save_many(events("ann", 30))
    Connection.set_config(batch_attempts=3)
    Faults(monkeypatch, unprocessed=1.0)
    del calls[:], no_sleep[:]  # (waits for the table to be made)
    result = Event.save_many(events("bob", 30))
    assert result.success == [] and result.fail_count == 30
    assert [failure.item["seq"] for failure in result.fail] == list(range(30))
    assert all(isinstance(failure.error, UnprocessedError)
               for failure in result.fail)
    assert "3 attempts" in str(result.fail[0].error)
    assert operations(calls) == ["BatchWriteItem"] * 6  # 2 chunks x 3
    with pytest.raises(UnprocessedError, match="seq=7") as caught:
        Event.get_many([("ann", seq) for seq in range(30)])
    assert len(caught.value.keys) == 30
    assert len(no_sleep) == 2 * 2 + 2  # pauses between attempts only


def test_single_requests_retry_throttling_then_give_up(monkeypatch, users,
                                                       no_sleep):
    User.save_one(JOHN)
    attempts = []
    send = dynamongo._send

    def throttled(operation, params):
        attempts.append(operation)
        if len(attempts) <= 2:
            raise client_error("ThrottlingException", operation=operation)
        return send(operation, params)

    replace_send(monkeypatch, throttled)
    assert User.get_one(JOHN["email"]).name == "John Doe"
    assert attempts == ["GetItem"] * 3
    assert len(no_sleep) == 2
    Connection.set_config(max_attempts=4, backoff_base=0.1, backoff_cap=0.3)

    def always_throttled(operation, params):
        attempts.append(operation)
        raise client_error("ThrottlingException", operation=operation)

    replace_send(monkeypatch, always_throttled)
    del attempts[:], no_sleep[:]
    with pytest.raises(ThrottlingError, match="GetItem"):
        User.get_one(JOHN["email"])
    assert len(attempts) == 4
    assert len(no_sleep) == 3
    assert all(0 <= pause <= ceiling for pause, ceiling
               in zip(no_sleep, (0.1, 0.2, 0.3)))


def test_connection_errors_are_retried_and_client_errors_are_not(
        monkeypatch, users, no_sleep):
    from botocore.exceptions import EndpointConnectionError

    attempts, failures = [], [EndpointConnectionError(
        endpoint_url="http://127.0.0.1:9")]
    send = dynamongo._send

    def flaky(operation, params):
        attempts.append(operation)
        if failures:
            raise failures.pop()
        return send(operation, params)

    replace_send(monkeypatch, flaky)
    User.save_one(JOHN)
    assert attempts == ["PutItem", "PutItem"]
    del attempts[:]
    with pytest.raises(ConditionalCheckFailedException, match=(
            "ConditionalCheckFailed")):
        User.save_one(JOHN, overwrite=False)
    assert attempts == ["PutItem"]  # a refusal is not retried


# Optimistic locking by a version number.
class Doc(Model):
    __table__ = "docs"
    __hash_key__ = "id"

    id = IntField(required=True)
    version = IntField(required=True)
    body = StringField()
    hits = IntField()


def lose_answers(monkeypatch, operation, before=None):
    """The next ``operation`` request reaches the server and its answer is
    lost; ``before`` runs first (another client's write)."""
    from botocore.exceptions import ConnectionClosedError

    send, left = dynamongo._send, [1]

    def losing(name, params):
        if name == operation and left:
            left.pop()
            if before:
                before()
            send(name, params)
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1")
        return send(name, params)

    replace_send(monkeypatch, losing)


def test_an_update_applied_before_its_answer_was_lost(monkeypatch,
                                                      no_sleep):
    Doc.create_table()
    Doc.save_one({"id": 1, "version": 3, "body": "old", "hits": 0})
    lose_answers(monkeypatch, "UpdateItem")
    updated = Doc.update_one((Doc.id == 1) & (Doc.version == 3),
                             [Doc.version.set(4), Doc.body.set("new"),
                              Doc.hits.add(1)])
    assert updated == Doc(id=1, version=4, body="new", hits=1)
    assert Doc.get_one(1) == updated
    # The partial return values still hold what was set.
    lose_answers(monkeypatch, "UpdateItem")
    assert Doc.update_one((Doc.id == 1) & (Doc.version == 4),
                          [Doc.version.set(5), Doc.body.remove()],
                          return_values="UPDATED_NEW") == Doc(id=1, version=5)
    # A refusal with no lost answer is a refusal.
    assert Doc.update_one((Doc.id == 1) & (Doc.version == 3),
                          Doc.body.set("x")) is None


def test_an_update_refused_after_a_lost_answer_is_told_apart(monkeypatch,
                                                             no_sleep):
    Doc.create_table()
    Doc.save_one({"id": 1, "version": 3, "hits": 1})
    # Another client's write fails the condition: not ours.
    lose_answers(monkeypatch, "UpdateItem", before=lambda: Doc.save_one(
        {"id": 1, "version": 9, "hits": 1}))
    assert Doc.update_one((Doc.id == 1) & (Doc.version == 3),
                          Doc.version.set(4)) is None
    assert Doc.get_one(1).version == 9
    # An add alone cannot tell whether it was applied: raised, marked.
    lose_answers(monkeypatch, "UpdateItem")
    with pytest.raises(ConditionalCheckFailedException,
                       match="may have been applied") as caught:
        Doc.update_one((Doc.id == 1) & (Doc.hits == 1), Doc.hits.add(1))
    assert caught.value.maybe_applied
    assert Doc.get_one(1).hits == 2
    # Applied, but the old values went with the answer.
    lose_answers(monkeypatch, "UpdateItem")
    with pytest.raises(ConditionalCheckFailedException,
                       match="old values were lost"):
        Doc.update_one((Doc.id == 1) & (Doc.version == 9),
                       Doc.version.set(10), return_values="ALL_OLD")
    assert Doc.get_one(1).version == 10


# -- Faults: nothing lost ----------------------------------------------------

FAULT_RUNS = 20
ABSENT = "absent"


class Oracle:
    """What each key may hold, given what dynamongo reported: a success
    pins the state, a failure other than a refused condition leaves it
    open (the write may or may not have landed)."""

    def __init__(self):
        self.possible = collections.defaultdict(lambda: {ABSENT})

    @staticmethod
    def state(item):
        return ABSENT if item is None else repr(sorted(
            dynamongo._normal({"M": item}).items()))

    def wrote(self, key, item, done, refused=False):
        if done:
            self.possible[key] = {self.state(item)}
        elif not refused:
            self.possible[key].add(self.state(item))

    def deleted(self, key, done, refused=False):
        self.wrote(key, None, done, refused)


def stored_form(item):
    """The DynamoDB item dynamongo stores for an Event item."""
    return Event._meta.validate_item(item)[1]


def test_faults_hard_case_conditional_put_answer_lost(monkeypatch, no_sleep):
    Event.create_table()
    send = dynamongo._send
    dropped = []

    def drop_first_answer(operation, params):
        from botocore.exceptions import ConnectionClosedError

        response = send(operation, params)
        if not dropped:
            dropped.append(operation)
            raise ConnectionClosedError(endpoint_url="http://127.0.0.1:1")
        return response

    replace_send(monkeypatch, drop_first_answer)
    saved = Event.save_one({"user": "ann", "seq": 1, "kind": "k"},
                           overwrite=False)
    assert dropped == ["PutItem"]
    assert Event.get_one(("ann", 1)) == saved
    # A real refusal after a lost answer is still a refusal.
    del dropped[:]
    with pytest.raises(ConditionalCheckFailedException, match=(
            "ConditionalCheckFailed")):
        Event.save_one({"user": "ann", "seq": 1, "kind": "other"},
                       overwrite=False)
    assert Event.get_one(("ann", 1)).kind == "k"
    del dropped[:]
    deleted = Event.delete_one((Event.user == "ann") & (Event.seq == 1)
                               & (Event.kind == "k"))
    assert (deleted.user, deleted.seq) == ("ann", 1)
    assert raw_items(Event) == []


@pytest.fixture(scope="module")
def fault_totals(request):
    """Totals of the fault suite, printed after its last run whatever order
    the runs took."""
    totals = collections.Counter()
    yield totals
    if totals["runs"]:
        injected = ", ".join(f"{totals[kind]} {kind}" for kind in (
            "unprocessed", "throttle", "500", "drop before", "drop after"))
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\nfault suite: {totals['runs']} seeded runs, "
                  f"{totals['items']} items, faults injected: {injected}; "
                  f"items lost = {totals['lost']}")


@pytest.mark.parametrize("seed", range(FAULT_RUNS))
def test_faults_lose_nothing(seed, monkeypatch, no_sleep, fault_totals):
    Event.create_table()
    # Enough attempts that every read gets through the unprocessed keys.
    Connection.set_config(max_attempts=10, batch_attempts=12)
    faults = Faults(monkeypatch, seed=seed, unprocessed=0.3, throttle=0.08,
                    server_error=0.04, drop_before=0.04, drop_after=0.05)
    chance = random.Random(seed)
    user = f"user{seed}"
    oracle = Oracle()

    def make(seq, tag):
        return {"user": user, "seq": seq, "kind": tag,
                "payload": "".join(chance.choice("ab✓ ") for _ in range(
                    chance.randrange(0, 40)))}

    # Unconditional batch writes.
    items = [make(seq, "first") for seq in range(300)]
    result = Event.save_many(items)
    assert result.success_count + result.fail_count == len(items)
    failed = {id(failure.item) for failure in result.fail}
    for item in items:
        oracle.wrote(item["seq"], stored_form(item), id(item) not in failed)
    # Conditional writes: 60 new keys, and 20 keys written above.
    fresh = [make(seq, "fresh") for seq in range(300, 360)]
    clash = [make(seq, "clash") for seq in range(20)]
    result = Event.save_many(fresh + clash, overwrite=False)
    assert result.success_count + result.fail_count == 80
    refused = {id(failure.item) for failure in result.fail
               if isinstance(failure.error, ConditionalCheckFailedException)}
    failed = {id(failure.item) for failure in result.fail}
    for item in fresh:
        assert id(item) not in refused, "our own lost write seen as a refusal"
    for item in fresh + clash:
        oracle.wrote(item["seq"], stored_form(item), id(item) not in failed,
                     refused=id(item) in refused)
    # Batch deletes, and conditional deletes.
    plain = [(user, seq) for seq in range(200, 260)]
    conditional = [(Event.user == user) & (Event.seq == seq)
                   & (Event.kind == "first") for seq in range(100, 110)]
    result = Event.delete_many(plain + conditional)
    assert result.success_count + result.fail_count == 70
    outcome = {(item.user, item.seq) for item in result.success}
    refusals = {index for index, failure in enumerate(result.fail)
                if isinstance(failure.error, ConditionalCheckFailedException)}
    refused_keys = set()
    for index, failure in enumerate(result.fail):
        if index in refusals:
            key = Event._meta.strategy(failure.item)[0]
            refused_keys.add(int(key["seq"]["N"]))
    for seq in range(200, 260):
        oracle.deleted(seq, (user, seq) in outcome)
    for seq in range(100, 110):
        oracle.deleted(seq, (user, seq) in outcome,
                       refused=seq in refused_keys)

    # What the table holds, read without faults.
    faults.enabled = False
    stored = {int(item["seq"]["N"]): item for item in raw_items(Event)}
    lost = [seq for seq in range(360)
            if oracle.state(stored.get(seq)) not in oracle.possible[seq]]
    assert lost == []
    # Reads under faults return every stored item, as stored, in the
    # order of the keys asked for.
    faults.enabled = True
    keys = [(user, seq) for seq in range(360)]
    found = Event.get_many(keys)
    assert [stored_form(item.to_dict()) for item in found] == \
        [stored_form(Event._meta.from_item(stored[seq]).to_dict())
         for seq in sorted(stored)]
    found = Event.get_many(Event.user == user)
    assert [item.seq for item in found] == sorted(stored)
    # Bounded: no request paused longer than the cap, and not forever.
    assert max(no_sleep, default=0) <= 5.0 and len(no_sleep) < 2000

    fault_totals["runs"] += 1
    fault_totals["items"] += 360
    fault_totals["lost"] += len(lost)
    fault_totals.update(faults.injected)


# -- Async: the awaitable twins ----------------------------------------------

TWINS = ["acreate_table", "adelete_table", "async_table", "asave_one",
         "aget_one", "adelete_one", "aupdate_one", "aupdate_from_dict",
         "asave_many", "aget_many", "aget_page", "aiter_many", "acount",
         "aestimated_count", "adelete_many"]


def test_every_call_has_a_twin_taking_the_same_parameters():
    import inspect

    talking = {name for name, member in vars(Model).items()
               if hasattr(getattr(member, "__func__", None), "procedure")}
    assert talking | {"iter_many"} == {twin[1:] for twin in TWINS}
    for twin in TWINS:
        sync = inspect.signature(getattr(Model, twin[1:])).parameters
        awaited = inspect.signature(getattr(Model, twin)).parameters
        assert [(name, parameter.default) for name, parameter
                in awaited.items()] == [(name, parameter.default) for
                                        name, parameter in sync.items()]
        assert (getattr(Model, twin[1:]).__doc__ or "x") in \
            getattr(Model, twin).__doc__
    assert inspect.signature(dynamongo.atransact_get) == inspect.signature(
        dynamongo.transact_get).replace(
        return_annotation="list[Model | None]")


def test_the_twins_agree_with_their_sync_twins(calls):
    async def both():
        await Event.acreate_table()
        calls.clear()
        made = await Event.asave_many(events("ann", 60, payload="p")
                                      + events("bob", 5, payload="p"))
        assert len(made.success) == 65 and made.fail == []
        odd = Event.kind == "odd"
        results = {
            "get_one": await Event.aget_one(("ann", 7)),
            "get_many": await Event.aget_many(Event.user == "ann",
                                              descending=True, limit=30),
            "keys": await Event.aget_many([("bob", 4), ("ann", 1)]),
            "count": await Event.acount(Event.user == "ann"),
            "scan count": await Event.acount(odd),
            "estimated": await Event.aestimated_count(),
            "iter": [event async for event in Event.aiter_many(
                Event.user == "ann", limit=25)],
            "page": await Event.aget_page(Event.user == "ann", 10),
            "update": await Event.aupdate_one(
                ("ann", 1), Event.payload.set("new"),
                return_values="UPDATED_NEW"),
            "update_from_dict": await Event.aupdate_from_dict(
                {"user": "ann", "seq": 2, "kind": "even!"}),
            "missing update": await Event.aupdate_one(
                ("zed", 1), Event.payload.set("x")),
        }
        results["next page"] = await Event.aget_page(
            Event.user == "ann", 10, cursor=results["page"].cursor)
        results["delete_one"] = await Event.adelete_one(("bob", 4))
        results["delete_many"] = await Event.adelete_many(
            Event.user == "bob")
        results["sync_table"] = await Event.async_table(dry_run=True)
        with pytest.raises(Event.DoesNotExist, match="zed"):
            await Event.aget_one(("zed", 1))
        return results

    awaited = asyncio.run(both())
    requests = operations(calls)
    Event.delete_table()
    Event.create_table()
    calls.clear()
    Event.save_many(events("ann", 60, payload="p")
                    + events("bob", 5, payload="p"))
    odd = Event.kind == "odd"
    page = Event.get_page(Event.user == "ann", 10)
    expected = {
        "get_one": Event.get_one(("ann", 7)),
        "get_many": Event.get_many(Event.user == "ann", descending=True,
                                   limit=30),
        "keys": Event.get_many([("bob", 4), ("ann", 1)]),
        "count": Event.count(Event.user == "ann"),
        "scan count": Event.count(odd),
        "estimated": Event.estimated_count(),
        "iter": list(Event.iter_many(Event.user == "ann", limit=25)),
        "page": page,
        "update": Event.update_one(("ann", 1), Event.payload.set("new"),
                                   return_values="UPDATED_NEW"),
        "update_from_dict": Event.update_from_dict(
            {"user": "ann", "seq": 2, "kind": "even!"}),
        "missing update": Event.update_one(("zed", 1),
                                           Event.payload.set("x")),
        "next page": Event.get_page(Event.user == "ann", 10,
                                    cursor=page.cursor),
        "delete_one": Event.delete_one(("bob", 4)),
        "delete_many": Event.delete_many(Event.user == "bob"),
        "sync_table": Event.sync_table(dry_run=True),
    }
    with pytest.raises(Event.DoesNotExist, match="zed"):
        Event.get_one(("zed", 1))
    sync_requests = operations(calls)
    for name, value in expected.items():
        got = awaited[name]
        if isinstance(value, dynamongo.BatchResult):
            assert sorted(map(repr, got.success)) == sorted(
                map(repr, value.success)), name
            assert got.fail == value.fail == [], name
        else:
            assert got == value, name
    assert awaited["page"].cursor is not None
    assert len(awaited["next page"]) == 10
    # The cursors are one kind: either call resumes the other's.
    assert Event.get_page(Event.user == "ann", 10,
                          cursor=awaited["page"].cursor) == \
        awaited["next page"]
    # The same requests (in an order windows may change).
    assert sorted(requests) == sorted(sync_requests)


def test_an_async_transaction_commits_on_leaving_its_block():
    skip_on_gap("transactions")

    async def transact():
        await User.acreate_table()
        async with dynamongo.transaction() as transaction:
            transaction.save_one(User, JOHN)
            transaction.save_one(User, dict(JOHN, email="ann@b.io"))
        with pytest.raises(RuntimeError, match="inside"):
            async with dynamongo.transaction() as failed:
                failed.save_one(User, dict(JOHN, email="no@b.io"))
                raise RuntimeError("inside")
        cancelled = asyncio.ensure_future(never_ends(User))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        refused = dynamongo.transaction()
        refused.save_one(User, JOHN, overwrite=False)
        with pytest.raises(dynamongo.TransactionCanceled) as caught:
            await refused.acommit()
        return (caught.value, await dynamongo.atransact_get(
            [(User, JOHN["email"]), (User, "no@b.io"), (User, "ann@b.io"),
             (User, "late@b.io")], fields=["name"]))

    refusal, found = asyncio.run(transact())
    assert refusal.reasons[0].code == "ConditionalCheckFailed"
    assert refusal.reasons[0].item.email == JOHN["email"]
    assert [user and user.email for user in found] == [
        JOHN["email"], None, "ann@b.io", None]
    assert found[0].name == JOHN["name"]


async def never_ends(model):
    async with dynamongo.transaction() as transaction:
        transaction.save_one(model, dict(JOHN, email="late@b.io"))
        await asyncio.sleep(60)


def test_a_cancelled_call_closes_its_connection(scripted):
    def answer(email):
        return http_reply(json.dumps({"Item": {
            "email": {"S": email}, "name": {"S": email}}}).encode())

    server = scripted([answer("warm@b.io"), ("after", 1.0, answer("one@b.io")),
                       answer("two@b.io")])
    Connection.set_config(endpoint_url=server.url, max_attempts=1)

    async def calls():
        await User.aget_one("warm@b.io")
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(User.aget_one("one@b.io"), 0.05)
        waited = time.monotonic() - started
        # The late answer is never read as the next call's.
        return waited, await User.aget_one("two@b.io")

    waited, user = asyncio.run(calls())
    assert waited < 0.9 and user.email == "two@b.io"
    assert server.connections == 2


def test_a_read_timeout_holds_for_awaited_calls(scripted):
    server = scripted(["silence"])
    Connection.set_config(endpoint_url=server.url, max_attempts=1,
                          read_timeout=0.2, fast_path=True)
    with pytest.raises(dynamongo.DynamoDBConnectionError,
                       match="no answer within 0.2 s"):
        asyncio.run(User.aget_one("one@b.io"))


def test_a_cancelled_batch_sends_nothing_more(monkeypatch):
    Event.create_table()
    sent, send = [], dynamongo._asend

    async def slow(operation, params):
        sent.append(operation)
        await asyncio.sleep(0.05)
        return await send(operation, params)

    monkeypatch.setattr(dynamongo, "_asend", slow)
    Connection.set_config(concurrency=2)

    async def cancelled():
        task = asyncio.ensure_future(Event.asave_many(events("ann", 400)))
        await asyncio.sleep(0.08)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        before = len(sent)
        await asyncio.sleep(0.3)
        assert len(sent) == before  # nothing sent after the cancellation
        assert before < 16  # the 16 chunks were not all sent
        # The connections are usable.
        return await Event.acount(Event.user == "ann")

    assert 0 <= asyncio.run(cancelled()) < 400


def test_chunks_go_out_concurrently_within_the_concurrency(monkeypatch):
    Event.create_table()
    flight, send = {"now": 0, "most": 0}, dynamongo._asend

    async def counting(operation, params):
        flight["now"] += 1
        flight["most"] = max(flight["most"], flight["now"])
        try:
            await asyncio.sleep(0.01)
            return await send(operation, params)
        finally:
            flight["now"] -= 1

    monkeypatch.setattr(dynamongo, "_asend", counting)
    Connection.set_config(concurrency=3)
    result = asyncio.run(Event.asave_many(events("ann", 250)))
    assert len(result.success) == 250 and flight["most"] == 3
    keys = [("ann", seq) for seq in range(250)]
    assert len(asyncio.run(Event.aget_many(keys))) == 250


def test_gathered_calls_share_a_bounded_pool_on_no_thread(scripted):
    reply = http_reply(json.dumps({"Item": {
        "email": {"S": "a@b.io"}, "name": {"S": "Ann"}}}).encode())
    server = scripted([reply] + [("after", 0.1, reply)] * 200)
    Connection.set_config(endpoint_url=server.url, max_pool_connections=32,
                          fast_path=True)
    User.get_one("a@b.io")  # (the route is made once, by this call)

    async def gathered():
        threads = set()

        async def get():
            threads.update(thread.name for thread in threading.enumerate())
            return await User.aget_one("a@b.io")

        started = time.monotonic()
        users = await asyncio.gather(*[get() for _ in range(200)])
        threads.update(thread.name for thread in threading.enumerate())
        return users, time.monotonic() - started, threads

    users, took, threads = asyncio.run(gathered())
    assert [user.name for user in users] == ["Ann"] * 200
    assert took < 10  # 20 s one after another
    assert {name for name in threads if name != "scripted"} == {"MainThread"}
    assert server.connections <= 1 + 32


def test_the_pool_keeps_at_most_max_pool_connections_open(scripted):
    reply = http_reply(b'{"Table": {"ItemCount": 3}}')
    server = scripted([("after", 0.02, reply)] * 60)
    Connection.set_config(endpoint_url=server.url, max_pool_connections=4,
                          fast_path=True)

    async def gathered():
        return await asyncio.gather(*[User.aestimated_count()
                                      for _ in range(60)])

    assert asyncio.run(gathered()) == [3] * 60
    assert server.connections == 4


def test_loops_come_and_go(users, recwarn):
    import gc

    gc.collect()  # (what earlier tests left)
    recwarn.clear()
    User.save_one(JOHN)
    for _ in range(3):  # asyncio.run per call, as a Lambda handler does
        assert asyncio.run(User.aget_one(JOHN["email"])).name == JOHN["name"]
    found = []

    def on_its_own_loop():
        async def twice():
            first = await User.aget_one(JOHN["email"])
            # A sync call inside a coroutine works (and blocks the loop).
            return first, User.get_one(JOHN["email"])
        found.append(asyncio.run(twice()))

    threads = [threading.Thread(target=on_its_own_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [(a.name, b.name) for a, b in found] == [(JOHN["name"],) * 2] * 2
    gc.collect()
    unclosed = [str(warning.message) for warning in recwarn
                if issubclass(warning.category, ResourceWarning)]
    assert unclosed == []


def test_asave_many_lets_other_tasks_run_while_it_validates(monkeypatch):
    Event.create_table()
    ticks, at_first_request, send = [0], [], dynamongo._asend

    async def first(operation, params):
        at_first_request.append(ticks[0])
        return await send(operation, params)

    monkeypatch.setattr(dynamongo, "_asend", first)

    async def saving():
        async def ticker():
            while True:
                ticks[0] += 1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(ticker())
        try:
            return await Event.asave_many(events("ann", 3000))
        finally:
            ticking.cancel()

    assert len(asyncio.run(saving()).success) == 3000
    # 3,000 items are validated in slices, the loop running between.
    assert at_first_request[0] >= 3000 // dynamongo._SLICE


def test_an_async_cold_start_sends_without_botocore(tmp_path, scripted):
    item = b'{"Item": {"email": {"S": "a@b.io"}, "name": {"S": "Ann"}}}'
    server = scripted([http_reply(item), http_reply(b"{}")])
    code = ("import asyncio, threading\n"
            "async def main():\n"
            "    print((await Cold.aget_one('a@b.io')).name)\n"
            "    await Cold.adelete_one('a@b.io')\n"
            "    print(threading.active_count())\n"
            "asyncio.run(main())\n"
            "print('botocore' in sys.modules, 'boto3' in sys.modules)\n")
    assert run_cold(code, tmp_path, AWS_ENDPOINT_URL=server.url) == \
        ["Ann", "1", "False", "False"]
    get, delete = server.requests
    assert "X-Amz-Target: DynamoDB_20120810.GetItem" in get
    assert "X-Amz-Security-Token: token/cold" in get
    assert server.connections == 1  # kept alive


def test_async_http_client_reads_every_framing_and_verifies_tls(
        tmp_path, scripted, refusing_port):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n")
    server = scripted([http_reply(b'{"n":1}'), chunked,
                       http_reply(b"{}", "Connection: close\r\n"),
                       http_reply(b'{"n":2}'), "close",
                       b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"
                       b"Connection: close\r\n\r\n{}", "silence"])
    client = dynamongo._Http(server.url, 1, 0.3)

    async def posts():
        bodies = [(await client.apost({"Content-Length": "2"}, b"{}"))[2]
                  for _ in range(4)]
        failures = []
        for _ in range(3):
            with pytest.raises(dynamongo._NoAnswer) as caught:
                await client.apost({"Content-Length": "2"}, b"{}")
            failures.append((str(caught.value), caught.value.sent))
        with pytest.raises(dynamongo._NoAnswer, match="could not connect") \
                as caught:
            await dynamongo._Http(f"http://127.0.0.1:{refusing_port}/", 1,
                                  1).apost({}, b"")
        return bodies, failures, caught.value.sent

    bodies, failures, sent = asyncio.run(posts())
    assert bodies == [b'{"n":1}', b'{"a":1}', b"{}", b'{"n":2}']
    assert [sent for _, sent in failures] == [True] * 3 and sent is False
    assert [text.split(":")[0] for text, _ in failures] == [
        "the connection failed", "the connection failed",
        "no answer within 0.3 s"]
    assert "cut short" in failures[1][0]
    assert server.connections == 4

# -- Watching requests: listeners, logs, the Lambda trace header -------------


class Recorder:
    """A listener keeping (kind, event) of each call, and the contextvar
    ``context_mark`` as each call saw it."""

    def __init__(self):
        self.seen, self.lock = [], threading.Lock()

    def started(self, event):
        self._keep("started", event)

    def succeeded(self, event):
        self._keep("succeeded", event)

    def failed(self, event):
        self._keep("failed", event)

    def _keep(self, kind, event):
        with self.lock:
            self.seen.append((kind, event, context_mark.get()))


context_mark = __import__("contextvars").ContextVar("mark", default=None)


@pytest.fixture
def recorder():
    listener = Recorder()
    Connection.add_listener(listener)
    yield listener
    Connection.remove_listener(listener)


def sent_requests(monkeypatch):
    """(operation, params) of each request as it goes to the wire."""
    sent, send = [], dynamongo._send

    def recording(operation, params):
        sent.append((operation, dict(params)))
        return send(operation, params)

    replace_send(monkeypatch, recording)
    return sent


def test_listeners_see_every_attempt_of_every_operation(recorder,
                                                        monkeypatch):
    sent = sent_requests(monkeypatch)
    User.create_table()
    User.save_one(JOHN)
    User.get_one(JOHN["email"])
    User.save_many([dict(JOHN, email=f"u{n}@b.io") for n in range(30)])
    assert User.count() == 31
    User.delete_table(wait=False)
    pairs = collections.defaultdict(list)
    for kind, event, _ in recorder.seen:
        pairs[event.id].append(kind)
    assert list(pairs.values()) == [["started", "succeeded"]] * len(sent)
    events = [event for kind, event, _ in recorder.seen
              if kind == "succeeded"]
    assert [event.operation for event in events] == [
        operation for operation, _ in sent]
    table = User.table_name()
    for event in events:
        assert event.tables == (table,) and event.attempt == 1
        assert event.status == 200 and event.duration >= 0
        assert event.region == "us-east-1" and event.error is None
        assert event.endpoint == dynamongo._endpoint_of(
            Connection.settings())
        if ENDPOINT:  # (moto in-process gives no request id)
            assert event.aws_request_id
    # While listening, data requests ask for the capacity they consume.
    for operation, params in sent:
        data = operation in dynamongo._DATA_OPERATIONS
        assert (params.get("ReturnConsumedCapacity") == "TOTAL") is data
    put = next(event for event in events if event.operation == "PutItem")
    assert put.consumed_capacity[0]["TableName"] == table
    assert put.consumed_capacity[0]["CapacityUnits"] > 0
    create = events[0]
    assert create.operation == "CreateTable" and \
        create.consumed_capacity is None


def test_nothing_changes_without_a_listener(users, monkeypatch):
    sent = sent_requests(monkeypatch)
    User.save_one(JOHN)
    assert "ReturnConsumedCapacity" not in sent[0][1]


def throttled_once(monkeypatch, operation):
    """Requests sent as usual, but the first ``operation`` throttled."""
    send, throttled = dynamongo._send, [1]

    def throttling(sent, params):
        if sent == operation and throttled:
            throttled.pop()
            raise client_error("ProvisionedThroughputExceededException",
                               operation=sent)
        return send(sent, params)

    replace_send(monkeypatch, throttling)


def test_a_failed_attempt_is_told_with_its_error_and_retry(
        users, recorder, monkeypatch, no_sleep):
    throttled_once(monkeypatch, "GetItem")
    User.save_one(JOHN)
    recorder.seen.clear()
    User.get_one(JOHN["email"])
    kinds = [(kind, event.attempt) for kind, event, _ in recorder.seen]
    assert kinds == [("started", 1), ("failed", 1), ("started", 2),
                     ("succeeded", 2)]
    failed = recorder.seen[1][1]
    assert isinstance(failed.error, ThrottlingError) and failed.will_retry
    assert failed.status == 400 and failed.error.code == \
        "ProvisionedThroughputExceededException"
    # The last attempt's failure says no retry follows.
    recorder.seen.clear()
    with pytest.raises(TableNotFoundError, match="GetItem"):
        Contacts.get_one((uuid.uuid4(), "a@b.io"))
    last = recorder.seen[-1][1]
    assert recorder.seen[-1][0] == "failed" and last.will_retry is False
    assert isinstance(last.error, TableNotFoundError)


def test_a_raising_listener_changes_nothing(users, recorder, caplog):
    class Broken:
        def started(self, event):
            raise RuntimeError("listener bug")

    broken = Broken()
    Connection.add_listener(broken)
    try:
        with caplog.at_level(logging.WARNING, logger="dynamongo"):
            assert User.save_one(JOHN).email == JOHN["email"]
    finally:
        Connection.remove_listener(broken)
    assert "listener bug" in caplog.text and "Traceback" in caplog.text
    assert [kind for kind, _, _ in recorder.seen] == ["started",
                                                      "succeeded"]


def test_an_attempt_is_told_to_the_listeners_it_started_with(
        users, recorder, monkeypatch):
    # While the PutItem is in flight, the recorder is removed and another
    # listener added: the recorder still hears how it ended (a span it
    # opened is closed), the newcomer hears nothing of it.
    newcomer, send = Recorder(), dynamongo._send

    def swapping(operation, params):
        if operation == "PutItem":
            Connection.remove_listener(recorder)
            Connection.add_listener(newcomer)
        return send(operation, params)

    replace_send(monkeypatch, swapping)
    try:
        User.save_one(JOHN)
        assert [kind for kind, _, _ in recorder.seen] == ["started",
                                                          "succeeded"]
        assert newcomer.seen == []
        User.get_one(JOHN["email"])
        assert [(kind, event.operation) for kind, event, _ in
                newcomer.seen] == [("started", "GetItem"),
                                   ("succeeded", "GetItem")]
        assert len(recorder.seen) == 2
    finally:
        Connection.remove_listener(newcomer)
        Connection.add_listener(recorder)  # (the fixture removes it)


def test_listeners_see_the_callers_context_in_worker_threads(recorder):
    Event.create_table()
    Connection.set_config(concurrency=4)

    def save(mark):
        context_mark.set(mark)
        Event.save_many(events(mark, 200))

    threads = [threading.Thread(target=save, args=(mark,))
               for mark in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writes = [(mark, event) for kind, event, mark in recorder.seen
              if kind == "succeeded" and event.operation == "BatchWriteItem"]
    assert len(writes) == 16
    # Each chunk's events carry its own caller's mark (8 chunks each).
    assert collections.Counter(mark for mark, _ in writes) == {
        "ann": 8, "bob": 8}
    for mark, event in writes:
        assert event.tables == (Event.table_name(),)


def test_awaited_calls_are_watched_too(users, recorder):
    asyncio.run(User.asave_one(JOHN))
    assert [(kind, event.operation) for kind, event, _ in recorder.seen] \
        == [("started", "PutItem"), ("succeeded", "PutItem")]


def test_an_interrupted_attempt_is_told_as_failed(users, recorder,
                                                  monkeypatch, scripted):
    def interrupted(operation, params):
        raise KeyboardInterrupt

    replace_send(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt):
        User.get_one(X)
    monkeypatch.undo()
    # An awaited call cancelled while its request is out.
    server = scripted([("after", 1.0, http_reply(b"{}"))])
    Connection.set_config(endpoint_url=server.url, max_attempts=1)

    async def cancelled():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(User.aget_one(X), 0.05)

    asyncio.run(cancelled())
    assert [kind for kind, _, _ in recorder.seen] == [
        "started", "failed", "started", "failed"]
    for _, event, _ in recorder.seen[1::2]:
        assert isinstance(event.error, dynamongo.DynamongoError)
        assert str(event.error) == ("GetItem: the call was interrupted (or "
                                    "cancelled) before an answer came")
        assert event.status is None and event.will_retry is False


def test_the_debug_log_names_each_attempt_and_no_secret(users, caplog,
                                                        monkeypatch):
    secret, value = "SECRETsecretSECRET1234", "VALUEvalueVALUE5678"
    Connection.set_config(secret_access_key=secret,
                          cursor_secret=b"CURSORsecret")
    with caplog.at_level(logging.DEBUG, logger="dynamongo"):
        User.save_one(dict(JOHN, name=value))
        User.get_one(JOHN["email"])
        page = User.get_page(User.name == value, 1)
        User.get_page(User.name == value, 1, cursor=page.cursor)
    records = [record for record in caplog.records
               if record.name == "dynamongo"]
    assert [record.getMessage().split()[0] for record in records][:2] == [
        "PutItem", "GetItem"]
    assert re.match(rf"PutItem {User.table_name()}: 200 in [\d.]+ ms "
                    r"\(attempt 1, request \S+\)", records[0].getMessage())
    for text in (caplog.text, *(repr(record.__dict__)
                                for record in caplog.records)):
        assert secret not in text and value not in text
        assert "CURSORsecret" not in text and "Signature=" not in text


def test_lambda_trace_header_as_botocore_sends_it(monkeypatch, scripted):
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f" \
        "42cd8ad8;Sampled=1;Lineage=a87bd80c:0 é"
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "handler")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", trace)
    server = scripted([http_reply(b'{"TableNames":[]}')] * 4)
    import boto3

    boto3.client("dynamodb", endpoint_url=server.url, region_name="us-east-1",
                 aws_access_key_id="a", aws_secret_access_key="b"
                 ).describe_table(TableName="tab")
    for fast_path in (True, False):
        Connection.set_config(endpoint_url=server.url, fast_path=fast_path)
        dynamongo._send("DescribeTable", {"TableName": "tab"})
    asyncio.run(dynamongo._asend("DescribeTable", {"TableName": "tab"}))
    headers = [re.search(r"X-Amzn-Trace-Id: (.*)\r\n", request)[1]
               for request in server.requests]
    assert len(headers) == 4 and len(set(headers)) == 1
    assert headers[0].startswith("Root=1-5759e988") and "%C3%A9" in \
        headers[0] and " " not in headers[0]
    # Outside Lambda, none.
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    headers = {}
    dynamongo._trace(headers)
    assert headers == {}

# -- Rate limits -------------------------------------------------------------


@pytest.fixture
def fake_clock(monkeypatch):
    """The rate limits' clock, moved on by each wait instead of sleeping;
    ``sent`` holds (operation, the clock's time) of each request."""
    clock = types.SimpleNamespace(now=0.0, sent=[])
    send = dynamongo._send

    def sleep(seconds):
        clock.now += seconds

    async def asleep(seconds):
        sleep(seconds)

    def timed(operation, params):
        clock.sent.append((operation, clock.now))
        return send(operation, params)

    monkeypatch.setattr(dynamongo._Meter, "clock",
                        staticmethod(lambda: clock.now))
    monkeypatch.setattr(dynamongo, "_sleep", sleep)
    monkeypatch.setattr(dynamongo, "_asleep", asleep)
    replace_send(monkeypatch, timed)
    Connection.set_config(concurrency=1)  # (one clock: one at a time)
    return clock


def sized(number, kilobytes=1.5):
    """A User item of about ``kilobytes`` KB."""
    return dict(JOHN, email=f"u{number:03d}@b.io",
                name="n" * int(kilobytes * 1024 - 100))


def test_rate_limited_writes_wait_for_their_units(users, fake_clock):
    # 100 items of 2 units (1-2 KB each): 4 chunks of 50 units, at 50 a
    # second after the first second's burst.
    User.save_many([sized(n) for n in range(100)], max_units_per_second=50)
    assert fake_clock.sent == [("BatchWriteItem", float(second))
                               for second in range(4)]
    # Conditional puts, 2 units each, 4 a second.
    fake_clock.sent.clear()
    result = User.save_many([sized(n) for n in range(100, 106)],
                            overwrite=False, max_units_per_second=4)
    assert len(result.success) == 6
    assert [at - fake_clock.sent[0][1] for _, at in fake_clock.sent] == [
        0, 0, 0.5, 1.0, 1.5, 2.0]
    # Deletes count a unit each: 100 keys, 25 a second.
    fake_clock.sent.clear()
    User.delete_many([f"u{n:03d}@b.io" for n in range(100)],
                     max_units_per_second=25)
    start = fake_clock.sent[0][1]
    assert [(operation, at - start) for operation, at in fake_clock.sent] \
        == [("BatchWriteItem", float(second)) for second in range(4)]


def test_rate_limited_reads_follow_what_dynamodb_reports(
        users, fake_clock, monkeypatch):
    User.save_many([sized(n, 5) for n in range(200)])
    keys = [f"u{n:03d}@b.io" for n in range(250)]
    send, reported = dynamongo._send, []

    def reporting(operation, params):  # as reported, or not at all
        answer = send(operation, params)
        if reported:
            answer["ConsumedCapacity"] = [{"TableName": User.table_name(),
                                           "CapacityUnits": reported[0]}]
        else:
            answer.pop("ConsumedCapacity", None)
        return answer

    replace_send(monkeypatch, reporting)
    fake_clock.sent.clear()
    # Reported: 150 units per request of 100 keys. Each request draws its
    # keys first (100 units, consistent), and the rest once answered.
    reported.append(150.0)
    assert len(User.get_many(keys, consistent_read=True,
                             max_units_per_second=100)) == 200
    assert fake_clock.sent == [("BatchGetItem", 0.0), ("BatchGetItem", 1.5),
                               ("BatchGetItem", 2.5)]
    assert fake_clock.now == 2.5
    # iter_many reads as it goes, within the same budget.
    fake_clock.sent.clear()
    found = User.iter_many(keys, consistent_read=True,
                           max_units_per_second=100)
    assert len(list(found)) == 200
    assert [at - 2.5 for _, at in fake_clock.sent] == [0.0, 1.5, 2.5]
    # Reported nothing: items of 5 KB count 2 units each, 1 when
    # eventually consistent.
    reported.clear()
    fake_clock.sent.clear()
    User.get_many(keys[:200], max_units_per_second=50)
    start = fake_clock.sent[0][1]
    assert [at - start for _, at in fake_clock.sent] == [0.0, 2.0]


def test_rate_limited_calls_check_the_limit_before_sending(users,
                                                           monkeypatch):
    sent = sent_requests(monkeypatch)
    calls = {
        "save_many": lambda rate: User.save_many(
            [JOHN], max_units_per_second=rate),
        "delete_many": lambda rate: User.delete_many(
            [X], max_units_per_second=rate),
        "get_many": lambda rate: User.get_many(
            [X], max_units_per_second=rate),
        "iter_many": lambda rate: User.iter_many(
            User.name == "x", max_units_per_second=rate),
        "count": lambda rate: User.count(max_units_per_second=rate),
        "asave_many": lambda rate: asyncio.run(User.asave_many(
            [JOHN], max_units_per_second=rate)),
        "aiter_many": lambda rate: User.aiter_many(
            User.name == "x", max_units_per_second=rate),
        "acount": lambda rate: asyncio.run(User.acount(
            max_units_per_second=rate)),
    }
    # (An awaited twin's message names the method it awaits.)
    awaits = {"asave_many": "save_many", "acount": "count"}
    for rate in (0, -5, True, "10", float("nan"), float("inf")):
        for name, call in calls.items():
            with pytest.raises(ValidationError, match=re.escape(
                    f"User.{awaits.get(name, name)}: max_units_per_second "
                    f"must be a number > 0, not {rate!r}")):
                call(rate)
    assert sent == []


def test_a_rate_limited_backfill_takes_the_time_its_units_need(users):
    # 60 items of 2 units, 60 units a second over 4 threads: the first
    # second's burst, then a second more at least.
    Connection.set_config(concurrency=4)
    start = time.monotonic()
    result = User.save_many([sized(n) for n in range(60)],
                            max_units_per_second=60)
    elapsed = time.monotonic() - start
    assert len(result.success) == 60 and 0.95 <= elapsed < 20
    start = time.monotonic()
    assert asyncio.run(User.acount(max_units_per_second=1000)) == 60
    assert time.monotonic() - start < 20


def span_tracer():
    """(a tracer provider, its in-memory exporter) of the OpenTelemetry
    SDK, which the floor's test environment lacks."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter)

    provider, exporter = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def comparable(span):
    """What a DynamoDB span says, but its request id (present, unequal)."""
    attributes = dict(span.attributes)
    assert attributes.pop("aws.request_id", "id") and \
        span.kind.name == "CLIENT"
    return span.name, span.status.status_code.name, attributes


def test_opentelemetry_spans_are_those_botocore_instrumentation_makes(
        monkeypatch):
    provider, exporter = span_tracer()
    instrumentation = pytest.importorskip(
        "opentelemetry.instrumentation.botocore")
    caller = provider.get_tracer("caller")
    sent = sent_requests(monkeypatch)
    listener = dynamongo.opentelemetry_listener(provider)
    Connection.add_listener(listener)
    try:
        with caller.start_as_current_span("handler") as parent:
            Order.create_table()
            Order.save_one(order("ann", 1, status="open", total=5.0))
            Order.get_one(("ann", "o001"), consistent_read=True,
                          fields=["total"])
            Order.save_many([order("bob", n, status="open", sku="s1")
                             for n in range(2, 24)])
            Order.get_many(Order.customer == "bob", descending=True,
                           limit=3)
            Order.get_many(Order.sku == "s1", index="by_sku")
            Order.count(Order.qty == 4)
            Order.get_many([("bob", "o002"), ("bob", "o003")])
            Order.update_one(("ann", "o001"), Order.total.set(6.0))
            assert Order.delete_one((Order.customer == "ann") & (
                Order.order_id == "o001") & (Order.total == 1.0)) is None
            Order.delete_table(wait=False)
    finally:
        Connection.remove_listener(listener)
    ours = [span for span in exporter.get_finished_spans()
            if span.instrumentation_scope.name == "dynamongo"]
    assert all(span.parent.span_id == parent.get_span_context().span_id
               for span in ours)
    assert [span.name for span in ours] == [f"DynamoDB.{operation}"
                                            for operation, _ in sent]
    # The same requests, made again by boto3 under the instrumentation.
    exporter.clear()
    client = Connection.client()
    instrumentor = instrumentation.BotocoreInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        for operation, params in sent:
            try:
                getattr(client, botocore_name(operation))(**params)
            except client.exceptions.ClientError:
                pass
    finally:
        instrumentor.uninstrument()
    theirs = exporter.get_finished_spans()
    assert [comparable(span) for span in ours] == [
        comparable(span) for span in theirs]
    first = {}
    for span in ours:
        first.setdefault(span.name.split(".")[1], span.attributes)
    assert first["Scan"]["aws.dynamodb.select"] == "COUNT"
    assert first["GetItem"]["aws.dynamodb.consistent_read"] is True
    assert first["Query"]["aws.dynamodb.scan_forward"] is False
    assert first["CreateTable"]["aws.dynamodb.provisioned_read_capacity"] \
        == 8
    for operation in ("PutItem", "BatchWriteItem", "BatchGetItem"):
        consumed = first[operation]["aws.dynamodb.consumed_capacity"]
        assert json.loads(consumed[0])["TableName"] == Order.table_name()
    failed = ours[-2]
    assert failed.name == "DynamoDB.DeleteItem" and \
        failed.status.status_code.name == "ERROR"
    assert failed.events[0].name == "exception" and \
        "ConditionalCheckFailed" in failed.events[0].attributes[
            "exception.type"]


def botocore_name(operation):
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def test_spans_from_worker_threads_and_failed_attempts(
        users, monkeypatch, no_sleep):
    provider, exporter = span_tracer()
    caller = provider.get_tracer("caller")
    throttled_once(monkeypatch, "BatchWriteItem")
    Connection.set_config(concurrency=4)
    listener = dynamongo.opentelemetry_listener(provider)
    Connection.add_listener(listener)
    try:
        with caller.start_as_current_span("backfill") as parent:
            User.save_many([dict(JOHN, email=f"u{n}@b.io")
                            for n in range(100)])
    finally:
        Connection.remove_listener(listener)
    spans = [span for span in exporter.get_finished_spans()
             if span.name == "DynamoDB.BatchWriteItem"]
    assert len(spans) == 5  # 4 chunks, one sent twice
    assert {span.parent.span_id for span in spans} == {
        parent.get_span_context().span_id}
    assert {span.context.trace_id for span in spans} == {
        parent.get_span_context().trace_id}
    failed = [span for span in spans
              if span.status.status_code.name == "ERROR"]
    assert len(failed) == 1 and failed[0].attributes["retry_attempts"] == 0
    assert failed[0].attributes["http.status_code"] == 400
    assert "ThrottlingError" in failed[0].events[0].attributes[
        "exception.type"]
    assert sorted(span.attributes["retry_attempts"] for span in spans) == [
        0, 0, 0, 0, 1]
    for span in spans:
        assert span.attributes["aws.dynamodb.table_names"] == (
            User.table_name(),)
    # Awaited: the chunks' tasks see the span current in the coroutine.
    exporter.clear()
    Connection.add_listener(listener)

    async def backfill():
        with caller.start_as_current_span("async backfill") as parent:
            await User.asave_many([dict(JOHN, email=f"a{n}@b.io")
                                   for n in range(100)])
        return parent

    try:
        parent = asyncio.run(backfill())
    finally:
        Connection.remove_listener(listener)
    spans = [span for span in exporter.get_finished_spans()
             if span.name == "DynamoDB.BatchWriteItem"]
    assert len(spans) == 4 and {span.parent.span_id for span in spans} == {
        parent.get_span_context().span_id}


def test_opentelemetry_listener_without_opentelemetry(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(dynamongo.DynamongoError,
                       match=r"pip install opentelemetry"):
        dynamongo.opentelemetry_listener()

# -- Property tests ----------------------------------------------------------


# PROPERTY_EXAMPLES=1000 runs more cases than CI's 40 per property.
PROPERTIES = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", 40)), deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture,
                           HealthCheck.too_slow])

dynamo_ints = st.integers(-(10 ** 38 - 1), 10 ** 38 - 1)
dynamo_floats = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda number: number == 0 or 1e-130 <= abs(number) < 1e126)
offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes)))
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domains = st.builds(lambda names, top: ".".join(names + [top]),
                    st.lists(labels, min_size=1, max_size=3),
                    st.from_regex(r"[a-z]{2,6}", fullmatch=True))
# A map without declared sub-fields keeps no number types: an integral
# number comes back as an int, so its floats are non-integral or below 2**53.


def json_containers(children):
    return st.lists(children, max_size=3) | st.dictionaries(
        st.text(min_size=1, max_size=5), children, max_size=3)


json_scalars = st.none() | st.booleans() | st.text(max_size=8) \
    | dynamo_ints \
    | dynamo_floats.filter(lambda x: not x.is_integer() or abs(x) < 2 ** 53)
json_values = st.recursive(json_scalars, json_containers, max_leaves=10)
# A free-form map also holds bytes and sets.
free_values = st.recursive(
    json_scalars | st.binary(max_size=8) | st.sets(
        st.text(min_size=1, max_size=4), min_size=1, max_size=3),
    json_containers, max_leaves=10)


@PROPERTIES
@given(st.one_of(st.integers(-10 ** 40, 10 ** 40), st.floats(
    allow_nan=False), st.sampled_from([10 ** 38 - 1, 10 ** 38, 1e126,
                                       math.nextafter(1e126, 0), 1e-130,
                                       math.nextafter(1e-130, 0), -0.0])))
def test_number_fast_paths_agree_with_the_exact_formatter(number):
    try:
        text = dynamongo._number_text(number)
    except ValueError as exc:
        text, refusal = None, re.escape(str(exc))
    field = IntField() if type(number) is int else FloatField()
    if text is None:  # refused alike, for the same reason
        with pytest.raises(ValidationError, match=refusal):
            dynamongo._generic_to_av(number, "n")
        with pytest.raises(ValidationError, match=refusal):
            field.to_native(number)
        return
    assert dynamongo._generic_to_av(number, "n") == {"N": text}
    assert field.to_native(number) == number
    # One identity for one number, however it is written.
    exact = decimal.Decimal(text)
    for written in (text, str(exact), f"{exact:E}", f"{exact:f}"):
        identity = dynamongo._number_identity(written)
        assert identity == exact and hash(identity) == hash(exact)
    assert dynamongo._generic_from_av({"N": text}) == (
        int(exact) if exact == exact.to_integral_value() else float(text))


@PROPERTIES
@given(items=st.lists(st.dictionaries(st.text(max_size=4), json_values,
                                      max_size=3), max_size=4),
       rest=st.dictionaries(st.sampled_from(["Count", "ScannedCount",
                                             "LastEvaluatedKey", "Other"]),
                            json_values),
       place=st.integers(0, 4), spaced=st.booleans())
def test_item_stream_reads_what_json_reads(items, rest, place, spaced):
    members = list(rest.items())
    members.insert(min(place, len(members)), ("Items", items))
    text = json.dumps(dict(members), separators=(", ", ": ") if spaced
                      else (",", ":"))
    if spaced:
        text = f" \n{text}\t"
    stream = dynamongo._ItemStream(text)
    assert list(stream) == items
    assert stream.rest == rest


@pytest.mark.parametrize("text", [
    '{"Items": [{"a": 1}, {"b": 2}', '{"Items": [{"a": 1} {"b": 2}]}',
    '{"Items": [{"a": 1}], "Count" 1}', '{"Items": [{"a": 1}]',
    '{"Items": [{"a": tru}]}', '{"Count": 1 "Items": []}'])
def test_item_stream_refuses_what_is_not_json(text):
    with pytest.raises(dynamongo._BadAnswer, match="not JSON"):
        list(dynamongo._ItemStream(text))


def test_a_page_that_breaks_off_mid_stream_is_an_error(monkeypatch,
                                                       scripted):
    # Its first items are read; then a DynamoDBError, never a short read.
    body = (b'{"Count": 3, "Items": [{"email": {"S": "a@b.io"}, "name": '
            b'{"S": "A"}}, {"email": {"S": "b@c.io"}, "name": {"S": "B"}},'
            b' {"email": {"S": "c@d.io"}, nam')
    server = scripted([http_reply(body)])
    Connection.set_config(endpoint_url=server.url, max_attempts=1,
                          fast_path=True)
    seen = []
    with pytest.raises(DynamoDBError, match="Scan on table .* is not "
                                            "DynamoDB's: the answer is not "
                                            "JSON"):
        for user in User.iter_many(User.name.exists()):
            seen.append(user.email)
    assert seen == ["a@b.io", "b@c.io"]


VALID = {
    "tally": dynamo_ints,
    "ratio": dynamo_floats,
    "flag": st.booleans(),
    "text": st.text(),
    "email": st.builds("{}@{}".format, st.from_regex(
        r"[a-z0-9]{1,10}([._+-][a-z0-9]{1,10}){0,2}", fullmatch=True),
        domains),
    "url": st.builds("{}://{}{}{}".format, st.sampled_from(
        ["http", "https", "ftp"]), domains,
        st.sampled_from(["", ":8080", ":1"]),
        st.from_regex(r"(/[A-Za-z0-9._~-]{0,6}){0,3}", fullmatch=True)),
    "ip": st.ip_addresses().map(str),
    "moment": st.datetimes(timezones=st.none() | offsets),
    "day": st.dates(),
    "span": st.timedeltas(),
    "span_weeks": st.timedeltas(),
    "numbers": st.lists(dynamo_ints, max_size=5),
    "matrix": st.lists(st.lists(st.uuids(), max_size=3), max_size=3),
    "nested": st.fixed_dictionaries({}, optional={
        "items": st.lists(dynamo_floats, max_size=4),
        "when": st.datetimes()}),
    "free": st.dictionaries(st.text(min_size=1, max_size=5), free_values,
                            max_size=4),
    "blob": st.binary(),
    "tags": st.sets(st.text(min_size=1), min_size=1, max_size=5),
    "counts": st.sets(dynamo_ints, min_size=1, max_size=5),
    "ratios": st.sets(dynamo_floats, min_size=1, max_size=5),
    "blobs": st.sets(st.binary(min_size=1), min_size=1, max_size=5),
}


def not_matching(pattern):
    return st.text(max_size=12).filter(
        lambda text: not re.fullmatch(pattern, text))


NUMBER_TEXT = r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*"

INVALID = {
    "id": st.text(max_size=40).filter(lambda text: not is_uuid(text)),
    "tally": st.one_of(
        st.booleans(), not_matching(NUMBER_TEXT),
        st.floats().filter(lambda x: not (math.isfinite(x)
                                          and x.is_integer())),
        st.integers(10 ** 38, 10 ** 60).filter(
            lambda n: len(str(n).strip("0")) > 38),
        st.lists(st.integers(), max_size=2)),
    "ratio": st.one_of(
        st.booleans(), st.sampled_from([math.nan, math.inf, -math.inf]),
        st.floats(-1e-130, 1e-130, exclude_min=True,
                  exclude_max=True).filter(bool),  # subnormals among them
        st.floats(min_value=1e126, allow_infinity=False),
        not_matching(NUMBER_TEXT)),
    "flag": st.one_of(st.integers(), st.text(), st.floats()),
    "text": st.one_of(st.integers(), st.binary(), st.lists(st.text())),
    "email": st.one_of(st.text(max_size=20).filter(lambda t: "@" not in t),
                       st.integers()),
    "url": st.one_of(st.text(max_size=20).filter(lambda t: "://" not in t),
                     st.builds("http://{}".format, labels.filter(
                         lambda label: label != "localhost"))),
    "ip": st.text(max_size=20).filter(lambda text: not is_ip(text)),
    "moment": st.one_of(st.integers(), st.dates(), not_matching(r".*\d.*")),
    "day": st.one_of(st.datetimes(), st.integers(),
                     not_matching(r"\d{4}-\d\d-\d\d")),
    "span": st.one_of(st.text(), st.booleans(), st.dates()),
    "span_weeks": st.sampled_from([math.nan, "1w", True]),
    "numbers": st.one_of(st.text(), st.lists(
        not_matching(NUMBER_TEXT), min_size=1, max_size=3)),
    "nested": st.dictionaries(
        st.text(min_size=1).filter(lambda key: key not in ("items", "when")),
        st.integers(), min_size=1, max_size=2),
    "free": st.dictionaries(st.text(min_size=1, max_size=4), st.builds(
        lambda number, text: {number, text}, st.integers(), st.text()),
        min_size=1, max_size=2),
    "blob": st.one_of(st.text(), st.integers(), st.lists(st.integers())),
    "tags": st.one_of(st.text(), st.sets(st.integers(), min_size=1),
                      st.text(min_size=1).map(lambda text: [text, text])),
    "counts": st.one_of(st.integers(), st.sets(
        not_matching(NUMBER_TEXT), min_size=1, max_size=3)),
    "ratios": st.sampled_from([{math.nan}, [1.0, 1], {1e126}]),
    "blobs": st.one_of(st.sets(st.text(min_size=1), min_size=1),
                       st.just({b"ok", None})),
}


def is_uuid(text):
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@pytest.fixture
def everything():
    Everything.create_table()
    return Everything


class Mailbox(Model):
    __table__ = "mailboxes"
    __hash_key__ = "address"
    address = EmailField(required=True)


@pytest.fixture
def mailboxes():
    Mailbox.create_table()


@PROPERTIES
@given(text=st.text(alphabet="ab9-._+@", max_size=70)
       | st.builds(lambda local, domain: f"{local}@{domain}",
                   st.text(alphabet="ab9-._+", min_size=1, max_size=66),
                   st.text(alphabet="ab9-.", min_size=1, max_size=70))
       | st.builds(lambda local, label: f"{'a' * local}@{'b' * label}.cd",
                   st.integers(1, 70), st.integers(1, 70)))
def test_property_email_field_agrees_with_the_full_check(mailboxes, text):
    # The model's quick test of plain addresses decides as _is_email does.
    try:
        Mailbox.save_one({"address": text})
    except ValidationError:
        assert not dynamongo._is_email(text)
    else:
        assert dynamongo._is_email(text)


@PROPERTIES
@given(values=st.fixed_dictionaries({"id": st.uuids()}, optional=VALID))
def test_property_every_valid_value_round_trips(everything, values):
    saved = Everything.save_one(values)
    loaded = Everything.get_one(values["id"])
    assert loaded == saved
    for name, value in values.items():
        got = getattr(loaded, name)
        assert got == value, name
        if name != "free":  # free dicts give integral numbers back as int
            assert type(got) is type(value), name
        if name == "moment":
            assert got.utcoffset() == value.utcoffset()


@PROPERTIES
@given(values=st.fixed_dictionaries({}, optional={
    name: VALID[name] for name in ("blob", "tags", "counts", "ratios",
                                   "blobs")}).filter(bool))
def test_property_binary_and_sets_round_trip_through_updates_and_conditions(
        everything, values):
    key = uuid.uuid4()
    Everything.save_one({"id": key, "text": "first"})
    updated = Everything.update_one(key, [
        getattr(Everything, name).set(value)
        for name, value in values.items()])
    for name, value in values.items():
        assert getattr(updated, name) == value, name
    assert Everything.get_one(key) == updated
    # Each value finds the item in a condition: equal, or a set's elements.
    for name, value in values.items():
        field = getattr(Everything, name)
        conditions = [field == value] if name == "blob" else [
            field.contains(element) for element in value]
        for condition in conditions:
            assert [item.id for item in Everything.get_many(
                (Everything.id == key) & condition)] == [key], name
    old = Everything.update_one(key, [
        getattr(Everything, name).remove() for name in values],
        return_values="UPDATED_OLD")
    for name, value in values.items():
        assert getattr(old, name) == value, name


@PROPERTIES
@given(items=st.lists(st.fixed_dictionaries({"id": st.uuids()},
                                            optional=VALID),
                      min_size=1, max_size=3, unique_by=lambda x: x["id"]))
def test_property_save_many_round_trips(everything, items):
    # On the fast path save_many sends the JSON the model writes itself.
    for item in items:
        stored = Everything._meta.validate_item(item)[1]
        # (binary values are base64 text in DynamoDB's JSON)
        assert dynamongo._with_bytes(json.loads(
            Everything._meta.item_json(stored))) == stored
    result = Everything.save_many(items)
    assert result.fail == []
    loaded = Everything.get_many([item["id"] for item in items])
    assert loaded == result.success
    for item, got in zip(items, loaded):
        assert got.id == item["id"]


# Entries of a timeline, keyed by templates of text and time.
class Entry(Model):
    __table__ = "timeline"
    __hash_key__ = "pk"
    __range_key__ = "sk"
    __billing_mode__ = "PAY_PER_REQUEST"
    __entity__ = "entry"
    pk = KeyTemplate("TENANT#{tenant}")
    sk = KeyTemplate("E#{at}#{id}")
    tenant = StringField(required=True)
    id = StringField(required=True)
    at = DateTimeField(required=True, convert_tz=True)


@pytest.fixture
def entries():
    Entry.create_table()
    return Entry


key_texts = st.one_of(st.sampled_from(["#", "a#b", "#x#", "é", "日本", "𝄞"]),
                      st.text(st.characters(blacklist_categories=("Cs",),
                                            blacklist_characters="\x00"),
                              min_size=1, max_size=6))
moments = st.datetimes(datetime.datetime(2000, 1, 1),
                       datetime.datetime(2100, 1, 1), timezones=st.just(UTC))


@PROPERTIES
@given(rows=st.lists(st.tuples(key_texts, moments), min_size=1, max_size=6,
                     unique=True), bound=moments)
def test_property_key_templates_round_trip_in_sort_key_order(entries, rows,
                                                             bound):
    tenant = f"t#{uuid.uuid4().hex[:8]}"
    Entry.save_many([{"tenant": tenant, "id": id, "at": at}
                     for id, at in rows])
    # DynamoDB orders range keys by their UTF-8 bytes.
    in_order = sorted(rows, key=lambda row: (
        f"E#{row[1].isoformat(timespec='microseconds')}#{row[0]}").encode())
    assert [(entry.id, entry.at) for entry in Entry.get_many(
        Entry.tenant == tenant)] == in_order
    since = (Entry.tenant == tenant) & (Entry.at >= bound)
    assert [(entry.id, entry.at) for entry in Entry.get_many(since)] == [
        row for row in in_order if row[1] >= bound]
    id, at = rows[0]
    entry = Entry.get_one((Entry.tenant == tenant) & (Entry.at == at)
                          & (Entry.id == id))
    assert (entry.tenant, entry.id, entry.at) == (tenant, id, at)


@PROPERTIES
@given(data=st.data())
def test_property_invalid_values_raise_and_store_nothing(everything, data):
    name = data.draw(st.sampled_from(sorted(INVALID)))
    value = data.draw(INVALID[name])
    item = {"id": uuid.uuid4(), name: value}
    with pytest.raises(ValidationError) as caught:
        Everything.save_one(item)
    assert any(path == name or path.startswith((name + ".", name + "["))
               for path in caught.value.errors), caught.value.errors
    assert name in str(caught.value)
    assert raw_items(Everything) == []


def test_floats_at_the_edge_of_dynamodb_range(everything):
    # The float nearest 1e126 shows as "1e+126", past DynamoDB's largest
    # number; the next float down is stored.
    with pytest.raises(ValidationError, match="ratio"):
        Everything.save_one({"id": uuid.uuid4(), "ratio": 1e126})
    largest = math.nextafter(1e126, 0)
    saved = Everything.save_one({"id": uuid.uuid4(), "ratio": -largest})
    assert Everything.get_one(saved.id).ratio == -largest
    stored = raw_items(Everything)[0]["ratio"]["N"]
    assert decimal.Decimal(stored) == decimal.Decimal(repr(-largest))


# Attribute names that need placeholders: reserved words, dots, dashes,
# '#', ':', spaces, unicode.
attribute_names = st.one_of(
    st.sampled_from(["name", "year", "status", "data", "size", "count",
                     "a.b", "a-b", "#x", ":y", "a b", "ключ", "名前",
                     "select", "and", "not", "between", "a)OR(b", ":v0"]),
    st.text(min_size=1, max_size=6)).filter(
    lambda name: name not in ("run", "n")
    and name not in dynamongo._RESERVED_NAMES and not name.startswith("__"))
STRINGS = ["", "a", "ab", "b", "ba", "é", "z", "a)OR(b"]
if "empty strings" in GAPS.get(BACKEND, {}):
    STRINGS.remove("")  # see test_empty_string_comparisons


def property_model(names, kinds):
    """A model with the given attribute names over the "props" table."""
    fields = {name: IntField() if kind == "int" else StringField()
              for name, kind in zip(names, kinds)}
    return type("Props", (Model,), dict(
        __table__="props", __hash_key__="run", __range_key__="n",
        __billing_mode__="PAY_PER_REQUEST", run=StringField(required=True),
        n=IntField(required=True), **fields))


def operand(kind):
    return st.integers(-3, 3) if kind == "int" else st.sampled_from(STRINGS)


@st.composite
def conditions(draw, model, kinds, depth=0):
    """(condition, reference predicate on a dict of values)."""
    if depth < 2 and draw(st.integers(0, 2)) == 0:
        left, left_check = draw(conditions(model, kinds, depth + 1))
        right, right_check = draw(conditions(model, kinds, depth + 1))
        combined = draw(st.sampled_from(["and", "or", "not"]))
        if combined == "and":
            return left & right, lambda item: (left_check(item)
                                               and right_check(item))
        if combined == "or":
            return left | right, lambda item: (left_check(item)
                                               or right_check(item))
        return ~left, lambda item: not left_check(item)
    name = draw(st.sampled_from(sorted(kinds)))
    kind, field = kinds[name], getattr(model, name)
    value = draw(operand(kind))
    tests = ["==", "!=", "<", "<=", ">", ">=", "between", "in", "exists",
             "not_exists"] + (["begins_with", "contains"]
                              if kind == "str" else [])
    test = draw(st.sampled_from(tests))
    have = (lambda item: name in item)
    if test == "between":
        low, high = sorted([value, draw(operand(kind))],
                           key=lambda v: v.encode() if kind == "str" else v)
        return field.between(low, high), lambda item: have(item) and (
            low <= item[name] <= high)
    if test == "in":
        values = draw(st.lists(operand(kind), min_size=1, max_size=3))
        return field.in_(values), lambda item: have(item) and (
            item[name] in values)
    if test == "exists":
        return field.exists(), have
    if test == "not_exists":
        return field.not_exists(), lambda item: not have(item)
    if test == "begins_with":
        return field.begins_with(value), lambda item: have(item) and (
            item[name].startswith(value))
    if test == "contains":
        return field.contains(value), lambda item: have(item) and (
            value in item[name])
    compare = {"==": lambda a: a == value, "<": lambda a: a < value,
               "<=": lambda a: a <= value, ">": lambda a: a > value,
               ">=": lambda a: a >= value}
    condition = {"==": field == value, "!=": field != value,
                 "<": field < value, "<=": field <= value,
                 ">": field > value, ">=": field >= value}[test]
    if test == "!=":  # true where the attribute is missing, as in DynamoDB
        return condition, lambda item: not have(item) or item[name] != value
    return condition, lambda item: have(item) and compare[test](item[name])


@pytest.fixture
def props():
    property_model(["x"], ["int"]).create_table()


@st.composite
def property_cases(draw):
    names = draw(st.lists(attribute_names, min_size=1, max_size=3,
                          unique=True))
    kinds = dict(zip(names, draw(st.lists(st.sampled_from(["int", "str"]),
                                          min_size=len(names),
                                          max_size=len(names)))))
    model = property_model(names, [kinds[name] for name in names])
    items = [{name: draw(operand(kinds[name])) for name in names
              if draw(st.booleans())} for _ in range(6)]
    return model, kinds, items


@PROPERTIES
@given(case=property_cases(), data=st.data())
def test_property_conditions_match_a_reference(props, case, data):
    model, kinds, items = case
    run = uuid.uuid4().hex
    model.save_many([dict(values, run=run, n=n)
                     for n, values in enumerate(items)])
    condition, check = data.draw(conditions(model, kinds))
    found = model.get_many((model.run == run) & condition)
    assert [item.n for item in found] == \
        [n for n, values in enumerate(items) if check(values)], condition


@PROPERTIES
@given(case=property_cases(), data=st.data())
def test_property_updates_match_a_reference(props, case, data):
    model, kinds, items = case
    run = uuid.uuid4().hex
    values = items[0]
    model.save_one(dict(values, run=run, n=0))
    updates, expected = [], dict(values)
    for name in data.draw(st.lists(st.sampled_from(sorted(kinds)),
                                   min_size=1, unique=True)):
        field, kind = getattr(model, name), kinds[name]
        action = data.draw(st.sampled_from(
            ["set", "remove", "set_if_not_exists"]
            + (["add"] if kind == "int" else [])))
        value = data.draw(operand(kind))
        if action == "set":
            updates.append(field.set(value))
            expected[name] = value
        elif action == "remove":
            updates.append(field.remove())
            expected.pop(name, None)
        elif action == "set_if_not_exists":
            updates.append(field.set_if_not_exists(value))
            expected.setdefault(name, value)
        else:
            updates.append(field.add(value))
            expected[name] = expected.get(name, 0) + value
    condition, check = data.draw(conditions(model, kinds))
    result = model.update_one((model.run == run) & (model.n == 0)
                              & condition, updates)
    stored = model.get_one((run, 0)).to_dict()
    del stored["run"], stored["n"]
    if check(values):
        assert stored == expected
        assert result.to_dict() == dict(expected, run=run, n=0)
    else:
        assert result is None
        assert stored == values


def test_empty_string_comparisons():
    skip_on_gap("empty strings")
    Profile.create_table()
    Profile.save_many([{"name": "empty", "status": ""},
                       {"name": "x", "status": "x"}])
    for condition, expected in (
            (Profile.status == "", ["empty"]),
            (Profile.status < "a", ["empty"]),
            (Profile.status.between("", "z"), ["empty", "x"]),
            (Profile.status.in_([""]), ["empty"]),
            (Profile.status.begins_with(""), ["empty", "x"]),
            (Profile.status != "", ["x"])):
        found = Profile.get_many(condition)
        assert sorted(item.name for item in found) == expected, condition


def overriding(field_class):
    """A subclass of ``field_class`` changing validation (no 7 in the
    value) and reading (a tagged tuple), as a user's field might."""
    class Overriding(field_class):
        def validate(self, value):
            value = super().validate(value)
            if "7" in repr(value):
                raise ValidationError("must not hold a 7")
            return value

        def _load(self, av):
            return "loaded", super()._load(av)

    return Overriding


# Every field class, configured as the fast paths distinguish them.
CODEC_FIELDS = [
    lambda kind=IntField: kind(), lambda kind=IntField: kind(
        min_value=-50, max_value=10 ** 6),
    lambda kind=FloatField: kind(), lambda kind=FloatField: kind(
        min_value=0.5),
    lambda kind=BooleanField: kind(), lambda kind=StringField: kind(),
    lambda kind=StringField: kind(min_length=1, max_length=5),
    lambda kind=StringField: kind(regex="[a-z]*"),
    lambda kind=EmailField: kind(), lambda kind=URLField: kind(),
    lambda kind=IPAddressField: kind(), lambda kind=UUIDField: kind(),
    lambda kind=DateTimeField: kind(), lambda kind=DateTimeField: kind(
        tzd="utc"), lambda kind=DateTimeField: kind(
        serialized_format="%Y-%m-%d %H:%M:%S.%f"),
    lambda kind=DateField: kind(), lambda kind=TimedeltaField: kind(),
    lambda kind=TimedeltaField: kind(precision="weeks"),
    lambda kind=ListField: kind(StringField), lambda kind=ListField: kind(
        IntField(max_value=100)),
    lambda kind=ListField: kind(overriding(IntField)),
    lambda kind=DictField: kind(), lambda kind=DictField: kind(
        city=StringField(), zip=IntField()),
    lambda kind=BinaryField: kind(), lambda kind=ListField: kind(
        BinaryField), lambda kind=SetField: kind(StringField),
    lambda kind=SetField: kind(IntField(max_value=3)),
    lambda kind=SetField: kind(BinaryField), lambda kind=TTLField: kind(),
    lambda kind=dynamongo.VersionField: kind(),
]
CODEC_FIELD_NAMES = [  # the test ids of CODEC_FIELDS, in order
    "IntField", "IntField(bounds)", "FloatField", "FloatField(min)",
    "BooleanField", "StringField", "StringField(lengths)",
    "StringField(regex)", "EmailField", "URLField", "IPAddressField",
    "UUIDField", "DateTimeField", "DateTimeField(tzd=utc)",
    "DateTimeField(serialized_format)", "DateField", "TimedeltaField",
    "TimedeltaField(weeks)", "ListField(StringField)",
    "ListField(IntField(max))", "ListField(overriding IntField)",
    "DictField()", "DictField(sub-fields)", "BinaryField",
    "ListField(BinaryField)", "SetField(StringField)",
    "SetField(IntField(max))", "SetField(BinaryField)", "TTLField",
    "VersionField"]
codec_values = st.one_of(
    st.booleans(), st.integers(-10 ** 40, 10 ** 40),
    st.floats(), st.decimals(allow_nan=False, places=3),
    st.text(max_size=8), st.sampled_from([
        "a@b.io", "a-.b@c.io", "élan@b.io", "http://x.io/7", "10.0.0.7",
        "::1", "2020-01-02", "2020-01-02T03:04:05", "2020-01-02T03:04:05Z",
        "12", "7.5", "\ud800"]),
    st.uuids(), st.datetimes(timezones=st.none() | st.just(UTC) | offsets),
    st.dates(), st.timedeltas(), st.timedeltas(
        datetime.timedelta(seconds=-1), datetime.timedelta(seconds=1)),
    st.lists(st.text(max_size=3) | st.integers(-200, 200), max_size=3),
    st.dictionaries(st.sampled_from(["city", "zip", "x"]),
                    st.text(max_size=3) | st.integers(0, 99), max_size=2),
    st.binary(max_size=4), st.binary(max_size=4).map(bytearray),
    st.lists(st.binary(max_size=2), max_size=2),
    st.sets(st.text(max_size=3) | st.integers(-5, 5) | st.binary(
        max_size=2), max_size=3), st.frozensets(st.integers(0, 4)))


# The edges of every field's input domain: bounds of numbers, lengths,
# dates and sizes; control characters and lone surrogates; formats almost
# right; containers of the wrong shape; values of no field's type.
MINUTES = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
EDGE_VALUES = [
    True, False, 0, 1, -1, 7, 2 ** 63, -(2 ** 63) - 1, 10 ** 38 - 1,
    10 ** 38 + 1, 10 ** 125, 10 ** 126, -(10 ** 126), -51, -50, 10 ** 6,
    10 ** 6 + 1, 100, 101, 3, 4,
    0.0, -0.0, 0.49, 0.5, 1.5, 1e-130, 1e-131, 9.9e125, 1e126, 1e308,
    5e-324, math.inf, -math.inf, math.nan,
    decimal.Decimal("1e-130"), decimal.Decimal("1e-131"),
    decimal.Decimal("9.99e125"), decimal.Decimal("1e126"),
    decimal.Decimal("NaN"), decimal.Decimal("-0"), decimal.Decimal("0.5"),
    decimal.Decimal("1" * 38), decimal.Decimal("1" * 39),
    "", " ", "a", "7", "aaaaa", "aaaaaa", "Abc", "\x00", "a\x00b", "\x1f",
    "\x7f", "\x85", "\u2028", "\ud800", "a\udfff", "\uffff", "\U0001f600",
    "é", "12", " 12 ", "1e3", "0x10", "1_000", "nan", "inf", "true",
    "a@b.io", "A@B.IO", "a@b", "a..b@c.io", "a@b.io\n", "élan@b.io",
    "a" * 65 + "@b.io", "http://x.io", "http://x.io/7", "https://localhost",
    "ftp://x.io", "http://x.io/\x00", "http:///x", "10.0.0.1", "256.0.0.1",
    "::1", "1.2.3.4\n", "2020-01-02", "2020-02-30", "2020-01-02T03:04:05",
    "2020-01-02T03:04:05Z", "2020-01-02T03:04:05.123+05:30",
    "2020-01-02 03:04:05.000001", "0001-01-01T00:00:00",
    "9999-12-31T23:59:59.999999", "2020-01-02T24:00:00",
    "00000000-0000-0000-0000-000000000000",
    "{12345678-1234-5678-1234-567812345678}", uuid.UUID(int=0),
    uuid.UUID(int=2 ** 128 - 1),
    datetime.datetime.min, datetime.datetime.max,
    datetime.datetime.max.replace(tzinfo=UTC),
    datetime.datetime(1970, 1, 1, tzinfo=UTC),
    datetime.datetime(2020, 1, 2, 3, 4, 5, 7, tzinfo=MINUTES),
    datetime.date.min, datetime.date.max, datetime.date(2020, 2, 29),
    datetime.timedelta(0), datetime.timedelta.max, datetime.timedelta.min,
    datetime.timedelta(microseconds=1), datetime.timedelta(weeks=1),
    datetime.timedelta(seconds=-1),
    b"", b"\x00", b"\xff" * 4, bytearray(b"ab"), memoryview(b"ab"),
    [], [""], ["a", "b"], [1, None], [1, "a"], [b"a"], [[1]], (1, 2),
    ["7"], ["a\x00"], ["\ud800"], [100], [101], [1, 1],
    {}, {"city": "x"}, {"city": 1}, {"zip": 5}, {"x": None}, {"": 1},
    {"city": "x", "zip": 7}, {"city": "\x00"}, {1: "a"},
    {"x": {"y": [b"z", {1, 2}]}},
    set(), {""}, {"a"}, {"a\x00"}, {1, 2}, {1, "a"}, {b"a"}, {b""}, {4}, {1.5},
    {True}, frozenset({3}),
    object(), 1j, Ellipsis, int,
]
# What other clients may have stored: values of every type, of the field's
# type but odd, and NULL.
EDGE_STORED = [
    {"NULL": True}, {"BOOL": True}, {"S": ""}, {"S": "\x00"}, {"S": "12"},
    {"S": "2020-01-02"}, {"S": "2020-13-01"}, {"S": "a@b"}, {"S": "x" * 9},
    {"N": "1"}, {"N": "-0"}, {"N": "1e5"}, {"N": "1.5"}, {"N": " 1"},
    {"N": "1_0"}, {"N": "1e400"}, {"N": "NaN"}, {"N": "9" * 39},
    {"N": "1E-130"}, {"N": "99999999999999999999"}, {"B": b""},
    {"B": "YWI="}, {"B": "not base64"}, {"L": []}, {"L": [{"S": "a"}]},
    {"L": [{"N": "101"}]}, {"L": [{"NULL": True}]}, {"M": {}},
    {"M": {"city": {"S": "x"}}}, {"M": {"zip": {"S": "x"}}},
    {"SS": ["a"]}, {"SS": ["7", "8"]}, {"NS": ["1", "4"]}, {"BS": [b"a"]},
]


def agree_on(field, meta, value):
    """What the generated functions make of ``value`` is what the field's
    plain methods make of it: the same refusal, or the same native value,
    stored form, JSON and value read back."""
    if field._is_absent(value):  # a SetField's empty set: not stored
        assert "value" not in meta.validate_item(
            {"id": "k", "value": value})[1]
        return
    try:
        native = field.validate(value)
        av = field._dump(native)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as caught:
            meta.validate_item({"id": "k", "value": value})
        assert caught.value.errors == dynamongo._located(
            exc, "value").errors
        return
    natives, stored = meta.validate_item({"id": "k", "value": value})
    # A size bound the codec relies on holds.
    bound = dynamongo._fast_path_of(field, "value", "av").size
    if type(bound) is int:
        assert dynamongo._av_size(av) <= bound
    elif bound:
        assert dynamongo._av_size(av) <= eval(  # noqa: S307 -- ours
            bound, {"value": native})
    assert type(natives["value"]) is type(native)
    assert natives["value"] == native and stored["value"] == av
    assert dynamongo._with_bytes(json.loads(meta.item_json(stored))) \
        == stored
    loaded = meta.from_item(stored).value
    assert loaded == field._load(av)
    assert type(loaded) is type(field._load(av))


def agree_on_stored(meta, av):
    """Reading a stored attribute value: the generated reader gives what
    the plain one (``read_stored``, built on the field's methods) gives,
    or refuses it with the same error."""
    item = {"id": {"S": "k"}, "value": av}
    try:
        expected = meta.read_stored(item)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as caught:
            meta.from_item(item)
        assert caught.value.errors == exc.errors
        return
    read = meta.from_item(item).__dict__
    assert repr(read) == repr(expected)  # (NaN included)
    assert [type(value) for value in read.values()] \
        == [type(value) for value in expected.values()]


def agreeing(make, override):
    """The field ``make`` makes (in a subclass overriding its methods when
    ``override``), on a model of its own, and the model's _meta."""
    field = make(overriding(make.__defaults__[0])) if override else make()
    model = type("Agree", (Model,), {
        "__table__": "agree", "__hash_key__": "id", "__module__": __name__,
        "id": StringField(required=True), "value": field})
    return model.value, model._meta


OVERRIDES = pytest.mark.parametrize(
    "override", [False, True],
    ids=["its methods", "a subclass overriding them"])


@OVERRIDES
@pytest.mark.parametrize("make", CODEC_FIELDS, ids=CODEC_FIELD_NAMES)
def test_generated_functions_agree_with_the_plain_methods_on_every_edge(
        make, override, clock):
    field, meta = agreeing(make, override)
    for value in EDGE_VALUES:
        try:
            agree_on(field, meta, value)
        except AssertionError as exc:
            raise AssertionError(f"on {value!r}") from exc
    for av in EDGE_STORED:
        try:
            agree_on_stored(meta, av)
        except AssertionError as exc:
            raise AssertionError(f"on stored {av!r}") from exc


@PROPERTIES
@given(data=st.data())
@OVERRIDES
@pytest.mark.parametrize("make", CODEC_FIELDS, ids=CODEC_FIELD_NAMES)
def test_property_generated_functions_agree_with_the_plain_methods(
        make, override, data, clock):
    field, meta = agreeing(make, override)
    for value in data.draw(st.lists(codec_values, min_size=1, max_size=5)):
        agree_on(field, meta, value)


# -- Every misuse gets a clear error -----------------------------------------

X = JOHN["email"]
MISUSES = [
    # (call, exception, text its message must hold)
    ("Model(unknown=...)", lambda: User(shoe_size=9), ValidationError,
     "shoe_size"),
    ("save_one(list)", lambda: User.save_one(["x"]), ValidationError, "dict"),
    ("save_one(unknown field)", lambda: User.save_one(dict(JOHN, shoe=1)),
     ValidationError, "shoe"),
    ("save_one(None key)", lambda: User.save_one(dict(JOHN, email=None)),
     ValidationError, "email"),
    ("save_one(key missing)", lambda: User.save_one({"name": "x"}),
     ValidationError, "email"),
    ("save_one(wrong type)", lambda: User.save_one(dict(
        JOHN, year_of_birth="old")), ValidationError, "year_of_birth"),
    ("save_one(over 400 KB)", lambda: User.save_one(dict(
        JOHN, name="x" * 410_000)), ValidationError, "name"),
    ("save_one(set of mixed types)", lambda: Everything.save_one(
        {"id": uuid.uuid4(), "free": {"s": {1, "a"}}}), ValidationError,
     "free.s"),
    ("save_one(overwrite='no')", lambda: User.save_one(JOHN, overwrite="no"),
     ValidationError, "overwrite"),
    ("save_one(overwrite=unknown attribute)", lambda: User.save_one(
        JOHN, overwrite=User.shoe_size == 9), UnknownFieldError, "shoe_size"),
    ("save_one(overwrite=other model)", lambda: User.save_one(
        JOHN, overwrite=Contacts.email == "a@b.io"), ExpressionError,
     "Contacts"),
    ("save_one(existing, overwrite=False)", lambda: User.save_one(
        JOHN, overwrite=False), ConditionalCheckFailedException, "PutItem"),
    ("save_many(dict)", lambda: User.save_many(JOHN), ValidationError,
     "save_many"),
    ("save_many([])", lambda: User.save_many([]), ValidationError,
     "at least one"),
    ("save_many(bad item)", lambda: User.save_many([JOHN, {"email": "x"}]),
     ValidationError, "[1].email"),
    ("save_many(over 400 KB)", lambda: User.save_many([dict(
        JOHN, name="x" * 410_000)]), ValidationError, "[0].name"),
    ("get_one(None)", lambda: User.get_one(None), ValidationError, "email"),
    ("get_one(int)", lambda: User.get_one(5), ValidationError, "email"),
    ("get_one(dict without key)", lambda: User.get_one({"name": "x"}),
     ValidationError, "email"),
    ("get_one('')", lambda: User.get_one(""), ValidationError, "email"),
    ("get_one(missing)", lambda: User.get_one("no@b.io"), User.DoesNotExist,
     "no@b.io"),
    ("get_one(not condition)", lambda: User.get_one(not (User.email == X)),
     TruthValueError, "~"),
    ("get_one(unknown attribute)", lambda: User.get_one(User.shoe_size == 9),
     UnknownFieldError, "shoe_size"),
    ("get_one(extra condition)", lambda: User.get_one(
        (User.email == X) & (User.name == "x")), ExpressionError, "get_many"),
    ("get_one(scalar on composite key)", lambda: Contacts.get_one(
        uuid.uuid4()), ValidationError, "user_id"),
    ("get_one(table missing)", lambda: Contacts.get_one(
        (uuid.uuid4(), "a@b.io")), TableNotFoundError, "user-contacts"),
    ("get_many(str)", lambda: User.get_many(X), ValidationError, "get_many"),
    ("get_many([])", lambda: User.get_many([]), ValidationError,
     "at least one"),
    ("get_many([None])", lambda: User.get_many([None]), ValidationError,
     "email"),
    ("get_many(limit=0)", lambda: User.get_many([X], limit=0),
     ValidationError, "limit"),
    ("get_many(in_ 101 values)", lambda: User.get_many(User.email.in_(
        [f"u{i}@b.io" for i in range(101)])), ExpressionError, "100"),
    ("get_many([key & filter])", lambda: User.get_many(
        [(User.email == X) & (User.name == "x")]), ExpressionError,
     "entry 0"),
    ("get_many(unknown attribute)", lambda: User.get_many(
        User.shoe_size > 1), UnknownFieldError, "shoe_size"),
    ("get_many(and)", lambda: User.get_many((User.name == "a")
                                            and (User.name == "b")),
     TruthValueError, "&"),
    ("delete_one(None)", lambda: User.delete_one(None), ValidationError,
     "email"),
    ("delete_one(ORed)", lambda: User.delete_one(
        (User.email == X) | (User.name == "x")), ExpressionError, "ORed"),
    ("delete_many(dict)", lambda: User.delete_many({"email": X}),
     ValidationError, "delete_many"),
    ("delete_many([])", lambda: User.delete_many([]), ValidationError,
     "at least one"),
    ("delete_many([int])", lambda: User.delete_many([5]), ValidationError,
     "email"),
    ("update_one([])", lambda: User.update_one(X, []), ValidationError,
     "empty"),
    ("update_one('name')", lambda: User.update_one(X, "name"),
     ValidationError, "Update"),
    ("update_one(bad value)", lambda: User.update_one(X, User.name.set(5)),
     ValidationError, "name"),
    ("update_one(unknown field)", lambda: User.update_one(
        X, User.shoe_size.set(9)), UnknownFieldError, "shoe_size"),
    ("update_one(remove required)", lambda: User.update_one(
        X, User.name.remove()), ValidationError, "name"),
    ("update_one(key field)", lambda: User.update_one(
        X, User.email.set("new@b.io")), ValidationError, "email"),
    ("update_one(overlapping)", lambda: User.update_one(
        X, [User.cities_visited.set([]), User.cities_visited[0].set("a")]),
     ExpressionError, "cities_visited"),
    ("update_one(return_values)", lambda: User.update_one(
        X, User.name.set("a"), return_values="ALL"), ValidationError,
     "return_values"),
    ("update_one(add str)", lambda: User.update_one(
        X, User.year_of_birth.add("1")), ValidationError, "year_of_birth"),
    ("update_one(add past max)", lambda: User.update_one(
        X, User.year_of_birth.add(100)), ValidationError, "max_value"),
    ("update_one(None key)", lambda: User.update_one(
        None, User.name.set("a")), ValidationError, "email"),
    ("update_from_dict(list)", lambda: User.update_from_dict([X]),
     ValidationError, "dict"),
    ("update_from_dict(no key)", lambda: User.update_from_dict(
        {"name": "a"}), ValidationError, "email"),
    ("update_from_dict(unknown)", lambda: User.update_from_dict(
        {"email": X, "shoe_size": 9}), ValidationError, "shoe_size"),
    ("update_from_dict(None required)", lambda: User.update_from_dict(
        {"email": X, "name": None}), ValidationError, "name"),
    ("keys_in(str)", lambda: User.keys_in(X), ValidationError, "keys_in"),
    ("keys_in(scalar on composite)", lambda: Contacts.keys_in(
        [uuid.uuid4()]), ValidationError, "user_id"),
    ("between(high, low)", lambda: User.year_of_birth.between(2000, 1990),
     ExpressionError, "year_of_birth"),
    ("begins_with(on int)", lambda: User.year_of_birth.begins_with("19"),
     ExpressionError, "year_of_birth"),
    ("compare(wrong type)", lambda: User.year_of_birth > "old",
     ValidationError, "year_of_birth"),
    ("sub-field unknown", lambda: Profile.address.country == "KE",
     UnknownFieldError, "country"),
    ("set_config(table_prefix='a b')", lambda: Connection.set_config(
        table_prefix="a b"), SchemaError, "table_prefix"),
    ("set_config(max_attempts=0)", lambda: Connection.set_config(
        max_attempts=0), ValidationError, "max_attempts"),
    ("create_table(twice)", lambda: User.create_table(), DynamoDBError,
     "exist_ok=True"),
    ("delete_table(missing)", lambda: Contacts.delete_table(),
     TableNotFoundError, "user-contacts"),
    ("table_name(abstract)", lambda: Stamped.table_name(), SchemaError,
     "abstract"),
    ("table(abstract)", lambda: Stamped.table(), SchemaError, "abstract"),
    ("sync_table(abstract)", lambda: Stamped.sync_table(), SchemaError,
     "abstract"),
    ("get_table(int)", lambda: Connection.get_table(5), ValidationError,
     "name"),
    ("settings(masked='no')", lambda: Connection.settings(masked="no"),
     ValidationError, "masked"),
    ("set_config(scan='never')", lambda: Connection.set_config(
        scan="never"), ValidationError, "scan"),
    ("explain(unknown index)", lambda: User.explain(
        User.name == "x", index="by_name"), ExpressionError, "by_name"),
    ("explain(limit=-1)", lambda: User.explain(User.name == "x", limit=-1),
     ValidationError, "limit"),
    ("get_many(index= with keys)", lambda: User.get_many(
        [X], index="by_name"), ExpressionError, "index="),
    ("iter_many(limit=0)", lambda: User.iter_many([X], limit=0),
     ValidationError, "limit"),
    ("iter_many(fields='name')", lambda: User.iter_many(
        User.name == "x", fields="name"), ValidationError, "fields"),
    ("get_page(keys)", lambda: User.get_page([X], 10), ExpressionError,
     "already a page"),
    ("get_page(limit=None)", lambda: User.get_page(User.name == "x", None),
     ValidationError, "limit"),
    ("get_page(cursor junk)", lambda: User.get_page(
        User.name == "x", 10, cursor="junk"), CursorError, "cursor"),
    ("count(unknown index)", lambda: User.count(index="by_name"),
     ExpressionError, "by_name"),
    ("count(unknown attribute)", lambda: User.count(User.shoe_size == 9),
     UnknownFieldError, "shoe_size"),
    ("estimated_count(table missing)", lambda: Contacts.estimated_count(),
     TableNotFoundError, "user-contacts"),
    ("transaction(token=5)", lambda: dynamongo.transaction(token=5),
     ValidationError, "token"),
    ("Transaction.save_one(invalid)", lambda: dynamongo.transaction(
    ).save_one(User, {"email": "bad", "name": "x"}), ValidationError,
     "[0].email"),
    ("Transaction.update_one(key field)", lambda: dynamongo.transaction(
    ).update_one(User, X, User.email.set("x@y.io")), ValidationError,
     "part of the key"),
    ("Transaction.delete_one(an instance for a model)",
     lambda: dynamongo.transaction().delete_one(User(**JOHN), X),
     ValidationError, "takes a model"),
    ("Transaction.check(a key)", lambda: dynamongo.transaction().check(
        User, X), ExpressionError, "takes a condition"),
    ("transact_get(a model)", lambda: dynamongo.transact_get([User]),
     ValidationError, "(model, key) pairs"),
    ("VersionField.set", lambda: Note.version.set(2), ValidationError,
     "Note.version is a VersionField"),
    ("two VersionFields", lambda: type(Model)("Twice", (Model,), {
        "__table__": "twice", "__hash_key__": "id", "id": StringField(),
        "a": dynamongo.VersionField(), "b": dynamongo.VersionField()}),
     SchemaError, "a, b"),
    ("save_one(version 0)", lambda: Note.save_one({"id": "n", "version": 0}),
     ValidationError, "version"),
    ("update_one(version 'x')", lambda: Note.update_one(
        {"id": "n", "version": "x"}, Note.text.set("y")), ValidationError,
     "version"),
    ("delete_one(version -1)", lambda: Note.delete_one(
        Note(id="n", version=-1)), ValidationError, "version"),
    ("from_image(plain values)", lambda: User.from_image(
        {"email": X, "name": "x"}), ValidationError, "DynamoDB-JSON image"),
    ("changes(records list)", lambda: dynamongo.changes([], User),
     ValidationError, "Records"),
    ("changes(an instance)", lambda: dynamongo.changes(
        {"Records": []}, User(**JOHN)), ValidationError, "models"),
    ("SetField.add([])", lambda: Tagged.tags.add([]), ValidationError,
     "at least one element"),
    ("SetField.discard(wrong type)", lambda: Tagged.scores.discard("x"),
     ValidationError, "scores"),
    ("size() > str", lambda: User.name.size() > "3", ExpressionError,
     "int >= 0"),
    ("save_one(binary as text)", lambda: Blob.save_one(
        {"owner": "o", "digest": "text"}), ValidationError, "digest"),
    ("save_one(TTL as text)", lambda: Session.save_one(
        {"user": "u", "id": 1, "expires": "tomorrow"}), ValidationError,
     "expires"),
    ("add_listener(no method)", lambda: Connection.add_listener(object()),
     ValidationError, "started(event)"),
    ("remove_listener(unknown)", lambda: Connection.remove_listener(
        Recorder()), ValidationError, "not a registered listener"),
    # The awaitable twins check as their sync twins do.
    ("asave_one(list)", lambda: asyncio.run(User.asave_one(["x"])),
     ValidationError, "dict"),
    ("aget_one(None)", lambda: asyncio.run(User.aget_one(None)),
     ValidationError, "email"),
    ("aget_one(missing)", lambda: asyncio.run(User.aget_one("no@b.io")),
     User.DoesNotExist, "no@b.io"),
    ("adelete_one(ORed)", lambda: asyncio.run(User.adelete_one(
        (User.email == X) | (User.name == "x"))), ExpressionError, "ORed"),
    ("aupdate_one(key field)", lambda: asyncio.run(User.aupdate_one(
        X, User.email.set("new@b.io"))), ValidationError, "email"),
    ("aupdate_from_dict(unknown)", lambda: asyncio.run(
        User.aupdate_from_dict({"email": X, "shoe_size": 9})),
     ValidationError, "shoe_size"),
    ("asave_many(bad item)", lambda: asyncio.run(User.asave_many(
        [JOHN, {"email": "x"}])), ValidationError, "[1].email"),
    ("aget_many([])", lambda: asyncio.run(User.aget_many([])),
     ValidationError, "at least one"),
    ("aget_page(keys)", lambda: asyncio.run(User.aget_page([X], 10)),
     ExpressionError, "already a page"),
    ("aiter_many(limit=0)", lambda: User.aiter_many([X], limit=0),
     ValidationError, "limit"),
    ("acount(unknown index)", lambda: asyncio.run(User.acount(
        index="by_name")), ExpressionError, "by_name"),
    ("aestimated_count(table missing)", lambda: asyncio.run(
        Contacts.aestimated_count()), TableNotFoundError, "user-contacts"),
    ("adelete_many([int])", lambda: asyncio.run(User.adelete_many([5])),
     ValidationError, "email"),
    ("acreate_table(twice)", lambda: asyncio.run(User.acreate_table()),
     DynamoDBError, "exist_ok=True"),
    ("adelete_table(missing)", lambda: asyncio.run(
        Contacts.adelete_table()), TableNotFoundError, "user-contacts"),
    ("async_table(abstract)", lambda: asyncio.run(Stamped.async_table()),
     SchemaError, "abstract"),
    ("atransact_get(a model)", lambda: asyncio.run(dynamongo.atransact_get(
        [User])), ValidationError, "(model, key) pairs"),
    ("Transaction.acommit(twice)", lambda: asyncio.run(committed_twice()),
     ExpressionError, "is over"),
    # Collections and templated keys: refused before sending.
    ("get_collection()", lambda: dynamongo.get_collection(),
     ValidationError, "one model or more"),
    ("get_collection(no entity)", lambda: dynamongo.get_collection(
        User, email=X), ValidationError, "User declares no __entity__"),
    ("get_collection(other fields)", lambda: dynamongo.get_collection(
        Customer, ShopOrder, order_id="o1"), ExpressionError,
     "Customer.pk is made of customer_id ('CUSTOMER#{customer_id}'), not "
     "of order_id"),
    ("get_collection(two tables)", lambda: dynamongo.get_collection(
        Customer, Elsewhere, customer_id="c1"), ExpressionError,
     "share no partition"),
    ("aget_collection(bad value)", lambda: asyncio.run(
        dynamongo.aget_collection(Customer, customer_id=5)),
     ValidationError, "customer_id: must be a string"),
    ("get_one(templated key, a range)", lambda: ShopOrder.get_one(
        (ShopOrder.customer_id == "c1") & (ShopOrder.order_id == "o1")
        & (ShopOrder.placed_at > placed(1))), ExpressionError,
     "no == condition on sk (or on placed_at, order_id)"),
    ("delete_one(templated key, ORed)", lambda: ShopOrder.delete_one(
        (ShopOrder.customer_id == "c1") | (ShopOrder.order_id == "o1")),
     ExpressionError, "ORed"),
]


class Elsewhere(Model):
    __table__ = "elsewhere"
    __hash_key__ = "pk"
    __entity__ = "customer"
    pk = KeyTemplate("CUSTOMER#{customer_id}")
    customer_id = StringField(required=True)


async def committed_twice():
    async with dynamongo.transaction() as transaction:
        pass
    await transaction.acommit()


@pytest.mark.parametrize("call, error, text", [row[1:] for row in MISUSES],
                         ids=[row[0] for row in MISUSES])
def test_misuse_raises_a_clear_dynamongo_error(users, call, error, text):
    User.save_one(JOHN)
    before = raw_items(User)
    with pytest.raises(dynamongo.DynamongoError) as caught:
        call()
    assert isinstance(caught.value, error)
    assert text in str(caught.value)
    assert raw_items(User) == before  # nothing written


def test_misuse_table_covers_every_public_method(users):
    """Every public method that takes an argument, or is called on a model
    (all but to_dict), is entered by some misuse row."""
    import inspect

    methods = {"Model()": Model.__init__.__code__,
               "transaction()": dynamongo.transaction.__code__,
               "transact_get()": dynamongo.transact_get.__code__,
               "atransact_get()": dynamongo.atransact_get.__code__}
    for owner in (Model, Connection, dynamongo.Transaction):
        for name, member in vars(owner).items():
            if isinstance(member, classmethod):
                function = inspect.unwrap(member.__func__)
            elif inspect.isfunction(member) and len(
                    inspect.signature(member).parameters) > 1:
                function = member
            else:
                continue
            if not name.startswith("_"):
                methods[f"{owner.__name__}.{name}"] = function.__code__
    entered = set()

    def profile(frame, event, _):
        if event == "call":
            entered.add(frame.f_code)

    User.save_one(JOHN)
    for _, call, _, _ in MISUSES:
        sys.setprofile(profile)
        try:
            call()
        except dynamongo.DynamongoError:
            pass
        finally:
            sys.setprofile(None)
    # Connection's methods that take no argument need no misuse row.
    missing = sorted(name for name, code in methods.items()
                     if code not in entered and not (
                         name.startswith("Connection.") and
                         code.co_argcount == 1))
    assert missing == []


def public_callables():
    """(name, callable) of every public class, function and method."""
    import inspect

    for name in dynamongo.__all__:
        thing = getattr(dynamongo, name)
        if not inspect.isclass(thing):
            yield name, thing
            continue
        if not issubclass(thing, Exception):
            yield name, thing
        for attribute, member in vars(thing).items():
            if not attribute.startswith("_") and callable(
                    getattr(thing, attribute)):
                yield f"{name}.{attribute}", getattr(thing, attribute)


def test_options_beyond_the_first_few_are_given_by_keyword():
    import inspect

    positional = (inspect.Parameter.POSITIONAL_ONLY,
                  inspect.Parameter.POSITIONAL_OR_KEYWORD)
    crowded = {}
    for name, thing in public_callables():
        try:
            parameters = inspect.signature(thing).parameters.values()
        except (TypeError, ValueError):
            continue
        count = sum(parameter.kind in positional for parameter in parameters
                    if parameter.name not in ("self", "cls"))
        if count > 6:
            crowded[name] = count
    assert crowded == {}
    with pytest.raises(TypeError, match="positional"):
        User.explain(User.email == "a@b.io", True)


def test_every_public_parameter_is_documented():
    import inspect

    undocumented = {}
    for name, thing in public_callables():
        try:
            parameters = inspect.signature(thing).parameters
        except (TypeError, ValueError):
            continue
        doc = inspect.getdoc(thing) or ""
        # (``**unknown`` takes no option: it refuses those no field takes.)
        lacking = [parameter for parameter in parameters
                   if parameter not in ("self", "cls", "unknown")
                   and f"{parameter}" not in doc]
        if lacking:
            undocumented[name] = lacking
    assert undocumented == {}


# -- Security ----------------------------------------------------------------

def test_expression_injection_is_impossible():
    hostile = "x) OR (attribute_exists(#n0)) OR (:v0 = :v0"
    Hostile = property_model([hostile], ["str"])
    Hostile.create_table()
    Hostile.save_one({"run": "r", "n": 1, hostile: "on"})
    field = getattr(Hostile, hostile)
    expression = dynamongo._Expression()
    condition = (field == hostile) | field.not_exists()
    assert condition._render(expression) == \
        "(#n0 = :v0) OR (attribute_not_exists(#n0))"
    assert expression.names == {"#n0": hostile}
    assert expression.values == {":v0": {"S": hostile}}
    assert Hostile.get_many(field == hostile) == []
    assert getattr(Hostile.update_one(("r", 1), field.set(hostile)),
                   hostile) == hostile
    assert Hostile.get_many(field == hostile)[0].n == 1


def test_table_names_cannot_escape_their_prefix():
    for table in ("../users", "users/x", "a b", "users;drop", "ü-table",
                  "x" * 256):
        with pytest.raises(SchemaError, match=(
                "Escaping.__table__ .* may hold only letters")):
            type("Escaping", (Model,), {"__table__": table,
                                        "__hash_key__": "id",
                                        "id": IntField()})
    Connection.set_config(table_prefix="tenant-a.")
    assert User.table_name() == "tenant-a.users"
    for prefix in ("tenant/", "a b", "x:"):
        with pytest.raises(SchemaError, match=(
                "table_prefix .* may hold only letters")):
            Connection.set_config(table_prefix=prefix)
    assert User.table_name() == "tenant-a.users"


def test_credentials_never_shown_in_errors_or_logs(users, caplog,
                                                   monkeypatch, no_sleep):
    secret = "SECRETsecretSECRET9876"
    token = "TOKENtokenTOKEN5432"
    Connection.set_config(secret_access_key=secret, session_token=token)
    caplog.set_level(logging.DEBUG)
    texts = [repr(Connection.settings()), str(Connection.settings())]
    for call in (lambda: Contacts.get_one((uuid.uuid4(), "a@b.io")),
                 lambda: User.get_one("nobody@b.io"),
                 lambda: User.save_one({"email": "bad"})):
        with pytest.raises(dynamongo.DynamongoError) as caught:
            call()
        texts += [str(caught.value), repr(caught.value),
                  repr(getattr(caught.value, "response", ""))]
    Faults(monkeypatch, unprocessed=1.0)
    Connection.set_config(batch_attempts=2)
    result = User.save_many([JOHN])
    texts += [repr(result.fail), str(result.fail[0].error)]
    texts.append(caplog.text)
    for text in texts:
        assert secret not in text and token not in text


# -- The manual's quickstart -------------------------------------------------

def test_manual_quickstart_readme_example(users):
    john = User.save_one({
        "email": "johndoe@gmail.com",
        "name": "John Doe",
        "year_of_birth": 1990,
        "cities_visited": ["Nairobi", "New York"],
    })
    jane = User.save_one({"email": "jane@gmail.com", "name": "Jane Doe"})
    assert john.name == "John Doe"
    assert jane.year_of_birth is None and jane.cities_visited is None
    assert isinstance(jane.created_at, datetime.datetime)
    user = User.get_one(User.email == "johndoe@gmail.com")
    assert user.to_dict() == john.to_dict()
    assert user.to_dict()["cities_visited"] == ["Nairobi", "New York"]


def test_manual_save_one_with_an_instance(users):
    user = User(email="johndoe@gmail.com", name="John Doe",
                cities_visited=[])
    user.year_of_birth = 1990
    user.cities_visited = ["Nairobi", "New York"]
    user = User.save_one(user)
    stored = User.get_one("johndoe@gmail.com")
    assert stored == user
    assert stored.year_of_birth == 1990


def test_manual_overwrite_false_raises(users):
    User.save_one(JOHN)
    with pytest.raises(ConditionalCheckFailedException, match=(
            "ConditionalCheckFailed")):
        User.save_one(JOHN, overwrite=False)


def test_manual_delete_one_examples(users):
    def fresh():
        User.save_one(JOHN)

    fresh()
    assert User.delete_one("johndoe@gmail.com").email == JOHN["email"]
    fresh()
    assert User.delete_one({"email": "johndoe@gmail.com"}) is not None
    fresh()
    assert User.delete_one(User(email="johndoe@gmail.com")) is not None
    fresh()
    assert User.delete_one(User.email == "johndoe@gmail.com") is not None
    fresh()
    assert User.delete_one((User.email == "johndoe@gmail.com")
                           & (User.year_of_birth <= 2000)) is not None
    fresh()
    assert User.delete_one((User.email == "johndoe@gmail.com")
                           & User.cities_visited.contains("Nairobi")) \
        is not None
    fresh()
    assert User.delete_one(
        (User.email == "johndoe@gmail.com")
        & ((User.year_of_birth > 2000)
           | User.cities_visited.contains("Nairobi"))) is not None
    fresh()
    with pytest.raises(ExpressionError, match=(
            "does not name one item: the condition is ORed")):
        User.delete_one((User.email == "johndoe@gmail.com")
                        | (User.year_of_birth > 2000))
    assert len(raw_items(User)) == 1


def test_manual_get_one_examples(users):
    john = User.save_one(JOHN)
    assert User.get_one("johndoe@gmail.com") == john
    assert User.get_one({"email": "johndoe@gmail.com"}) == john
    assert User.get_one(User(email="johndoe@gmail.com")) == john
    assert User.get_one(User.email == "johndoe@gmail.com") == john


def test_manual_save_many_example(users):
    user_list = [
        {"email": "johndoe@gmail.com", "name": "John Doe",
         "year_of_birth": 1990, "cities_visited": ["Nairobi", "New York"]},
        User(email="johndoe@gmail.com", name="John Doe", cities_visited=[]),
    ]
    result = User.save_many(user_list, overwrite=False)
    assert result.fail_count == 0 and result.success_count == 1
    assert User.get_one("johndoe@gmail.com").cities_visited == []
    result = User.save_many(user_list, overwrite=False)
    assert result.fail_count == 1
    assert result.fail[0].item is user_list[1]


def manual_users():
    """The users the manual's get_many/delete_many examples talk about."""
    User.save_many([
        {"email": "johndoe@gmail.com", "name": "John", "year_of_birth": 1990,
         "cities_visited": ["Nairobi", "New York"]},
        {"email": "email1@gmail.com", "name": "One", "year_of_birth": 1985,
         "cities_visited": ["Paris"]},
        {"email": "email2@abc.io", "name": "Two", "year_of_birth": 2005,
         "cities_visited": ["Nairobi"]},
        {"email": "anotherone@xyz.com", "name": "Three",
         "year_of_birth": 2010},
        {"email": "email3@gmail.com", "name": "Four", "year_of_birth": 1970},
        {"email": "email4@gmail.com", "name": "Five", "year_of_birth": 1999,
         "cities_visited": ["Nairobi", "Lagos"]},
        {"email": "email5@gmail.com", "name": "Six", "year_of_birth": 2001},
    ])


EMAILS = ["johndoe@gmail.com", "email2@abc.io", "anotherone@xyz.com"]


def emails_of(found):
    return sorted(user.email for user in found)


def test_manual_get_many_examples(users, calls):
    manual_users()
    del calls[:]
    found = User.get_many([
        "johndoe@gmail.com",
        "email1@gmail.com",
        {"email": "email2@gmail.com"},  # not stored: left out
        User(email="email3@gmail.com"),
        User.email == "email4@gmail.com",
    ])
    assert [user.email for user in found] == [
        "johndoe@gmail.com", "email1@gmail.com", "email3@gmail.com",
        "email4@gmail.com"]
    assert found[0].cities_visited == ["Nairobi", "New York"]
    for strategy in (EMAILS, User.email.in_(EMAILS), User.keys_in(EMAILS)):
        assert [user.email for user in User.get_many(strategy)] == EMAILS
    assert operations(calls) == ["BatchGetItem"] * 4
    # Example 2: in the list and born after 2000 (a Query per e-mail, the
    # year as a filter).
    del calls[:]
    found = User.get_many((User.email.in_(EMAILS))
                          & (User.year_of_birth > 2000))
    assert emails_of(found) == ["anotherone@xyz.com", "email2@abc.io"]
    assert operations(calls) == ["Query"] * len(EMAILS)
    # Example 3: everyone who visited Nairobi.
    assert emails_of(User.get_many(User.cities_visited.contains(
        "Nairobi"))) == ["email2@abc.io", "email4@gmail.com",
                         "johndoe@gmail.com"]
    # Example 4, with ~ for the manual's `not`: born before 1990 and never
    # in Nairobi.
    found = User.get_many((User.year_of_birth < 1990)
                          & (~User.cities_visited.contains("Nairobi")))
    assert emails_of(found) == ["email1@gmail.com", "email3@gmail.com"]
    with pytest.raises(TypeError, match="~"):
        User.get_many((User.year_of_birth < 1990)
                      & (not User.cities_visited.contains("Nairobi")))


def test_manual_delete_many_list_example(users):
    manual_users()
    result = User.delete_many([
        "johndoe@gmail.com",
        "email1@gmail.com",
        {"email": "email2@gmail.com"},
        User(email="email3@gmail.com"),
        User.email == "email4@gmail.com",
        (User.email == "email5@gmail.com") & (User.year_of_birth <= 2000),
    ])
    assert result.success_count == 5
    [failure] = result.fail  # email5 was born in 2001
    assert isinstance(failure.error, ConditionalCheckFailedException)
    assert emails_of(User.get_many(User.name.exists())) == \
        ["anotherone@xyz.com", "email2@abc.io", "email5@gmail.com"]


@pytest.mark.parametrize("strategy", [
    lambda: EMAILS, lambda: User.email.in_(EMAILS),
    lambda: User.keys_in(EMAILS)])
def test_manual_delete_many_by_emails(users, strategy):
    manual_users()
    result = User.delete_many(strategy())
    assert emails_of(result.success) == sorted(EMAILS)
    assert not set(EMAILS) & {user.email for user in
                              User.get_many(User.name.exists())}
    assert len(raw_items(User)) == 4


def test_manual_delete_many_condition_examples(users):
    manual_users()
    result = User.delete_many((User.email.in_(EMAILS))
                              & (User.year_of_birth > 2000))
    assert emails_of(result.success) == ["anotherone@xyz.com",
                                         "email2@abc.io"]
    result = User.delete_many(User.cities_visited.contains("Nairobi"))
    assert emails_of(result.success) == ["email4@gmail.com",
                                         "johndoe@gmail.com"]
    result = User.delete_many((User.year_of_birth < 1990)
                              & (~User.cities_visited.contains("Nairobi")))
    assert emails_of(result.success) == ["email1@gmail.com",
                                         "email3@gmail.com"]
    assert [item["email"]["S"] for item in raw_items(User)] == \
        ["email5@gmail.com"]


def test_manual_composite_keys_in_example(contacts):
    owners = [uuid.uuid4(), uuid.uuid4()]
    Contacts.save_many([{"user_id": owners[0], "email": "john@gmail.com"},
                        {"user_id": owners[1], "email": "doe@gmail.com"},
                        {"user_id": owners[1], "email": "x@gmail.com"}])
    keys = [(owners[0], "john@gmail.com"), (owners[1], "doe@gmail.com")]
    contacts = Contacts.get_many(Contacts.keys_in(keys))
    assert [(contact.user_id, contact.email) for contact in contacts] == keys


def readme():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "README.md")
    with open(path, encoding="utf-8") as file:
        return file.read()


def test_every_readme_example_runs_as_written_in_order(backend, capsys):
    for gap in ("transactions", "ttl", "conflict items"):
        skip_on_gap(gap)
    text = readme()
    blocks = [textwrap.dedent(block) for _, block in re.findall(
        r"^( *)```python\n(.*?)^\1```", text, re.M | re.S)]
    assert len(blocks) > 15
    # The quickstart's prefix is this test's, so that a server shared
    # with other runs keeps them apart; the backend's settings come back
    # after each block (one points at a local server of its own).
    quickstart = 'Connection.set_config(table_prefix="test-")'
    assert quickstart in blocks[0]
    blocks[0] = blocks[0].replace(
        quickstart, f"Connection.set_config(table_prefix={backend!r})")
    given = dict(Connection._given)
    namespace = {"__name__": "readme"}
    for number, block in enumerate(blocks):
        exec(compile(block, f"<README.md block {number}>", "exec"),
             namespace)
        prefix = Connection.table_prefix()
        Connection.reset()
        Connection.set_config(**dict(given, table_prefix=prefix))
    printed = capsys.readouterr().out
    # What README shows that the examples print.
    assert "changed meanwhile: Doc(id='d1', text='final', version=2)" in \
        printed
    shown = re.search(r"print\(Order\.explain.*?\n```\n```\n(.*?)```", text,
                      re.S)[1]
    assert shown in printed
    shown = re.search(r"print\(Order\.explain\(Order\.customer_id.*?\n```\n"
                      r"```\n(.*?)```", text, re.S)[1]
    assert shown in printed
    assert "ORDER#2024-05-01T00:00:00.000000#o1\n" in printed
    assert "['Ann'] ['o1']\n['o1']\n" in printed
    assert "update_one Account id='b' failed; stored: Account(id='b', " \
        "balance=5)" in printed
    assert "saved 25 of 60\nsaved 50 of 60\nsaved 60 of 60\n" in printed
    assert namespace["Session"].get_one("t1").expires > \
        datetime.datetime.now(UTC)
