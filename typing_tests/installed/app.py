"""A project using dynamongo installed with pip (not vendored): .ci/run
checks it with ``mypy --strict`` in a virtualenv holding only the
installed package, which PEP 561's ``py.typed`` marks as typed."""

from typing import assert_type

from dynamongo import IntField, Model, SetField, StringField


class User(Model):
    __table__ = "users"
    __hash_key__ = "email"
    email = StringField(required=True)
    year_of_birth = IntField()
    tags = SetField(StringField)


def born_after(year: int) -> list[User]:
    found = User.get_many(User.year_of_birth > year)
    assert_type(found, list[User])
    return found


def tags_of(email: str) -> set[str]:
    user = User.get_one(email)
    assert_type(user.year_of_birth, int | None)
    return user.tags or set()


def address_of(email: str) -> str:
    return User.get_one(email).email  # required: a str, never None


def mistake(email: str) -> str:
    return User.get_one(email).year_of_birth  # type: ignore[return-value]
