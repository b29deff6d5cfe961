"""What type checkers know of dynamongo models: run with
``mypy --strict typing_tests`` and ``pyright typing_tests`` (see
.ci/run). ``assert_type`` lines must hold; lines marked ``# type: ignore``
must be errors (mypy's warn_unused_ignores, in --strict, and pyright's
reportUnnecessaryTypeIgnoreComment say so when one is not)."""

import datetime
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal, assert_type

import dynamongo
from dynamongo import (
    BatchResult, BinaryField, BooleanField, Condition, DateField,
    DateTimeField, DictField, EmailField, FloatField, IntField,
    IPAddressField, KeyTemplate, ListField, Model, Page, SetField,
    StringField,
    TimedeltaField, TTLField, Update, URLField, UUIDField, VersionField)


class User(Model):
    __table__ = "users"
    __hash_key__ = "email"

    email = EmailField(required=True)
    name = StringField(required=True)
    year_of_birth = IntField(min_value=1900, max_value=2018)
    ratio = FloatField()
    active = BooleanField()
    site = URLField()
    ip = IPAddressField()
    id = UUIDField()
    created_at = DateTimeField(default=datetime.datetime.now)
    birthday = DateField()
    timeout = TimedeltaField()
    photo = BinaryField()
    cities_visited = ListField(StringField)
    scores = ListField(IntField())
    tags = SetField(StringField)
    lucky = SetField(IntField)
    address = DictField(city=StringField())
    expires = TTLField()
    version = VersionField()
    # required=True: typed T on instances, not T | None.
    score = IntField(min_value=0, required=True)
    visited = DateTimeField(required=True, default=datetime.datetime.now)
    aliases = ListField(StringField, required=True)
    home = DictField(required=True, city=StringField())
    nickname = StringField(required=False)
    # Stored under another name (attr_name), typed the same.
    count_ = IntField(required=True, attr_name="count")
    first_name = StringField(attr_name="first-name")


def fields_on_instances(user: User) -> None:
    assert_type(user.email, str)
    assert_type(user.name, str)
    assert_type(user.score, int)
    assert_type(user.visited, datetime.datetime)
    assert_type(user.aliases, list[str])
    assert_type(user.home, dict[str, Any])
    assert_type(user.nickname, str | None)
    assert_type(user.count_, int)
    assert_type(user.first_name, str | None)
    assert_type(user.year_of_birth, int | None)
    assert_type(user.ratio, float | None)
    assert_type(user.active, bool | None)
    assert_type(user.site, str | None)
    assert_type(user.id, uuid.UUID | None)
    assert_type(user.created_at, datetime.datetime | None)
    assert_type(user.birthday, datetime.date | None)
    assert_type(user.timeout, datetime.timedelta | None)
    assert_type(user.photo, bytes | None)
    assert_type(user.cities_visited, list[str] | None)
    assert_type(user.scores, list[int] | None)
    assert_type(user.tags, set[str] | None)
    assert_type(user.lucky, set[int] | None)
    assert_type(user.address, dict[str, Any] | None)
    assert_type(user.expires, datetime.datetime | None)
    assert_type(user.version, int | None)


def fields_on_the_class() -> None:
    assert_type(User.email, EmailField[Literal[True]])
    assert_type(User.nickname, StringField)
    assert_type(User.aliases, ListField[str, Literal[True]])
    email: EmailField = User.email  # a required field is a field
    assert_type(email.required, bool)
    assert_type(User.year_of_birth, IntField)
    assert_type(User.cities_visited, ListField[str])
    assert_type(User.tags, SetField[str])
    assert_type(User.year_of_birth > 1990, Condition)
    assert_type((User.email == "a@b.io") & (User.year_of_birth >= 2000),
                Condition)
    assert_type(~User.cities_visited.contains("Nairobi"), Condition)
    assert_type(User.name.size() > 3, Condition)
    assert_type(User.year_of_birth.add(1), Update)
    assert_type(User.tags.add({"a", "b"}), Update)
    assert_type(User.cities_visited.append("Paris"), Update)
    assert_type(User.cities_visited[0], dynamongo.Field[str])
    assert_type(User.year_of_birth.validate("1990"), int)
    assert_type(User.ratio.to_native(1), float)
    assert_type(User.created_at.validate("2020-01-02"), datetime.datetime)
    assert_type(User.tags.validate(["a"]), set[str])
    assert_type(User.email.to_primitive("a@b.io"), Any)


def calls() -> None:
    user = User.save_one({"email": "a@b.io", "name": "A"})
    assert_type(user, User)
    assert_type(User.save_one(user), User)
    assert_type(User.get_one("a@b.io"), User)
    assert_type(User.get_one("a@b.io", fields=["name", User.email]), User)
    assert_type(User.get_many(User.name == "A"), list[User])
    assert_type(User.iter_many(User.name == "A"), Iterator[User])
    page = User.get_page(User.name == "A", limit=10)
    assert_type(page, Page[User])
    assert_type(page.cursor, str | None)
    assert_type(User.update_one(user, User.name.set("B")), User | None)
    assert_type(User.update_from_dict({"email": "a@b.io"}), User | None)
    assert_type(User.delete_one("a@b.io"), User | None)
    result = User.save_many([user, {"email": "b@c.io", "name": "B"}])
    assert_type(result, BatchResult[User])
    assert_type(result.success, list[User])
    assert_type(result.fail_count, int)
    assert_type(User.delete_many(["a@b.io"]), BatchResult[User])
    assert_type(User.count(), int)
    assert_type(User.from_image({"email": {"S": "a@b.io"}}), User)
    with dynamongo.transaction() as t:
        assert_type(t.save_one(User, user), User)
        t.update_one(User, user, User.year_of_birth.add(1))
    for change in dynamongo.changes({"Records": []}, User):
        assert_type(change, dynamongo.Change)


async def awaited_calls(user: User) -> None:
    # Each twin gives what its sync twin gives, awaited.
    assert_type(await User.asave_one(user), User)
    assert_type(await User.aget_one("a@b.io"), User)
    assert_type(await User.aget_many(User.name == "A"), list[User])
    assert_type(User.aiter_many(User.name == "A"), AsyncIterator[User])
    async for found in User.aiter_many(User.name == "A", limit=3):
        assert_type(found, User)
    assert_type(await User.aget_page(User.name == "A", 10), Page[User])
    assert_type(await User.aupdate_one(user, User.name.set("B")),
                User | None)
    assert_type(await User.aupdate_from_dict({"email": "a@b.io"}),
                User | None)
    assert_type(await User.adelete_one("a@b.io"), User | None)
    assert_type(await User.asave_many([user]), BatchResult[User])
    assert_type(await User.adelete_many(["a@b.io"]), BatchResult[User])
    assert_type(await User.acount(), int)
    assert_type(await User.aestimated_count(), int)
    assert_type(await User.acreate_table(exist_ok=True), None)
    assert_type(await User.async_table(dry_run=True), list[str])
    assert_type(await User.adelete_table(), None)
    assert_type(await dynamongo.atransact_get([(User, "a@b.io")]),
                list[Model | None])
    async with dynamongo.transaction() as t:
        assert_type(t.save_one(User, user), User)
    await t.acommit()
    await User.aget_one(
        "a@b.io", consistent_read="yes")  # type: ignore[arg-type]
    User.aget_one("a@b.io").name  # type: ignore[attr-defined]


def listeners() -> None:
    class Meter:
        def succeeded(self, event: dynamongo.RequestEvent) -> None:
            assert_type(event.tables, tuple[str, ...])
            assert_type(event.consumed_capacity,
                        list[dict[str, Any]] | None)
            assert_type(event.duration, float | None)
            assert_type(event.error, dynamongo.DynamongoError | None)

    dynamongo.Connection.add_listener(Meter())
    dynamongo.Connection.add_listener(dynamongo.opentelemetry_listener())
    # Rate limits: keyword-only, a number.
    User.save_many([{"email": "a@b.io"}], max_units_per_second=100)
    User.count(max_units_per_second=2.5)
    User.save_many([], True, None, 100)  # type: ignore[call-arg]
    User.get_many(["a@b.io"],
                  max_units_per_second="10")  # type: ignore[arg-type]


class Order(Model):
    __table__ = "shop"
    __hash_key__ = "pk"
    __range_key__ = "sk"
    __entity__ = "order"
    pk = KeyTemplate("CUSTOMER#{customer_id}")
    sk = KeyTemplate("ORDER#{order_id}", attr_name="sort-key")
    customer_id = StringField(required=True)
    order_id = StringField(required=True)


def single_table(order: Order) -> None:
    assert_type(order.sk, str | None)
    found = dynamongo.get_collection(Order, User, customer_id="c1")
    assert_type(found, dict[type[Model], list[Model]])
    Order.get_many(Order.customer_id == "c1")
    KeyTemplate(5)  # type: ignore[arg-type]


async def single_table_awaited() -> None:
    assert_type(await dynamongo.aget_collection(Order, customer_id="c1"),
                dict[type[Model], list[Model]])


def assignments(user: User, flag: bool) -> None:
    user.email = "a@b.io"
    user.score = 3
    optional = IntField(required=flag)  # not known to be required
    assert_type(optional, IntField)
    user.year_of_birth = 1990
    user.year_of_birth = None
    user.cities_visited = ["Nairobi"]
    user.tags = {"a"}
    user.created_at = datetime.datetime.now()
    user.address = {"city": "Nairobi"}


def mistakes(user: User) -> None:
    user.year_of_birth = "1990"  # type: ignore[assignment]
    user.tags = ["a"]  # type: ignore[assignment]
    User.year_of_birth.add("x")  # type: ignore[arg-type]
    User.ratio.add("x")  # type: ignore[arg-type]
    User.get_one("a@b.io", consistent_read="yes")  # type: ignore[arg-type]
    User.get_many(User.name == "A", limit="10")  # type: ignore[arg-type]
    user.year_of_birth + 1  # type: ignore[operator]
    User.name.set(5)  # type: ignore[arg-type]
    User.tags.add({1, 2})  # type: ignore[arg-type]
    User.cities_visited.append(7)  # type: ignore[arg-type]
    User.nmae  # type: ignore[attr-defined]
    User.save_one(["not", "an", "item"])  # type: ignore[arg-type]
    IntField(min_value="1")  # type: ignore[arg-type]
    IntField(attr_name=5)  # type: ignore[arg-type]
    ListField(3)  # type: ignore[arg-type]
    IntField(requird=True)  # type: ignore[call-arg]
    StringField(required="yes")  # type: ignore[type-var]
    user.score = "3"  # type: ignore[assignment]
