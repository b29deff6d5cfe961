"""dynamongo: a PyMongo-style object mapper for AWS DynamoDB.

Declare a model with validated fields, then save, read, query, update and
delete items with conditions written as Python operators::

    class User(Model):
        __table__ = "users"
        __hash_key__ = "email"
        email = EmailField(required=True)
        name = StringField(required=True)
        year_of_birth = IntField(min_value=1900, max_value=2018)

    User.save_one({"email": "john@example.com", "name": "John"})
    User.get_one((User.email == "john@example.com"))

One module, one runtime dependency: boto3, imported only when something
needs it -- with the credentials in the environment, as in AWS Lambda,
dynamongo signs and sends its own requests and never imports it. MIT
licensed.
"""

# The public API is typed; the module's own internals are checked as mypy
# and pyright check code by default, even inside a project that is strict.
# mypy: allow-untyped-defs, allow-untyped-calls, allow-incomplete-defs
# mypy: allow-untyped-globals, allow-any-generics, check-untyped-defs=False
# mypy: warn-unused-ignores=False
# mypy: disable-error-code="no-any-return,import-untyped,annotation-unchecked"
# pyright: basic

# How it fits together, in the order a call's requests flow (the sections
# to jump to in brackets):
#
#   model call   Model.get_many(...) checks its arguments [Model]: the
#                model's facts are in cls._meta [Model metadata], its
#                values pass through code compiled for it [A model's
#                codec], a read is planned -- keys, a Query or a Scan,
#                through key templates too (KeyTemplate) [The planner]
#                and run [Reads]; a single item's requests are built
#                [Single items], and tables made [Tables]. get_collection
#                reads several entities of one table at once [Collections].
#   procedure    The call's exchange with DynamoDB is a generator that
#                yields each request and is sent its answer, doing no I/O
#                [The engine]: one retry loop, one pager, one window. Each
#                attempt passes through _request, where listeners hear of
#                it [Watching requests] and a rate-limited call's budget
#                is drawn [Rate limits].
#   driver       _run and _stream answer what a procedure yields, on the
#                calling thread and worker threads; _arun and _astream on
#                the running event loop, for the awaitable twins (aget_one)
#                [The engine, The asyncio driver].
#   route        _send (_asend): signed by dynamongo (_FastWire), or by
#                botocore (_BotocoreRoute), or a boto3 client (_ClientWire),
#                as the settings say [The wire, Connection].
#   HTTP         _Http: kept-alive connections shared by the threads, and
#                an event loop's own (_LoopPool), both reading answers with
#                _HttpAnswer [The wire].

from __future__ import annotations

__version__ = "0.3.0"

__all__ = [
    "AddUpdate",
    "BatchResult",
    "BinaryField",
    "BooleanField",
    "CancellationReason",
    "Change",
    "Condition",
    "ConditionalCheckFailedException",
    "Connection",
    "CredentialsError",
    "CursorError",
    "DateField",
    "DateTimeField",
    "DictField",
    "DoesNotExist",
    "DynamoDBConnectionError",
    "DynamoDBError",
    "DynamongoError",
    "EmailField",
    "ExpressionError",
    "Failure",
    "Field",
    "FieldNotLoaded",
    "FloatField",
    "GlobalIndex",
    "IPAddressField",
    "IntField",
    "KeyTemplate",
    "KeysIn",
    "ListExtendUpdate",
    "ListField",
    "LocalIndex",
    "Model",
    "Page",
    "Plan",
    "RemoveUpdate",
    "RequestEvent",
    "SchemaError",
    "SetElementsUpdate",
    "SetField",
    "SetUpdate",
    "StringField",
    "TTLField",
    "TableNotFoundError",
    "ThrottlingError",
    "TimedeltaField",
    "Transaction",
    "TransactionCanceled",
    "TruthValueError",
    "URLField",
    "UUIDField",
    "UnknownFieldError",
    "UnprocessedError",
    "Update",
    "UpdateBuilder",
    "ValidationError",
    "VersionConflict",
    "VersionField",
    "aget_collection",
    "atransact_get",
    "changes",
    "get_collection",
    "opentelemetry_listener",
    "transact_get",
    "transaction",
]

import collections
import contextvars
import datetime
import decimal
import functools
import gc
import itertools
import json
import math
import os
import re
import sys
import threading
import time

# Types are for type checkers only: ``typing`` is never imported at run time
# (it would cost ``import dynamongo`` a fifth of its time), annotations are
# strings, and a stand-in makes ``Field[int]`` a plain class when it runs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import uuid
    from collections.abc import (AsyncIterator, Callable, Generator,
                                 Iterable, Iterator, Sequence)
    from typing import (Any, ClassVar, Generic, Literal, NoReturn,
                        ParamSpec, TypeAlias, TypedDict, TypeVar, overload)

    from typing_extensions import TypeVar as TypeVarWithDefault, Unpack

    _T = TypeVar("_T")  # a field's Python type
    _O = TypeVar("_O", contravariant=True)  # what a comparison takes
    _E = TypeVar("_E")  # a list's or set's element type
    _N = TypeVar("_N", int, float)  # a number field's
    # Literal[True] for a field declared required=True, whose value on an
    # instance is then typed T, not T | None.
    _R = TypeVarWithDefault("_R", Literal[True], bool, covariant=True,
                            default=bool)
    _M = TypeVar("_M", bound="Model")
    _F = TypeVar("_F", bound="Field[Any, Any]")
    _C = TypeVar("_C", bound="Callable[..., Any]")
    _A = TypeVar("_A")  # what a procedure returns
    _P = ParamSpec("_P")
    # A procedure (see the engine): yields effects, returns an _A.
    _Procedure: TypeAlias = "Generator[Any, Any, _A]"
    # The fields a read loads; what progress callbacks are given.
    _Fields: TypeAlias = "Iterable[str | Field[Any]] | None"
    _Progress: TypeAlias = "Callable[[int, int | None], object] | None"

    class _Options(TypedDict, Generic[_R], total=False):
        """The arguments every field takes (see Field)."""
        required: _R
        default: Any
        attr_name: str | None
else:
    class Generic:
        """``Generic[...]`` of the type checkers: at run time the class
        itself."""

        def __class_getitem__(cls, item):
            return cls

    def overload(function):
        return function

    _T = _E = _N = _M = _R = _O = None


# -- Constants ---------------------------------------------------------------

# DynamoDB numbers: at most 38 significant digits, magnitudes from 1e-130
# up to (not including) 1e126.
_NUMBER_DIGITS = 38
_NUMBER_MIN = decimal.Decimal("1e-130")
_NUMBER_MAX = decimal.Decimal("1e126")
_NUMBER_CONTEXT = decimal.Context(prec=_NUMBER_DIGITS)
_NOT_FINITE = "must be a finite number (not NaN or infinity)"
_NUMBER_TEXT = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")
# Binary values in DynamoDB's JSON.
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|"
                     r"[A-Za-z0-9+/]{3}=)?")

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.\-]{3,255}")
_TABLE_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]*")
_MAX_IN_VALUES = 100  # DynamoDB's limit on the operands of IN
_MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's limit on the size of an item
_KEY_BYTES = (2048, 1024)  # its limits on hash and range key values
_MAX_DEPTH = 32  # and on the nesting of lists and maps
_MAX_SEGMENTS = 1_000_000  # and on the segments of a parallel Scan
_BATCH_WRITE_ITEMS = 25  # and on the requests of one BatchWriteItem
_BATCH_GET_KEYS = 100  # and on the keys of one BatchGetItem
# Items worked on between two moments given to an event loop's other tasks
# (about a millisecond's work).
_SLICE = 100
_HEADER_BYTES = 65536  # the longest head of an HTTP answer read
_RECEIVE_BYTES = 65536  # bytes asked of a socket at once
# Numbers a converter passes on sight: every int within 38 digits, every
# float within DynamoDB's range.
_FAST_INT_LIMIT = 10 ** 38 - 1
_FAST_FLOAT_LIMIT = math.nextafter(1e126, 0)  # the float 1e126 is out
_FAST_FLOAT_TINY = 1e-130
_KEY_TYPES = ("S", "N", "B")
_BILLING_MODES = ("PROVISIONED", "PAY_PER_REQUEST")
_STREAM_VIEWS = ("NEW_AND_OLD_IMAGES", "NEW_IMAGE", "OLD_IMAGE", "KEYS_ONLY")
_DEFAULT_REGION = "us-east-2"
# Where a partial instance's __dict__ names the fields its read loaded (no
# attribute can have this name).
_LOADED = "<loaded>"

# Low-level operation name -> boto3 client method name.
_OPERATIONS = {
    "BatchGetItem": "batch_get_item",
    "BatchWriteItem": "batch_write_item",
    "CreateTable": "create_table",
    "DeleteItem": "delete_item",
    "DeleteTable": "delete_table",
    "DescribeTable": "describe_table",
    "DescribeTimeToLive": "describe_time_to_live",
    "GetItem": "get_item",
    "PutItem": "put_item",
    "Query": "query",
    "Scan": "scan",
    "TransactGetItems": "transact_get_items",
    "TransactWriteItems": "transact_write_items",
    "UpdateItem": "update_item",
    "UpdateTable": "update_table",
    "UpdateTimeToLive": "update_time_to_live",
}


# -- Errors ------------------------------------------------------------------

class DynamongoError(Exception):
    """Base class of every exception dynamongo raises.

    ``result``: when save_many, delete_many or get_many stop on an error
    that fails every item alike (a missing table, denied access, no
    credentials, an unreachable endpoint), the BatchResult of what was done
    and not done so far (for get_many, None).
    """

    result = None


class SchemaError(DynamongoError):
    """A model or field is declared wrongly (raised when the class is made)."""


class ExpressionError(DynamongoError):
    """A condition or update cannot be used the way it was given."""


class UnknownFieldError(ExpressionError, AttributeError):
    """A model or map field has no field of that name (``User.shoe_size``)."""


class CursorError(ExpressionError):
    """A get_page cursor that is not one this read handed out: made for
    another query, altered, or not a cursor at all."""


class TruthValueError(ExpressionError, TypeError):
    """A condition was used as a bool (``not c``, ``c and d``, ``if c``)."""


class ValidationError(DynamongoError):
    """A value does not fit its field.

    ``errors`` maps each failing field path (``"year_of_birth"``,
    ``"cities_visited[1]"``, ``"address.city"``) to a list of messages.
    """

    def __init__(self, message: str,
                 errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or {}


class DoesNotExist(DynamongoError):
    """No item has the requested key; each model has its own subclass."""


class FieldNotLoaded(DynamongoError, AttributeError):
    """A field of an instance read with ``fields=`` (or from an index
    holding fewer fields) that the read did not load."""


class DynamoDBError(DynamongoError):
    """DynamoDB refused a request.

    ``code`` is DynamoDB's error code, ``operation`` and ``table`` say which
    request failed, and ``response`` is the parsed error response.
    """

    def __init__(self, message: str, code: str | None = None,
                 operation: str | None = None, table: str | None = None,
                 response: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation
        self.table = table
        self.response = response or {}
        self.status = self.response.get("ResponseMetadata", {}).get(
            "HTTPStatusCode")
        self.maybe_applied = False  # see _request

    def _restated(self, kind, message):
        """This refusal as a ``kind`` saying ``message``, with the same
        code, request and response."""
        return kind(message, code=self.code, operation=self.operation,
                    table=self.table, response=self.response)


class DynamoDBConnectionError(DynamoDBError):
    """DynamoDB could not be reached, or did not answer in time, after
    every attempt; ``endpoint`` is where dynamongo sent the request."""

    endpoint: str | None = None


class CredentialsError(DynamongoError):
    """No AWS credentials were found, or they could not be loaded (a
    missing profile, a failing credential process or SSO login)."""


class ConditionalCheckFailedException(DynamoDBError):
    """The condition of a write did not hold; nothing was written."""


class VersionConflict(ConditionalCheckFailedException):
    """A write of a model with a VersionField required the stored item to
    be at the version the caller held, and it was not: another writer
    changed or deleted it first. Nothing was written. ``current`` is the
    stored item as an instance (None when there is none), as DynamoDB
    returned it with the refusal."""

    current = None


class TableNotFoundError(DynamoDBError):
    """The table does not exist (or is not active yet)."""


class ThrottlingError(DynamoDBError):
    """DynamoDB throttled the request (after dynamongo's retries)."""


class TransactionCanceled(DynamoDBError):
    """DynamoDB cancelled a transaction: nothing of it was applied.
    ``reasons`` holds one CancellationReason per action, in the order the
    actions were added."""

    reasons: Sequence[CancellationReason] = ()


CancellationReason = collections.namedtuple(
    "CancellationReason", "action code message item")
CancellationReason.__doc__ = """Why a transaction's action was cancelled:
``action`` (what was asked, e.g. ``"update_one Account {'id': 'a'}"``),
``code`` (None for an action that was fine, else DynamoDB's code such as
``"ConditionalCheckFailed"``), ``message``, and ``item``: the stored item
as an instance when the action's condition failed, else None."""


class UnprocessedError(DynamongoError):
    """DynamoDB left part of a batch unprocessed after every retry.

    ``keys`` lists the keys (AttributeValue dicts) that were not processed.
    """

    def __init__(self, message: str,
                 keys: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(message)
        self.keys = list(keys)


# Error codes worth another attempt after a pause (5xx statuses are too).
_RETRY_CODES = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException",
    "RequestLimitExceeded", "InternalServerError", "ServiceUnavailable",
    "LimitExceededException", "TransactionInProgressException",
})

_ERROR_CODES = {
    "ConditionalCheckFailedException": ConditionalCheckFailedException,
    "ResourceNotFoundException": TableNotFoundError,
    "ProvisionedThroughputExceededException": ThrottlingError,
    "ThrottlingException": ThrottlingError,
    "RequestLimitExceeded": ThrottlingError,
    "TransactionCanceledException": TransactionCanceled,
}


# What DynamoDB's error codes mean, for refusals that come without a
# message (as some servers send them).
_MEANINGS = {
    "ResourceInUseException": "the table exists already, or is being "
                              "created, changed or deleted",
    "ResourceNotFoundException": "Requested resource not found",
    "ConditionalCheckFailedException": "The conditional request failed",
    "ValidationException": "the request is not valid",
}

# botocore's exceptions for credentials that are missing or cannot be
# loaded (looked up by name: not every botocore has each).
_CREDENTIAL_ERRORS = (
    "NoCredentialsError", "PartialCredentialsError",
    "CredentialRetrievalError", "ProfileNotFound", "SSOError",
    "TokenRetrievalError", "UnauthorizedSSOTokenError", "InvalidConfigError",
    "ConfigParseError", "ConfigNotFound")


class _BadAnswer(Exception):
    """What came back is not a DynamoDB answer (not HTTP, not a JSON
    object, cut short, or failing its checksum: ``corrupted``, which a
    retry may mend)."""

    def __init__(self, message, corrupted=False):
        super().__init__(message)
        self.corrupted = corrupted


class _NoAnswer(Exception):
    """dynamongo's HTTP client got no answer: the request was not sent (no
    connection, TLS refused) or, when ``sent``, its answer was lost (a
    closed connection, a read timeout), so the server may have acted."""

    def __init__(self, message, sent):
        super().__init__(message)
        self.sent = sent


class _Refusal(Exception):
    """A DynamoDB error answer on the fast path; ``response`` is shaped as
    botocore's ClientError's (Error, ResponseMetadata, extra members)."""

    def __init__(self, response, operation):
        error = response["Error"]
        super().__init__(f"An error occurred ({error['Code']}) when calling "
                         f"the {operation} operation: {error['Message']}")
        self.response, self.operation_name = response, operation


def _translate_error(exc, operation, params, settings):
    """(the dynamongo exception, worth retrying, may have been applied) of
    a failed attempt: botocore's errors and Python's become dynamongo's,
    naming the operation and table (and, where it helps to know where the
    request went, the region and endpoint of ``settings``)."""
    if isinstance(exc, DynamongoError):
        return exc, False, False
    endpoint = _endpoint_of(settings)
    table = params.get("TableName") or next(iter(params.get("RequestItems",
                                                            ())), None)
    where = f"{operation} on table {table!r}" if table else operation
    request = dict(operation=operation, table=table)
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        return _refusal(response, where, request, settings)
    exceptions = sys.modules.get("botocore.exceptions")
    if exceptions is not None and isinstance(exc, exceptions.ChecksumError):
        exc = _BadAnswer(str(exc), corrupted=True)  # older botocore's check
    if isinstance(exc, _BadAnswer):
        return DynamoDBError(f"{where} failed: the answer from {endpoint} is "
                             f"not DynamoDB's: {exc}", **request), \
            exc.corrupted, exc.corrupted
    sent = _reached_server(exc, exceptions)
    if sent is not None:
        error = DynamoDBConnectionError(
            f"{where} failed: no answer from {endpoint}: {exc}", **request)
        error.endpoint = endpoint
        return error, True, sent
    return _local_error(exc, exceptions, where, endpoint), False, False


def _refusal(response, where, request, settings):
    """(error, worth retrying, may have been applied) of the server's
    refusal ``response`` (botocore's shape)."""
    code = response["Error"].get("Code")
    text = response["Error"].get("Message") or _MEANINGS.get(
        code, "no message")
    table = request["table"]
    if code == "ResourceNotFoundException" and table:
        text += (f" (no table {table!r} in region {settings['region']} at "
                 f"{_endpoint_of(settings)}: the model's create_table() "
                 "makes it)")
    error = _ERROR_CODES.get(code, DynamoDBError)(
        f"{where} failed: {code}: {text}", code=code, response=response,
        **request)
    server_error = (error.status or 0) >= 500
    return error, code in _RETRY_CODES or server_error, server_error


def _reached_server(exc, exceptions):
    """For a request that got no answer: whether it may have reached the
    server; None for any other error."""
    if isinstance(exc, _NoAnswer):
        return exc.sent
    if exceptions is not None and isinstance(
            exc, (exceptions.ConnectionError, exceptions.HTTPClientError)):
        # botocore's ConnectionError: the request never reached the server;
        # its others (a closed connection, a read timeout): it may have.
        return not isinstance(exc, exceptions.ConnectionError)
    return None


def _local_error(exc, exceptions, where, endpoint):
    """The dynamongo error of one raised before a request was sent: no
    credentials, a request botocore refused, anything else."""
    kind = type(exc).__name__
    if exceptions is not None:
        if any(isinstance(exc, getattr(exceptions, name, ()))
               for name in _CREDENTIAL_ERRORS):
            return CredentialsError(
                f"{where}: no usable AWS credentials to sign the request to "
                f"{endpoint} ({kind}: {exc}); set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile "
                "(AWS_PROFILE) or Connection.set_config(access_key_id=..., "
                "secret_access_key=...)")
        if kind == "ParamValidationError":
            return ValidationError(f"{where}: invalid request: {exc}")
    return DynamongoError(f"{where} failed: {kind}: {exc}")


# -- Helpers -----------------------------------------------------------------

def _base64_text(data):
    """The base64 text of bytes, as DynamoDB's JSON carries binary."""
    import binascii

    return binascii.b2a_base64(data, newline=False).decode()


def _binary(value):
    """The bytes of a binary AttributeValue's value: bytes as botocore
    gives them, or the base64 text of DynamoDB's JSON."""
    if type(value) is bytes:
        return value
    import binascii

    return binascii.a2b_base64(value)


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return _base64_text(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# Requests hold plain trees of dicts, lists, strings and bytes (binary
# values, written as base64 text): no cycle check.
_encode_json = json.JSONEncoder(ensure_ascii=False, check_circular=False,
                                separators=(",", ":"),
                                default=_json_default).encode


def _with_bytes(tree):
    """A request or answer decoded from DynamoDB's JSON with each binary
    value (B, BS) as bytes, as botocore has them."""
    if isinstance(tree, list):
        return [_with_bytes(item) for item in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        (kind, value), = tree.items()
        if kind == "B" and isinstance(value, str):
            return {"B": _binary(value)}
        if kind == "BS" and isinstance(value, list):
            return {"BS": [_binary(item) for item in value]}
    return {name: _with_bytes(item) for name, item in tree.items()}


def _path_text(path):
    """('address', 'city') -> 'address.city'; ('cities', 0) -> 'cities[0]'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _number_text(number):
    """The DynamoDB text of an int, float or Decimal; ValueError if it
    cannot be stored (too many digits, out of range, NaN or infinite)."""
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(_NOT_FINITE)
        text = repr(number)
        exact = decimal.Decimal(text)
    elif isinstance(number, int):
        text = str(number)
        exact = decimal.Decimal(number)
    else:
        if not number.is_finite():
            raise ValueError(_NOT_FINITE)
        exact = number
        text = format(number, "f") if -30 < number.adjusted() < 30 \
            else str(number)
    if exact:
        digits = "".join(map(str, exact.as_tuple().digits)).strip("0")
        if len(digits) > _NUMBER_DIGITS:
            raise ValueError(f"has {len(digits)} significant digits; "
                             f"DynamoDB holds at most {_NUMBER_DIGITS}")
        magnitude = abs(exact)
        if magnitude < _NUMBER_MIN or magnitude >= _NUMBER_MAX:
            raise ValueError("is outside the range DynamoDB can store "
                             "(1e-130 to 1e126 in magnitude)")
    return text


def _is_utf8(text):
    """Whether ``text`` can be sent: a lone surrogate cannot."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_utf8(text, where=None):
    """ValidationError unless ``text`` can be encoded as UTF-8; with
    ``where``, the error is about that path."""
    if not text.isascii() and not _is_utf8(text):
        position = next(index for index, char in enumerate(text)
                        if "\ud800" <= char <= "\udfff")
        message = (f"holds a lone surrogate ({text[position]!r} at "
                   f"{position}), which UTF-8 cannot encode")
        if where is None:
            raise ValidationError(message)
        raise ValidationError(f"{where}: {message}" if where else message,
                              {where: [message]})


def _generic_to_av(value, where, depth=1):
    """AttributeValue of a free-form JSON-like value (DictField without
    declared sub-fields) at nesting ``depth``; the declared fields never
    come through here."""
    av = _generic_scalar(value, where)
    if av is not None:
        return av
    if isinstance(value, (set, frozenset)):
        return _generic_set(value, where)
    if not isinstance(value, (list, tuple, dict)):
        message = f"cannot store a value of type {type(value).__name__}"
        raise ValidationError(message, {where: [message]})
    if depth > _MAX_DEPTH:
        message = (f"nests lists and maps more than {_MAX_DEPTH} levels "
                   "deep, which DynamoDB refuses")
        raise ValidationError(message, {where: [message]})
    if not isinstance(value, dict):
        return {"L": [_generic_to_av(item, f"{where}[{index}]", depth + 1)
                      for index, item in enumerate(value)]}
    result = {}
    for key, item in value.items():
        if not isinstance(key, str) or not _is_utf8(key):
            raise ValidationError(f"keys must be UTF-8 strings, not {key!r}",
                                  {where: ["keys must be strings"]})
        result[key] = _generic_to_av(item, f"{where}.{key}", depth + 1)
    return {"M": result}


def _generic_scalar(value, where):
    """AttributeValue of a free-form string, bool, None, number or bytes;
    None for any other value."""
    kind = type(value)
    if kind is str:
        _check_utf8(value, where)
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if kind is int and -_FAST_INT_LIMIT <= value <= _FAST_INT_LIMIT:
        return {"N": str(value)}
    if kind is float and (value == 0.0 or _FAST_FLOAT_TINY <= abs(value)
                          <= _FAST_FLOAT_LIMIT):
        return {"N": repr(value)}
    if kind in (int, float) or isinstance(value, decimal.Decimal):
        try:
            return {"N": _number_text(value)}
        except ValueError as exc:
            raise ValidationError(str(exc), {where: [str(exc)]}) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"B": bytes(value)}
    return None


def _generic_set(value, where):
    """The string, number or binary set AttributeValue of a free-form
    set."""
    kinds = {"S" if type(element) is str else "B" if isinstance(
        element, (bytes, bytearray, memoryview)) else "N" if isinstance(
        element, (int, float, decimal.Decimal)) and type(element) is not
        bool else None for element in value}
    kind = kinds.pop() if len(kinds) == 1 else None
    if kind is None:
        message = ("is an empty set, which DynamoDB cannot store" if not
                   value else "a set holds strings, numbers or bytes, all "
                   "of one kind")
        raise ValidationError(message, {where: [message]})
    return {kind + "S": [_generic_to_av(element, where)[kind]
                         for element in value]}


def _generic_from_av(av):
    """Inverse of _generic_to_av. DynamoDB keeps no int/float distinction:
    an integral number comes back as an int, any other as a float."""
    (kind, value), = av.items()
    if kind == "S" or kind == "BOOL":
        return value
    if kind == "N":
        if value.isdecimal() or value[:1] == "-" and value[1:].isdecimal():
            return int(value)
        number = decimal.Decimal(value)
        if number == number.to_integral_value():
            return int(number)
        return float(value)
    if kind == "NULL":
        return None
    if kind == "L":
        return [_generic_from_av(item) for item in value]
    if kind == "M":
        return {key: _generic_from_av(item) for key, item in value.items()}
    if kind == "B":
        return _binary(value)
    element = kind[0]  # SS, NS, BS
    return {_generic_from_av({element: item}) for item in value}


def _generic_map(av):
    """The dict of a stored map (KeyError unless it is one)."""
    return {key: _generic_from_av(item) for key, item in av["M"].items()}


def _number_identity(text):
    """A number's identity, equal for equal numbers however written ("1",
    "1.0", "1E+0"): an int when the text is one, else a Decimal (which
    equals, and hashes as, the int or float of the same value)."""
    if text.isdecimal() or text[:1] == "-" and text[1:].isdecimal():
        return int(text)
    return decimal.Decimal(text)


def _av_size(av):
    """Bytes DynamoDB counts for an AttributeValue (numbers rounded up)."""
    text = av.get("S")
    if text is not None:
        return len(text) if text.isascii() else len(text.encode())
    (kind, value), = av.items()
    if kind == "N":
        return len(value) // 2 + 2
    if kind == "L":
        return 3 + sum(1 + _av_size(item) for item in value)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + _av_size(item)
                       for name, item in value.items())
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(item.encode()) for item in value)
    if kind == "BS":
        return sum(len(_binary(item)) for item in value)
    if kind == "NS":
        return sum(len(item) // 2 + 2 for item in value)
    return len(_binary(value))  # B


def _key_text(key):
    """"email='a@b.io', year=3" for a key's AttributeValues."""
    return ", ".join(f"{name}={_av_text(av)}" for name, av in key.items())


def _keys_text(keys, most=10):
    """The first ``most`` keys, for messages."""
    shown = "; ".join(_key_text(key) for key in keys[:most])
    return shown + (" ..." if len(keys) > most else "")


def _order_key(av) -> Any:
    """How DynamoDB orders a number, string or binary AttributeValue:
    numbers by value, strings by their UTF-8 bytes, binary as unsigned
    bytes."""
    (kind, value), = av.items()
    if kind == "N":
        return decimal.Decimal(value)
    return value.encode() if kind == "S" else _binary(value)


def _av_text(av):
    """A readable form of an AttributeValue for messages."""
    (kind, value), = av.items()
    if kind == "B":
        try:
            return repr(_binary(value))
        except ValueError:  # text that is not base64, as is
            pass
    return repr(value) if kind in "SB" else str(value)


# -- Validators --------------------------------------------------------------

_EMAIL_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
_EMAIL_LOCAL = re.compile(rf"{_EMAIL_ATOM}(\.{_EMAIL_ATOM})*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TOP_LEVEL_DOMAIN = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
_URL_SCHEMES = ("http", "https", "ftp", "ftps")
# A plain ASCII address, surely valid when it has at most 64 characters
# (so no part is too long) and no label ends in "-" (no "-."); others go
# through _is_email.
_ASCII_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9][A-Za-z0-9-]*\.)+[A-Za-z]{2,63}")


def _is_hostname(host, require_tld=True):
    """True for a DNS host name (internationalised names allowed)."""
    if host.endswith("."):
        host = host[:-1]
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label)
                                  for label in labels):
        return False
    if require_tld:
        return (len(labels) > 1
                and bool(_TOP_LEVEL_DOMAIN.fullmatch(labels[-1])))
    return True


def _is_ip_address(text):
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_email(text):
    local, at, domain = text.rpartition("@")
    return (bool(at) and 0 < len(local) <= 64 and len(text) <= 254
            and bool(_EMAIL_LOCAL.fullmatch(local)) and _is_hostname(domain))


def _is_url(text, fqdn=True):
    from urllib.parse import urlsplit

    if any(char.isspace() for char in text):
        return False
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError for a bad port
    except ValueError:
        return False
    if parts.scheme.lower() not in _URL_SCHEMES or not host:
        return False
    if _is_ip_address(host):
        return True
    if not fqdn and host == "localhost":
        return True
    return _is_hostname(host, require_tld=fqdn)


# -- Fields ------------------------------------------------------------------
#
# A field converts one attribute both ways with its plain methods
# (to_native, validate, to_primitive, _dump, _load), and states its common
# case once more, as source, in _fast_path: the model's codec writes that
# source inline into the model's own functions (see _Metadata), and uses it
# only while the field's class overrides none of the plain methods below
# the class that wrote the fast path (_fast_path_of). A subclass that
# changes conversion is then always converted by its own methods.

# A field's fast path: each part is Python source over the variable names
# _fast_path is given (``value``, ``av``), or None where there is none.
#   test:   holds for values that ``native`` and ``stored`` convert exactly
#           as validate() and _dump() would (other values call them);
#   native: the native value of such a value;  stored: its AttributeValue
#           (it may raise the ValidationError validate() would);
#   read:   the native value of the AttributeValue ``av``, as _load();
#   json:   the JSON text of ``av``, as the encoder writes it;
#   size:   a bound in bytes of any value the field stores, as DynamoDB
#           counts it: an int, or source over the native ``value``
#           (None: the item is measured).
_FastPath = collections.namedtuple(
    "_FastPath", "test native stored read json size",
    defaults=(None, None, None, None, None, None))
_NO_FAST_PATH = _FastPath()

# The plain methods a fast path stands for.
_PLAIN_METHODS = ("to_native", "validate", "to_primitive", "_dump", "_load",
                  "_check_format")


def _fast_path_of(field, value, av):
    """``field._fast_path(value, av)``, or _NO_FAST_PATH when the field's
    class overrides a plain method below the class that defined its fast
    path (which then no longer says what the field does)."""
    kind = type(field)
    owner = next(base for base in kind.__mro__ if "_fast_path" in vars(base))
    for name in _PLAIN_METHODS:
        if getattr(kind, name, None) is not getattr(owner, name, None):
            return _NO_FAST_PATH
    return field._fast_path(value, av)


def _string_json(av):
    """Source of the JSON text of the string AttributeValue ``av``."""
    return f"""'{{"S":' + json_string({av}['S']) + '}}'"""


def _number_json(av):
    """Source of the JSON text of the number AttributeValue ``av`` (number
    text needs no escapes)."""
    return f"""'{{"N":"' + {av}['N'] + '"}}'"""


class _Compared(Generic[_O]):
    """What a comparison with ``==``, ``!=``, ``<``, ``<=``, ``>`` or
    ``>=`` gives: the Condition its ``_compare`` makes (a field's, and a
    field's ``size()``)."""

    __slots__ = ()

    def __eq__(self, value: object) -> Condition:  # type: ignore[override]
        return self._compare("=", value)

    def __ne__(self, value: object) -> Condition:  # type: ignore[override]
        return self._compare("<>", value)

    def __lt__(self, value: _O) -> Condition:
        return self._compare("<", value)

    def __le__(self, value: _O) -> Condition:
        return self._compare("<=", value)

    def __gt__(self, value: _O) -> Condition:
        return self._compare(">", value)

    def __ge__(self, value: _O) -> Condition:
        return self._compare(">=", value)

    def _compare(self, operator: str, value: Any) -> Condition:
        raise NotImplementedError

    __hash__ = object.__hash__  # by identity (fields are dict keys)


def _unknown_options(field_class, unknown):
    """What a field declared with options no field takes is told (a
    PynamoDB habit, ``hash_key=True``, pointing to the model's way)."""
    name = next(iter(unknown))
    text = f"{field_class.__name__}() takes no option {name!r}"
    if name in ("hash_key", "range_key"):
        return (f"{text}: the model names its key, as "
                f"__{name}__ = \"<field name>\"")
    import inspect

    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    options = {}  # the named parameters of each __init__ passing **kwargs
    for klass in field_class.__mro__:  # on, up to one refusing the rest
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters
        options.update(dict.fromkeys(
            name for name, parameter in parameters.items()
            if parameter.kind in named and name != "self"))
        if "unknown" in parameters:
            break
    return f"{text}; it takes {', '.join(options)}"


class Field(_Compared[object], Generic[_T, _R]):
    """Base class of model fields.

    A field validates and converts one attribute, and is also the left-hand
    operand of conditions and updates: ``User.email == "a@b.io"``.

    :param required: ``save_one``/``save_many`` refuse an item without it;
        type checkers then type its value on instances ``T``, not
        ``T | None``.
    :param default: a value, or a callable returning one, used on save when
        the item has no value for the field.
    :param attr_name: the name of the attribute in DynamoDB, where it
        differs from the field's (``count_ = IntField(attr_name="count")``):
        Python code uses the field's name, DynamoDB sees this one.
    """

    attribute_type = None  # the DynamoDB type it stores: S, N, BOOL, L, M

    def __init__(self, required: _R = False,  # type: ignore[assignment]
                 default: Any = None, attr_name: str | None = None,
                 **unknown: Any) -> None:
        if unknown:  # (subclasses' signatures refuse them to type checkers)
            raise SchemaError(_unknown_options(type(self), unknown))
        if attr_name is not None and (type(attr_name) is not str
                                      or not attr_name):
            raise SchemaError(f"attr_name must be a non-empty string, not "
                              f"{attr_name!r}")
        self.required: bool = required
        self.default = default
        self.attr_name = attr_name
        self.path: tuple[str | int, ...] = ()
        # The path in DynamoDB: the stored name first (see attr_name).
        self.stored_path: tuple[str | int, ...] = ()
        self.model: type[Model] | None = None

    def __repr__(self):
        where = f"{self.model.__name__}.{_path_text(self.path)}" \
            if self.model else "unbound"
        return f"<{type(self).__name__} {where}>"

    # Class attribute access gives the field; an instance without a value
    # for it reads None (values live in the instance __dict__), unless its
    # read did not load the field.
    @overload
    def __get__(self: _F, instance: None, owner: Any) -> _F: ...
    @overload
    def __get__(self: Field[_T, Literal[True]], instance: Model,
                owner: Any) -> _T: ...
    @overload
    def __get__(self, instance: Model, owner: Any) -> _T | None: ...

    def __get__(self, instance: Any, owner: Any) -> Any:
        if instance is None:
            return self
        loaded = instance.__dict__.get(_LOADED)
        if loaded is not None and self.path[0] not in loaded:
            raise FieldNotLoaded(
                f"{type(instance).__name__}.{self.path[0]} was not read: "
                f"its read loaded {', '.join(sorted(loaded))} only (by "
                "fields=, or from an index holding no more)")
        return None

    if TYPE_CHECKING:
        # Instances hold their values in __dict__: a __set__ at run time
        # would make every read go through __get__.
        def __set__(self, instance: Model, value: _T | None) -> None: ...

    def _bind(self, model, path, stored_path=None):
        """A copy of this field placed at ``path`` of ``model`` (at
        ``stored_path`` in DynamoDB; a model's field: at its attr_name)."""
        import copy

        bound = copy.copy(self)
        bound.model = model
        bound.path = path
        bound.stored_path = stored_path or (self.attr_name or path[0],)
        return bound

    # Conversion. to_native coerces a Python value into the field's native
    # type without checking constraints (condition operands use it);
    # validate also checks constraints (saves use it).
    def to_native(self, value: Any) -> _T:
        """Convert ``value`` to the field's Python type; ValidationError if
        it has the wrong type."""
        return value

    def validate(self, value: Any) -> _T:
        """``to_native(value)`` plus the field's constraints (bounds,
        patterns)."""
        return self.to_native(value)

    def to_primitive(self, value: Any) -> Any:
        """The stored form of a native value (str, int, float, bool, list
        or dict)."""
        return value

    def _dump(self, value):
        """AttributeValue of a native value."""
        raise NotImplementedError

    def _load(self, av):
        """Native value of an AttributeValue."""
        raise NotImplementedError

    def _fast_path(self, value, av):
        """The common case as source (see _FastPath); the plain methods
        serve when it is _NO_FAST_PATH or a part is None."""
        return _NO_FAST_PATH

    def _read_stored(self, av):
        """The native value of an AttributeValue as anyone may have stored
        it: None for NULL; a value of another type converted by to_native
        (a number stored as text); else ValidationError."""
        if "NULL" in av:
            return None
        try:
            return self._load(av)
        except Exception:
            pass
        try:
            return self.to_native(_generic_from_av(av))
        except (ValidationError, ValueError, TypeError, ArithmeticError):
            (kind, _), = av.items()
            raise ValidationError(
                f"is stored as {kind} {_av_text(av)[:60]}, which a "
                f"{type(self).__name__} cannot read") from None

    @staticmethod
    def _is_absent(value):
        """Whether ``value`` stands for no value: None (a SetField's empty
        set too: DynamoDB has none)."""
        return value is None

    def _operand(self, value, path=None):
        """AttributeValue of a condition operand compared with this field
        (type-checked and converted, not held to the field's constraints);
        errors name ``path``, by default the field's own."""
        try:
            return self._dump(self.to_native(value))
        except ValidationError as exc:
            raise _located(exc, _path_text(path or self.path)) from None

    def _default_value(self):
        default = self.default
        if callable(default):
            return default()
        if isinstance(default, (list, dict, set)):
            import copy

            return copy.deepcopy(default)
        return default

    # Conditions: comparisons (see _Compared), then named functions.
    def _compare(self, operator: str, value: Any) -> Condition:
        if self._is_absent(value):
            if operator == "=":
                return self.not_exists()
            if operator == "<>":
                return self.exists()
            raise ExpressionError(f"cannot compare {_path_text(self.path)} "
                                  f"{operator} None")
        if operator not in ("=", "<>"):
            self._check_ordered(operator)
        return _Comparison(self, operator, self._operand(value))

    def _misused(self, *_):
        # & and | bind tighter than comparisons: a == "A" & b > 1 is
        # a == ("A" & b) > 1, which lands here.
        raise ExpressionError(
            f"&, | and ~ combine conditions, not fields ({self._where()}): "
            "put each comparison in parentheses, as in "
            "(User.name == 'A') & (User.year_of_birth > 1990)")

    __and__ = __rand__ = __or__ = __ror__ = __invert__ = _misused

    def __contains__(self, value):
        raise ExpressionError(f"'x in {self._where()}' cannot make a "
                              f"condition: write "
                              f"{self._where()}.contains({value!r})")

    def __iter__(self):
        raise ExpressionError(f"{self._where()} is a field, not a list of "
                              "values: it cannot be iterated")

    def _where(self):
        """``User.address.city``: the field's model and path."""
        path = _path_text(self.path)
        return f"{self.model.__name__}.{path}" if self.model else path

    def in_(self, values: Iterable[Any]) -> Condition:
        """``field IN (values)``; at most 100 values."""
        values = list(values)
        if not values:
            raise ExpressionError(f"{_path_text(self.path)}.in_() needs at "
                                  "least one value")
        if len(values) > _MAX_IN_VALUES:
            raise ExpressionError(
                f"{_path_text(self.path)}.in_() got {len(values)} values; "
                f"DynamoDB allows at most {_MAX_IN_VALUES}")
        return _In(self, [self._operand(value) for value in values])

    def between(self, low: Any, high: Any) -> Condition:
        """``low <= field <= high``; ``low`` must not be above ``high``."""
        self._check_ordered("between")
        low, high = self._operand(low), self._operand(high)
        if _order_key(low) > _order_key(high):
            raise ExpressionError(
                f"{_path_text(self.path)}.between({_av_text(low)}, "
                f"{_av_text(high)}): the low bound is above the high one "
                "(DynamoDB refuses it)")
        return _Between(self, low, high)

    def begins_with(self, prefix: str) -> Condition:
        """The string attribute starts with ``prefix`` (a plain string,
        not held to the field's format)."""
        if self.attribute_type != "S":
            raise ExpressionError(f"begins_with needs a string field; "
                                  f"{_path_text(self.path)} is not one")
        return _Function("begins_with", self, _string_operand(prefix, self))

    def contains(self, value: Any) -> Condition:
        """A string attribute holds the substring ``value``, or a list holds
        the element ``value``."""
        if self.attribute_type != "S":
            raise ExpressionError(f"contains needs a string or list field; "
                                  f"{_path_text(self.path)} is not one")
        return _Function("contains", self, _string_operand(value, self))

    def size(self) -> _Size:
        """The attribute's size, to compare with an int in a condition:
        ``User.name.size() > 3`` (a string's or binary's length in bytes,
        the number of elements of a list, map or set)."""
        return _Size(self)

    def exists(self) -> Condition:
        """The item has this attribute."""
        return _Function("attribute_exists", self)

    def not_exists(self) -> Condition:
        """The item lacks this attribute."""
        return _Function("attribute_not_exists", self)

    # Updates, for update_one.

    def set(self, value: _T | None) -> Update:
        """Set the attribute to ``value`` (validated); ``None`` (or an empty
        set, for a SetField) removes it."""
        if self._is_absent(value):
            return self.remove()
        return SetUpdate(self, self._update_value(value))

    def set_if_not_exists(self, value: _T) -> Update:
        """Set the attribute to ``value`` only if the item lacks it."""
        if self._is_absent(value):
            raise ValidationError(f"{_path_text(self.path)}: "
                                  "set_if_not_exists needs a value")
        return SetUpdate(self, self._update_value(value), if_not_exists=True)

    def remove(self) -> Update:
        """Remove the attribute (refused for required fields)."""
        if self.required:
            raise ValidationError(
                f"{_path_text(self.path)} is required: it cannot be removed",
                {_path_text(self.path): ["is required"]})
        return RemoveUpdate(self)

    def _update_value(self, value):
        """AttributeValue of a value to store at this field (validated)."""
        try:
            return self._dump(self.validate(value))
        except ValidationError as exc:
            raise _located(exc, _path_text(self.path)) from None

    def _check_ordered(self, operator):
        if self.attribute_type not in _KEY_TYPES:
            raise ExpressionError(
                f"{operator} compares numbers, strings or binary; "
                f"{_path_text(self.path)} is a {type(self).__name__}")


def _located(exc, where):
    """Re-home a field's ValidationError under the field path ``where``."""
    if exc.errors:
        errors = {where + sub if not sub or sub[0] in "[." else
                  f"{where}.{sub}": messages
                  for sub, messages in exc.errors.items()}
    else:
        errors = {where: [str(exc)]}
    return ValidationError(_describe(errors), errors)


def _describe(errors):
    """'path: message, message; path: message' of a ValidationError's
    errors."""
    return "; ".join(f"{path}: {', '.join(messages)}"
                     for path, messages in errors.items())


def _wrong_type(expected, value):
    return ValidationError(f"must be {expected}, not {type(value).__name__}")


def _string_operand(value, field):
    where = _path_text(field.path)
    if not isinstance(value, str):
        raise ValidationError(
            f"{where}: the operand must be a string, not "
            f"{type(value).__name__}",
            {where: ["the operand must be a string"]})
    _check_utf8(value, where)
    return {"S": value}


class _NumberField(Field[_N, _R]):
    """What IntField and FloatField share: a value of their own type
    (``_kind``) within the range that needs no check (``_plain``) taken as
    it is, others converted (``_number``), and range checks.

    :param min_value: the lowest value allowed.
    :param max_value: the highest value allowed.
    :param kwargs: ``required``, ``default`` and ``attr_name`` (see Field).
    """

    attribute_type = "N"
    _kind: type = int
    _what = "an integer"

    def __init__(self, min_value: _N | None = None,
                 max_value: _N | None = None,
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        self.min_value: _N | None = min_value
        self.max_value: _N | None = max_value

    def to_native(self, value: Any) -> _N:
        kind = type(value)
        if kind is self._kind:
            return value if self._plain(value) else self._storable(value)
        if kind is bool:
            raise ValidationError(f"must be {self._what}, not a bool")
        return self._storable(self._number(value))

    @staticmethod
    def _plain(value):
        """Whether a value of the field's type surely fits DynamoDB."""
        raise NotImplementedError

    def _number(self, value):
        """The field's type of a value of another type, or
        ValidationError."""
        raise NotImplementedError

    def _range_source(self, value, limit):
        """Source testing that ``value`` lies where it needs no check but
        its type: within ``limit`` and the field's bounds (None for bounds
        that are not plain numbers)."""
        low = -limit if self.min_value is None else max(-limit,
                                                        self.min_value)
        high = limit if self.max_value is None else min(limit, self.max_value)
        if type(low) not in (int, float) or type(high) not in (int, float):
            return None
        return f"{low!r} <= {value} <= {high!r}"

    def validate(self, value: Any) -> _N:
        value = self.to_native(value)
        if self.min_value is not None and value < self.min_value:
            raise ValidationError(f"must be at least {self.min_value}")
        if self.max_value is not None and value > self.max_value:
            raise ValidationError(f"must be at most {self.max_value}")
        return value

    def add(self, number: _N) -> Update:
        """Add ``number`` (of the field's type) to the stored value, a
        missing value counting as 0. The update applies only while the
        result stays within ``min_value``/``max_value``; update_one raises
        ValidationError naming the bound otherwise."""
        where = _path_text(self.path)
        kind = int if isinstance(self, IntField) else (int, float)
        if type(number) is bool or not isinstance(number, kind):
            raise ValidationError(
                f"{where}: add() takes "
                f"{'an int' if kind is int else 'a number'}, not {number!r}",
                {where: ["add() needs a number"]})
        delta = self._operand(number)  # the delta is not held to the bounds
        low, high = self.min_value, self.max_value
        guard = []
        if low is not None:
            guard.append(self >= low - number)
        if high is not None:
            guard.append(self <= high - number)
        guard = _and_all(guard)
        if guard is not None and (low is None or number >= low) \
                and (high is None or number <= high):
            guard = self.not_exists() | guard  # a missing value counts as 0
        return AddUpdate(self, delta, number, guard)

    def subtract(self, number: _N) -> Update:
        """Subtract ``number``; see add()."""
        return self.add(-number)

    @staticmethod
    def _storable(number):
        """``number`` if DynamoDB can hold it, else ValidationError."""
        try:
            _number_text(number)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return number

    @staticmethod
    def _decimal(value, what):
        """Decimal of a numeric string or Decimal, else ValidationError."""
        if isinstance(value, str):
            if not _NUMBER_TEXT.fullmatch(value):
                raise ValidationError(f"must be {what}, not {value!r}")
            value = decimal.Decimal(value)
        if not value.is_finite():
            raise ValidationError(_NOT_FINITE)
        return value


def _load_int(av):
    text = av["N"]
    try:
        return int(text)
    except ValueError:  # an integral number written by others as 1E+3
        return int(decimal.Decimal(text))


class IntField(_NumberField[int, _R]):
    """An integer (stored as a DynamoDB number, at most 38 digits), from
    ``min_value`` to ``max_value`` when they are given; ``kwargs`` are
    ``required``, ``default`` and ``attr_name`` (see Field)."""

    @staticmethod
    def _plain(value):
        return -_FAST_INT_LIMIT <= value <= _FAST_INT_LIMIT

    def _number(self, value):
        if type(value) is float or isinstance(value, (str, decimal.Decimal)):
            exact = self._decimal(decimal.Decimal(value)
                                  if type(value) is float else value,
                                  "an integer")
            if exact != exact.to_integral_value():
                raise ValidationError(f"must be an integer, not {value!r}")
            return int(exact)
        if isinstance(value, int):
            return int(value)
        raise _wrong_type("an integer", value)

    def _dump(self, value):
        return {"N": str(value)}

    def _load(self, av):
        return _load_int(av)

    def _fast_path(self, value, av):
        bounds = self._range_source(value, _FAST_INT_LIMIT)
        return _FastPath(
            test=bounds and f"type({value}) is int and {bounds}",
            native=value, stored=f"{{'N': str({value})}}",
            read=f"load_int({av})", json=_number_json(av),
            size=66)  # 126 digits and a sign, the most DynamoDB takes


class VersionField(IntField):
    """The item's version, for optimistic locking: 1 once the item is
    first saved, one more at each save_one, update_one or transaction
    write, and each of those that names a version (an instance or dict
    holding one) requires the stored item to be at it, else raises
    VersionConflict. dynamongo sets it: it cannot be updated by hand. At
    most one per model, at the top level, not a key. Takes ``attr_name``
    (see Field)."""

    _model_level = True  # at most one per model, at its top level

    def __init__(self, attr_name: str | None = None,
                 **unknown: NoReturn) -> None:
        if unknown:
            raise SchemaError(_unknown_options(type(self), unknown))
        super().__init__(min_value=1, attr_name=attr_name)

    def set(self, value: Any) -> NoReturn:
        """Refused, whatever the ``value``: dynamongo sets the version."""
        self._refuse()

    def set_if_not_exists(self, value: Any) -> NoReturn:
        """Refused, whatever the ``value``: dynamongo sets the version."""
        self._refuse()

    def add(self, number: Any) -> NoReturn:
        """Refused, whatever the ``number``: dynamongo adds one itself."""
        self._refuse()

    def subtract(self, number: Any) -> NoReturn:
        """Refused, whatever the ``number``: dynamongo adds one itself."""
        self._refuse()

    def remove(self) -> NoReturn:
        """Refused: the version stays."""
        self._refuse()

    def _refuse(self) -> NoReturn:
        where = _path_text(self.path)
        model = f"{self.model.__name__}." if self.model else ""
        raise ValidationError(
            f"{model}{where} is a VersionField: dynamongo sets it (one more "
            "at each write); it cannot be updated by hand",
            {where: ["is set by dynamongo"]})


class FloatField(_NumberField[float, _R]):
    """A float, stored with full precision (shortest round-trip text),
    from ``min_value`` to ``max_value`` when they are given; ``kwargs``
    are ``required``, ``default`` and ``attr_name`` (see Field)."""

    _kind = float
    _what = "a number"

    @staticmethod
    def _plain(value):
        return value == 0.0 or \
            _FAST_FLOAT_TINY <= abs(value) <= _FAST_FLOAT_LIMIT

    def _number(self, value):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, (str, decimal.Decimal)):
            return float(self._decimal(value, "a number"))
        raise _wrong_type("a number", value)

    def _dump(self, value):
        return {"N": repr(value)}

    def _load(self, av):
        return float(av["N"])

    def _fast_path(self, value, av):
        bounds = self._range_source(value, _FAST_FLOAT_LIMIT)
        tiny = f"{value} == 0.0 or abs({value}) >= {_FAST_FLOAT_TINY!r}"
        return _FastPath(
            test=bounds and f"type({value}) is float and {bounds} and "
                            f"({tiny})",
            native=value, stored=f"{{'N': repr({value})}}",
            read=f"float({av}['N'])", json=_number_json(av),
            size=16)  # repr() of a float writes at most 24 characters


class BooleanField(Field[bool, _R]):
    """True or False. Takes ``required``, ``default`` and ``attr_name``
    (see Field)."""

    attribute_type = "BOOL"

    def to_native(self, value: Any) -> bool:
        if value is not True and value is not False:
            raise _wrong_type("a bool", value)
        return value

    def _dump(self, value):
        return {"BOOL": value}

    def _load(self, av):
        return av["BOOL"]

    def _fast_path(self, value, av):
        return _FastPath(
            test=f"{value} is True or {value} is False", native=value,
            stored=f"{{'BOOL': {value}}}", read=f"{av}['BOOL']",
            json=f"""('{{"BOOL":true}}' if {av}['BOOL'] """
                 f"""else '{{"BOOL":false}}')""",
            size=1)


class BinaryField(Field[bytes, _R]):
    """Bytes (a bytearray or memoryview is taken and stored as bytes),
    stored as DynamoDB binary; it may be a key (ordered as unsigned
    bytes). Takes ``required``, ``default`` and ``attr_name`` (see Field)."""

    attribute_type = "B"

    def to_native(self, value: Any) -> bytes:
        if type(value) is bytes:
            return value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        raise _wrong_type("bytes", value)

    def to_primitive(self, value: bytes) -> Any:
        return _base64_text(value)

    def _dump(self, value):
        return {"B": value}

    def _load(self, av):
        return _binary(av["B"])

    def _fast_path(self, value, av):
        return _FastPath(
            test=f"type({value}) is bytes", native=value,
            stored=f"{{'B': {value}}}", read=f"binary({av}['B'])",
            json=f"""'{{"B":"' + base64_text({av}['B']) + '"}}'""",
            size=f"len({value})")


class StringField(Field[str, _R]):
    """A string, optionally held to a pattern and a length.

    :param regex: the whole string must match it.
    :param min_length: fewest characters allowed.
    :param max_length: most characters allowed.
    :param kwargs: ``required``, ``default`` and ``attr_name`` (see Field).
    """

    attribute_type = "S"

    def __init__(self, regex: str | None = None,
                 min_length: int | None = None,
                 max_length: int | None = None,
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        self.regex = re.compile(regex) if isinstance(regex, str) else regex
        self.min_length = min_length
        self.max_length = max_length

    def to_native(self, value: Any) -> str:
        if not isinstance(value, str):
            raise _wrong_type("a string", value)
        _check_utf8(value)
        return value

    def validate(self, value: Any) -> str:
        value = self.to_native(value)
        if self.min_length is not None and len(value) < self.min_length:
            raise ValidationError(f"must have at least {self.min_length} "
                                  "characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(f"must have at most {self.max_length} "
                                  "characters")
        if self.regex is not None and not self.regex.fullmatch(value):
            raise ValidationError(
                f"must match the pattern {self.regex.pattern!r}")
        self._check_format(value)
        return value

    def _check_format(self, value):
        """Subclasses check their format here."""

    def _dump(self, value):
        return {"S": value}

    def _load(self, av):
        return av["S"]

    def _fast_path(self, value, av):
        test = [f"type({value}) is str",
                f"({value}.isascii() or utf8({value}))"]
        for limit, operator in ((self.min_length, ">="),
                                (self.max_length, "<=")):
            if limit is not None:
                test.append(f"len({value}) {operator} {limit!r}")
        plain = self.regex is None and all(
            type(limit) is int for limit in (self.min_length, self.max_length)
            if limit is not None)
        return _FastPath(
            test=" and ".join(test) if plain else None,
            native=value, stored=f"{{'S': {value}}}", read=f"{av}['S']",
            json=_string_json(av),
            size=f"4 * len({value})")  # UTF-8 has at most 4 bytes a char


class EmailField(StringField[_R]):
    """An e-mail address (``local@domain.tld``). Takes StringField's
    ``regex``, ``min_length`` and ``max_length`` and, as ``kwargs``,
    ``required``, ``default`` and ``attr_name``."""

    def _check_format(self, value):
        if not _is_email(value):
            raise ValidationError(f"{value!r} is not a valid e-mail address")

    def _fast_path(self, value, av):
        # A plain ASCII address of at most 64 characters is surely valid:
        # no part is too long (see _ASCII_EMAIL); others are checked.
        fast = super()._fast_path(value, av)
        return fast._replace(
            test=fast.test and f"{fast.test} and len({value}) <= 64 and "
                               f"'-.' not in {value} and "
                               f"plain_email({value})",
            size=4 * 254)  # _is_email allows 254 characters


class URLField(StringField[_R]):
    """An http, https, ftp or ftps URL.

    :param fqdn: require a fully qualified host name (``example.com``, not
        ``localhost``); IP addresses are always accepted.
    :param kwargs: StringField's ``regex``, ``min_length``,
        ``max_length``, and ``required``, ``default`` and ``attr_name``
        (see Field).
    """

    def __init__(self, fqdn: bool = True,
                 **kwargs: Unpack[_Options[_R]]) -> None:
        StringField.__init__(self, **kwargs)
        self.fqdn = fqdn

    def _check_format(self, value):
        if not _is_url(value, self.fqdn):
            raise ValidationError(f"{value!r} is not a valid URL")

    def _fast_path(self, value, av):
        # Stored and read as any string; the format is always checked.
        return super()._fast_path(value, av)._replace(test=None)


class IPAddressField(StringField[_R]):
    """An IPv4 or IPv6 address, stored as the text given. Takes
    StringField's ``regex``, ``min_length`` and ``max_length`` and, as
    ``kwargs``, ``required``, ``default`` and ``attr_name``."""

    def to_native(self, value: Any) -> str:
        import ipaddress

        if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return str(value)
        return super().to_native(value)

    def _check_format(self, value):
        if not _is_ip_address(value):
            raise ValidationError(f"{value!r} is not a valid IP address")

    def _fast_path(self, value, av):
        # Stored and read as any string (a scoped IPv6 address has no
        # length limit); the format is always checked.
        return super()._fast_path(value, av)._replace(test=None)


class UUIDField(Field["uuid.UUID", _R]):
    """A UUID, stored as its canonical text and read back as uuid.UUID.
    Takes ``required``, ``default`` and ``attr_name`` (see Field)."""

    attribute_type = "S"

    def to_native(self, value: Any) -> uuid.UUID:
        import uuid

        if isinstance(value, uuid.UUID):
            return value
        if isinstance(value, str):
            try:
                return uuid.UUID(value)
            except ValueError:
                raise ValidationError(
                    f"{value!r} is not a valid UUID") from None
        raise _wrong_type("a UUID", value)

    def to_primitive(self, value: uuid.UUID) -> Any:
        return str(value)

    def _dump(self, value):
        return {"S": str(value)}

    def _load(self, av):
        import uuid

        return uuid.UUID(av["S"])

    def _fast_path(self, value, av):
        return _FastPath(
            test=f"type({value}) is UUID", native=value,
            stored=f"{{'S': str({value})}}", read=f"UUID({av}['S'])",
            json=_string_json(av), size=36)


_TIME_ZONE_POLICIES = ("allow", "utc", "reject", "require")


def _from_isoformat_310(text):
    """datetime.fromisoformat taking, on Python 3.10, what it takes from
    3.11 on and others write: "Z" for UTC, fractions of any length."""
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        text = re.sub(r"(\.\d{1,6})\d*", lambda match: match[1].ljust(7, "0"),
                      text, count=1)
        return datetime.datetime.fromisoformat(text)


_from_isoformat = datetime.datetime.fromisoformat if sys.version_info >= (
    3, 11) else _from_isoformat_310


class DateTimeField(Field[datetime.datetime, _R]):
    """A datetime, stored as ISO 8601 text with microseconds.

    Naive datetimes stay naive and aware ones keep their UTC offset.

    :param formats: strptime format(s) accepted for string input; ISO 8601
        when not given.
    :param serialized_format: strftime format of the stored text (it must
        keep what you need to read back; the default keeps everything).
    :param parser: a callable turning a string into a datetime, used
        instead of ``formats``.
    :param tzd: time zone policy: ``"allow"`` naive and aware values,
        ``"utc"`` (naive values are taken as UTC), ``"require"`` an offset,
        or ``"reject"`` one.
    :param convert_tz: convert aware values to UTC.
    :param drop_tzinfo: drop the offset after any conversion.
    :param kwargs: ``required``, ``default`` and ``attr_name`` (see Field).
    """

    attribute_type = "S"

    def __init__(self, formats: str | Iterable[str] | None = None,
                 serialized_format: str | None = None,
                 parser: Callable[[str], datetime.datetime] | None = None,
                 tzd: str = "allow", convert_tz: bool = False,
                 drop_tzinfo: bool = False,
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        if tzd not in _TIME_ZONE_POLICIES:
            raise SchemaError(f"tzd must be one of {_TIME_ZONE_POLICIES}, "
                              f"not {tzd!r}")
        self.formats = (formats,) if isinstance(formats, str) \
            else tuple(formats or ())
        self.serialized_format = serialized_format
        self.parser = parser
        self.tzd = tzd
        self.convert_tz = convert_tz
        self.drop_tzinfo = drop_tzinfo

    def to_native(self, value: Any) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            moment = value
        elif isinstance(value, str):
            moment = self._parse(value)
        else:
            raise _wrong_type("a datetime", value)
        aware = moment.utcoffset() is not None
        if not aware:
            if self.tzd == "require":
                raise ValidationError("must have a time zone offset")
            if self.tzd == "utc":
                moment = moment.replace(tzinfo=datetime.timezone.utc)
        else:
            if self.tzd == "reject":
                raise ValidationError("must not have a time zone offset")
            if self.convert_tz:
                moment = moment.astimezone(datetime.timezone.utc)
        if self.drop_tzinfo:
            moment = moment.replace(tzinfo=None)
        return moment

    def _parse(self, text):
        if self.parser is not None:
            try:
                moment = self.parser(text)
            except Exception as exc:
                raise ValidationError(
                    f"cannot parse {text!r}: {exc}") from None
            if not isinstance(moment, datetime.datetime):
                raise ValidationError(
                    f"the parser returned {type(moment).__name__}, not a "
                    "datetime")
            return moment
        for fmt in self.formats:
            try:
                return datetime.datetime.strptime(text, fmt)
            except ValueError:
                pass
        if not self.formats:
            try:
                return _from_isoformat(text)
            except ValueError:
                pass
        raise ValidationError(f"{text!r} is not a valid date-time")

    def to_primitive(self, value: datetime.datetime) -> Any:
        if self.serialized_format:
            # %Y as strptime reads it back: 4 digits (strftime writes years
            # below 1000 unpadded on some platforms).
            return value.strftime(re.sub(
                "%[%Y]", lambda code: code[0] if code[0] == "%%" else
                f"{value.year:04d}", self.serialized_format))
        return value.isoformat(timespec="microseconds")

    def _dump(self, value):
        return {"S": self.to_primitive(value)}

    def _load(self, av):
        if self.serialized_format:
            return datetime.datetime.strptime(av["S"], self.serialized_format)
        return _from_isoformat(av["S"])

    def _fast_path(self, value, av):
        if self.serialized_format:
            return _FastPath(json=_string_json(av))
        plain = self.tzd == "allow" and not (self.convert_tz
                                             or self.drop_tzinfo)
        # isoformat() shows microseconds when they are not 0, and is
        # quicker without the timespec argument.
        text = (f"{value}.isoformat() if {value}.microsecond else "
                f"{value}.isoformat(timespec='microseconds')")
        return _FastPath(
            test=f"type({value}) is datetime" if plain else None,
            native=value, stored=f"{{'S': {text}}}",
            read=f"fromisoformat({av}['S'])", json=_string_json(av),
            size=42)  # with microseconds and an offset of seconds


class DateField(Field[datetime.date, _R]):
    """A date, stored as ISO 8601 text (``YYYY-MM-DD``).

    :param formats: strptime format(s) accepted for string input; ISO 8601
        when not given.
    :param kwargs: ``required``, ``default`` and ``attr_name`` (see Field).
    """

    attribute_type = "S"

    def __init__(self, formats: str | Iterable[str] | None = None,
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        self.formats = (formats,) if isinstance(formats, str) \
            else tuple(formats or ())

    def to_native(self, value: Any) -> datetime.date:
        if isinstance(value, datetime.datetime):
            raise ValidationError("must be a date, not a datetime")
        if isinstance(value, datetime.date):
            return value
        if not isinstance(value, str):
            raise _wrong_type("a date", value)
        for fmt in self.formats:
            try:
                return datetime.datetime.strptime(value, fmt).date()
            except ValueError:
                pass
        if not self.formats:
            try:
                return datetime.date.fromisoformat(value)
            except ValueError:
                pass
        raise ValidationError(f"{value!r} is not a valid date")

    def to_primitive(self, value: datetime.date) -> Any:
        return value.isoformat()

    def _dump(self, value):
        return {"S": value.isoformat()}

    def _load(self, av):
        return datetime.date.fromisoformat(av["S"])

    def _fast_path(self, value, av):
        return _FastPath(
            test=f"type({value}) is date", native=value,
            stored=f"{{'S': {value}.isoformat()}}",
            read=f"date_fromisoformat({av}['S'])", json=_string_json(av),
            size=10)


_MICROSECONDS = {
    "weeks": 604_800_000_000, "days": 86_400_000_000,
    "hours": 3_600_000_000, "minutes": 60_000_000, "seconds": 1_000_000,
    "milliseconds": 1_000, "microseconds": 1,
}


class TimedeltaField(Field[datetime.timedelta, _R]):
    """A datetime.timedelta, stored as a number of ``precision`` units.

    :param precision: the unit stored: ``"weeks"``, ``"days"``,
        ``"hours"``, ``"minutes"``, ``"seconds"`` (default),
        ``"milliseconds"`` or ``"microseconds"``. Numbers given instead of
        timedeltas are read in this unit. Values round-trip to the
        microsecond whatever the unit.
    :param kwargs: ``required``, ``default`` and ``attr_name`` (see Field).
    """

    attribute_type = "N"

    def __init__(self, precision: str = "seconds",
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        if precision not in _MICROSECONDS:
            raise SchemaError(f"precision must be one of "
                              f"{tuple(_MICROSECONDS)}, not {precision!r}")
        self.precision = precision
        self._unit = decimal.Decimal(_MICROSECONDS[precision])

    def to_native(self, value: Any) -> datetime.timedelta:
        if isinstance(value, datetime.timedelta):
            return value
        if type(value) is bool or not isinstance(
                value, (int, float, decimal.Decimal)):
            raise ValidationError(
                f"must be a timedelta or a number of {self.precision}, not "
                f"{type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(_NOT_FINITE)
        micro = decimal.Decimal(repr(value) if isinstance(value, float)
                                else value) * self._unit
        try:
            return datetime.timedelta(microseconds=int(
                micro.to_integral_value(decimal.ROUND_HALF_EVEN)))
        except (OverflowError, ValueError, decimal.InvalidOperation):
            raise ValidationError(f"{value!r} {self.precision} is out of "
                                  "the range of a timedelta") from None

    def to_primitive(self, value: datetime.timedelta) -> Any:
        micro = value // datetime.timedelta(microseconds=1)
        number = _NUMBER_CONTEXT.divide(decimal.Decimal(micro), self._unit)
        if number == number.to_integral_value():
            return int(number)
        return number

    def _dump(self, value):
        number = self.to_primitive(value)
        return {"N": str(number) if isinstance(number, int)
                else format(number, "f")}

    def _load(self, av):
        micro = decimal.Decimal(av["N"]) * self._unit
        return datetime.timedelta(microseconds=int(
            micro.to_integral_value(decimal.ROUND_HALF_EVEN)))

    def _fast_path(self, value, av):
        # At most 52 characters: a sign, "0.", 11 zeros (a microsecond in
        # weeks) and 38 digits.
        return _FastPath(json=_number_json(av), size=28)


class TTLField(Field[datetime.datetime, _R]):
    """When the item expires, for DynamoDB's Time to Live: stored as a
    number of epoch seconds; takes an aware datetime, a naive one (taken
    as UTC), a timedelta (from now) or an int (epoch seconds), and reads
    back as an aware UTC datetime. ``create_table`` and ``sync_table``
    turn DynamoDB's TTL on for it; reads leave out the items it has
    passed (see ``include_expired``). At most one per model, at the top
    level, not a key. Takes ``required``, ``default`` and ``attr_name``
    (see Field)."""

    attribute_type = "N"
    _model_level = True

    def to_native(self, value: Any) -> datetime.datetime:
        utc = datetime.timezone.utc
        try:
            if isinstance(value, datetime.datetime):
                value = value.replace(tzinfo=utc) if value.tzinfo is None \
                    else value.astimezone(utc)
                return value.replace(microsecond=0)
            if isinstance(value, datetime.timedelta):
                value = datetime.datetime.fromtimestamp(int(_clock()),
                                                        utc) + value
                return value.replace(microsecond=0)
        except OverflowError:
            raise ValidationError(f"{value!r} is out of the range of UTC "
                                  "datetimes") from None
        if isinstance(value, int) and type(value) is not bool:
            try:
                return datetime.datetime.fromtimestamp(value, utc)
            except (OverflowError, OSError, ValueError):
                raise ValidationError(f"{value} is not a time in epoch "
                                      "seconds") from None
        raise _wrong_type("a datetime, a timedelta or an int (epoch "
                          "seconds)", value)

    def to_primitive(self, value: datetime.datetime) -> Any:
        return int(value.timestamp())

    def _dump(self, value):
        return {"N": str(int(value.timestamp()))}

    def _load(self, av):
        return datetime.datetime.fromtimestamp(_load_int(av),
                                               datetime.timezone.utc)


def _field_instance(field, where):
    """A Field instance from a Field or Field subclass, else SchemaError."""
    if isinstance(field, type) and issubclass(field, Field):
        field = field()
    if getattr(field, "_model_level", False):
        raise SchemaError(f"{where} cannot be a {type(field).__name__}: it "
                          "stands at the top level of a model")
    if getattr(field, "attr_name", None) is not None:
        raise SchemaError(f"{where} cannot take attr_name: it is stored "
                          "under its own name, which may be any string")
    if isinstance(field, Field):
        return field
    raise SchemaError(f"{where} must be a Field or Field class, "
                      f"not {field!r}")


class ListField(Field[list[_E], _R]):
    """A list whose items are validated by ``field`` (a field, or a field
    class); ``kwargs`` are ``required``, ``default`` and ``attr_name``
    (see Field).

    ``User.cities_visited[0]`` is the first element, for conditions and
    updates; ``User.cities_visited.contains("Nairobi")`` tests membership.
    """

    attribute_type = "L"

    def __init__(self, field: Field[_E] | type[Field[_E]],
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        self.field: Field[_E] = _field_instance(
            field, "the item field of ListField")

    def __getitem__(self, index: int) -> Field[_E]:
        if not isinstance(index, int) or index < 0:
            raise ExpressionError(f"list index must be an int >= 0, "
                                  f"not {index!r}")
        return self.field._bind(self.model, self.path + (index,),
                                self.stored_path + (index,))

    def _each(self, values, convert):
        if not isinstance(values, (list, tuple)):
            raise _wrong_type("a list", values)
        result, errors = [], {}
        for index, value in enumerate(values):
            if value is None:
                errors[f"[{index}]"] = ["must not be None"]
                continue
            try:
                result.append(convert(value))
            except ValidationError as exc:
                errors.update(_located(exc, f"[{index}]").errors)
        if errors:
            raise ValidationError("invalid list items", errors)
        return result

    def to_native(self, value: Any) -> list[_E]:
        return self._each(value, self.field.to_native)

    def validate(self, value: Any) -> list[_E]:
        return self._each(value, self.field.validate)

    def to_primitive(self, value: list[_E]) -> Any:
        return [self.field.to_primitive(item) for item in value]

    def _dump(self, value):
        dump = self.field._dump
        return {"L": [dump(item) for item in value]}

    def _load(self, av):
        load = self.field._load
        return [load(item) for item in av["L"]]

    def _fast_path(self, value, av):
        # Names distinct at every level of nesting.
        each, each_av = f"{value}_item", f"{av}_item"
        item = _fast_path_of(self.field, each, each_av)
        loop, loop_av = f"for {each} in {value}", f"for {each_av} in {av}['L']"
        test = native = stored = read = json = size = None
        if item.test:
            # One pass converts the elements passing the test, into the
            # variable {value}_avs; the list passes when they all do.
            test = (f"type({value}) is list and len({value}_avs := "
                    f"[{item.stored} {loop} if {item.test}]) == len({value})")
            native = f"list({value})" if item.native == each \
                else f"[{item.native} {loop}]"
            stored = f"{{'L': {value}_avs}}"
        if item.read:
            read = f"[{item.read} {loop_av}]"
        if item.json:
            json = f"""'{{"L":[' + ','.join([{item.json} {loop_av}]) + ']}}'"""
        # 3 bytes for the list and 1 for each element, besides its own
        if type(item.size) is int:
            size = f"3 + {1 + item.size} * len({value})"
        elif item.size == f"4 * len({each})":  # strings: joined, quicker
            size = f"3 + len({value}) + 4 * len(''.join({value}))"
        elif item.size:
            size = f"3 + len({value}) + sum([{item.size} {loop}])"
        return _FastPath(test, native, stored, read, json, size)

    def append(self, *values: _E) -> Update:
        """Add ``values`` (validated by the item field) at the end of the
        list, making the list if the item has none."""
        return ListExtendUpdate(self, self._new_items(values), append=True)

    def prepend(self, *values: _E) -> Update:
        """Add ``values`` at the front of the list."""
        return ListExtendUpdate(self, self._new_items(values), append=False)

    def _new_items(self, values):
        if not values:
            raise ValidationError(f"{_path_text(self.path)}: append and "
                                  "prepend need at least one value")
        return self._update_value(list(values))

    def contains(self, value: Any) -> Condition:
        """The list holds ``value`` (converted by the item field)."""
        return _Function("contains", self,
                         self.field._operand(value, self.path))


class SetField(Field[set[_E], _R]):
    """A set of unique elements validated by ``field``: a string, number or
    binary field or field class (``SetField(EmailField)`` checks every
    element); a frozenset, list or tuple of unique elements is taken as a
    set. Stored as a DynamoDB string, number or binary set (SS, NS, BS);
    number elements keep their field's type. DynamoDB has no empty set: an
    empty set is not stored, and reads back as absent (None). ``kwargs``
    are ``required``, ``default`` and ``attr_name`` (see Field).

    ``User.tags.add({"a", "b"})`` and ``User.tags.discard({"c"})`` change
    the stored set; ``User.tags.contains("a")`` tests membership.
    """

    _KINDS = (set, frozenset, list, tuple)

    def __init__(self, field: Field[_E] | type[Field[_E]],
                 **kwargs: Unpack[_Options[_R]]) -> None:
        Field.__init__(self, **kwargs)
        self.field: Field[_E] = _field_instance(
            field, "the element field of SetField")
        if self.field.attribute_type not in _KEY_TYPES:
            raise SchemaError(
                f"the element field of SetField must be a string, number or "
                f"binary field, not {type(self.field).__name__}")
        self.attribute_type = self.field.attribute_type + "S"

    @classmethod
    def _is_absent(cls, value):
        return value is None or (isinstance(value, cls._KINDS) and not value)

    def _each(self, value, convert):
        if not isinstance(value, self._KINDS):
            raise _wrong_type("a set", value)
        result, errors = set(), {}
        for element in value:
            where = f"[{element!r}]"
            if element is None:
                errors[where] = ["must not be None"]
                continue
            try:
                result.add(convert(element))
            except ValidationError as exc:
                errors.update(_located(exc, where).errors)
        if errors:
            raise ValidationError("invalid set elements", errors)
        if len(result) < len(value):
            raise ValidationError("holds an element more than once")
        return result

    def to_native(self, value: Any) -> set[_E]:
        return self._each(value, self.field.to_native)

    def validate(self, value: Any) -> set[_E]:
        if not value and isinstance(value, self._KINDS):
            raise ValidationError("is an empty set, which DynamoDB cannot "
                                  "store (leave the field out)")
        return self._each(value, self.field.validate)

    def to_primitive(self, value: set[_E]) -> Any:
        return sorted(self.field.to_primitive(element) for element in value)

    def _dump(self, value):
        dump, kind = self.field._dump, self.field.attribute_type
        return {self.attribute_type: [dump(element)[kind]
                                      for element in value]}

    def _load(self, av):
        load, kind = self.field._load, self.field.attribute_type
        return {load({kind: element}) for element in av[self.attribute_type]}

    def add(self, elements: _E | Iterable[_E]) -> Update:
        """Add ``elements`` (a set, or one element) to the stored set,
        making it if the item has none (DynamoDB's ADD)."""
        return SetElementsUpdate(self, self._elements(elements, "add"),
                                 "ADD")

    def discard(self, elements: _E | Iterable[_E]) -> Update:
        """Take ``elements`` (a set, or one element) out of the stored set;
        a set left empty is removed (DynamoDB's DELETE)."""
        return SetElementsUpdate(self, self._elements(elements, "discard"),
                                 "DELETE")

    def _elements(self, elements, what):
        if not isinstance(elements, self._KINDS):
            elements = (elements,)
        if not elements:
            raise ValidationError(f"{_path_text(self.path)}: {what} needs at "
                                  "least one element")
        return self._update_value(elements)

    def contains(self, value: Any) -> Condition:
        """The set holds ``value`` (converted by the element field)."""
        return _Function("contains", self,
                         self.field._operand(value, self.path))


class DictField(Field["dict[str, Any]", _R]):
    """A map with declared sub-fields: ``DictField(city=StringField())``.

    Sub-fields are reachable for conditions and updates as attributes
    (``User.address.city``) or items (``User.address["city"]``). Without
    sub-fields, any dict of strings, numbers, bools, None, bytes, lists,
    dicts and sets (of strings, numbers or bytes) is stored as given.

    :param required: as for Field.
    :param default: as for Field.
    :param attr_name: as for Field.
    :param fields: the sub-fields, by name.
    """

    attribute_type = "M"

    def __init__(self, required: _R = False,  # type: ignore[assignment]
                 default: Any = None, attr_name: str | None = None,
                 **fields: Field[Any] | type[Field[Any]]) -> None:
        Field.__init__(self, required, default, attr_name)
        self.fields: dict[str, Field[Any]] = {
            name: _field_instance(field, f"DictField sub-field {name!r}")
            for name, field in fields.items()}
        self._bound: dict[str, Field[Any]] = {}
        # Sub-fields named like the field's own attributes and methods
        # (path, default, set...) are reachable as items only.
        shadowed = frozenset(name for name in self.fields
                             if hasattr(type(self), name)
                             or name in self.__dict__)
        if shadowed:
            self.__class__ = _guarding(type(self))  # type: ignore[arg-type]
            self._shadowed = shadowed

    def _bind(self, model, path, stored_path=None):
        bound = super()._bind(model, path, stored_path)
        bound._bound = {}
        return bound

    def __getitem__(self, name: str) -> Field[Any]:
        bound = self._bound.get(name)
        if bound is None:
            field = self.fields.get(name)
            if field is None:
                raise UnknownFieldError(
                    f"{_path_text(self.path) or 'this DictField'} has no "
                    f"sub-field {name!r}; it has "
                    f"{', '.join(self.fields) or 'none'}")
            bound = self._bound[name] = field._bind(
                self.model, self.path + (name,), self.stored_path + (name,))
        return bound

    def __getattr__(self, name: str) -> Field[Any]:
        if name.startswith("_") or "fields" not in self.__dict__:
            raise AttributeError(name)
        return self[name]

    def _each(self, value, convert):
        if not isinstance(value, dict):
            raise _wrong_type("a dict", value)
        if not self.fields:
            _generic_to_av(value, "", len(self.path) or 1)  # a check only
            return dict(value)
        result, errors = {}, {}
        for name in value:
            if name not in self.fields:
                errors[f".{name}" if isinstance(name, str) else repr(name)] \
                    = ["is not a declared sub-field"]
        for name, field in self.fields.items():
            item = value.get(name)
            if field._is_absent(item):
                if field.required:
                    errors[f".{name}"] = ["is required"]
                continue
            try:
                result[name] = convert(field, item)
            except ValidationError as exc:
                errors.update(_located(exc, f".{name}").errors)
        if errors:
            raise ValidationError("invalid sub-fields", errors)
        return result

    def to_native(self, value: Any) -> dict[str, Any]:
        return self._each(value, lambda field, item: field.to_native(item))

    def validate(self, value: Any) -> dict[str, Any]:
        return self._each(value, lambda field, item: field.validate(item))

    def to_primitive(self, value: dict[str, Any]) -> Any:
        if not self.fields:
            return value
        return {name: self.fields[name].to_primitive(item)
                for name, item in value.items()}

    def _dump(self, value):
        if not self.fields:
            return _generic_to_av(value, "", len(self.path) or 1)
        fields = self.fields
        return {"M": {name: fields[name]._dump(item)
                      for name, item in value.items()}}

    def _fast_path(self, value, av):
        if self.fields:
            return _NO_FAST_PATH
        # A free-form map: its check is its conversion.
        return _FastPath(
            test=f"type({value}) is dict", native=f"dict({value})",
            stored=f"generic_av({value}, '', {len(self.path) or 1})",
            read=f"generic_map({av})")

    def _load(self, av):
        if not self.fields:
            return _generic_map(av)
        fields = self.fields
        return {name: fields[name]._load(item)
                for name, item in av["M"].items() if name in fields}


@functools.lru_cache(maxsize=None)
def _guarding(field_class):
    """A subclass of a DictField class whose instances, used outside this
    module, refuse the attributes that a sub-field of the same name
    shadows, saying to write ``field["name"]``: ``Person.address.path``
    must not quietly be the field's own path."""
    def __getattribute__(self, name):
        if name in object.__getattribute__(self, "_shadowed") \
                and sys._getframe(1).f_globals is not _MODULE_GLOBALS:
            where = object.__getattribute__(self, "_where")()
            raise ExpressionError(
                f"{where}.{name} would be the field's own {name!r}, not its "
                f"sub-field: write {where}[{name!r}]")
        return object.__getattribute__(self, name)

    return type(field_class.__name__, (field_class,),
                {"__getattribute__": __getattribute__, "_shadowed": (),
                 "__doc__": field_class.__doc__,
                 "__module__": field_class.__module__})


_MODULE_GLOBALS = globals()


class KeyTemplate(StringField[bool]):
    """A string attribute computed from other fields of the model, for
    keys shared by several entities in one table (single-table design):
    ``sk = KeyTemplate("ORDER#{placed_at}#{order_id}")``.

    ``{name}`` is that field's stored text (a string as it is, a
    DateTimeField's ISO 8601 text, a number's DynamoDB text); ``{name:spec}``
    formats its Python value with the spec (``{n:08d}``, so that numbers
    sort as text). It is written on every save and readable on instances;
    a dict to save giving it a value other than its template's is refused
    (an instance's is made again). A template of the table's key needs
    every field it names; one of an index's key is not written when a field
    it names has no value (the item stays out of the index). At the top
    level of a model; takes ``attr_name`` (see Field)."""

    _model_level = True

    def __init__(self, template: str, attr_name: str | None = None,
                 **unknown: NoReturn) -> None:
        if unknown:
            raise SchemaError(_unknown_options(type(self), unknown))
        StringField.__init__(self, attr_name=attr_name)
        self.template = template
        self.parts = _template_parts(template)
        self.names = tuple(name for _, name, _ in self.parts if name)

    def __repr__(self):
        return f"{super().__repr__()[:-1]} {self.template!r}>"

    def _text_of(self, values, fields, convert=False):
        """(the text of the template for ``values``, the names it needs and
        ``values`` lacks); ``convert``: the values are given, not
        validated (they are converted by to_native)."""
        text, missing = [], []
        for literal, name, spec in self.parts:
            text.append(literal)
            if name is None:
                continue
            value = values.get(name)
            if value is None:
                missing.append(name)
                continue
            if convert:
                try:
                    value = fields[name].to_native(value)
                except ValidationError as exc:
                    raise _located(exc, name) from None
            text.append(self._piece(fields[name], name, spec, value))
        return "".join(text), missing

    @staticmethod
    def _piece(field, name, spec, value):
        """The text of ``value`` of ``field`` in a template."""
        if spec:
            try:
                return format(value, spec)
            except (TypeError, ValueError) as exc:
                raise ValidationError(
                    f"{{{name}:{spec}}} cannot format {value!r}: {exc}"
                    ) from None
        av = field._dump(value)
        return av["S"] if "S" in av else av["N"]

    def _implied(self, equal, ranged, fields):
        """The key condition on this range key template that == (``equal``:
        field name -> value) and range conditions (``ranged``: name ->
        condition) on its fields imply: == when they fix all of it, else a
        range within the prefix its fields given with == from the left fix
        (the text before its first field, at least); None for none."""
        prefix = ""
        for literal, name, spec in self.parts:
            prefix += literal
            if name is None:
                continue
            field = fields[name]
            if name in equal:
                prefix += self._piece(field, name, spec, equal[name])
                continue
            part = ranged.get(name)
            if isinstance(part, _Function):  # begins_with on a string
                operand: Any = part.operand
                if field.attribute_type == "S" and not spec:
                    return self.begins_with(prefix + operand["S"])
            elif part is not None:
                bounds = self._bounds(part, field, name, spec)
                if bounds is not None:
                    return self.between(prefix + bounds[0],
                                        prefix + bounds[1])
            return self.begins_with(prefix) if prefix else None
        return self == prefix

    def _bounds(self, part, field, name, spec):
        """(low, high) text within which ``part`` (a comparison or between
        on ``field``) puts the field's text -- the filter does the rest --
        or None when text order may not be value order: a number without
        a zero-padding spec, or a negative one."""
        if field.attribute_type == "N" and not (
                spec and re.fullmatch(r"0\d+d", spec)):
            return None
        values = [field._load(av) for av in (
            (part.low, part.high) if isinstance(part, _Between)
            else (part.value,))]
        if field.attribute_type == "N" and min(values) < 0:
            return None
        texts = [self._piece(field, name, spec, value) for value in values]
        if isinstance(part, _Between):
            return texts[0], texts[1] + _LAST_TEXT
        if part.operator in (">", ">="):
            return texts[0], _LAST_TEXT
        return "", texts[0] + _LAST_TEXT


# After every text DynamoDB holds, in its order (of UTF-8 bytes).
_LAST_TEXT = "\U0010ffff"


def _template_parts(template):
    """[(literal text, field name or None, format spec)] of a
    KeyTemplate's text; SchemaError for what it cannot take."""
    from string import Formatter

    if type(template) is not str or not template:
        raise SchemaError(f"KeyTemplate takes a non-empty string, not "
                          f"{template!r}")
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise SchemaError(f"KeyTemplate {template!r}: {exc}") from None
    parts = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (not name or conversion or "{" in (spec or "")
                                 or any(mark in name for mark in ".[]")):
            raise SchemaError(
                f"KeyTemplate {template!r}: each {{...}} names a field of "
                "the model, with a format spec or none ({name} or "
                "{name:08d})")
        parts.append((literal, name, spec or None))
    return parts


# -- Conditions --------------------------------------------------------------

class Condition:
    """A condition on an item's attributes, built from fields:
    ``(User.email == x) & ~User.cities_visited.contains("Nairobi")``.

    Combine with ``&`` (and), ``|`` (or) and ``~`` (not); Python's ``and``,
    ``or`` and ``not`` cannot be overloaded and raise TypeError.
    """

    __slots__ = ()

    def __and__(self, other: Condition) -> Condition:
        return _And(self, _condition(other, "&"))

    def __or__(self, other: Condition) -> Condition:
        return _Or(self, _condition(other, "|"))

    def __invert__(self) -> Condition:
        return _Not(self)

    def __bool__(self) -> bool:
        raise TruthValueError(
            "a dynamongo condition has no truth value: combine conditions "
            "with & (and), | (or) and ~ (not), not with Python's and/or/not")

    def __repr__(self):
        return f"<Condition {self._render(_Expression(inline=True))}>"

    def _conjuncts(self):
        """The conditions ANDed at the top of this one."""
        return [self]

    def _fields(self):
        """Every field this condition tests."""
        return [self.field]  # pyright: ignore[reportAttributeAccessIssue]

    def _render(self, expression):
        raise NotImplementedError


def _condition(value, operator):
    if not isinstance(value, Condition):
        raise TypeError(f"{operator} combines two conditions, not a "
                        f"condition and {type(value).__name__}")
    return value


def _flatten(kind, conditions):
    """(a & b) & c -> (a, b, c): one level per run of the same operator."""
    result = []
    for condition in conditions:
        if type(condition) is kind:
            result.extend(condition.conditions)
        else:
            result.append(condition)
    return tuple(result)


class _Comparison(Condition):
    __slots__ = ("field", "operator", "value")

    def __init__(self, field, operator, value):
        self.field, self.operator, self.value = field, operator, value

    def _render(self, expression):
        return (f"{expression.name(self.field)} {self.operator} "
                f"{expression.value(self.value)}")


class _Between(Condition):
    __slots__ = ("field", "low", "high")

    def __init__(self, field, low, high):
        self.field, self.low, self.high = field, low, high

    def _render(self, expression):
        return (f"{expression.name(self.field)} BETWEEN "
                f"{expression.value(self.low)} AND "
                f"{expression.value(self.high)}")


class _In(Condition):
    __slots__ = ("field", "values")

    def __init__(self, field, values):
        self.field, self.values = field, values

    def _render(self, expression):
        values = ", ".join(expression.value(value) for value in self.values)
        return f"{expression.name(self.field)} IN ({values})"


class _Function(Condition):
    """attribute_exists, attribute_not_exists, begins_with, contains."""

    __slots__ = ("function", "field", "operand")

    def __init__(self, function, field, operand=None):
        self.function, self.field, self.operand = function, field, operand

    def _render(self, expression):
        name = expression.name(self.field)
        if self.operand is None:
            return f"{self.function}({name})"
        return f"{self.function}({name}, {expression.value(self.operand)})"


class _Size(_Compared[int]):
    """``field.size()``: compared with an int, a condition on the size of
    the attribute (DynamoDB's ``size`` function)."""

    __slots__ = ("field",)

    def __init__(self, field):
        self.field = field

    def __repr__(self):
        return f"size({_path_text(self.field.path)})"

    def _compare(self, operator: str, number: Any) -> Condition:
        if type(number) is not int or number < 0:
            raise ExpressionError(f"{self!r} {operator} takes an int >= 0, "
                                  f"not {number!r}")
        return _SizeComparison(self.field, operator, {"N": str(number)})


class _SizeComparison(Condition):
    # Not a _Comparison (whose ``field`` the planner reads as the field
    # compared): a size never names a key.
    __slots__ = ("size_of", "operator", "value")

    def __init__(self, field, operator, value):
        self.size_of, self.operator, self.value = field, operator, value

    def _fields(self):
        return [self.size_of]

    def _render(self, expression):
        return (f"size({expression.name(self.size_of)}) {self.operator} "
                f"{expression.value(self.value)}")


class _And(Condition):
    __slots__ = ("conditions",)

    def __init__(self, *conditions):
        self.conditions = _flatten(_And, conditions)

    def _conjuncts(self):
        return list(self.conditions)  # flat: no _And holds an _And

    def _fields(self):
        return [field for condition in self.conditions
                for field in condition._fields()]

    def _render(self, expression):
        return " AND ".join(f"({condition._render(expression)})"
                            for condition in self.conditions)


class _Or(Condition):
    __slots__ = ("conditions",)

    def __init__(self, *conditions):
        self.conditions = _flatten(_Or, conditions)

    _fields = _And._fields

    def _render(self, expression):
        return " OR ".join(f"({condition._render(expression)})"
                           for condition in self.conditions)


class _Not(Condition):
    __slots__ = ("condition",)

    def __init__(self, condition):
        self.condition = condition

    def _fields(self):
        return self.condition._fields()

    def _render(self, expression):
        return f"NOT ({self.condition._render(expression)})"


def _check_field_of(model, field):
    """ExpressionError unless ``field`` belongs to ``model`` (or a base)."""
    if field.model is None or not issubclass(model, field.model):
        raise ExpressionError(
            f"{_path_text(field.path) or field!r} is a field of "
            f"{getattr(field.model, '__name__', 'no model')}, "
            f"not of {model.__name__}")


def _and_all(conditions):
    """One condition ANDing ``conditions`` (None among them left out);
    None when there are none."""
    conditions = [condition for condition in conditions
                  if condition is not None]
    if not conditions:
        return None
    return conditions[0] if len(conditions) == 1 else _And(*conditions)


# -- Updates -----------------------------------------------------------------

class Update:
    """One change made by update_one; made by field methods such as
    ``User.name.set("x")``, ``User.year_of_birth.add(1)``,
    ``User.cities_visited.append("Paris")``."""

    __slots__ = ("field",)
    action = "SET"

    def __init__(self, field: Any) -> None:
        self.field = field

    def __repr__(self):
        return f"<{type(self).__name__} " \
               f"{self._render(_Expression(inline=True))}>"

    def _render(self, expression):
        raise NotImplementedError

    def _guard(self):
        """A condition the item must meet for this change, or None."""
        return None


class SetUpdate(Update):
    """``SET path = value`` of ``field`` (with ``if_not_exists``, only if
    the item lacks the attribute)."""

    __slots__ = ("value", "if_not_exists")

    def __init__(self,
                 field: Any, value: Any, if_not_exists: Any = False) -> None:
        super().__init__(field)
        self.value, self.if_not_exists = value, if_not_exists

    def _render(self, expression):
        name, value = expression.name(self.field), expression.value(self.value)
        if self.if_not_exists:
            return f"{name} = if_not_exists({name}, {value})"
        return f"{name} = {value}"


class RemoveUpdate(Update):
    """``REMOVE path`` of ``field``."""

    __slots__ = ()
    action = "REMOVE"

    def _render(self, expression):
        return expression.name(self.field)


class ListExtendUpdate(Update):
    """``SET path = list_append(...)``: add ``values`` (a list
    AttributeValue) to the list ``field`` at the end (``append``) or the
    front, starting from an empty list when the item has none."""

    __slots__ = ("values", "append")

    def __init__(self, field: Any, values: Any, append: Any = True) -> None:
        super().__init__(field)
        self.values, self.append = values, append

    def _render(self, expression):
        name = expression.name(self.field)
        current = f"if_not_exists({name}, {expression.value({'L': []})})"
        values = expression.value(self.values)
        if self.append:
            return f"{name} = list_append({current}, {values})"
        return f"{name} = list_append({values}, {current})"


class SetElementsUpdate(Update):
    """``ADD path elements`` or ``DELETE path elements`` (the ``action``)
    of a SetField: made by ``field.add(elements)`` and
    ``field.discard(elements)``."""

    __slots__ = ("action", "elements")

    def __init__(self, field: Any, elements: Any, action: Any) -> None:
        super().__init__(field)
        self.elements, self.action = elements, action

    def __repr__(self):
        return f"<{type(self).__name__} {self.action} " \
               f"{self._render(_Expression(inline=True))}>"

    def _render(self, expression):
        return (f"{expression.name(self.field)} "
                f"{expression.value(self.elements)}")


class AddUpdate(Update):
    """``SET path = if_not_exists(path, 0) + delta``: works on nested paths
    too, and keeps the field's bounds through a guard condition. Made by
    ``field.add(number)``: ``delta`` is the number's AttributeValue,
    ``guard`` the condition keeping the bounds."""

    __slots__ = ("delta", "number", "guard")

    def __init__(self,
                 field: Any, delta: Any, number: Any,
                 guard: Any = None) -> None:
        super().__init__(field)
        self.delta, self.number, self.guard = delta, number, guard

    def _render(self, expression):
        name = expression.name(self.field)
        zero = expression.value({"N": "0"})
        return (f"{name} = if_not_exists({name}, {zero}) + "
                f"{expression.value(self.delta)}")

    def _guard(self):
        return self.guard

    def _broken_bound(self, current):
        """The bound that ``current + number`` breaks, as a message."""
        result = (current or 0) + self.number
        field = self.field
        if field.min_value is not None and result < field.min_value:
            return f"would be {result}, below min_value {field.min_value}"
        if field.max_value is not None and result > field.max_value:
            return f"would be {result}, above max_value {field.max_value}"
        return None


class UpdateBuilder:
    """Renders updates into an UpdateExpression."""

    @staticmethod
    def create(updates: Update | Iterable[Update]) -> dict[str, Any]:
        """UpdateItem parameters for ``updates``: ``UpdateExpression`` and
        the ``ExpressionAttributeNames``/``Values`` it uses."""
        expression = _Expression()
        return expression.into({"UpdateExpression": UpdateBuilder._render(
            _update_list(updates), expression)})

    @staticmethod
    def _render(updates, expression):
        clauses = {"SET": [], "REMOVE": [], "ADD": [], "DELETE": []}
        for update in updates:
            clauses[update.action].append(update._render(expression))
        return " ".join(f"{action} {', '.join(parts)}"
                        for action, parts in clauses.items() if parts)


def _update_list(updates):
    """``updates`` as a list of Update; refuses empty lists, non-updates
    and two updates on overlapping paths (DynamoDB rejects those)."""
    if isinstance(updates, Update):
        updates = [updates]
    if not _is_list_like(updates):
        raise ValidationError(f"updates must be an Update or a list of them, "
                              f"not {type(updates).__name__}")
    updates = list(updates)
    if not updates:
        raise ValidationError("updates is empty: give at least one update")
    for update in updates:
        if not isinstance(update, Update):
            raise ValidationError(f"updates must hold Update objects (made "
                                  f"by field methods such as .set()), not "
                                  f"{update!r}")
    for index, update in enumerate(updates):
        path = update.field.path
        for other in updates[index + 1:]:
            shorter = min(len(path), len(other.field.path))
            if path[:shorter] == other.field.path[:shorter]:
                raise ExpressionError(
                    f"two updates touch overlapping paths "
                    f"{_path_text(path)} and {_path_text(other.field.path)}; "
                    "DynamoDB allows one update per path")
    return updates


# -- Expression compiler -----------------------------------------------------

class _Expression:
    """Placeholders of one request.

    Every attribute name becomes ``#nK`` (one per distinct name) and every
    value ``:vK``, so reserved words, dots and dashes in names and any
    value are safe. The key condition, filter and condition expressions of
    one request render into the same object so placeholders never collide.
    With ``model`` set, fields of other models are refused; with
    ``inline``, names and values are written out for messages.
    """

    __slots__ = ("model", "inline", "names", "values", "_placeholders")

    def __init__(self, model=None, inline=False):
        self.model = model
        self.inline = inline
        self.names = {}
        self.values = {}
        self._placeholders = {}

    def name(self, field):
        if self.model is not None:
            _check_field_of(self.model, field)
        if self.inline:
            return _path_text(field.stored_path)
        text = ""
        for part in field.stored_path:
            if isinstance(part, int):
                text += f"[{part}]"
                continue
            placeholder = self._placeholders.get(part)
            if placeholder is None:
                placeholder = f"#n{len(self._placeholders)}"
                self._placeholders[part] = placeholder
                self.names[placeholder] = part
            text += f".{placeholder}" if text else placeholder
        return text

    def value(self, av):
        if self.inline:
            return _av_text(av)
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = av
        return placeholder

    @classmethod
    def resuming(cls, params, model):
        """An _Expression adding to the placeholders ``params`` hold."""
        expression = cls(model=model)
        expression.names = dict(params.get("ExpressionAttributeNames", ()))
        expression._placeholders = {
            name: placeholder
            for placeholder, name in expression.names.items()}
        expression.values = dict(params.get("ExpressionAttributeValues",
                                            ()))
        return expression

    def into(self, params):
        """Add the names and values used to ``params``; DynamoDB refuses
        empty maps, so none is sent empty."""
        if self.names:
            params["ExpressionAttributeNames"] = self.names
        if self.values:
            params["ExpressionAttributeValues"] = self.values
        return params


# -- The wire ----------------------------------------------------------------
#
# _send makes one HTTP request, through the fast path (_FastWire: on its
# own, or through botocore once it is loaded or needed) or a plain boto3
# client (_ClientWire), neither retrying: retries, pages and batches are
# the engine's (below), which alone calls _send.

_sleep = time.sleep  # tests replace it to run retries without waiting
_clock = time.time  # and this one to move time on (TTLField)


def _send(operation: str, params: Any) -> Any:
    """One request, as it goes on the wire; returns the parsed response."""
    state = _state()
    return (state._wire or state.wire())(operation, params)


# The DNS suffix of each AWS partition other than "aws" (amazonaws.com), by
# the prefix of its regions' names.
_PARTITION_DOMAINS = (
    ("cn-", "amazonaws.com.cn"), ("us-isob-", "sc2s.sgov.gov"),
    ("us-isof-", "csp.hci.ic.gov"), ("us-iso-", "c2s.ic.gov"),
    ("eu-isoe-", "cloud.adc-e.uk"), ("eusc-", "amazonaws.eu"))
_REGION_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.I)


def _check_region(region):
    """ValidationError unless ``region`` can be a region's name (as
    botocore checks it: it becomes part of a host name)."""
    if not _REGION_NAME.fullmatch(region):
        raise ValidationError(f"region {region!r} is not an AWS region "
                              "name")


def _endpoint_of(settings):
    """The URL dynamongo's requests go to: the endpoint set, else the
    region's in its partition."""
    if settings["endpoint_url"]:
        return settings["endpoint_url"].rstrip("/") + "/"
    region = settings["region"]
    domain = next((domain for prefix, domain in _PARTITION_DOMAINS
                   if region.startswith(prefix)), "amazonaws.com")
    return f"https://dynamodb.{region}.{domain}/"


def _answer_json(headers, body, stream=False):
    """The parsed body of a 200 answer (``headers`` in lower case) -- with
    ``stream``, an _ItemStream of it -- or _BadAnswer when it is cut short,
    fails its checksum or is not a JSON object."""
    import zlib

    checksum = headers.get("x-amz-crc32")
    if checksum is not None and zlib.crc32(body) != int(checksum):
        raise _BadAnswer("the body does not match its CRC32 checksum",
                         corrupted=True)
    length = headers.get("content-length")
    if length is not None and int(length) != len(body):
        raise _BadAnswer(f"the body was cut short ({len(body)} of {length} "
                         "bytes)", corrupted=True)
    if stream and body.lstrip()[:1] == b"{":
        try:
            return _ItemStream(body.decode())
        except UnicodeDecodeError:
            pass
    try:
        answer = json.loads(body) if body else {}
    except ValueError:
        answer = None
    if type(answer) is not dict:
        raise _BadAnswer(f"expected a JSON object, got "
                         f"{body[:80].decode('utf-8', 'replace')!r}")
    return answer


class _StreamParams(dict):
    """Query or Scan parameters asking the fast path for an _ItemStream
    answer (other paths, and request stubs, see plain parameters)."""

    __slots__ = ()


_SPACE = re.compile(r"[ \t\n\r]*")


class _ItemStream:
    """A Query or Scan answer read as it is used: iterating it yields its
    "Items" one at a time, each decoded from the text when it is reached,
    so that a page's items never all exist at once as dicts (a converted
    item's dicts are let go before the next is decoded); the answer's
    other members are in ``rest`` once the iteration has ended. Text that
    turns out not to be JSON raises _BadAnswer then."""

    def __init__(self, text):
        self.text, self.rest = text, None

    def __iter__(self):
        text, rest = self.text, {}
        space: Any = _SPACE.match  # (it always matches)
        scan = _scanner()
        try:
            at = space(text).end() + 1  # past the "{"
            while True:
                at = space(text, at).end()
                if text[at] == "}":
                    break
                name, at = scan(text, at)
                at = space(text, at).end()
                if text[at] != ":":
                    raise ValueError(f"':' expected at {at}")
                at = space(text, at + 1).end()
                if name == "Items" and text[at] == "[":
                    at = space(text, at + 1).end()
                    while text[at] != "]":
                        item, at = scan(text, at)
                        yield item
                        at = space(text, at).end()
                        if text[at] == ",":
                            at = space(text, at + 1).end()
                        elif text[at] != "]":
                            raise ValueError(f"',' expected at {at}")
                    at += 1
                else:
                    rest[name], at = scan(text, at)
                at = space(text, at).end()
                if text[at] == ",":
                    at += 1
                elif text[at] != "}":
                    raise ValueError(f"',' expected at {at}")
        except (ValueError, IndexError, StopIteration) as exc:
            raise _BadAnswer(f"the answer is not JSON ({exc!r})") from None
        self.rest = rest


@functools.lru_cache(maxsize=None)
def _scanner():
    """The json module's scanner: ``scan(text, at) -> (value, end)``."""
    import json.scanner

    decoder: Any = json.JSONDecoder()
    return json.scanner.make_scanner(decoder)


class _ClientWire:
    """Requests through a boto3 client (botocore serializes, validates and
    parses); set_config(fast_path=False) chooses it."""

    def __init__(self, client):
        self.client = client
        # botocore reads a 200 answer whose body is not JSON as an empty
        # answer ("no such item"): check the body it parsed.
        client.meta.events.register("after-call.dynamodb", self._check)

    def __call__(self, operation, params):
        try:
            return getattr(self.client, _OPERATIONS[operation])(**params)
        except (AttributeError, KeyError, IndexError, TypeError) as exc:
            # botocore's parser fails on a JSON answer of another shape.
            frame: Any = exc.__traceback__
            while frame.tb_next is not None:
                frame = frame.tb_next
            if frame.tb_frame.f_globals.get("__name__") != "botocore.parsers":
                raise
            raise _BadAnswer(f"botocore cannot read it ({exc})") from exc

    async def asend(self, operation, params):
        """The same request, in a worker thread (botocore blocks)."""
        import asyncio

        return await asyncio.to_thread(self, operation, params)

    @staticmethod
    def _check(http_response, **_):
        if http_response.status_code == 200:
            _answer_json({name.lower(): value for name, value
                          in http_response.headers.items()},
                         http_response.content)


class _SigV4:
    """AWS Signature Version 4 of dynamongo's requests (POST to "/", JSON
    body), computed as botocore's SigV4Auth computes it -- the tests compare
    the two byte for byte -- but keeping each day's signing key instead of
    deriving it, and building the canonical request directly, which is
    several times cheaper per request."""

    def __init__(self, region, url):
        import hashlib
        import hmac

        self.region = region
        self.host = _host_of(url)
        self.sha256, self.hmac = hashlib.sha256, hmac.new
        self.keys = {}  # (secret key, day) -> signing key

    def headers(self, credentials, target, body, moment=None):
        """The headers that sign ``body`` for ``target``."""
        moment = moment or time.gmtime()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", moment)
        day = stamp[:8]
        headers = {"Content-Type": "application/x-amz-json-1.0",
                   "X-Amz-Date": stamp, "X-Amz-Target": target}
        signed = ("content-type;host;x-amz-date;x-amz-security-token;"
                  "x-amz-target" if credentials.token else
                  "content-type;host;x-amz-date;x-amz-target")
        token = (f"x-amz-security-token:{credentials.token}\n"
                 if credentials.token else "")
        canonical = (f"POST\n/\n\ncontent-type:application/x-amz-json-1.0\n"
                     f"host:{self.host}\nx-amz-date:{stamp}\n{token}"
                     f"x-amz-target:{target}\n\n{signed}\n"
                     f"{self.sha256(body).hexdigest()}")
        scope = f"{day}/{self.region}/dynamodb/aws4_request"
        to_sign = (f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n"
                   f"{self.sha256(canonical.encode()).hexdigest()}")
        signature = self.hmac(self._key(credentials.secret_key, day),
                              to_sign.encode(), "sha256").hexdigest()
        headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}")
        if credentials.token:
            headers["X-Amz-Security-Token"] = credentials.token
        return headers

    def _key(self, secret, day):
        key = self.keys.get((secret, day))
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, "dynamodb", "aws4_request"):
                key = self.hmac(key, part.encode(), "sha256").digest()
            if len(self.keys) > 4:  # old days, rotated secrets
                self.keys.clear()
            self.keys[(secret, day)] = key
        return key


def _trace(headers):
    """Add Lambda's X-Ray trace header, as botocore adds it (its recursion
    detection): inside a Lambda function, the trace id of the invocation
    (read anew for each request), unless the request has one. It is sent
    unsigned, as botocore sends it."""
    environ = os.environ
    trace_id = environ.get("_X_AMZN_TRACE_ID")
    if trace_id and environ.get("AWS_LAMBDA_FUNCTION_NAME") \
            and "X-Amzn-Trace-Id" not in headers:
        from urllib.parse import quote

        headers["X-Amzn-Trace-Id"] = quote(trace_id,
                                           safe="-=;:+&[]{}\"',")


def _host_of(url):
    """The Host header of ``url``: its port only when not the scheme's
    default (as botocore signs it)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname if ":" not in (parts.hostname or "") \
        else f"[{parts.hostname}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _answer_of(response):
    """(status, headers with lower-case names, body) of a botocore
    AWSResponse."""
    return (response.status_code,
            {name.lower(): value for name, value in response.headers.items()},
            response.content)


class _HttpAnswer:
    """One HTTP/1.1 answer, read from whatever bytes arrive (the sans-I/O
    reader both HTTP clients share: _Http's sockets, _LoopPool's
    protocol). ``feed(data)`` takes the next bytes -- b"" when the
    connection has ended -- and returns True once the answer is whole:
    ``status``, ``headers`` (names in lower case) and ``body`` then hold
    it, and ``reusable`` says whether the connection may carry another
    exchange. Framed by Content-Length or chunks, else by the end of the
    connection. Raises _BadAnswer for what is not HTTP, ConnectionError
    when the connection ends mid-answer, ValueError for a bad chunk."""

    __slots__ = ("buffer", "at", "status", "headers", "body", "chunks",
                 "length", "reusable")

    def __init__(self):
        self.buffer, self.at = bytearray(), 0
        self.status = self.headers = self.body = self.length = None
        self.chunks: Any = None  # the chunks read, when chunked
        self.reusable = False

    def feed(self, data):
        if not data:
            return self._ended()
        buffer = self.buffer
        buffer += data
        if self.status is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _HEADER_BYTES:
                    raise _BadAnswer("the answer's head is too long")
                return False
            self._head(bytes(buffer[:end]))
            self.at = end + 4
        if self.chunks is not None:
            return self._chunks()
        if self.length is None:
            return False  # (read to the end of the connection)
        end = self.at + self.length
        if len(buffer) < end:
            return False
        self.body = bytes(buffer[self.at:end])
        self.reusable = self.reusable and len(buffer) == end
        return True

    def _head(self, head):
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") \
                or not parts[1].isdigit():
            raise _BadAnswer(f"not an HTTP answer: "
                             f"{lines[0][:80].encode('latin-1')!r}")
        self.status, headers = int(parts[1]), {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.headers = headers
        self.reusable = headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self.chunks = []
        elif "content-length" in headers:
            self.length = int(headers["content-length"])
        else:
            self.reusable = False

    def _chunks(self):
        """Read the chunks that have arrived; True after the last."""
        buffer, at, chunks = self.buffer, self.at, self.chunks
        while True:
            end = buffer.find(b"\r\n", at)
            if end < 0:
                return False
            size = int(bytes(buffer[at:end]).split(b";")[0], 16)
            if size == 0:  # then trailers, up to an empty line
                if buffer[end:end + 4] == b"\r\n\r\n" or \
                        buffer.find(b"\r\n\r\n", end) >= 0:
                    self.body = b"".join(chunks)
                    return True
                return False
            if len(buffer) < end + 2 + size + 2:
                return False
            chunks.append(bytes(buffer[end + 2:end + 2 + size]))
            at = self.at = end + 2 + size + 2

    def _ended(self):
        if self.status is not None and self.length is None \
                and self.chunks is None:
            self.body = bytes(self.buffer[self.at:])
            return True
        if not self.buffer:
            raise ConnectionError("the server closed the connection")
        raise ConnectionError("the answer was cut short")


def _lost_exchange(error, read_timeout):
    """The _NoAnswer that an exchange failing with ``error`` after its
    request was written becomes, or None (the error goes on as it is)."""
    if isinstance(error, TimeoutError):
        return _NoAnswer(f"no answer within {read_timeout} s", sent=True)
    if isinstance(error, (OSError, ValueError)):
        return _NoAnswer(f"the connection failed: {error}", sent=True)
    return None


class _Http:
    """A small HTTP/1.1 client for the fast path: kept-alive connections
    shared by the threads (an idle one is taken for each request and put
    back once its answer has been read whole, at most ``keep`` of them
    kept), the request written in a single send, the answer read by
    _HttpAnswer. A connection whose exchange did not finish -- whatever
    interrupted it, KeyboardInterrupt included -- is closed, never reused:
    its late answer cannot be read as another request's. A failure is
    _NoAnswer, telling apart a request that never left (no connection, TLS
    refused) from one whose answer was lost (a closed connection, a read
    timeout). ``apost`` is ``post`` on the running event loop, through
    that loop's own connections (_LoopPool)."""

    def __init__(self, url, connect_timeout, read_timeout, ca_bundle=None,
                 keep=32):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.url = url
        self.tls = parts.scheme == "https"
        self.address = (parts.hostname, parts.port or (443 if self.tls
                                                       else 80))
        self.head = (f"POST {parts.path or '/'} HTTP/1.1\r\n"
                     f"Host: {_host_of(url)}\r\n").encode()
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.ca_bundle = ca_bundle
        self.idle, self.keep = [], keep  # sockets, newest last
        self.context = None
        import weakref

        self.loops = weakref.WeakKeyDictionary()  # event loop -> _LoopPool

    def message(self, headers, body):
        """The bytes of a POST of ``body``."""
        return self.head + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        ).encode() + b"\r\n" + body

    def post(self, headers, body):
        """(status, headers with lower-case names, body) of a POST."""
        connection = self._connection()
        try:
            connection.sendall(self.message(headers, body))
            answer = self._read(connection)
        except BaseException as error:
            connection.close()
            lost = _lost_exchange(error, self.read_timeout)
            if lost is not None:
                raise lost from error
            raise
        if not answer.reusable or len(self.idle) >= self.keep:
            connection.close()
        else:
            self.idle.append(connection)
        return answer.status, answer.headers, answer.body

    @staticmethod
    def _read(connection):
        answer = _HttpAnswer()
        while not answer.feed(connection.recv(_RECEIVE_BYTES)):
            pass
        return answer

    async def apost(self, headers, body):
        """``post`` awaited, on the running event loop's connections."""
        import asyncio

        loop = asyncio.get_running_loop()
        pool = self.loops.get(loop)
        if pool is None:
            pool = self.loops[loop] = _LoopPool(self, loop)
        return await pool.post(headers, body)

    def _connection(self):
        """An idle kept-alive connection, else a new one."""
        import select

        while True:
            try:
                connection = self.idle.pop()
            except IndexError:
                return self._connect()
            # Readable while idle means closed (or garbage): drop it.
            # poll, unlike select, takes descriptors above 1024.
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(connection, select.POLLIN)
                readable = poller.poll(0)
            else:
                readable = select.select([connection], [], [], 0)[0]
            if not readable:
                return connection
            connection.close()

    def _connect(self):
        import socket

        try:
            connection = socket.create_connection(self.address,
                                                  self.connect_timeout)
        except TimeoutError as error:
            raise _NoAnswer(f"could not connect within "
                            f"{self.connect_timeout} s", sent=False) from error
        except OSError as error:
            raise _NoAnswer(f"could not connect: {error}",
                            sent=False) from error
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.settimeout(self.read_timeout)
            if self.tls:
                connection = self.tls_context().wrap_socket(
                    connection, server_hostname=self.address[0])
        except BaseException as error:
            connection.close()
            if isinstance(error, OSError):
                raise _NoAnswer(f"TLS failed: {error}",
                                sent=False) from error
            raise
        return connection

    def tls_context(self):
        if self.context is None:
            import ssl

            self.context = ssl.create_default_context(
                cafile=self.ca_bundle or _ca_bundle())
        return self.context


class _LoopPool:
    """An event loop's connections to one endpoint (_Http.apost): at most
    ``keep`` open, each an _Exchange reading answers as they arrive. As in
    _Http, a connection whose exchange did not finish -- a cancelled task,
    a timeout -- is closed, never reused, and failures are _NoAnswer. One
    watchdog timer, running while exchanges are in flight, ends those that
    have heard nothing for ``read_timeout`` seconds (checked four times
    per timeout, and at least every second: a timer per request would cost
    more than the rest of the exchange). Connections never cross loops;
    those left idle are closed when the loop shuts down (``asyncio.run``
    closes its async generators, this pool's watcher among them)."""

    def __init__(self, http, loop):
        import asyncio

        self.http, self.loop = http, loop
        self.idle = []  # _Exchange, newest last
        self.busy = set()  # _Exchange awaiting an answer
        self.watchdog = None
        self.room = asyncio.Semaphore(http.keep)
        self.watcher = self._watch()
        try:  # started on the loop, which now closes it at its shutdown
            self.watcher.__anext__().send(None)
        except StopIteration:
            pass

    async def _watch(self):
        try:
            yield
        finally:
            self.close()

    def close(self):
        while self.idle:
            self.idle.pop().transport.close()

    async def post(self, headers, body):
        http = self.http
        await self.room.acquire()
        try:
            exchange = self._connection() or await self._connect()
            try:
                answer = await exchange.send(http.message(headers, body))
            except BaseException as error:
                exchange.transport.abort()
                lost = _lost_exchange(error, http.read_timeout)
                if lost is not None:
                    raise lost from error
                raise
        finally:
            self.room.release()
        if answer.reusable and not exchange.ended:
            self.idle.append(exchange)
        else:
            exchange.transport.close()
        return answer.status, answer.headers, answer.body

    def awaiting(self, exchange):
        """``exchange`` awaits an answer: the watchdog runs."""
        self.busy.add(exchange)
        if self.watchdog is None:
            self.watchdog = self.loop.call_later(self._every(), self._check)

    def _every(self):
        return min(max(self.http.read_timeout / 4, 0.001), 1.0)

    def _check(self):
        now, timeout = self.loop.time(), self.http.read_timeout
        for exchange in [exchange for exchange in self.busy
                         if now - exchange.heard >= timeout]:
            exchange.settle(TimeoutError())
        self.watchdog = self.loop.call_later(self._every(), self._check) \
            if self.busy else None

    def _connection(self):
        while self.idle:
            exchange = self.idle.pop()
            if not exchange.ended:
                return exchange
            exchange.transport.abort()
        return None

    async def _connect(self):
        import asyncio

        http = self.http
        host, port = http.address
        tls = http.tls_context() if http.tls else None
        try:
            _, exchange = await asyncio.wait_for(self.loop.create_connection(
                functools.partial(_Exchange, self), host, port, ssl=tls,
                server_hostname=host if tls else None), http.connect_timeout)
        except (TimeoutError, asyncio.TimeoutError) as error:
            raise _NoAnswer(f"could not connect within "
                            f"{http.connect_timeout} s", sent=False) from error
        except OSError as error:
            import ssl

            failed = "TLS failed" if isinstance(error, ssl.SSLError) \
                else "could not connect"
            raise _NoAnswer(f"{failed}: {error}", sent=False) from error
        return exchange


class _Exchange:
    """asyncio protocol of one _LoopPool connection: the answer to what
    ``send`` wrote is fed to an _HttpAnswer as its bytes arrive and comes
    back, through a future, once whole (or the error ``settle`` is given:
    the pool's watchdog gives TimeoutError). Anything arriving while idle,
    or the connection's end, marks it ``ended``."""

    def __init__(self, pool):
        self.pool, self.loop = pool, pool.loop
        self.transport: Any = None
        self.answer: Any = None
        self.waiter: Any = None
        self.ended, self.heard = False, 0.0

    def send(self, message):
        """A future of the _HttpAnswer to ``message``."""
        loop = self.loop
        self.answer, self.waiter = _HttpAnswer(), loop.create_future()
        self.heard = loop.time()
        self.pool.awaiting(self)
        self.transport.write(message)
        return self.waiter

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        answer = self.answer
        if answer is None:  # while idle: closed, or garbage
            self.ended = True
            return
        self.heard = self.loop.time()
        try:
            whole = answer.feed(data)
        except Exception as exc:
            self.settle(exc)
        else:
            if whole:
                self.settle(None)

    def eof_received(self):
        self.ended = True
        if self.answer is not None:
            self.data_received(b"")

    def connection_lost(self, exc):
        self.eof_received()

    def pause_writing(self):
        pass  # (a request is written whole, and buffered by the transport)

    def resume_writing(self):
        pass

    def settle(self, error):
        """The exchange is over: its answer, or ``error``, to its future
        (unless cancelled meanwhile)."""
        waiter, answer = self.waiter, self.answer
        self.pool.busy.discard(self)
        self.answer = self.waiter = None
        if not waiter.done():
            if error is None:
                waiter.set_result(answer)
            else:
                waiter.set_exception(error)


class _JsonParams:
    """A request written as JSON text, as those carrying many items are
    (each item's text is made once, when it is validated, and held as
    text: far lighter than its dicts). The fast path sends ``text`` as it
    is; read as a mapping -- by the boto3 client path, stubs, error
    messages -- it is the text decoded."""

    __slots__ = ("text", "_decoded")

    def __init__(self, text):
        self.text, self._decoded = text, None

    def _params(self) -> Any:
        if self._decoded is None:
            self._decoded = json.loads(self.text)
            if '"B' in self.text:
                self._decoded = _with_bytes(self._decoded)
        return self._decoded

    def __getitem__(self, name):
        return self._params()[name]

    def keys(self):
        return self._params().keys()

    def get(self, name, default=None):
        return self._params().get(name, default)


_Credentials = collections.namedtuple("_Credentials",
                                      "access_key secret_key token")

# Settings only botocore applies, in the environment and in the AWS config
# file's profile: with any of them, requests go through botocore.
_BOTOCORE_VARIABLES = ("AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT")
_BOTOCORE_OPTIONS = ("use_fips_endpoint", "use_dualstack_endpoint")


def _own_route(settings):
    """(credentials, CA bundle or None) of requests dynamongo signs and
    sends on its own: the keys of the settings (set_config's or the
    environment's) and botocore's CA bundle setting (``AWS_CA_BUNDLE``, the
    profile's ``ca_bundle``); None when botocore is needed -- no keys (its
    chain finds them: a role, SSO), a profile, a setting only botocore
    applies, or a proxy."""
    if not (settings["access_key_id"] and settings["secret_access_key"]) \
            or settings["profile_name"]:
        return None
    env = os.environ
    if any(env.get(name) for name in _BOTOCORE_VARIABLES) or any(
            value and name.lower().endswith("_proxy")
            and name.lower() != "no_proxy" for name, value in env.items()):
        return None
    sections, _ = _aws_config()
    profile = sections.get("default", {})
    if any(option in profile for option in _BOTOCORE_OPTIONS):
        return None
    credentials = _Credentials(settings["access_key_id"],
                               settings["secret_access_key"],
                               settings["session_token"])
    return credentials, env.get("AWS_CA_BUNDLE") or profile.get("ca_bundle")


def _ca_bundle():
    """The certificates botocore trusts: certifi's when it is installed,
    else those botocore ships (found without importing it), else None (the
    system's)."""
    from importlib import import_module

    try:  # (by name: a vendored copy type-checks without certifi)
        certifi = import_module("certifi")
    except ImportError:
        from importlib.util import find_spec

        spec = find_spec("botocore")
        for folder in (spec and spec.submodule_search_locations) or ():
            path = os.path.join(folder, "cacert.pem")
            if os.path.exists(path):
                return path
        return None
    return certifi.where()


class _FastWire:
    """Requests without botocore's serializer and parser, which cost most
    of a boto3 client's time: the JSON body is built here, signed (_SigV4),
    sent on a kept-alive connection per thread (_Http) and parsed with
    json.loads. Two routes:

    - on its own, without importing botocore (a Lambda function's cold
      start): when the settings hold the keys (set_config's or the
      environment's, as in Lambda), nothing needs botocore (_own_route)
      and botocore is not loaded;
    - through botocore (_botocore_route) otherwise, checked at each
      request: its credential chain (profile, IAM role, SSO), CA bundle and
      proxies, and its ``before-send`` event, a handler's response standing
      in for the server's as in botocore itself -- how moto's mock_aws and
      stubs answer, so that they see every request once botocore is loaded.
    """

    _TARGET = "DynamoDB_20120810."

    def __init__(self, connected):
        settings = connected.settings
        region = settings["region"]
        _check_region(region)
        self.connected, self.url = connected, _endpoint_of(settings)
        own = _own_route(settings)
        self.credentials, ca_bundle = own or (None, None)
        self.http = _Http(self.url, settings["connect_timeout"],
                          settings["read_timeout"], ca_bundle,
                          settings["max_pool_connections"])
        self.signer = _SigV4(region, self.url)
        self.user_agent = (f"dynamongo/{__version__} Python/"
                           f"{sys.version.split()[0]}")
        self.botocore = None  # the botocore route, made on first use

    def __call__(self, operation, params):
        body = self._body(params)
        if self.credentials is None or "botocore" in sys.modules:
            answer = (self.botocore or self._botocore_route())(operation, body)
        else:
            answer = self.http.post(self._signed(operation, body), body)
        return self._parsed(operation, params, answer)

    async def asend(self, operation, params):
        """The same request, awaited on the running event loop: botocore's
        blocking steps (its credential chain) in a worker thread."""
        body = self._body(params)
        if self.credentials is None or "botocore" in sys.modules:
            route = self.botocore
            if route is None:
                import asyncio

                route = await asyncio.to_thread(self._botocore_route)
            answer = await route.asend(operation, body)
        else:
            answer = await self.http.apost(self._signed(operation, body),
                                           body)
        return self._parsed(operation, params, answer)

    @staticmethod
    def _body(params):
        return (params.text if type(params) is _JsonParams
                else _encode_json(params)).encode()

    def _signed(self, operation, body):
        """The headers of a request dynamongo signs itself."""
        headers = self.signer.headers(self.credentials,
                                      self._TARGET + operation, body)
        headers["User-Agent"] = self.user_agent
        headers["Content-Length"] = str(len(body))
        _trace(headers)
        return headers

    def _parsed(self, operation, params, answer):
        """The parsed answer of a request (with its ResponseMetadata, as
        botocore gives it, unless streamed), or _Refusal."""
        status, headers, body = answer
        if status != 200:
            raise _Refusal(self._error(body, status, headers), operation)
        parsed = _answer_json(headers, body,
                              stream=type(params) is _StreamParams)
        if type(parsed) is dict:
            parsed["ResponseMetadata"] = {
                "HTTPStatusCode": 200,
                "RequestId": headers.get("x-amzn-requestid")}
        return parsed

    def _botocore_route(self):
        """The _BotocoreRoute of these settings, made once."""
        with self.connected._lock:
            if self.botocore is None:
                self.botocore = _BotocoreRoute(self)
            return self.botocore

    @staticmethod
    def _error(body, status, headers):
        """A botocore-shaped error response from a refusal's body."""
        try:
            extra = json.loads(body)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):  # not JSON: the text is the message
            extra = {"message": body[:200].decode("utf-8", "replace")}
        code = str(extra.pop("__type", status)).rpartition("#")[2]
        message = extra.pop("message", None) or extra.pop("Message", None)
        return dict(extra, Error={"Code": code, "Message": message},
                    ResponseMetadata={
                        "HTTPStatusCode": status,
                        "RequestId": headers.get("x-amzn-requestid"),
                        "HTTPHeaders": dict(headers)})


class _BotocoreRoute:
    """The fast path through botocore (see _FastWire): requests signed with
    the credentials it resolves, offered to ``before-send`` handlers (a
    handler's response stands in for the server's), then posted by _Http
    -- or, behind a proxy, by botocore's urllib3 session (``http`` is None
    then), which knows proxies, CONNECT tunnels and their auth."""

    def __init__(self, wire):
        import inspect
        import socket

        import botocore
        from botocore.awsrequest import AWSPreparedRequest
        from botocore.exceptions import NoCredentialsError
        from botocore.httpsession import URLLib3Session
        from botocore.utils import get_environ_proxies

        settings, url = wire.connected.settings, wire.url
        session = wire.connected.session()
        self.wire, self.url = wire, url
        self.credentials, self.events = session.get_credentials(), \
            session.events
        self.missing = NoCredentialsError
        ca_bundle = session._session.get_config_variable("ca_bundle")
        timeouts = (settings["connect_timeout"], settings["read_timeout"])
        proxies = get_environ_proxies(url)
        self.http: Any = None
        self.pool: Any = None
        if proxies:
            self.pool = URLLib3Session(
                verify=ca_bundle or True, proxies=proxies, timeout=timeouts,
                max_pool_connections=settings["max_pool_connections"],
                # As botocore does: without TCP_NODELAY, Nagle's algorithm
                # and delayed ACKs stall small requests for ~40 ms.
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        else:
            # The own route's connections, when they trust the same CAs.
            self.http = wire.http if ca_bundle == wire.http.ca_bundle \
                else _Http(url, *timeouts, ca_bundle,
                           settings["max_pool_connections"])
        self.user_agent = (f"dynamongo/{__version__} "
                           f"botocore/{botocore.__version__}")
        self.request = AWSPreparedRequest
        # Newer botocore releases give each request a context of its own
        # (handlers of before-send may read it); 1.34 has none.
        self.context = ({"context": {}} if "context" in inspect.signature(
            AWSPreparedRequest).parameters else {})

    def __call__(self, operation, body):
        request, answer = self.prepare(operation, body)
        return answer or self.post(request)

    async def asend(self, operation, body):
        """``self(operation, body)`` awaited: credentials due for a refresh
        (which may ask a server) and posts behind a proxy in a worker
        thread."""
        import asyncio

        refresh_needed = getattr(self.credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            await asyncio.to_thread(self.credentials.get_frozen_credentials)
        request, answer = self.prepare(operation, body)
        if answer is not None:
            return answer
        if self.http is None:
            return await asyncio.to_thread(self.post, request)
        return await self.http.apost(request.headers, request.body)

    def prepare(self, operation, body):
        """(the signed request, the answer a before-send handler gave or
        None)."""
        if self.credentials is None:
            raise self.missing()
        wire = self.wire
        headers = wire.signer.headers(
            self.credentials.get_frozen_credentials(),
            wire._TARGET + operation, body)
        headers["User-Agent"] = self.user_agent
        headers["Content-Length"] = str(len(body))
        _trace(headers)
        request = self.request("POST", self.url, headers, body, False,
                               **self.context)
        _, response = self.events.emit_until_response(
            f"before-send.dynamodb.{operation}", request=request)
        return request, None if response is None else _answer_of(response)

    def post(self, request):
        if self.http is None:
            return _answer_of(self.pool.send(request))
        return self.http.post(request.headers, request.body)


# -- The engine --------------------------------------------------------------
#
# Each exchange with DynamoDB is a procedure: a generator that yields what
# it needs done and is sent back the outcome, and does no I/O of its own
# (the "sans-I/O" style of h11):
#
#     answer = yield operation, params  # one attempt of one request: its
#                                       # parsed response, or its error
#                                       # thrown in
#     yield seconds                     # a wait (a float), before a retry
#     result = yield window             # a _Window's next result
#     count = yield _Items(items)       # items handed out (_stream)
#     yield None                        # a moment for other tasks, in a
#                                       # long stretch of work
#
# Procedures call procedures with ``yield from``: _request is the one retry
# loop, _pages the one loop following LastEvaluatedKey, _parallel the one
# window of requests in flight. A driver runs a procedure and answers what
# it yields: _stream, on the calling thread and a window's _Workers (_run
# runs it for the procedure's result), and _astream on an event loop
# (_arun), below. A request is a plain tuple and a
# wait a float: a request's cost is mostly the engine's, so it allocates
# nothing of its own.


class _Window:
    """Effect: run ``procedures`` (an iterable of them, taken as room
    comes) at most ``width`` at once, twice as many started; each time
    the window is yielded, the next one's result comes back in order, or
    _END after the last. Once the procedure yielding it ends, however it
    ends, those not done are stopped (_Workers)."""

    __slots__ = ("procedures", "width", "results")

    def __init__(self, procedures, width):
        self.procedures, self.width, self.results = procedures, width, None


_END = object()  # a _Window's answer after its last result


class _Items:
    """Effect: hand ``items`` (an iterable) out to whoever iterates the
    procedure (_stream), one at a time; the answer is how many were
    taken. An error raised while iterating ``items`` is thrown in."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items


def _run(procedure):
    """Drive ``procedure`` to its end (_stream): what it returns, or the
    exception it raises."""
    driving = _stream(procedure)
    try:
        next(driving)
    except StopIteration as done:
        return done.value
    driving.close()
    raise TypeError("a procedure run for its result handed items out")


def _stream(procedure):
    """Drive ``procedure`` on this thread, as a generator of the items it
    hands out (_Items) that returns what the procedure returns. Closing
    the generator ends the procedure: nothing more is sent for it, nor
    once a _Workers the thread works for has stopped (_Stopped)."""
    outcome, failed, opened = None, False, []
    working_for = _working_for.get()
    try:
        while True:
            try:
                effect = procedure.throw(outcome) if failed \
                    else procedure.send(outcome)
            except StopIteration as done:
                _close(opened, None)
                return done.value
            try:
                kind = type(effect)
                if kind is tuple:  # (the common case, first)
                    if working_for and any(stop.is_set()
                                           for stop in working_for):
                        raise _Stopped(effect[0])
                    outcome = _send(*effect)
                elif kind is _Items:
                    outcome = 0
                    for item in effect.items:
                        outcome += 1
                        yield item
                elif kind is float:
                    outcome = _sleep(effect)
                elif effect is None:  # a moment for others: none here
                    outcome = None
                else:
                    outcome = _window_result(effect, opened)
                failed = False
            except _Stopped:
                raise
            except Exception as exc:
                outcome, failed = exc, True
    except BaseException as exc:
        procedure.close()
        _close(opened, exc)
        raise


def _window_result(window, opened):
    """The next result of a _Window, run by _Workers (added to
    ``opened``), or _END."""
    if window.results is None:
        workers = _Workers(window.width)
        opened.append(workers)
        window.results = workers.map(_run, window.procedures)
    return next(window.results, _END)


def _close(opened, error):
    """End the _Workers of a procedure's windows: joined after a result,
    left to end by themselves after ``error``."""
    for workers in opened:
        workers.end(error is not None)


def _request(operation: str, params: Any, again: Any = None) -> Any:
    """Procedure: the parsed response to one low-level DynamoDB request.

    ``params`` are DynamoDB JSON (AttributeValue dicts such as
    ``{"S": "x"}``). Every request dynamongo makes comes through here. It
    is retried on throttling, 5xx and connection errors -- and on the
    refusals ``again(error)``, if given, is true of -- up to
    ``max_attempts`` attempts in all; errors come out as dynamongo
    exceptions naming the operation and table.
    """
    settings = _state().settings
    attempts = settings["max_attempts"]
    maybe_applied = False
    meter = _metering.get()
    for attempt in range(attempts):
        if meter is not None:  # a rate-limited call's: see _Meter
            params, wait, drawn = meter.before(operation, params)
            if wait:
                yield wait
        event = None
        if _listeners or _debugging():  # watched: see RequestEvent
            event, params = _started(operation, params, attempt + 1,
                                     settings)
        try:
            answer = yield operation, params
        except Exception as exc:
            error, transient, applied = _translate_error(
                exc, operation, params, settings)
            if again is not None and not transient:
                transient = again(error)
            retry = attempt + 1 < attempts and transient
            if event is not None:
                _ended(event, None, error, retry)
            if retry:
                maybe_applied = maybe_applied or applied
                yield _backoff(attempt)
                continue
            if isinstance(error, DynamoDBError):
                # A refusal after an attempt that may have been applied (its
                # answer was lost) may be a refusal of our own write.
                error.maybe_applied = maybe_applied or applied
            if error is exc:
                raise
            raise error from exc
        except BaseException:  # Ctrl-C, a cancellation, the call closed:
            if event is not None:  # the attempt's end, told all the same
                _ended(event, None, DynamongoError(
                    f"{operation}: the call was interrupted (or cancelled) "
                    "before an answer came"), False)
            raise
        if event is not None:
            _ended(event, answer, None, False)
        if meter is not None:
            meter.after(operation, params, answer, drawn)
        return answer


# -- Watching requests: listeners (Connection.add_listener) and the
# dynamongo logger's DEBUG records, one event per attempt, made by _request
# -- so by whichever thread or task sends the attempt, in its context.

class RequestEvent:
    """One attempt of one request, as listeners see it (see
    ``Connection.add_listener``): ``started(event)``, then
    ``succeeded(event)`` or ``failed(event)`` with the same object.

    ``id`` (unique per attempt), ``operation`` (``"PutItem"``), ``tables``
    (the full table names), ``attempt`` (1, 2, ...), ``region``,
    ``endpoint``; once it has ended, ``duration`` (seconds), ``status``
    (the HTTP status, None when no answer came), ``aws_request_id`` (the
    answer's ``x-amzn-RequestId``), ``consumed_capacity`` (a list of
    DynamoDB's ConsumedCapacity entries, or None), and on failure
    ``error`` (the DynamongoError the caller gets if no retry mends it)
    and ``will_retry``.
    """

    __slots__ = ("id", "operation", "tables", "attempt", "region",
                 "endpoint", "duration", "status", "aws_request_id",
                 "consumed_capacity", "error", "will_retry", "_start",
                 "_params", "_answer", "_listeners")

    def __init__(self, id: int, operation: str, tables: tuple[str, ...],
                 attempt: int, region: str, endpoint: str) -> None:
        self.id, self.operation, self.tables = id, operation, tables
        self.attempt, self.region, self.endpoint = attempt, region, endpoint
        self.duration: float | None = None
        self.status: int | None = None
        self.aws_request_id: str | None = None
        self.consumed_capacity: list[dict[str, Any]] | None = None
        self.error: DynamongoError | None = None
        self.will_retry = False
        self._start = time.perf_counter()
        # What was sent and what came back (the error's answer on failure),
        # for the span listener's attributes.
        self._params: Any = None
        self._answer: Any = None
        # Those told of its start, and so of its end: a listener removed
        # meanwhile still hears how it ended, one added does not.
        self._listeners = _listeners

    def __repr__(self) -> str:
        return (f"<RequestEvent {self.id} {self.operation} "
                f"{', '.join(self.tables)} attempt {self.attempt}>")


_listeners: tuple[Any, ...] = ()  # replaced whole: read without a lock
_event_ids = itertools.count(1)
# Operations that report the capacity they consume when asked.
_DATA_OPERATIONS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
    "BatchGetItem", "BatchWriteItem", "TransactGetItems",
    "TransactWriteItems"})
_logger: Any = None  # the dynamongo logger, once logging is loaded


def _debugging():
    """Whether the dynamongo logger records DEBUG. logging is not imported
    for it: a program that never imported logging configured no logger."""
    global _logger
    if _logger is None:
        logging = sys.modules.get("logging")
        if logging is None:
            return False
        _logger = logging.getLogger("dynamongo")
    return _logger.isEnabledFor(10)


def _started(operation, params, attempt, settings):
    """(the RequestEvent of an attempt, told to the listeners, and the
    parameters to send: asking for the capacity consumed while anyone
    listens, and for a whole answer, not a stream)."""
    if type(params) is _JsonParams:
        if _listeners and operation in _DATA_OPERATIONS:
            params = _JsonParams(params.text[:-1]
                                 + ',"ReturnConsumedCapacity":"TOTAL"}')
    else:
        params = dict(params)
        if _listeners and operation in _DATA_OPERATIONS:
            params["ReturnConsumedCapacity"] = "TOTAL"
    event = RequestEvent(next(_event_ids), operation, _tables_of(params),
                         attempt, settings["region"], _endpoint_of(settings))
    event._params = params
    _tell("started", event)
    return event, params


def _tables_of(params):
    if type(params) is _JsonParams:  # a BatchWriteItem chunk: one table,
        return (params.text.split('"', 4)[3],)  # named first (not decoded)
    table = params.get("TableName")
    if table:
        return (table,)
    if params.get("RequestItems"):
        return tuple(params["RequestItems"])
    names = {}  # (in order, once each)
    for action in params.get("TransactItems") or ():
        for request in action.values():
            names[request["TableName"]] = None
    return tuple(names)


def _ended(event, answer, error, will_retry):
    """Complete ``event`` from the answer, or the error; tell the listeners
    and the logger."""
    event.duration = time.perf_counter() - event._start
    if error is None:
        event._answer = answer
        metadata = answer.get("ResponseMetadata") or {}
        event.status = metadata.get("HTTPStatusCode", 200)
        event.aws_request_id = metadata.get("RequestId")
        consumed = answer.get("ConsumedCapacity")
        event.consumed_capacity = [consumed] if isinstance(consumed, dict) \
            else consumed
    else:
        response = event._answer = getattr(error, "response", None) or {}
        event.status = getattr(error, "status", None)
        event.aws_request_id = response.get("ResponseMetadata", {}).get(
            "RequestId")
        event.error, event.will_retry = error, will_retry
    _tell("failed" if error is not None else "succeeded", event)
    if _debugging():
        outcome = event.status if error is None else (
            f"{getattr(error, 'code', None) or type(error).__name__}"
            + (", retrying" if will_retry else ""))
        # Names and numbers only: never an item, a key or a credential.
        _logger.debug("%s %s: %s in %.1f ms (attempt %d, request %s)",
                      event.operation, ", ".join(event.tables), outcome,
                      event.duration * 1e3, event.attempt,
                      event.aws_request_id)


def _tell(kind, event):
    """Call each of the event's listeners' ``kind`` method, if it has one;
    one that raises is logged (WARNING, with its traceback) and changes
    nothing else."""
    for listener in event._listeners:
        method = getattr(listener, kind, None)
        if method is None:
            continue
        try:
            method(event)
        except Exception:
            import logging

            logging.getLogger("dynamongo").warning(
                "listener %r raised in %s(%r)", listener, kind, event,
                exc_info=True)


def opentelemetry_listener(tracer_provider: Any = None) -> Any:
    """A listener (for ``Connection.add_listener``) making one OpenTelemetry
    CLIENT span per attempt, named and attributed as
    opentelemetry-instrumentation-botocore names and attributes the spans
    of boto3's DynamoDB calls (``DynamoDB.PutItem``; ``rpc.*``,
    ``db.system``, ``aws.dynamodb.table_names``, the consumed capacity,
    ...), so that what is built on those sees dynamongo's requests too.
    Each span's parent is the span current where the call was made (worker
    threads and tasks included); a failed attempt's span has status ERROR
    and the error recorded. ``tracer_provider``: the global one when None.
    Needs the ``opentelemetry-api`` package (``opentelemetry-sdk`` brings
    it); dynamongo does not import it otherwise."""
    try:
        from opentelemetry import trace  # type: ignore[import-not-found]
    except ImportError as exc:
        raise DynamongoError(
            "dynamongo.opentelemetry_listener needs OpenTelemetry: pip "
            "install opentelemetry-sdk (or opentelemetry-api)") from exc
    return _Spans(trace.get_tracer("dynamongo", __version__,
                                   tracer_provider=tracer_provider), trace)


class _Spans:
    """The listener opentelemetry_listener makes: a span per attempt, kept
    by event id from ``started`` until it ends."""

    def __init__(self, tracer, trace):
        self.tracer, self.trace, self.open = tracer, trace, {}

    def started(self, event):
        span = self.open[event.id] = self.tracer.start_span(
            f"DynamoDB.{event.operation}", kind=self.trace.SpanKind.CLIENT,
            attributes=_span_attributes(event))
        if span.is_recording():
            for name, value in _span_values(_SPAN_REQUEST, event.operation,
                                            event._params):
                span.set_attribute(name, value)

    def succeeded(self, event):
        span = self.open.pop(event.id, None)
        if span is not None:
            try:
                self._answered(span, event)
                for name, value in _span_values(
                        _SPAN_ANSWER, event.operation, event._answer):
                    span.set_attribute(name, value)
            finally:
                span.end()

    def failed(self, event):
        span = self.open.pop(event.id, None)
        if span is not None:
            try:
                self._answered(span, event)
                span.set_status(self.trace.Status(
                    self.trace.StatusCode.ERROR, str(event.error)))
                span.record_exception(event.error)
            finally:
                span.end()

    @staticmethod
    def _answered(span, event):
        if event.aws_request_id:
            span.set_attribute("aws.request_id", event.aws_request_id)
        span.set_attribute("retry_attempts", event.attempt - 1)
        if event.status is not None:
            span.set_attribute("http.status_code", event.status)


# The spans' attributes, as the botocore instrumentation's DynamoDB
# extension sets them: the operations naming their tables, and per
# operation (attribute, parameter path, conversion) of the request and of
# the answer.
_SPAN_TABLES = frozenset({
    "BatchGetItem", "BatchWriteItem", "CreateTable", "DeleteItem",
    "DeleteTable", "DescribeTable", "GetItem", "PutItem", "Query", "Scan",
    "UpdateItem", "UpdateTable"})


def _span_json_each(value):
    return [json.dumps(entry) for entry in value] if type(value) is list \
        else None


def _span_capacities(value):
    if type(value) is dict:
        value = [value]
    return [json.dumps(_capacity_in_boto3_order(entry)) for entry in value] \
        if type(value) is list else None


def _span_json(value):
    return json.dumps(value) if type(value) is dict else None


_CONSISTENT = ("aws.dynamodb.consistent_read", "ConsistentRead", None)
_PROJECTION = ("aws.dynamodb.projection", "ProjectionExpression", None)
_READ = (("aws.dynamodb.attributes_to_get", "AttributesToGet", None),
         _CONSISTENT, ("aws.dynamodb.index_name", "IndexName", None),
         ("aws.dynamodb.limit", "Limit", None), _PROJECTION,
         ("aws.dynamodb.select", "Select", None))
_CAPACITIES = (
    ("aws.dynamodb.provisioned_read_capacity",
     ("ProvisionedThroughput", "ReadCapacityUnits"), None),
    ("aws.dynamodb.provisioned_write_capacity",
     ("ProvisionedThroughput", "WriteCapacityUnits"), None))
_SPAN_REQUEST = {
    "GetItem": (_CONSISTENT, _PROJECTION),
    "Query": (("aws.dynamodb.scan_forward", "ScanIndexForward", None),
              *_READ),
    "Scan": (("aws.dynamodb.segment", "Segment", None),
             ("aws.dynamodb.total_segments", "TotalSegments", None), *_READ),
    "ListTables": (("aws.dynamodb.exclusive_start_table",
                    "ExclusiveStartTableName", None),
                   ("aws.dynamodb.limit", "Limit", None)),
    "CreateTable": (("aws.dynamodb.global_secondary_indexes",
                     "GlobalSecondaryIndexes", _span_json_each),
                    ("aws.dynamodb.local_secondary_indexes",
                     "LocalSecondaryIndexes", _span_json_each),
                    *_CAPACITIES),
    "UpdateTable": (("aws.dynamodb.attribute_definitions",
                     "AttributeDefinitions", _span_json_each),
                    ("aws.dynamodb.global_secondary_index_updates",
                     "GlobalSecondaryIndexUpdates", _span_json_each),
                    *_CAPACITIES),
}
_CONSUMED = ("aws.dynamodb.consumed_capacity", "ConsumedCapacity",
             _span_capacities)
_COLLECTIONS = ("aws.dynamodb.item_collection_metrics",
                "ItemCollectionMetrics", _span_json)
_SPAN_ANSWER = {
    "BatchGetItem": (_CONSUMED,),
    "BatchWriteItem": (_CONSUMED, _COLLECTIONS),
    "DeleteItem": (_CONSUMED, _COLLECTIONS),
    "GetItem": (_CONSUMED,),
    "ListTables": (("aws.dynamodb.table_count", "TableNames", len),),
    "PutItem": (_CONSUMED, _COLLECTIONS),
    "Query": (_CONSUMED,),
    "Scan": (("aws.dynamodb.count", "Count", None),
             ("aws.dynamodb.scanned_count", "ScannedCount", None),
             _CONSUMED),
    "UpdateItem": (_CONSUMED, _COLLECTIONS),
}


def _span_attributes(event):
    """The attributes a span starts with."""
    attributes = {
        "rpc.system": "aws-api", "rpc.service": "DynamoDB",
        "rpc.method": event.operation, "cloud.region": event.region,
        **_server_attributes(event.endpoint),
        "db.system": "dynamodb", "db.operation": event.operation}
    if event.operation in _SPAN_TABLES and event.tables:
        attributes["aws.dynamodb.table_names"] = event.tables
    return attributes


@functools.lru_cache(maxsize=16)
def _server_attributes(endpoint):
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    return {"server.address": parts.hostname,
            "server.port": parts.port or 443, "net.peer.name": parts.netloc}


def _span_values(table, operation, source):
    """(attribute, value) of each of ``table[operation]``'s entries found in
    ``source`` (a request's parameters, an answer)."""
    for name, path, convert in table.get(operation, ()):
        value = source
        for step in (path,) if type(path) is str else path:
            value = value.get(step) if value is not None else None
        if value is not None and convert is not None:
            value = convert(value)
        if value is not None:
            yield name, value


# ConsumedCapacity's members in the order boto3 gives them (its model's),
# so that the spans' JSON is the text botocore's instrumentation writes.
_CAPACITY_MEMBERS = ("TableName", "CapacityUnits", "ReadCapacityUnits",
                     "WriteCapacityUnits", "Table", "LocalSecondaryIndexes",
                     "GlobalSecondaryIndexes")
_UNITS = ("ReadCapacityUnits", "WriteCapacityUnits", "CapacityUnits")


def _capacity_in_boto3_order(entry):
    def units(capacity):
        return {name: capacity[name] for name in _UNITS if name in capacity}

    ordered = {name: entry[name] for name in _CAPACITY_MEMBERS
               if name in entry}
    if "Table" in ordered:
        ordered["Table"] = units(ordered["Table"])
    for name in ("LocalSecondaryIndexes", "GlobalSecondaryIndexes"):
        if name in ordered:
            ordered[name] = {index: units(capacity)
                             for index, capacity in ordered[name].items()}
    return ordered


# -- Rate limits: max_units_per_second= on the many-item calls. The call's
# procedure runs _metered, so that _request draws each attempt's capacity
# units from the call's one _Meter, in whichever thread or task sends it.

_metering: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "dynamongo_metering", default=None)
_READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem"})


def _meter(rate, where):
    """The _Meter of ``max_units_per_second=rate`` (None: no limit)."""
    if rate is None:
        return None
    if type(rate) not in (int, float) or not 0 < rate < math.inf:
        raise ValidationError(f"{where}: max_units_per_second must be a "
                              f"number > 0, not {rate!r}")
    return _Meter(rate)


class _Meter:
    """The capacity budget of one rate-limited call: a bucket of units
    refilled at ``rate`` per second, holding at most one second's worth
    (the burst), which every request of the call draws from, over all its
    threads, waiting before it is sent until what it draws is there.

    A write draws its items' size (1 unit per started KB of each item put,
    1 per delete). A read draws, before it is sent, what it will consume
    at least (half a unit per key of a BatchGetItem, one if consistent;
    for a Query or Scan, what the call's last read consumed), and once
    answered the rest of what DynamoDB reports it consumed -- estimated
    from the items' size when it reports nothing: 1 unit per started 4 KB,
    half for eventually consistent reads."""

    clock = staticmethod(time.monotonic)

    def __init__(self, rate):
        self.rate, self.units, self.at = rate, rate, self.clock()
        self.last_read = 0
        self.lock = threading.Lock()

    def draw(self, units):
        """Take ``units`` (give them back, when negative): the seconds to
        wait for them."""
        with self.lock:
            now = self.clock()
            full = min(self.rate, self.units + (now - self.at) * self.rate)
            self.units, self.at = min(self.rate, full - units), now
            return -self.units / self.rate if self.units < 0 else 0.0

    def before(self, operation, params):
        """(the parameters to send -- a read asks for the capacity it
        consumes, in a whole answer, not a stream -- the seconds to wait
        first, and the units drawn)."""
        units = 0
        if operation in _READS:
            params = {**params, "ReturnConsumedCapacity": "TOTAL"}
            units = self.last_read
            if operation == "BatchGetItem":
                units = sum(len(read["Keys"]) * (
                    1 if read.get("ConsistentRead") else 0.5)
                    for read in params["RequestItems"].values())
        elif operation == "BatchWriteItem":
            (requests,) = params["RequestItems"].values()
            for request in requests:
                put = request.get("PutRequest")
                units += 1 if put is None else _per(_bytes(put["Item"]), 1024)
        elif operation == "PutItem":
            units = _per(_bytes(params["Item"]), 1024)
        elif operation == "DeleteItem":
            units = 1
        return params, self.draw(units), units

    def after(self, operation, params, answer, drawn):
        """Draw the rest of what a read consumed."""
        if operation in _READS:
            units = self.consumed(operation, params, answer)
            self.draw(units - drawn)
            if operation != "BatchGetItem":
                self.last_read = units

    @staticmethod
    def consumed(operation, params, answer):
        """The units a read consumed."""
        reported = answer.get("ConsumedCapacity")
        if reported:
            return sum(entry.get("CapacityUnits") or 0 for entry in (
                [reported] if type(reported) is dict else reported))
        if operation == "BatchGetItem":
            items = [item for found in answer["Responses"].values()
                     for item in found]
            units = sum(_per(_bytes(item), 4096) for item in items)
            consistent = all(read.get("ConsistentRead") for read in
                             params["RequestItems"].values())
        else:
            items = answer.get("Items") or [answer.get("Item") or {}]
            units = _per(sum(map(_bytes, items)), 4096)
            consistent = params.get("ConsistentRead")
        return units if consistent else units / 2


def _bytes(item):
    """The size of a DynamoDB item, as DynamoDB counts it."""
    return sum(len(name.encode()) + _av_size(av) for name, av in item.items())


def _per(size, unit):
    """How many ``unit``s of bytes ``size`` starts (at least one)."""
    return -(-size // unit) or 1


def _metered(procedure, meter):
    """Procedure: ``procedure`` with ``meter`` (None: as it is) the budget
    of every request it sends, its windows' procedures' included."""
    if meter is None:
        return procedure
    return _metering_steps(procedure, meter)


def _metering_steps(procedure, meter):
    """_metered's procedure: each step of ``procedure`` taken with
    ``meter`` in _metering (for _request), each effect passed on."""
    outcome, failed = None, False
    try:
        while True:
            token = _metering.set(meter)
            try:
                effect = procedure.throw(outcome) if failed \
                    else procedure.send(outcome)
            except StopIteration as done:
                return done.value
            finally:
                _metering.reset(token)
            if type(effect) is _Window and effect.results is None:
                effect.procedures = map(_metering_steps, effect.procedures,
                                        itertools.repeat(meter))
            try:
                outcome, failed = (yield effect), False
            except Exception as exc:
                outcome, failed = exc, True
    finally:
        procedure.close()


def _normal(av):
    """An AttributeValue as comparable Python data (numbers by value)."""
    (kind, value), = av.items()
    if kind == "N":
        return decimal.Decimal(value)
    if kind == "L":
        return [_normal(item) for item in value]
    if kind == "M":
        return {name: _normal(item) for name, item in value.items()}
    if kind == "NS":
        return frozenset(decimal.Decimal(number) for number in value)
    if kind == "SS":
        return frozenset(value)
    if kind == "BS":
        return frozenset(_binary(item) for item in value)
    return _binary(value) if kind == "B" else value


def _backoff(attempt):
    """The seconds to wait before attempt ``attempt + 1``: full jitter over
    an exponential ceiling (``backoff_base`` doubling up to
    ``backoff_cap`` seconds)."""
    import random

    settings = _state().settings
    ceiling = min(settings["backoff_cap"],
                  settings["backoff_base"] * 2 ** attempt)
    return random.uniform(0, ceiling)


def _sliced(function, values):
    """Procedure: ``[function(value) for value in values]``, with a moment
    for other tasks after each _SLICE of them."""
    done = []
    for chunk in _chunks(values, _SLICE):
        if done:
            yield None
        done += map(function, chunk)
    return done


def _chunks(sequence, size):
    for start in range(0, len(sequence), size):
        yield sequence[start:start + size]


def _stops_batch(error):
    """Whether ``error`` fails every item of a batch alike, so that no
    retry and no other item could fare better (a missing table, denied
    access, no credentials, an unreachable endpoint, a request refused as a
    whole): the batch stops and raises it. Other errors -- a failed
    condition, throttling or a server error after every retry, items left
    unprocessed -- are the items' own, reported in BatchResult.fail."""
    if isinstance(error, DynamoDBConnectionError):
        return True
    if isinstance(error, (ConditionalCheckFailedException, ThrottlingError,
                          UnprocessedError)):
        return False
    if isinstance(error, DynamoDBError):
        return (error.status or 0) < 500 and error.code not in _ITEM_CODES
    return True


# Refusals of a write that concern its own item, not the whole batch.
_ITEM_CODES = frozenset({"TransactionConflictException",
                         "ItemCollectionSizeLimitExceededException"})


def _batch_write(table, key_names, requests, identify, advance=None):
    """Procedure: send ``requests`` -- the JSON text of write requests
    (_put_request, _delete_request) under the identities of their keys
    (``identify(item or key)``; ``key_names`` are the table's key attributes)
    -- in BatchWriteItem requests of 25, several at once (_parallel), resending
    what comes back unprocessed. Returns (the identities of the items written,
    [(identity, exception)] of those that were not); after an error that stops
    the batch (_stops_batch) no further chunk is sent, and its items fail with
    it. ``advance(n)``, if given, is told of each chunk's items as it is done
    (from the calling thread)."""
    done, failed, stopped = [], [], []

    def write(chunk):
        if stopped:
            return [], [(name, stopped[0]) for name in chunk]
        written, left = yield from _write_chunk(
            table, key_names, {name: requests[name] for name in chunk},
            identify)
        stopped.extend(error for _, error in left[:1] if _stops_batch(error))
        return written, left

    chunks = list(_chunks(list(requests), _BATCH_WRITE_ITEMS))
    each = advance and (lambda result: advance(len(result[0])
                                               + len(result[1])))
    for written, left in (yield from _parallel(write, chunks, each)):
        done += written
        failed += left
    return done, failed


def _write_chunk(table, key_names, pending, identify):
    """Procedure: (identities written, failures) of one chunk of
    ``pending`` write requests, resent while some come back unprocessed
    (_resending)."""
    head = '{"RequestItems":{' + json.encoder.encode_basestring(table) + ":["
    done = []

    def params():
        return _JsonParams(head + ",".join(pending.values()) + "]}}")

    def left(response):  # the requests still pending, and their params
        nonlocal pending
        # Told apart by the identities of their keys (numbers by value:
        # DynamoDB may write 1.0 as 1).
        names = {identify(_request_key(entry)) for entry in response.get(
            "UnprocessedItems", {}).get(table, ())}
        sent, pending = pending, {}
        for name, request in sent.items():
            if name in names:
                pending[name] = request
            else:
                done.append(name)
        return pending and params()

    try:
        rest = yield from _resending("BatchWriteItem", params(), left)
    except DynamongoError as exc:
        return done, [(name, exc) for name in pending]
    if not rest:
        return done, []
    keys = [_request_key(json.loads(request)) for request in pending.values()]
    error = UnprocessedError(
        f"BatchWriteItem on table {table!r} left {len(pending)} items "
        f"unprocessed after {_state().settings['batch_attempts']} attempts",
        [{name: key[name] for name in key_names} for key in keys])
    return done, [(name, error) for name in pending]


def _resending(operation, params, left):
    """Procedure: send ``params``, then what each answer leaves
    unprocessed -- ``left(answer)`` gives the parameters sending the rest
    again, or nothing when nothing is left -- in at most ``batch_attempts``
    requests, pausing between them as _request does. Returns nothing
    when all was processed, else the parameters of what is still left."""
    attempts = _state().settings["batch_attempts"]
    for attempt in range(attempts):
        params = left((yield from _request(operation, params)))
        if not params:
            return params
        if attempt + 1 < attempts:
            yield _backoff(attempt)
    return params


def _put_request(item_json):
    """The JSON text of a PutRequest of an item's JSON text."""
    return '{"PutRequest":{"Item":' + item_json + "}}"


def _delete_request(key):
    """The JSON text of a DeleteRequest of a key."""
    return '{"DeleteRequest":{"Key":' + _encode_json(key) + "}}"


def _one_by_one(write, entries, advance=None):
    """Procedure: run the procedure ``write(entry)`` for each value of
    ``entries`` (a dict), one request each, concurrently (_parallel): (``[(key,
    what write returned)]`` of those done, ``[(key, exception)]`` of the
    others), in the order of ``entries``. After an error that stops the batch
    (_stops_batch), those not sent yet fail with it unsent. ``advance(1)``, if
    given, follows each entry (from the calling thread)."""
    stopped = []

    def attempt(key):
        if stopped:
            return key, False, stopped[0]
        try:
            return key, True, (yield from write(entries[key]))
        except DynamongoError as exc:
            if _stops_batch(exc):
                stopped.append(exc)
            return key, False, exc

    done, failed = [], []
    each = advance and (lambda _: advance(1))
    for key, written, result in (
            yield from _parallel(attempt, list(entries), each)):
        (done if written else failed).append((key, result))
    return done, failed


def _finished(result):
    """The BatchResult of a many-item write, or the error that stopped it
    (_stops_batch), raised with ``result`` attached."""
    for failure in result.fail:
        if _stops_batch(failure.error):
            failure.error.result = result
            raise failure.error
    return result


def _request_key(request):
    """The item (for a put) or key (for a delete) of a write request."""
    put = request.get("PutRequest")
    return put["Item"] if put else request["DeleteRequest"]["Key"]


def _parallel(function, tasks, each=None):
    """Procedure: ``[result of the procedure function(task) for task in
    tasks]``, run in a _Window (at most ``concurrency`` at once, twice as
    many started, the next one started as each result is taken) when
    there is more than one task. ``each(result)``, if given, is called as
    each result comes, in order; when it raises, no further request is
    sent."""
    width = _state().settings["concurrency"] if len(tasks) > 1 else 1
    window = _Window((function(task) for task in tasks), width)
    done = []
    while (result := (yield window)) is not _END:
        done.append(result)
        if each is not None:
            each(result)
    return done


# The _Workers whose procedures a thread runs: once any of them has
# stopped, the driver sends nothing more for them.
_working_for: contextvars.ContextVar[tuple[threading.Event, ...]] = \
    contextvars.ContextVar("dynamongo_working_for", default=())


class _Stopped(Exception):
    """A request not sent because the call it was made for has ended."""


class _Workers:
    """The threads running one _Window for the driver (_window_result),
    which ends them (``end``) when the procedure it runs ends (_close).
    ``submit(function, task)`` runs a task on one of at most ``width``
    threads, started as needed, in a copy of the caller's context (its
    connection state, contextvars); with a width of 1, ``map`` runs tasks
    in the calling thread.

    However the procedure that opened them ends -- a result, an error, a
    callback that raised, KeyboardInterrupt, a generator closed early --
    the call is over: tasks not started are cancelled, tasks running send
    no further request (no next page, no retry: _run checks), and no
    thread outlives the call (they are joined when it ends normally; after
    an exception they end once their request in flight is answered, rather
    than making Ctrl-C wait for it). So a process forked between calls
    has a single thread."""

    def __init__(self, width):
        self.width, self.executor = width, None
        self.stop = threading.Event()

    def end(self, failed):
        """Cancel the tasks not started, stop those running, and join the
        threads unless the call ``failed``."""
        self.stop.set()
        if self.executor is not None:
            self.executor.shutdown(wait=not failed, cancel_futures=True)

    def submit(self, function, task):
        """A Future of ``function(task)`` run on a worker thread."""
        if self.executor is None:
            from concurrent.futures import ThreadPoolExecutor

            self.executor = ThreadPoolExecutor(
                self.width, thread_name_prefix="dynamongo")
        context = contextvars.copy_context()
        context.run(_working_for.set, _working_for.get() + (self.stop,))
        return self.executor.submit(context.run, function, task)

    def map(self, function, tasks):
        """The results of ``function(task)`` for each task, in order, with
        at most twice ``width`` tasks in flight."""
        if self.width < 2:
            yield from map(function, tasks)
            return
        running = collections.deque()
        for task in tasks:
            running.append(self.submit(function, task))
            if len(running) >= 2 * self.width:
                yield running.popleft().result()
        while running:
            yield running.popleft().result()


# -- The asyncio driver: the same procedures, awaited on the running event
# loop (the model's ``a``-prefixed twins). A request goes out through the
# loop's own connections (_LoopPool), a wait is asyncio.sleep, a window's
# procedures are tasks of the loop, and a cancelled call cancels them.

async def _asend(operation: str, params: Any) -> Any:
    """_send, awaited on the running event loop."""
    state = _state()
    wire = state._wire or await state.awire()
    return await wire.asend(operation, params)


async def _asleep(seconds):
    import asyncio

    await asyncio.sleep(seconds)


async def _arun(procedure):
    """Drive ``procedure`` to its end on the running event loop (as _run):
    what it returns, or the exception it raises."""
    result = []
    driving = _astream(procedure, result)
    async for _ in driving:
        await driving.aclose()
        raise TypeError("a procedure run for its result handed items out")
    return result[0]


async def _astream(procedure, result):
    """Drive ``procedure`` on the running event loop, as an async
    generator of the items it hands out (_Items); what the procedure
    returns is appended to the list ``result``. However the driving ends
    -- its result, an error, a cancellation, the generator closed early --
    the tasks of its windows still running are cancelled (_Tasks)."""
    outcome, failed, opened = None, False, []
    try:
        while True:
            try:
                effect = procedure.throw(outcome) if failed \
                    else procedure.send(outcome)
            except StopIteration as done:
                result.append(done.value)
                return
            try:
                kind = type(effect)
                if kind is tuple:
                    outcome = await _asend(*effect)
                elif kind is _Items:
                    outcome = 0
                    for item in effect.items:
                        outcome += 1
                        yield item
                elif kind is float:
                    outcome = await _asleep(effect)
                elif effect is None:
                    outcome = await _asleep(0)
                else:
                    if effect.results is None:
                        effect.results = _Tasks(effect)
                        opened.append(effect.results)
                    outcome = await effect.results.next()
                failed = False
            except Exception as exc:
                outcome, failed = exc, True
    except BaseException:
        procedure.close()
        raise
    finally:
        for tasks in opened:
            tasks.end()


class _Tasks:
    """The procedures of one _Window, each run (_arun) as a task of the
    running loop, at most ``width`` at once; ``next()`` is the next result
    in order, or _END. ``end()`` cancels those still running: the call is
    over, and they send nothing more."""

    def __init__(self, window):
        self.procedures, self.width = iter(window.procedures), window.width
        self.running = collections.deque()

    async def next(self):
        import asyncio

        running = self.running
        while len(running) < self.width:
            procedure = next(self.procedures, None)
            if procedure is None:
                break
            running.append(asyncio.ensure_future(_arun(procedure)))
        if not running:
            return _END
        return await running.popleft()

    def end(self):
        while self.running:
            task = self.running.popleft()
            task.cancel()
            task.add_done_callback(_retrieved)


def _retrieved(task):
    """Take a task's outcome, so that asyncio does not report an error
    nobody awaits (the call has ended with another)."""
    if not task.cancelled():
        task.exception()


async def _aperform(procedure, state=None):
    """Await a model call's ``procedure`` on one connection state from
    start to end (as _perform)."""
    with _Pinned(state):
        return await _arun(procedure)


class _CollectorPause:
    """``with _collector_paused:`` pauses Python's cyclic garbage collector
    (unless the ``pause_gc`` setting is False) while a many-item call builds
    its results: with the collector running, every full collection walks
    all the instances made so far, and at 100,000 items that is most of a
    read's time. dynamongo's instances hold no reference cycles; cycles
    others make meanwhile are collected once it resumes. Pauses nest and
    overlap across threads: the last one to end resumes the collector, if
    it was running when the first began."""

    def __init__(self):
        self.lock, self.depth, self.resume = threading.Lock(), 0, False

    def __enter__(self):
        paused = _state().settings["pause_gc"]
        with self.lock:
            if self.depth == 0:
                self.resume = paused and gc.isenabled()
                if self.resume:
                    gc.disable()
            self.depth += 1

    def __exit__(self, *_):
        with self.lock:
            self.depth = max(self.depth - 1, 0)  # (0: forgotten by a fork)
            if self.depth == 0 and self.resume:
                gc.enable()

    def forget_in_child(self):
        """After fork: the pauses of the parent's other threads never end
        in the child."""
        self.lock = threading.Lock()
        if self.depth and self.resume:
            gc.enable()
        self.depth, self.resume = 0, False


_collector_paused = _CollectorPause()


def _batch_get(table, keys, consistent_read=False, projection=None):
    """Procedure: the stored items among ``keys`` (at most 100) by
    BatchGetItem, resending unprocessed keys (_resending); raises
    UnprocessedError naming the keys still unread after every attempt, and
    an error that no retry could mend (_stops_batch) as it is.
    ``projection``: the ProjectionExpression and its
    ExpressionAttributeNames, if any."""
    request = dict(projection or (), Keys=keys)
    if consistent_read:
        request["ConsistentRead"] = True
    items = []

    def left(response):  # the keys still to read, and their params
        nonlocal request
        items.extend(response.get("Responses", {}).get(table, ()))
        request = response.get("UnprocessedKeys", {}).get(table)
        return request and {"RequestItems": {table: request}}

    try:
        rest = yield from _resending(
            "BatchGetItem", {"RequestItems": {table: request}}, left)
    except DynamongoError as exc:
        if _stops_batch(exc):
            raise
        raise UnprocessedError(
            f"BatchGetItem on table {table!r} could not read "
            f"{len(request['Keys'])} keys ({exc}): "
            f"{_keys_text(request['Keys'])}", request["Keys"]) from exc
    if not rest:
        return items
    missing = request["Keys"]
    raise UnprocessedError(
        f"BatchGetItem on table {table!r} left {len(missing)} keys unread "
        f"after {_state().settings['batch_attempts']} attempts: "
        f"{_keys_text(missing)}", missing)


def _read_pages(requests, convert, limit=None, page=None):
    """Procedure: ``convert(item)`` of each item of several Query/Scan
    requests, in request order, each item converted as it is decoded:
    read in parallel (_parallel), or one after another (stopping early)
    under a limit; ``page(count)`` is called after each page, or after
    each request's items when they are read in parallel."""
    if limit is None and len(requests) > 1:
        def read(request):
            found = []
            yield from _pages(*request, take=lambda items: _extended(
                found, map(convert, items)))
            return found
        each = page and (lambda items: page(len(items)))
        return [item for items in (yield from _parallel(read, requests,
                                                        each))
                for item in items]
    found = []

    def take(items):
        count = _extended(found, map(convert, itertools.islice(
            items, None if limit is None else limit - len(found))))
        return None if len(found) == limit else count
    then = page and (lambda count, _: page(count))
    for operation, params in requests:
        if (yield from _pages(operation, params, take, then)) is None:
            break
    return found


def _extended(found, items):
    """How many ``items`` were added to the list ``found``."""
    before = len(found)
    found.extend(items)
    return len(found) - before


def _read_each(requests, page=None, take=None):
    """Procedure: the items of several Query/Scan requests, one request
    after another, given to ``take`` or handed out (see _pages);
    ``page(count)`` after each page. Returns how many DynamoDB counted."""
    total, then = 0, page and (lambda count, _: page(count))
    for operation, params in requests:
        counted = yield from _pages(operation, params, take, then)
        if counted is None:  # (take stopped it)
            return None
        total += counted
    return total


def _pages(operation, params, take=None, then=None, limit=None):
    """Procedure: the pages of a Query or Scan, following LastEvaluatedKey.
    Each page's items (on the fast path decoded one by one as they are
    taken: _ItemStream) go to ``take(items)``, which returns how many it
    took or None to read no further, or without ``take`` are handed out
    (_Items). Then ``then(count, answer)``, if given, is told of the page
    (the answer without its items) and returns False to read no further,
    or a procedure to run before the next page, which may return False.
    ``limit()``, if given, is each request's Limit (None: none). A caller
    that stops early sends no further request. Returns the number of
    items DynamoDB counted (with Select=COUNT, the matches), or None when
    stopped."""
    settings = _state().settings
    counted = 0
    while True:
        if limit is not None:
            params = {name: value for name, value in params.items()
                      if name != "Limit"}
            size = limit()
            if size is not None:
                params["Limit"] = size
        answer = yield from _request(operation, _StreamParams(params))
        stream = type(answer) is _ItemStream
        items = answer if stream else _let_go(answer.get("Items", []))
        try:
            count = (yield _Items(items)) if take is None else take(items)
        except _BadAnswer as exc:
            raise _translate_error(exc, operation, params,
                                   settings)[0] from exc
        if count is None:
            return None
        if stream:
            answer = answer.rest
        counted += answer.get("Count", count)  # pyright: ignore
        if then is not None:
            after = then(count, answer)
            if hasattr(after, "send"):  # a procedure
                after = yield from after
            if after is False:
                return None
        last = answer.get("LastEvaluatedKey")  # pyright: ignore
        if not last:
            return counted
        params = dict(params, ExclusiveStartKey=last)


def _let_go(items):
    """The items of a list, each let go of by the list as it is taken (so
    that a caller converting them as they come holds only the
    converted)."""
    items.reverse()
    while items:
        yield items.pop()


def _advance(progress, total):
    """An ``advance(n)`` callback calling ``progress(done so far,
    total)``, or None without ``progress``."""
    if progress is None:
        return None
    done = 0

    def advance(count):
        nonlocal done
        done += count
        progress(done, total)
    return advance


def _count(requests):
    """Procedure: how many items the Query/Scan requests match
    (Select=COUNT: no item is sent back), following every page."""
    total = 0
    for operation, params in requests:
        total += (yield from _pages(operation, dict(params, Select="COUNT"),
                                    take=_how_many)) or 0
    return total


def _how_many(items):
    return sum(1 for _ in items)


# -- Connection --------------------------------------------------------------

# -- Settings, each declared once: its name, default, the environment
# variables giving it (in order of precedence; set_config's value comes
# first), the check of a value set_config is given, and what it means
# (set_config's docstring is made of these).

_SCAN_POLICIES = ("allow", "warn", "refuse")


def _a_string(name, value):
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string, not "
                              f"{type(value).__name__}")


def _an_endpoint(name, value):
    _a_string(name, value)
    _check_endpoint(value, "set_config")


def _a_prefix(name, value):
    if not isinstance(value, str) or not _TABLE_NAME_CHARS.fullmatch(value):
        raise SchemaError(f"{name} {value!r} may hold only letters, digits, "
                          "'_', '-' and '.'")


def _a_count(name, value):
    if type(value) is not int or value < 1:
        raise ValidationError(f"{name} must be an int >= 1, not {value!r}")


def _a_segment_count(name, value):
    _a_count(name, value)
    if value > _MAX_SEGMENTS:
        raise ValidationError(f"{name} must be at most {_MAX_SEGMENTS:,} "
                              f"(DynamoDB's limit), not {value!r}")


def _seconds(name, value):
    if not isinstance(value, (int, float)) or value < 0:
        raise ValidationError(f"{name} must be a number of seconds >= 0, "
                              f"not {value!r}")


def _a_switch(name, value):
    if type(value) is not bool:
        raise ValidationError(f"{name} must be True or False, not {value!r}")


def _a_secret(name, value):
    if not isinstance(value, bytes) or not value:
        raise ValidationError(f"{name} must be non-empty bytes, not "
                              f"{type(value).__name__}")


def _a_policy(name, value):
    if value not in _SCAN_POLICIES:
        raise ValidationError(f"{name} must be one of {_SCAN_POLICIES}, not "
                              f"{value!r}")


_Setting = collections.namedtuple("_Setting",
                                  "default variables check doc secret")
_SETTINGS = {name: _Setting(*declared, secret=name in (
    "secret_access_key", "session_token", "cursor_secret"))
    for name, declared in {
    "access_key_id": (None, ("AWS_ACCESS_KEY_ID",), _a_string,
                      "the AWS access key id"),
    "secret_access_key": (None, ("AWS_SECRET_ACCESS_KEY",), _a_string,
                          "its secret"),
    "region": (_DEFAULT_REGION, ("AWS_REGION_NAME", "AWS_REGION",
                                 "AWS_DEFAULT_REGION"), _a_string,
               "the AWS region (else the profile's ``region``)"),
    "table_prefix": ("", ("AWS_TABLE_PREFIX",), _a_prefix,
                     "prepended to every model's ``__table__``"),
    "endpoint_url": (None, ("AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL"),
                     _an_endpoint,
                     "a local DynamoDB (DynamoDB Local, dynalite, moto "
                     "server), e.g. ``\"http://localhost:8000\"`` (else the "
                     "profile's ``endpoint_url``; None: AWS)"),
    "session_token": (None, ("AWS_SESSION_TOKEN",), _a_string,
                      "the session token of temporary credentials"),
    "profile_name": (None, ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"),
                     _a_string, "the AWS profile giving credentials, region "
                     "and endpoint"),
    "connect_timeout": (5, (), _seconds,
                        "seconds to wait for a connection"),
    "read_timeout": (30, (), _seconds, "seconds to wait for an answer"),
    "max_attempts": (8, (), _a_count,
                     "attempts per request on throttling, 5xx and "
                     "connection errors"),
    "batch_attempts": (16, (), _a_count,
                       "rounds of sending a batch's unprocessed items or "
                       "keys before they are reported"),
    "backoff_base": (0.05, (), _seconds,
                     "seconds before the first retry, doubling each time "
                     "up to ``backoff_cap``; each pause is drawn at random "
                     "below that ceiling (full jitter)"),
    "backoff_cap": (5.0, (), _seconds,
                    "the longest pause between attempts, in seconds"),
    "max_pool_connections": (32, (), _a_count,
                             "connections kept alive (dynamongo's and "
                             "botocore's pools); awaited calls open at most "
                             "this many per event loop"),
    "fast_path": (True, (), _a_switch,
                  "``True`` sends dynamongo's requests without botocore's "
                  "serializer and parser; ``False`` sends them through a "
                  "plain boto3 client"),
    "concurrency": (16, (), _a_count,
                    "threads (tasks, when the call is awaited) sending the "
                    "chunks of one many-item call at once (1 sends them one "
                    "after another)"),
    "scan_segments": (1, (), _a_segment_count,
                      "segments of a parallel Scan (1: a plain Scan); each "
                      "segment is read by its own thread"),
    "scan": ("allow", (), _a_policy,
             "what a read or delete that can only Scan the whole table "
             "does: ``\"allow\"``, ``\"warn\"`` (a warning on the "
             "``dynamongo`` logger saying why no key or index applied) or "
             "``\"refuse\"`` (ExpressionError, nothing sent)"),
    "cursor_secret": (None, (), _a_secret,
                      "bytes signing get_page's cursors (HMAC-SHA256), so "
                      "that a cursor a client altered is refused; without "
                      "it, cursors are checked only for their query and "
                      "key shape"),
    "pause_gc": (True, (), _a_switch,
                 "``True`` pauses Python's cyclic garbage collector while "
                 "get_many, save_many and delete_many build their results "
                 "(see README's Performance); ``False`` leaves it running"),
}.items()}


def _resolve_settings(given):
    """The settings in force and where each came from (``sources``):
    set_config's value (``given``), else the environment's variables, else
    -- for the region and the endpoint -- the AWS profile's configuration
    as botocore reads it, else the default."""
    env = os.environ
    settings, sources = {}, {}
    for name, setting in _SETTINGS.items():
        if name in given:
            settings[name], sources[name] = given[name], "set_config"
            continue
        settings[name], sources[name] = setting.default, "default"
        for variable in setting.variables:
            if env.get(variable):
                settings[name], sources[name] = env[variable], variable
                break
    profile = settings["profile_name"] or "default"
    sections, path = _aws_config()
    names = [f"profile {profile}"] + ["default"] * (profile == "default")
    name = next((name for name in names if name in sections), None)
    config = sections.get(name, {}) if name else {}
    where = f"[{name}] of {path}"
    # botocore's switch for endpoints configured outside the code.
    ignore = (env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
              or config.get("ignore_configured_endpoint_urls", ""))
    if ignore.lower() == "true" and sources["endpoint_url"] != "set_config":
        settings["endpoint_url"], sources["endpoint_url"] = None, "default"
        config = {"region": config.get("region")}
    if sources["region"] == "default" and config.get("region"):
        settings["region"] = config["region"]
        sources["region"] = f"{where}: region"
    if sources["endpoint_url"] == "default":
        services = config.get("services")
        service = _nested(sections.get(f"services {services}", {}).get(
            "dynamodb"))
        if service.get("endpoint_url"):
            settings["endpoint_url"] = service["endpoint_url"]
            sources["endpoint_url"] = f"{where}: services {services}, dynamodb"
        elif config.get("endpoint_url"):
            settings["endpoint_url"] = config["endpoint_url"]
            sources["endpoint_url"] = f"{where}: endpoint_url"
    if settings["endpoint_url"]:
        _check_endpoint(settings["endpoint_url"], sources["endpoint_url"])
    settings["sources"] = sources
    return settings


def _check_endpoint(url, source):
    """ValidationError unless ``url`` (given by ``source``) is an endpoint
    URL: http:// or https://, a host, and a port if not the scheme's. A
    typo must never send a signed request elsewhere, or in plain text."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) \
            and parts.port != 0
    except ValueError:  # a port out of range, or not a number
        valid = False
    if not valid:
        raise ValidationError(
            f"endpoint_url {url!r} (from {source}) is not an endpoint URL: "
            "expected http:// or https:// followed by a host and an "
            "optional port, e.g. 'http://localhost:8000'")


def _aws_config():
    """(sections, path) of the AWS config file: ``AWS_CONFIG_FILE``, else
    ``~/.aws/config``; no sections when there is no such file."""
    import configparser

    path = os.path.expanduser(os.environ.get("AWS_CONFIG_FILE")
                              or "~/.aws/config")
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise DynamongoError(f"cannot read the AWS config file {path}: "
                             f"{exc}") from exc
    return {name: dict(parser.items(name)) for name in parser.sections()}, \
        path


def _nested(value):
    """The settings of a nested value of the AWS config file ("dynamodb ="
    followed by indented "name = value" lines) as a dict."""
    pairs = (line.partition("=") for line in (value or "").splitlines())
    return {name.strip(): text.strip() for name, equals, text in pairs
            if equals}


def _boto3_session(settings):
    import boto3.session  # deferred: importing boto3 costs ~100 ms

    _hide_session_tokens()
    return boto3.session.Session(
        aws_access_key_id=settings["access_key_id"],
        aws_secret_access_key=settings["secret_access_key"],
        aws_session_token=settings["session_token"],
        region_name=settings["region"],
        profile_name=settings["profile_name"])


_TOKEN_HEADER = re.compile(r"(x-amz-security-token(?:': b?'|:))[^'\n]*",
                           re.IGNORECASE)


def _hide_session_tokens():
    """botocore logs each request's headers (endpoint) and canonical
    request (auth) at DEBUG, session token included: mask it there."""
    import logging

    for name in ("botocore.endpoint", "botocore.auth"):
        logger = logging.getLogger(name)
        if not any(isinstance(known, _TokenMask) for known in logger.filters):
            logger.addFilter(_TokenMask())


class _TokenMask:
    """A logging filter masking X-Amz-Security-Token header values."""

    def filter(self, record):
        text = record.getMessage()
        masked = _TOKEN_HEADER.sub(r"\1****", text)
        if masked != text:
            record.msg, record.args = masked, ()
        return True


class _Connected:
    """What one set of settings makes, each part on first use: the boto3
    session and clients, and the wire sending dynamongo's requests. A call
    runs on one of these from start to end: set_config and reset make a
    new one for the calls that start after them, and a forked process
    makes its own (it must not share its parent's sockets)."""

    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.RLock()
        self._session = self._client = self._resource = None
        self._wire = None

    def _made(self, attribute, make):
        """The object in ``attribute``, made by one thread while the others
        wait."""
        made = getattr(self, attribute)
        if made is None:
            with self._lock:
                made = getattr(self, attribute)
                if made is None:
                    made = make()
                    setattr(self, attribute, made)
        return made

    def session(self):
        return self._session or self._made(
            "_session", lambda: _boto3_session(self.settings))

    def boto3(self, kind, botocore_retries=True):
        """A new boto3 client or resource of these settings."""
        from botocore.config import Config

        settings = self.settings
        _check_region(settings["region"])
        retries = ({"mode": "standard",
                    "max_attempts": settings["max_attempts"]}
                   if botocore_retries else {"total_max_attempts": 1})
        config = Config(connect_timeout=settings["connect_timeout"],
                        read_timeout=settings["read_timeout"],
                        max_pool_connections=settings["max_pool_connections"],
                        retries=retries)
        make = self.session().client if kind == "client" \
            else self.session().resource
        return make("dynamodb", endpoint_url=settings["endpoint_url"],
                    config=config)

    def client(self):
        return self._client or self._made("_client",
                                          lambda: self.boto3("client"))

    def resource(self):
        return self._resource or self._made("_resource",
                                            lambda: self.boto3("resource"))

    async def awire(self):
        """``wire()`` from a coroutine: a boto3 client is made in a worker
        thread (importing boto3 takes a while)."""
        if self.settings["fast_path"]:
            return self.wire()
        import asyncio

        return await asyncio.to_thread(self.wire)

    def wire(self):
        """What sends dynamongo's requests: the fast path, or a boto3 client
        with botocore's retries off (_request retries, the same way on
        both paths)."""
        def make():
            if self.settings["fast_path"]:
                return _FastWire(self)
            return _ClientWire(self.boto3("client", botocore_retries=False))
        return self._wire or self._made("_wire", make)


# The connection state a call in progress runs on (see _driven).
_pinned: contextvars.ContextVar[_Connected | None] = contextvars.ContextVar(
    "dynamongo_connection", default=None)


def _state():
    """The connection state of the call in progress, else the current one."""
    return _pinned.get() or Connection._current or Connection._connect()


def _driven(method: Callable[_P, _Procedure[_A]]) -> Callable[_P, _A]:
    """A model method whose body is a procedure (its exchange with
    DynamoDB), run to its end by the driver, on one connection state from
    start to end, its worker threads included: a set_config or reset made
    meanwhile by another thread applies to the calls that start after it.
    The procedure stays at ``.procedure``, for other procedures to run."""
    @functools.wraps(method)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _A:
        return _perform(method(*args, **kwargs))
    call.procedure = method  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def _perform(procedure, state=None):
    """Run a model call's ``procedure`` on one connection state from start
    to end (see _driven and _Pinned)."""
    with _Pinned(state):
        return _run(procedure)


class _Pinned:
    """``with _Pinned(state):`` what runs inside -- a call, a step of an
    iterator -- runs on ``state``, else on the state a call in progress
    has pinned, else on the one in force now."""

    __slots__ = ("state", "token")

    def __init__(self, state=None):
        self.state, self.token = state, None

    def __enter__(self):
        if self.state is not None or _pinned.get() is None:
            self.token = _pinned.set(self.state or _state())

    def __exit__(self, *_):
        if self.token is not None:
            _pinned.reset(self.token)


def _procedure(method):
    """The procedure of a _driven model method, taking its class first."""
    return method.procedure


def _pausing_collector(method: _C) -> _C:
    """Run a many-item method with the garbage collector paused
    (_CollectorPause)."""
    @functools.wraps(method)
    def call(cls, *args, **kwargs):
        with _collector_paused:
            return method(cls, *args, **kwargs)
    return call  # type: ignore[return-value]


class Connection:
    """Where dynamongo sends requests, and with which credentials.

    Each setting comes from ``set_config``, else from the environment, else
    (region and endpoint) from the AWS profile, else its default; README's
    Connection section lists them, and ``Connection.settings()["sources"]``
    says where each came from. Without keys, boto3's credential chain is
    used (an IAM role in Lambda, a profile, SSO). boto3 objects are made on
    first use, once, and shared by all threads; a forked process makes its
    own.
    """

    _lock = threading.RLock()
    _given = {}  # what set_config was given since the last reset
    _current = None  # the _Connected of the settings in force

    @classmethod
    def set_config(cls, *, access_key_id: str | None = None,
                   secret_access_key: str | None = None,
                   region: str | None = None, table_prefix: str | None = None,
                   endpoint_url: str | None = None,
                   session_token: str | None = None,
                   profile_name: str | None = None,
                   connect_timeout: float | None = None,
                   read_timeout: float | None = None,
                   max_attempts: int | None = None,
                   batch_attempts: int | None = None,
                   backoff_base: float | None = None,
                   backoff_cap: float | None = None,
                   max_pool_connections: int | None = None,
                   fast_path: bool | None = None,
                   concurrency: int | None = None,
                   scan_segments: int | None = None, scan: str | None = None,
                   cursor_secret: str | bytes | None = None,
                   pause_gc: bool | None = None) -> None:
        """Merge the settings given over those set before (an argument left
        at None changes nothing); calls that start afterwards use them, and
        calls already running finish on the settings they began with."""
        # The parameters are the settings' names (a test holds them so).
        given = {name: value for name, value in locals().items()
                 if name in _SETTINGS and value is not None}
        for name, value in given.items():
            _SETTINGS[name].check(name, value)
        with cls._lock:
            cls._given = dict(cls._given, **given)
            cls._current = None

    @classmethod
    def reset(cls) -> None:
        """Forget ``set_config``: calls that start afterwards use the
        environment's settings."""
        with cls._lock:
            cls._given = {}
            cls._current = None

    @classmethod
    def settings(cls, masked: bool = True) -> dict[str, Any]:
        """The settings in force, with ``sources``: where each came from
        (``"set_config"``, an environment variable, the AWS config file's
        profile, or ``"default"``). The secret key and session token are
        shown as ``'****'`` unless ``masked`` is False."""
        if masked is not True and masked is not False:
            raise ValidationError(f"masked must be True or False, not "
                                  f"{masked!r}")
        settings = _state().settings
        if masked:
            settings = dict(settings, **{
                name: "****" for name, setting in _SETTINGS.items()
                if setting.secret and settings[name]})
        return settings

    @classmethod
    def add_listener(cls, listener: Any) -> None:
        """Tell ``listener`` of every request dynamongo sends, from now on,
        in every thread (as ``pymongo.monitoring.register``): it may have
        ``started(event)``, ``succeeded(event)`` and ``failed(event)``
        methods, each given the RequestEvent of one attempt, from the
        thread or task sending it; attempts already started are not told
        to it. While any listener is registered, data requests ask
        DynamoDB for the capacity they consume. A listener that raises is
        logged and changes nothing else."""
        global _listeners
        if not any(callable(getattr(listener, name, None)) for name in
                   ("started", "succeeded", "failed")):
            raise ValidationError(
                f"add_listener takes an object with started(event), "
                f"succeeded(event) or failed(event) methods, not "
                f"{listener!r}")
        with cls._lock:
            _listeners = _listeners + (listener,)

    @classmethod
    def remove_listener(cls, listener: Any) -> None:
        """Stop telling ``listener`` of requests: of those starting from
        now on (it still hears how those it heard start ended)."""
        global _listeners
        with cls._lock:
            if listener not in _listeners:
                raise ValidationError(f"remove_listener: {listener!r} is "
                                      "not a registered listener")
            _listeners = tuple(known for known in _listeners
                               if known is not listener)

    @classmethod
    def table_prefix(cls) -> str:
        """The prefix of every table name ('' when none)."""
        return _state().settings["table_prefix"]

    @classmethod
    def _connect(cls):
        """The current connection state, made from the settings when there
        is none."""
        with cls._lock:
            if cls._current is None:
                cls._current = _Connected(_resolve_settings(cls._given))
            return cls._current

    @classmethod
    def _forget_in_child(cls):
        """After fork: the child makes its own sockets, threads and locks."""
        cls._lock = threading.RLock()
        cls._current = None

    @classmethod
    def client(cls) -> Any:
        """The low-level boto3 DynamoDB client (botocore's standard retries,
        ``max_attempts`` attempts), for requests of your own."""
        return _state().client()

    @classmethod
    def resource(cls) -> Any:
        """The boto3 DynamoDB service resource."""
        return _state().resource()

    @classmethod
    def get_table(cls, name: str) -> Any:
        """The boto3 ``Table`` resource of the table called ``name``."""
        if not isinstance(name, str):
            raise ValidationError(f"get_table takes a table name, a str, "
                                  f"not {type(name).__name__}")
        return cls.resource().Table(name)


def _settings_doc(method):
    """Add each setting's parameter line to set_config's docstring, from
    its declaration (_SETTINGS)."""
    lines = [method.__doc__, ""]
    for name, setting in _SETTINGS.items():
        origin = [f"``{variable}``" for variable in setting.variables]
        if setting.default is not None:
            origin.append(f"default {setting.default!r}")
        lines.append(f"        :param {name}: {setting.doc}"
                     + (f" ({'; '.join(origin)})." if origin else "."))
    method.__doc__ = "\n".join(lines) + "\n        "


_settings_doc(vars(Connection)["set_config"].__func__)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=Connection._forget_in_child)
    os.register_at_fork(after_in_child=_collector_paused.forget_in_child)


# -- Results and arguments of model calls ------------------------------------

Failure = collections.namedtuple("Failure", "item error")
Failure.__doc__ = """An item a batch could not write: ``item``, the item as
given, and ``error``, the exception that stopped it."""


class BatchResult(Generic[_M]):
    """What save_many or delete_many did.

    ``success`` lists the items written or deleted; ``fail`` lists a
    ``Failure(item, error)`` for each item that was not, with the reason.
    """

    def __init__(self, success: list[_M] | None = None,
                 fail: list[Failure] | None = None) -> None:
        self.success: list[_M] = [] if success is None else success
        self.fail: list[Failure] = [] if fail is None else fail

    @property
    def success_count(self) -> int:
        return len(self.success)

    @property
    def fail_count(self) -> int:
        return len(self.fail)

    def __repr__(self):
        return (f"<BatchResult success_count={self.success_count} "
                f"fail_count={self.fail_count}>")


class KeysIn:
    """Keys named by ``Model.keys_in(values)``: a get_many/delete_many
    strategy read by BatchGetItem; ``model`` is the model they belong to,
    ``keys`` the keys as DynamoDB takes them."""

    __slots__ = ("model", "keys")

    def __init__(self, model: Any, keys: Any) -> None:
        self.model = model
        self.keys = keys

    def __repr__(self):
        return f"<{self.model.__name__}.keys_in: {len(self.keys)} keys>"


_RETURN_VALUES = ("ALL_NEW", "ALL_OLD", "UPDATED_NEW", "UPDATED_OLD", "NONE")


def _value_at(item, path):
    """The AttributeValue at ``path`` of a DynamoDB item, or None."""
    av = {"M": item}
    for part in path:
        container = av.get("L" if isinstance(part, int) else "M")
        if container is None:
            return None
        try:
            av = container[part]
        except (IndexError, KeyError):
            return None
    return av


def _check_key_value(value, limit):
    """ValidationError unless DynamoDB takes ``value`` (a string or
    binary key's) as a key value: not empty, at most ``limit`` bytes (of
    UTF-8, for a string)."""
    if not value:
        raise ValidationError("is a key, so it must not be empty")
    if type(value) is str:
        if len(value) * 4 <= limit:
            return
        value = value.encode()
    if len(value) > limit:
        raise ValidationError(f"is a key of {len(value)} bytes; DynamoDB "
                              f"allows at most {limit}")


def _is_list_like(value):
    """A list, tuple, set or generator of entries (not a str, dict, model
    instance or condition, which are iterable or single strategies)."""
    return hasattr(value, "__iter__") and not isinstance(
        value, (str, bytes, dict, Model, Condition))


def _limit(limit):
    """``limit``, an int >= 1 or None, else ValidationError."""
    if limit is not None and (type(limit) is not int or limit < 1):
        raise ValidationError(f"limit must be an int >= 1 or None, not "
                              f"{limit!r}")
    return limit


def _segments(segments):
    """The number of Scan segments: ``segments``, or the setting."""
    if segments is None:
        return _state().settings["scan_segments"]
    if type(segments) is not int or not 1 <= segments <= _MAX_SEGMENTS:
        raise ValidationError(f"segments must be an int from 1 to "
                              f"{_MAX_SEGMENTS:,} (DynamoDB's limit), not "
                              f"{segments!r}")
    return segments


def _is_equality(condition):
    """Whether ``condition`` is ``field == value``."""
    return isinstance(condition, _Comparison) and condition.operator == "="


def _is_hash_key_condition(condition):
    """Whether a Query's KeyConditionExpression may hold this condition on
    a hash key (an in_() becomes one Query per value)."""
    return isinstance(condition, _In) or _is_equality(condition)


def _testing(conditions, name, kind):
    """The first of ``conditions`` testing the field ``name`` for which
    ``kind(condition)`` holds, or None."""
    return next((condition for condition in conditions
                 if _tested_name(condition) == name and kind(condition)),
                None)


def _is_range_key_condition(condition):
    """Whether a Query's KeyConditionExpression may hold this condition."""
    if isinstance(condition, _Comparison):
        return condition.operator in ("=", "<", "<=", ">", ">=")
    return isinstance(condition, _Between) or (
        isinstance(condition, _Function)
        and condition.function == "begins_with")


# -- Indexes and read plans --------------------------------------------------

_INDEX_LIMITS = {False: 20, True: 5}  # DynamoDB's GSIs and LSIs per table
_MAX_INCLUDED = 100  # its limit on projected attributes over all indexes
_MAX_INDEX_KEYS = 4  # and on the fields of one multi-attribute GSI key


class _Index:
    """What GlobalIndex and LocalIndex declare: a name, key fields (names)
    and a projection."""

    local = False

    def __init__(self, name, hash_key, range_key, projection):
        self.name = name
        self.hash_key = hash_key
        self.range_key = range_key
        self.projection = projection

    def __repr__(self):
        return f"<{type(self).__name__} {self.name!r}>"


class GlobalIndex(_Index):
    """A global secondary index, declared in a model's ``__indexes__``.

    :param name: the index name (3 to 255 of ``a-z A-Z 0-9 _ . -``).
    :param hash_key: the name of the field partitioning the index, or a
        tuple of up to 4 names (a multi-attribute key).
    :param range_key: the name of the field ordering items in a partition
        (or a tuple of up to 4), or None.
    :param projection: ``"ALL"`` (default), ``"KEYS_ONLY"``, or a list of
        field names the index holds besides the keys.
    :param read_units: provisioned reads (default: the table's; none under
        ``PAY_PER_REQUEST``).
    :param write_units: provisioned writes, likewise.
    """

    def __init__(self, name: str, hash_key: str | tuple[str, ...],
                 range_key: str | tuple[str, ...] | None = None,
                 projection: str | Iterable[str] = "ALL",
                 read_units: int | None = None,
                 write_units: int | None = None) -> None:
        super().__init__(name, hash_key, range_key, projection)
        self.read_units = read_units
        self.write_units = write_units


class LocalIndex(_Index):
    """A local secondary index: the table's hash key with another range
    key, declared in ``__indexes__``; it exists only from the table's
    creation.

    :param name: the index name (3 to 255 of ``a-z A-Z 0-9 _ . -``).
    :param range_key: the name of the field ordering items in a partition.
    :param projection: ``"ALL"`` (default), ``"KEYS_ONLY"``, or a list of
        field names the index holds besides the keys.
    """

    local = True

    def __init__(self, name: str, range_key: str,
                 projection: str | Iterable[str] = "ALL") -> None:
        super().__init__(name, None, range_key, projection)


class _KeySchema:
    """A key a read can query by: the table's (``index`` None) or an
    index's, with its fields resolved. ``projected`` is the set of names
    the index holds, None when it holds every field."""

    __slots__ = ("index", "hash", "range", "local", "projected", "order",
                 "declared")

    def __init__(self, index, hash_fields, range_fields, *, local=False,
                 projected=None, order=-1, declared=None):
        self.index, self.hash, self.range = index, hash_fields, range_fields
        self.local, self.projected = local, projected
        self.order, self.declared = order, declared

    def names(self):
        return [name for name, _ in self.hash + self.range]

    def where(self):
        return "the table" if self.index is None else \
            f"{'local' if self.local else 'global'} index {self.index!r}"


class Plan:
    """How a read finds its items, as ``Model.explain()`` tells it without
    sending anything.

    ``operation`` is ``"GetItem"``, ``"BatchGetItem"``, ``"Query"`` or
    ``"Scan"``; ``index`` the index queried, or None; ``key_condition`` and
    ``filter`` are readable text with names and values filled in (None
    when there is none); ``reason`` says in one line why this plan and not
    a better one. ``str(plan)`` shows all of it.
    """

    _keys: list[dict[str, Any]] | None = None  # what a BatchGetItem reads
    # What a Query or Scan sends: (operation, params).
    _requests: Sequence[tuple[str, dict[str, Any]]] | _Segments = ()
    _loaded: frozenset[str] | None = None  # the fields it reads, if not all
    _start: Sequence[str] = ()  # the names of its requests' start keys
    _fixed: Sequence[dict[str, Any]] = ()  # each request's hash key values
    _expiry: str | None = None  # the TTLField whose passed items it omits
    _entity: str | None = None  # the entity whose items alone it reads

    def __init__(self,
                 operation: Any, index: Any = None, key_condition: Any = None,
                 filter: Any = None, reason: Any = "") -> None:
        self.operation, self.index = operation, index
        self.key_condition, self.filter = key_condition, filter
        self.reason = reason

    def __str__(self):
        lines = [f"{self.operation} on "
                 + (f"index {self.index}" if self.index else "the table")]
        if self.key_condition:
            lines.append(f"  key condition: {self.key_condition}")
        if self.filter:
            lines.append(f"  filter: {self.filter}")
        if self._expiry:
            lines.append(f"  expired items ({self._expiry} passed) left out")
        if self._entity:
            lines.append(f"  items of other entities than {self._entity!r} "
                         "left out")
        lines.append(f"  why: {self.reason}")
        return "\n".join(lines)

    def __repr__(self):
        return f"<Plan {self.operation}" + (
            f" on {self.index}>" if self.index else ">")


class _Segments:
    """The requests of a Scan in ``total`` segments (``params`` without
    Segment and TotalSegments), each made when it is reached: DynamoDB
    allows up to a million segments, too many requests to hold at once."""

    __slots__ = ("operation", "params", "total")

    def __init__(self, operation, params, total):
        self.operation, self.params, self.total = operation, params, total

    def __len__(self):
        return self.total

    def __getitem__(self, segment):
        if not 0 <= segment < self.total:
            raise IndexError(segment)
        if self.total == 1:
            return self.operation, self.params
        return self.operation, dict(self.params, Segment=segment,
                                    TotalSegments=self.total)

    def __iter__(self):
        return map(self.__getitem__, range(self.total))

    def changed(self, change):
        """These segments of the request ``change(operation, params)``."""
        operation, params = change(self.operation, self.params)
        return _Segments(operation, params, self.total)


class Page(list[_M]):
    """The instances of one page of ``Model.get_page``: ``cursor`` is the
    opaque, URL-safe text to pass back as ``cursor=`` for the next page
    (None when nothing comes after), ``scanned_count`` the items DynamoDB
    examined for this page."""

    def __init__(self, items: Iterable[_M] = (), cursor: str | None = None,
                 scanned_count: int = 0) -> None:
        super().__init__(items)
        self.cursor, self.scanned_count = cursor, scanned_count

    def __repr__(self):
        return (f"<Page of {len(self)} cursor={self.cursor!r} "
                f"scanned_count={self.scanned_count}>")


_Query = collections.namedtuple("_Query", "schema key_parts values rest score")
_Query.__doc__ = """A Query a key schema can serve: the conjuncts in its key
condition (``values``: the in_() among them, one Query per value), the
rest (its filter), and how good it is (``score``, the higher the
better)."""

_PRESENCE_FUNCTIONS = ("begins_with", "contains", "attribute_exists")


def _tested_name(condition):
    """The top-level field name a single condition tests, or None."""
    field = getattr(condition, "field", None)
    if field is not None and len(field.path) == 1:
        return field.path[0]
    return None


def _equal_values(parts, fields):
    """{field name: value} of the ``==`` among ``parts`` (top-level
    fields; the first of each)."""
    equal = {}
    for part in parts:
        name = _tested_name(part)
        if name in fields and _is_equality(part) and name not in equal:
            equal[name] = fields[name]._load(part.value)
    return equal


def _implies_presence(condition, name):
    """Whether an item meeting ``condition`` has the attribute ``name``
    (``<>`` holds for a missing attribute; the others do not)."""
    if _tested_name(condition) != name:
        return False
    if isinstance(condition, _Comparison):
        return condition.operator != "<>"
    if isinstance(condition, _Function):
        return condition.function in _PRESENCE_FUNCTIONS
    return isinstance(condition, (_Between, _In))


def _condition_text(conditions):
    """Readable text of the ANDed ``conditions``, or None."""
    condition = _and_all(conditions)
    return None if condition is None else condition._render(
        _Expression(inline=True))


# -- The planner -------------------------------------------------------------

class _Read:
    """One read's arguments, checked once: the strategy, and the options
    get_many, iter_many, get_page, count, delete_many and explain take
    (``fields`` as the names to read, or None; ``what`` names the call in
    messages). The planner's input, beside the model's facts."""

    __slots__ = ("what", "strategy", "descending", "consistent_read",
                 "limit", "index", "fields", "segments", "include_expired",
                 "key_alone")

    def __init__(self, meta, what, strategy, *, descending=False,
                 consistent_read=False, limit=None, index=None, fields=None,
                 segments=None, include_expired=False, key_alone=False):
        self.what, self.strategy = what, strategy
        # Whether one key (as get_one takes it) is a read: a GetItem.
        self.key_alone = key_alone
        self.descending, self.consistent_read = descending, consistent_read
        self.limit, self.index = _limit(limit), index
        self.fields = meta.projection(fields, what)
        self.segments = _segments(segments)
        self.include_expired = include_expired

    @classmethod
    def of(cls, meta, what, arguments, key_alone=False):
        """The _Read of a read method's ``locals()``: its ``strategy``,
        and its parameters named as this class's options."""
        return cls(meta, what, arguments["strategy"], key_alone=key_alone,
                   **{name: value for name, value in arguments.items()
                      if name in _READ_OPTIONS})


_READ_OPTIONS = frozenset(("descending", "consistent_read", "limit", "index",
                           "fields", "segments", "include_expired"))


_EVERY_ITEM = object()  # the strategy of count() without one


class _Planner:
    """Plans one read, purely: from a model's facts (``meta``) and a _Read
    comes the Plan -- the keys it names (BatchGetItem), else the best
    Query any key schema (the table's, each index's; only ``index`` when
    given) can serve, else a Scan. It sends nothing, reads no setting and
    logs nothing: the ``scan`` setting applies when a plan is run
    (_runnable), so that explain() shows what would be sent."""

    def __init__(self, meta, read):
        self.meta, self.read = meta, read
        self.table = meta.table_name()

    def plan(self):
        """The Plan (of _EVERY_ITEM: a Scan of them all); unless
        ``include_expired``, it leaves out the items whose TTL has passed
        (see _Metadata.requests and read)."""
        meta, read = self.meta, self.read
        strategy = read.strategy
        if strategy is _EVERY_ITEM:  # of the table, or of ``index``
            if read.index is not None:
                self.forced_schema()
            plan = Plan("Scan", read.index, reason="every item")
            plan._requests = [self.request("Scan", read.index, None, None)]
        elif read.key_alone and not (_is_list_like(strategy) or isinstance(
                strategy, (Condition, KeysIn))):
            key, _ = meta.strategy(strategy)
            return Plan("GetItem", key_condition=_key_text(key),
                        reason="one key")
        elif isinstance(strategy, KeysIn):
            if not issubclass(meta.model, strategy.model):
                raise ValidationError(
                    f"{meta.name}: got the keys of "
                    f"{strategy.model.__name__}.keys_in(...)")
            plan = self.keys_plan(strategy.keys, "the keys keys_in() names")
        elif not isinstance(strategy, Condition):
            keys = [key for key, _, _ in meta.entries(strategy, read.what)]
            plan = self.keys_plan(keys, f"a list of {len(keys)} keys")
        else:
            plan = self.condition_plan(strategy)
        if meta.ttl is not None and not read.include_expired:
            plan._expiry = meta.ttl
        plan._entity = meta.entity
        return plan

    def keys_plan(self, keys, reason, key_condition=None):
        """The BatchGetItem Plan of ``keys``."""
        if self.read.index is not None and key_condition is None:
            raise ExpressionError(f"{self.meta.name}.{self.read.what}: "
                                  "index= takes a condition, not keys")
        plan = Plan("BatchGetItem", key_condition=key_condition,
                    reason=reason)
        plan._keys, plan._loaded = keys, self.read.fields
        return plan

    def condition_plan(self, condition):
        """The Plan of a condition: keys (in_() on the hash key of a table
        without a range key), a Query, else a Scan."""
        meta, read = self.meta, self.read
        parts = condition._conjuncts()
        hash_name = meta.key_names[0]
        first = parts[0]
        if read.index is None and len(meta.key_names) == 1 \
                and len(parts) == 1 and isinstance(first, _In) \
                and _tested_name(first) == hash_name:
            _check_field_of(meta.model, first.field)
            return self.keys_plan(
                [{meta.key_attrs[0]: av} for av in first.values],
                f"in_() on the hash key {hash_name}", _condition_text(parts))
        schemas = meta.key_schemas if read.index is None \
            else [self.forced_schema()]
        best, refusals = None, []
        for schema in schemas:
            implied, covered = self.implied(schema, parts)
            query = self.query_of(schema, [
                part for part in parts
                if not any(part is done for done in covered)] + implied)
            if isinstance(query, str):
                refusals.append(query)
            elif best is None or query.score > best.score:
                best = query
        if best is None and read.index is not None:
            raise ExpressionError(f"{meta.name}.{read.what}: {refusals[0]}")
        if best is not None:
            return self.query_plan(best, refusals)
        plan = Plan("Scan", filter=_condition_text(parts),
                    reason="no key or index applies: " + "; ".join(refusals))
        plan._loaded, plan._start = read.fields, meta.key_names
        plan._requests = _Segments(*self.request("Scan", None, None,
                                                 condition), read.segments)
        return plan

    def forced_schema(self):
        """The key schema of the index ``index=`` names."""
        meta, index = self.meta, self.read.index
        where = f"{meta.name}.{self.read.what}"
        for schema in meta.key_schemas:
            if schema.index == index:
                if self.read.consistent_read and not schema.local:
                    raise ExpressionError(
                        f"{where}: {index!r} is a global index, whose reads "
                        "are never strongly consistent: drop "
                        "consistent_read=True")
                return schema
        names = [schema.index for schema in meta.key_schemas if schema.index]
        raise ExpressionError(
            f"{where}: no index named {index!r}; {meta.name} has "
            f"{', '.join(map(repr, names)) or 'none'}")

    def query_of(self, schema, parts):
        """A _Query of ``schema`` for the ANDed ``parts``, or why it cannot
        serve them (text)."""
        chosen = schema.index is not None and self.read.index is None
        refusal = chosen and self.index_refusal(schema)
        if refusal:
            return refusal
        found = self.key_parts(schema, parts)
        if isinstance(found, str):
            return found
        key_parts, values, rest = found
        # DynamoDB refuses a Query filter naming a key attribute.
        named = {field.path[0] for part in rest for field in part._fields()}
        clash = [name for name in schema.names() if name in named]
        if clash:
            return f"{schema.where()}: the filter would name its key " \
                   f"{clash[0]}"
        if chosen:
            # An item lacking a key attribute of the index is not in it.
            for name, field in schema.hash + schema.range:
                if not field.required and not any(
                        _implies_presence(part, name) for part in parts):
                    return (f"{schema.where()} leaves out items without "
                            f"{name} (index= reads it)")
        score = (schema.index is None, len(key_parts), schema.local,
                 -schema.order)
        return _Query(schema, key_parts, values, rest, score)

    def implied(self, schema, parts):
        """(the key conditions ``parts`` imply on ``schema``'s KeyTemplate
        keys, from the conditions on the fields they name -- == on a hash
        template all of whose fields have ==; on a range template, see
        KeyTemplate._implied -- and the parts they stand for). A part
        stays in the filter unless it is the == on the one field of a
        template it fixes: other templates may make one text of several
        values (``{a}#{b}``), and a range within a prefix may hold more."""
        keys = [field for _, field in schema.hash + schema.range
                if isinstance(field, KeyTemplate)]
        if not keys:
            return [], []
        fields = self.meta.fields
        equal, ranged = _equal_values(parts, fields), {}
        for part in parts:
            name = _tested_name(part)
            if name in fields and not _is_equality(part) and \
                    _is_range_key_condition(part):
                ranged.setdefault(name, part)
        implied, covered = [], []
        for field in keys:
            if any(field is hashed for _, hashed in schema.hash):
                text, missing = field._text_of(equal, fields)
                condition = None if missing else field == text
            else:
                condition = field._implied(equal, ranged, fields)
            if condition is None:
                continue
            implied.append(condition)
            if _is_equality(condition) and len(field.names) == 1:
                covered.append(next(
                    part for part in parts if _is_equality(part)
                    and _tested_name(part) == field.names[0]))
        return implied, covered

    def index_refusal(self, schema):
        """Why an index the planner would choose cannot serve the read
        (text), or None: a global index read consistently, or one not
        holding the fields read."""
        where = schema.where()
        if self.read.consistent_read and not schema.local:
            return f"{where} is global (no consistent reads)"
        needed = self.meta.fields if self.read.fields is None \
            else self.read.fields
        if schema.projected is not None and \
                not schema.projected.issuperset(needed):
            missing = [name for name in needed
                       if name not in schema.projected]
            return (f"{where} does not hold {', '.join(missing)} "
                    "(index= reads it)")
        return None

    @staticmethod
    def key_parts(schema, parts):
        """(the parts of ``parts`` in the KeyConditionExpression of
        ``schema``, its in_() part or None, the rest), or why it cannot
        (text): == or in_() on each hash field, then range key conditions
        as long as they are ==."""
        where = schema.where()
        rest, key_parts, values = list(parts), [], None
        for name, _ in schema.hash:
            part = _testing(rest, name, _is_hash_key_condition)
            if part is None:
                return f"{where} needs == on {name}"
            if isinstance(part, _In):
                if values is not None:
                    return f"{where}: in_() on two of its hash fields"
                values = part
            key_parts.append(part)
            rest = [other for other in rest if other is not part]
        for name, _ in schema.range:
            part = _testing(rest, name, _is_range_key_condition)
            if part is None:
                break
            key_parts.append(part)
            rest = [other for other in rest if other is not part]
            if not _is_equality(part):
                break
        return key_parts, values, rest

    def query_plan(self, query, refusals):
        """The Plan of a _Query: a request per in_() value, and why."""
        meta, read = self.meta, self.read
        schema = query.schema
        key_names = [str(_tested_name(part)) for part in query.key_parts]
        reason = (f"{' and '.join(key_names)} in the key of "
                  f"{schema.where()}")
        if query.values is not None:
            reason += ", one Query per in_() value"
        if schema.index is not None and refusals:
            reason += f"; {refusals[0]}"
        plan = Plan("Query", schema.index,
                    _condition_text(query.key_parts),
                    _condition_text(query.rest), reason)
        # A forced index holding fewer fields gives partial instances.
        plan._loaded = read.fields if schema.projected is None \
            or read.fields else \
            schema.projected.intersection(meta.fields) or None
        rest = _and_all(query.rest)
        values = [None] if query.values is None else list({
            tuple(value.items()): value
            for value in query.values.values}.values())
        plan._start = tuple(dict.fromkeys(meta.key_names
                                          + tuple(schema.names())))
        equal = {_tested_name(part): part.value for part in query.key_parts
                 if _is_equality(part)
                 and _tested_name(part) in dict(schema.hash)}
        in_name = query.values is not None and _tested_name(query.values)
        plan._fixed = [  # pyright: ignore
            dict(equal, **({in_name: value} if in_name else {}))
            for value in values]
        plan._requests = [self.request(
            "Query", schema.index,
            [part if part is not query.values else
             _Comparison(part.field, "=", value)
             for part in query.key_parts], rest)
            for value in values]
        return plan

    def request(self, operation, index, key_parts, rest):
        """(operation, params) of one Query or Scan."""
        read = self.read
        expression = _Expression(model=self.meta.model)
        params = {"TableName": self.table}
        if index is not None:
            params["IndexName"] = index
        if key_parts is not None:
            key_condition: Any = _and_all(key_parts)
            params["KeyConditionExpression"] = key_condition._render(
                expression)
            params["ScanIndexForward"] = not read.descending
        if self.meta.entity is not None:  # its own items, not others'
            rest = _and_all([rest, self.meta.entity_field
                             == self.meta.entity])
        if rest is not None:
            params["FilterExpression"] = rest._render(expression)
        elif read.limit:
            params["Limit"] = read.limit
        if read.fields:
            self.meta.project(params, expression, read.fields)
        if read.consistent_read:
            params["ConsistentRead"] = True
        return operation, expression.into(params)


def _runnable(meta, read):
    """The Plan of ``read``, about to be run: a Scan meets the ``scan``
    setting (warned of, or refused)."""
    plan = _Planner(meta, read).plan()
    if plan.operation == "Scan":
        policy = _state().settings["scan"]
        if policy == "refuse":
            raise ExpressionError(
                f"{meta.name}.{read.what} would Scan the whole table "
                f"(scan='refuse'): {plan.reason}")
        if policy == "warn":
            import logging

            logging.getLogger("dynamongo").warning(
                "%s.%s scans the whole table: %s", meta.name, read.what,
                plan.reason)
    return plan


# -- A model's codec ---------------------------------------------------------
#
# Each model has four functions of its own, written out as Python source
# from its fields when first used, so that its hot paths do no per-value
# dispatch (the plain methods of a field are called only for the values
# its fast path does not cover):
#
#   _meta.validate_item(item) -> (native values, DynamoDB item)
#   _meta.from_item(DynamoDB item) -> instance
#   _meta.item_json(DynamoDB item) -> its JSON text
#   _meta.identity(DynamoDB item or key) -> a hashable identity of its key
#
# Each is compiled under a file name of its own, such as
# ``<dynamongo app.models.User.validate_item>``, whose source linecache
# holds: tracebacks, pdb, inspect.getsource and profilers show it, and
# ``Model._meta.source(name)`` returns it. Its locals are named after the
# fields (``email_value``, ``email_av``).

@functools.lru_cache(maxsize=None)
def _codec_names():
    """What generated code may use besides builtins and its own names
    (none of which ends like a field's locals: _value, _av, _validate,
    _dump, _load, _default)."""
    import decimal
    import uuid

    return {
        "json": _encode_json, "json_string": json.encoder.encode_basestring,
        "datetime": datetime.datetime, "date": datetime.date,
        "fromisoformat": _from_isoformat,
        "date_fromisoformat": datetime.date.fromisoformat,
        "UUID": uuid.UUID, "Decimal": decimal.Decimal,
        "load_int": _load_int, "plain_email": _ASCII_EMAIL.fullmatch,
        "utf8": _is_utf8, "generic_av": _generic_to_av,
        "generic_map": _generic_map, "av_size": _av_size,
        "number_identity": _number_identity, "binary": _binary,
        "base64_text": _base64_text,
        "check_key": _check_key_value, "located": _located,
        "describe": _describe, "ValidationError": ValidationError,
    }


def _local_names(fields):
    """A distinct Python identifier for each field name, from which the
    generated code names its locals: ``email`` for "email", ``first_name``
    for "first name"."""
    names, used = [], set()
    for name in fields:
        # ASCII only: Python folds some other characters together (NFKC).
        local = re.sub(r"[^A-Za-z0-9_]|^(?=\d)", "_", name)
        while local in used:
            local += "_"
        used.add(local)
        names.append(local)
    return names


def _compile(meta, name, lines, scope):
    """The function ``name`` defined by the source ``lines``, compiled
    under a file name of its own whose source linecache keeps; ``scope``
    holds the names it uses besides _codec_names()."""
    import linecache

    model = meta.model
    source = "\n".join(lines) + "\n"
    kept = source.splitlines(True)
    where = f"{model.__module__}.{model.__qualname__}.{name}"
    filename, number = f"<dynamongo {where}>", 1
    # Models of the same name (made again and again in one module) each
    # keep their own source.
    while filename in linecache.cache and \
            linecache.cache[filename][2] != kept:  # pyright: ignore
        number += 1
        filename = f"<dynamongo {where} #{number}>"
    linecache.cache[filename] = (len(source), None, kept, filename)
    scope = dict(_codec_names(), **scope)
    exec(compile(source, filename, "exec"), scope)  # noqa: S102 -- ours
    function = scope[name]
    function.__qualname__ = f"{model.__qualname__}._meta.{name}"
    function.__module__ = model.__module__
    meta.sources[name] = source
    return function


def _write_validate_item(meta):
    """``validate_item(item) -> (native values, DynamoDB item)`` of a dict
    or an instance to save; a ValidationError names every invalid field.

    A value passing its field's fast-path test is converted inline, any
    other by the field's validate() and _dump(). The native values start
    as a copy of the item's and change where a value does (converted,
    copied, defaulted). Names that are not fields are looked for only when
    the item has more names than fields with a value. The item is measured
    only when the sum of its fields' size bounds could pass DynamoDB's
    limit."""
    fields = meta.fields
    scope = {"values_of": meta.values_of, "unknown": meta.unknown_names,
             "check_size": meta.check_size}
    lines = ["def validate_item(item):",
             "    values = item if type(item) is dict else values_of(item)",
             "    get = values.get",
             "    native, stored, errors = dict(values), {}, {}",
             "    absent = size = 0"]
    fixed = 0  # bytes the item may take besides those summed in ``size``
    measured, exact = False, []
    for local, (name, field) in zip(_local_names(fields), fields.items()):
        if isinstance(field, KeyTemplate):  # made last, from the others
            continue
        value, av = f"{local}_value", f"{local}_av"
        fast = _fast_path_of(field, value, av)
        scope[f"{local}_validate"] = field.validate
        scope[f"{local}_dump"] = field._dump
        lines += _presence_source(meta, name, field, local, scope)
        body = _conversion_source(name, field, local, fast)
        attr = field.stored_path[0]  # (the name in DynamoDB)
        body.append(f"stored[{attr!r}] = {av}")
        limit = meta.key_limits.get(name)
        kind = field.attribute_type
        if kind in ("S", "B") and limit:  # a table or index key
            body += [f"if not 0 < len({av}[{kind!r}]) <= "
                     f"{limit // 4 if kind == 'S' else limit}:",
                     f"    check_key({av}[{kind!r}], {limit})"]
        fixed += len(attr.encode())
        if type(fast.size) is int:
            fixed += fast.size
        elif fast.size:
            body.append(f"size += {fast.size}")
            measured = True
        else:  # measured exactly, once: check_size is told
            lines.insert(5, f"    {local}_size = 0")
            body += [f"{local}_size = av_size({av})",
                     f"size += {local}_size"]
            exact.append(f"{attr!r}: {local}_size")
            measured = True
        lines += ["        try:",
                  *(" " * 12 + line for line in body),
                  "        except ValidationError as exc:",
                  f"            errors.update(located(exc, {name!r}).errors)"]
    if meta.templates or meta.entity:
        scope["templates"] = meta.fill_templates
        lines.append("    size += templates(native, stored, errors, "
                     "values is item)")
        measured = True
    lines += [f"    if len(values) + absent > "
              f"{len(fields) - len(meta.templates)} and values is item:",
              "        errors.update(unknown(item))",
              "    if errors:",
              "        raise ValidationError("
              f"{meta.name + ': invalid item: '!r} + describe(errors), "
              "errors)"]
    if measured or fixed > _MAX_ITEM_BYTES:
        lines += [f"    if size > {_MAX_ITEM_BYTES - fixed}:",
                  f"        check_size(stored, {{{', '.join(exact)}}})"]
    lines.append("    return native, stored")
    return _compile(meta, "validate_item", lines, scope)


def _presence_source(meta, name, field, local, scope):
    """validate_item's lines taking the value of field ``name``, counting
    it absent, defaulting it, and refusing it missing when it is required;
    they end in the block that converts a value (_conversion_source)."""
    value = f"{local}_value"
    required = field.required or name in meta.key_names
    lines = [f"    {value} = get({name!r})"]
    if field._is_absent is Field._is_absent:
        lines += [f"    if {value} is None:", "        absent += 1"]
    else:  # (a SetField's empty set): no value, and none kept
        scope[f"{local}_absent"] = field._is_absent
        lines += [f"    if {local}_absent({value}):",
                  "        absent += 1",
                  f"        native[{name!r}] = None"]
    if field.default is not None:
        scope[f"{local}_default"] = field._default_value
        lines += [f"        {value} = {local}_default()",
                  f"    if {value} is None:" if required else
                  f"    if {value} is not None:"]
    if required:
        lines += [f"        errors[{name!r}] = ['is required']",
                  "    else:"]
    elif field.default is None:
        lines.append("    else:")
    return lines


def _conversion_source(name, field, local, fast):
    """validate_item's lines converting the value of field ``name``: by
    its fast path (_FastPath ``fast``) when the value passes its test,
    else by validate() and _dump(); the native value kept where it
    changed."""
    value, av = f"{local}_value", f"{local}_av"
    plain = [f"{value} = {local}_validate({value})",
             f"{av} = {local}_dump({value})"]
    keep = f"native[{name!r}] = {value}"
    if not fast.test:
        return [*plain, keep]
    body = [f"if {fast.test}:"]
    if fast.native != value:
        body.append(f"    {value} = {fast.native}")
    body.append(f"    {av} = {fast.stored}")
    body += ["else:", *("    " + line for line in plain)]
    # The value changes on the fast path too: copied, defaulted.
    if fast.native != value or field.default is not None:
        body.append(keep)
    else:
        body.append(f"    {keep}")
    return body


def _write_from_item(meta):
    """``from_item(item) -> instance`` of a DynamoDB item (attributes the
    model lacks are ignored). An item holding every field and nothing else
    is read in one expression. An item the quick reads fail on -- a NULL
    attribute, or one of another type, as other clients write them -- is
    read again by ``meta.read_stored``, which names what it cannot read."""
    scope = {"new": object.__new__, "model": meta.model,
             "read_stored": meta.read_stored}
    reads = []
    for local, (name, field) in zip(_local_names(meta.fields),
                                    meta.fields.items()):
        av = f"{local}_av"
        read = _fast_path_of(field, f"{local}_value", av).read
        if read is None:
            scope[f"{local}_load"] = field._load
            read = f"{local}_load({av})"
        reads.append((name, field.stored_path[0], av, read))
    lines = ["def from_item(item):",
             "    instance = new(model)",
             # (the entity's name, if any, besides the fields)
             f"    if len(item) == {len(reads) + (meta.entity is not None)}:",
             "        try:",
             *(f"            {av} = item[{attr!r}]"
               for _, attr, av, _ in reads),
             "            instance.__dict__ = {",
             *(f"                {name!r}: {read},"
               for name, _, _, read in reads),
             "            }",
             "            return instance",
             "        except Exception:  # another attribute, NULL, a type",
             "            pass",
             "    values = instance.__dict__",
             "    get = item.get",
             "    try:"]
    for name, attr, av, read in reads:
        lines += [f"        {av} = get({attr!r})",
                  f"        if {av} is not None:",
                  f"            values[{name!r}] = {read}"]
    lines += ["    except Exception:",
              "        instance.__dict__ = read_stored(item)",
              "    return instance"]
    return _compile(meta, "from_item", lines, scope)


def _write_item_json(meta):
    """``item_json(item) -> JSON text`` of a DynamoDB item of the model, as
    validate_item makes it: the fast path sends it rather than encoding
    the item's dicts. An item with a value for every field is written in
    one expression."""
    writes = []
    for local, field in zip(_local_names(meta.fields),
                            meta.fields.values()):
        av, attr = f"{local}_av", field.stored_path[0]
        text = _fast_path_of(field, f"{local}_value", av).json
        writes.append((attr, json.encoder.encode_basestring(attr) + ":", av,
                       text or f"json({av})"))
    if meta.entity_field is not None:  # the entity's name, as a field's
        attr = meta.entity_field.stored_path[0]
        writes.append((attr, json.encoder.encode_basestring(attr) + ":",
                       "entity_name", "json(entity_name)"))
    lines = ["def item_json(item):",
             f"    if len(item) == {len(writes)}:",
             *(f"        {av} = item[{name!r}]" for name, _, av, _ in writes),
             "        return ''.join([",
             *(f"            {(',' if index else '{') + key!r}, {text},"
               for index, (_, key, _, text) in enumerate(writes)),
             "            '}'])",
             "    parts = []"]
    for name, key, av, text in writes:
        lines += [f"    {av} = item.get({name!r})",
                  f"    if {av} is not None:",
                  f"        parts.append({key!r} + {text})"]
    lines.append("    return '{' + ','.join(parts) + '}'")
    return _compile(meta, "item_json", lines, {})


def _write_identity(meta):
    """``identity(item) -> hashable`` identity of a DynamoDB item's or
    key's key, numbers by value (DynamoDB returns ``1.0`` as ``1``)."""
    reads = {"N": "number_identity(item[{!r}]['N'])",
             "S": "item[{!r}]['S']", "B": "binary(item[{!r}]['B'])"}
    parts = [reads[field.attribute_type].format(field.stored_path[0])
             for _, field in meta.key_fields]
    identity = parts[0] if len(parts) == 1 else f"({', '.join(parts)})"
    return _compile(meta, "identity",
                    ["def identity(item):", f"    return {identity}"], {})


# The codec's functions by name, and what writes each.
_CODEC = {"validate_item": _write_validate_item,
          "from_item": _write_from_item, "item_json": _write_item_json,
          "identity": _write_identity}


# -- Model metadata ----------------------------------------------------------

class _Metadata:
    """A model's own state and machinery, kept on ``Model._meta`` so that
    the model class holds only its fields and the public API (as peewee's
    Metadata): ``fields`` (name -> field, inherited ones first),
    ``key_fields`` ((name, field) of the hash and the range key; none on an
    abstract model) and ``key_names``, the table name, the codec's
    functions (written out on first use), and what follows from them:
    keys, projections, expiry, entities. The requests are built elsewhere:
    a single item's by ``single`` (_Single), reads by _Reader, tables by
    _SchemaManager."""

    def __init__(self, model, fields):
        self.model = model
        self.name = model.__name__
        self.fields = fields
        # (name, field) of the hash and the range key, and their names.
        self.key_fields: tuple[tuple[str, Field[Any]], ...] = ()
        self.key_names: tuple[str, ...] = ()
        self.key_attrs: tuple[str, ...] = ()  # their names in DynamoDB
        # The key schemas of the table, then of each index.
        self.key_schemas: tuple[_KeySchema, ...] = ()
        self.key_limits = {}  # table and index key names -> bytes
        self.version = self.ttl = None  # the names of those fields
        # (name, field) of each KeyTemplate; the entity's name (__entity__)
        # and its attribute, as a field (not one of ``fields``).
        self.templates: tuple[tuple[str, KeyTemplate], ...] = ()
        self.entity: str | None = None
        self.entity_av: dict[str, str] | None = None
        self.entity_field: Field[Any] | None = None
        self.sources = {}
        self._table_names = (None, None)  # (prefix, full name) last made
        self.single = _Single(self)

    def __getattr__(self, name):
        # Reached only for attributes not set yet: a codec function is
        # written out now and kept.
        write = _CODEC.get(name)
        if write is None:
            raise AttributeError(name)
        function = write(self)
        setattr(self, name, function)
        return function

    def __repr__(self):
        return f"<{self.name}._meta>"

    def source(self, name):
        """The Python source of one of the model's own functions:
        ``"validate_item"``, ``"from_item"``, ``"item_json"`` or
        ``"identity"``."""
        if name not in _CODEC:
            raise ValidationError(f"{self.name}._meta.source takes one of "
                                  f"{', '.join(_CODEC)}, not {name!r}")
        getattr(self, name)
        return self.sources[name]

    def table_name(self) -> str:
        """The table's full name: the connection's prefix + ``__table__``."""
        if not self.key_fields:
            raise SchemaError(f"{self.name} is abstract: it has no table")
        prefix = Connection.table_prefix()
        cached_prefix, name = self._table_names
        if cached_prefix == prefix:
            return name  # pyright: ignore[reportReturnType]
        name = prefix + self.model.__table__
        if not _TABLE_NAME.fullmatch(name):
            raise SchemaError(
                f"table name {name!r} ({self.name}) must be 3 to 255 "
                "letters, digits, '_', '-' or '.'")
        self._table_names = (prefix, name)
        return name

    # -- items and their values

    def values_of(self, item):
        """The values of an item to save that is not a plain dict."""
        if isinstance(item, dict):
            return item
        if isinstance(item, self.model):
            values = item.__dict__
            if _LOADED in values:
                raise ValidationError(
                    f"{self.name}: this instance holds only the fields its "
                    f"read loaded ({', '.join(sorted(values[_LOADED]))}); "
                    "saving it would erase the others: change fields with "
                    "update_one, or save an instance read whole")
            return values
        raise ValidationError(
            f"{self.name}: an item must be a dict or a {self.name} "
            f"instance, not {type(item).__name__}")

    def unknown_names(self, item):
        """Errors naming the names of a dict that are not fields."""
        return {name: ["is not a field of the model"]
                for name in item if name not in self.fields}

    def check_size(self, item, known=None):
        """ValidationError naming the largest attributes of a DynamoDB
        item over DynamoDB's 400 KB; ``known``: the sizes of attributes
        already measured (0: not measured)."""
        known = known or {}
        sizes = {name: len(name.encode()) + (known.get(name)
                                             or _av_size(av))
                 for name, av in item.items()}
        if sum(sizes.values()) > _MAX_ITEM_BYTES:
            largest = sorted(sizes, key=lambda name: sizes[name],
                             reverse=True)[:3]
            raise ValidationError(
                f"{self.name}: the item is about {sum(sizes.values())} "
                f"bytes, over DynamoDB's limit of {_MAX_ITEM_BYTES} (400 KB); "
                "largest: " + ", ".join(f"{name} ({sizes[name]} bytes)"
                                        for name in largest),
                {largest[0]: ["makes the item larger than 400 KB"]})

    def attr(self, name) -> str:
        """The name in DynamoDB of the field ``name`` (see attr_name)."""
        return str(self.fields[name].stored_path[0])

    def of_entity(self, item):
        """Whether a stored item is one of the model's (always, without
        ``__entity__``)."""
        return self.entity_field is None or item.get(
            self.entity_field.stored_path[0]) == self.entity_av

    def fill_templates(self, native, stored, errors, given):
        """validate_item's last step: the text of each KeyTemplate whose
        fields are valid, in ``native`` and ``stored`` (errors: a table key's
        lacking a field; a value ``given`` in a dict that is not the
        template's), and the entity's name; returns the bytes added."""
        size = 0
        for name, field in self.templates:
            if any(used in errors for used in field.names):
                continue
            held = native.get(name)
            try:
                text, missing = field._text_of(native, self.fields)
                if missing:
                    native[name] = None
                    if name in self.key_names:
                        raise ValidationError(
                            f"needs {', '.join(missing)} (KeyTemplate "
                            f"{field.template!r})")
                    continue
                if given and held is not None and held != text:
                    raise ValidationError(
                        f"is {text!r} by its KeyTemplate "
                        f"{field.template!r}, not {held!r}")
                limit = self.key_limits.get(name)
                if limit:
                    _check_key_value(text, limit)
            except ValidationError as exc:
                errors.update(_located(exc, name).errors)
                continue
            native[name] = text
            attr = self.attr(name)
            stored[attr] = {"S": text}
            size += len(attr.encode()) + len(text.encode())
        if self.entity is not None:
            attr = self.model.__entity_attribute__
            stored[attr] = self.entity_av
            size += len(attr.encode()) + len(self.entity.encode())
        return size

    def read_stored(self, item):
        """The values of a stored item whatever wrote it: NULL attributes
        read as absent, a value of another type is converted when no
        information is lost (a number stored as text), and any other raises
        ValidationError naming the model, the key and the attribute."""
        values = {}
        for name, field in self.fields.items():
            av = item.get(field.stored_path[0])
            if av is None:
                continue
            try:
                value = field._read_stored(av)
            except ValidationError as exc:
                key = {attr: item[attr] for attr in self.key_attrs
                       if attr in item}
                errors = _located(exc, name).errors
                raise ValidationError(
                    f"{self.name} item {_key_text(key)} as stored cannot "
                    f"be read: {_describe(errors)}", errors) from None
            if value is not None:
                values[name] = value
        return values

    def instance(self, native):
        """An instance holding ``native``, values known to be valid."""
        instance = object.__new__(self.model)
        instance.__dict__ = native
        return instance

    # -- keys and strategies

    def key(self, values):
        """The DynamoDB key of a mapping holding the key fields."""
        key = {}
        for name, field in self.key_fields:
            value = values.get(name)
            if value is None and isinstance(field, KeyTemplate):
                try:
                    value, missing = field._text_of(values, self.fields,
                                                    True)
                except ValidationError as exc:
                    raise ValidationError(f"{self.name}: the key field "
                                          f"{name!r}: {exc}", exc.errors)
                if missing:
                    raise ValidationError(
                        f"{self.name}: the key field {name!r} needs "
                        f"{', '.join(missing)} (KeyTemplate "
                        f"{field.template!r})", {name: ["is required"]})
            if value is None:
                raise ValidationError(
                    f"{self.name}: the key field {name!r} is missing",
                    {name: ["is required"]})
            av = field._operand(value)
            if "N" not in av:  # a string or binary
                try:
                    _check_key_value(av.get("S", av.get("B")),
                                     _KEY_BYTES[len(key)])
                except ValidationError as exc:
                    raise ValidationError(
                        f"{self.name}: the key field {name!r} {exc}",
                        {name: [str(exc)]}) from None
            key[field.stored_path[0]] = av
        return key

    def strategy(self, strategy):
        """(key, extra condition or None) of a single-item strategy: a key
        value, a (hash, range) tuple, a dict, an instance or a condition."""
        if isinstance(strategy, Condition):
            return self.split_key_condition(strategy)
        if isinstance(strategy, Model):
            if not isinstance(strategy, self.model):
                raise ValidationError(
                    f"{self.name}: got a {type(strategy).__name__} "
                    "instance as a key")
            return self.key(strategy.__dict__), None
        if isinstance(strategy, dict):
            return self.key(strategy), None
        hash_name = self.key_names[0]
        if self.model.__range_key__ is None:
            return self.key({hash_name: strategy}), None
        if isinstance(strategy, tuple) and len(strategy) == 2:
            return self.key({hash_name: strategy[0],
                             self.model.__range_key__: strategy[1]}), None
        raise ValidationError(
            f"{self.name} has a composite key: give a ({hash_name}, "
            f"{self.model.__range_key__}) tuple, a dict, an instance or a key "
            f"condition, not {strategy!r}",
            {hash_name: ["composite key needs a (hash, range) tuple"]})

    def templated_key(self, parts, key_values, missing):
        """(the parts left, the key fields still missing) once the
        KeyTemplates among ``missing`` are made, into ``key_values``, from
        the == of ``parts`` on the fields they name."""
        equal = _equal_values(parts, self.fields)
        used, still = set(), []
        for name in missing:
            field = self.fields[name]
            if isinstance(field, KeyTemplate):
                text, lacking = field._text_of(equal, self.fields)
                if not lacking:
                    key_values[name] = {"S": text}
                    used.update(field.names)
                    continue
            still.append(name)
        return [part for part in parts if not (
            _is_equality(part) and _tested_name(part) in used)], still

    def key_field_of(self, condition):
        """The key name a top-level condition tests, or None."""
        field = getattr(condition, "field", None)
        if field is not None and len(field.path) == 1:
            name = field.path[0]
            if name in self.key_names:
                return name
        return None

    def split_key_condition(self, condition):
        """(key, rest) of ``key == v [& key2 == w] [& rest]``."""
        key_values = {}
        rest = []
        for part in condition._conjuncts():
            name = self.key_field_of(part)
            if name is None:
                rest.append(part)
                continue
            if not _is_equality(part):
                raise ExpressionError(
                    f"{self.name}: the key field {name!r} needs an "
                    f"equality (==) here, got {part!r}")
            if name in key_values:
                raise ExpressionError(f"{self.name}: the key field "
                                      f"{name!r} is tested twice")
            _check_field_of(self.model, part.field)
            key_values[name] = part.value
        missing = [name for name in self.key_names if name not in key_values]
        if missing and self.templates:  # made from their fields' ==
            rest, missing = self.templated_key(rest, key_values, missing)
        if missing:
            named = [f"{name} (or on {', '.join(field.names)})"
                     if isinstance(field := self.fields[name], KeyTemplate)
                     and field.names else name for name in missing]
            how = ("the condition is ORed; key conditions must be ANDed"
                   if isinstance(condition, _Or) else
                   f"it has no == condition on {' and '.join(named)}")
            raise ExpressionError(f"{self.name}: {condition!r} does not "
                                  f"name one item: {how}")
        return {self.attr(name): av for name, av in key_values.items()}, \
            _and_all(rest)

    # -- many items

    def entries(self, entries, what, conditions=False):
        """(key, extra condition, entry) for each entry of a list strategy;
        extra conditions are refused unless ``conditions``."""
        where = f"{self.name}.{what}"
        if not _is_list_like(entries):
            raise ValidationError(
                f"{where} takes a list of keys, {self.name}.keys_in(...) "
                f"or a condition, not {type(entries).__name__}")
        result = []
        for index, entry in enumerate(entries):
            try:
                key, condition = self.strategy(entry)
            except ValidationError as exc:
                errors = _located(exc, f"[{index}]").errors
                raise ValidationError(f"{where}: entry {index}: {exc}",
                                      errors) from None
            except ExpressionError as exc:
                raise ExpressionError(f"{where}: entry {index}: {exc}") \
                    from None
            if condition is not None and not conditions:
                raise ExpressionError(
                    f"{where}: entry {index} holds a condition beyond the "
                    f"key ({condition!r}); use a condition strategy to "
                    "filter")
            result.append((key, condition, entry))
        if not result:
            raise ValidationError(f"{where} needs at least one key")
        return result

    def project(self, params, expression, fields):
        """Add the ProjectionExpression reading ``fields`` to ``params``."""
        names = [expression.name(field) for name, field in self.fields.items()
                 if name in fields]
        if self.entity_field is not None:  # (to tell its items apart)
            names.append(expression.name(self.entity_field))
        params["ProjectionExpression"] = ", ".join(names)
        return params

    def projection(self, fields, what):
        """The names ``fields=`` asks to read, keys included: a frozenset,
        or None for every field."""
        if fields is None:
            return None
        if not _is_list_like(fields):
            raise ValidationError(f"{self.name}.{what}: fields must be a "
                                  "list of fields or field names, not "
                                  f"{type(fields).__name__}")
        names = set(self.key_names)
        for field in fields:
            if isinstance(field, Field) and len(field.path) == 1:
                _check_field_of(self.model, field)
                field = field.path[0]
            if field not in self.fields:
                raise UnknownFieldError(
                    f"{self.name}.{what}: fields= names {field!r}, which is "
                    f"not a field of {self.name}")
            names.add(field)  # pyright: ignore[reportArgumentType]
        return frozenset(names)

    def partial(self, instances, loaded):
        """``instances``, marked as holding only the fields ``loaded``
        (when not None): reading another raises FieldNotLoaded."""
        if loaded is not None:
            for instance in instances:
                instance.__dict__[_LOADED] = loaded
        return instances

    # -- expiry (``self.ttl`` names the TTLField)

    def expired(self, item, now):
        """Whether the TTL of a stored item is before ``now`` (epoch
        seconds); an item without one (or with a TTL that is not a number,
        which DynamoDB ignores) never expires."""
        av = item.get(self.attr(self.ttl))
        return av is not None and "N" in av and \
            _number_identity(av["N"]) < now


# -- Single items ------------------------------------------------------------

class _Single:
    """The requests on a single item of a model (kept as ``meta.single``):
    GetItem, and PutItem, UpdateItem and DeleteItem with their conditions,
    the reads telling whether a write whose answer was lost was applied,
    and optimistic locking (``meta.version`` names the VersionField)."""

    def __init__(self, meta):
        self.meta = meta

    def put_item(self, table, item, condition, version_alone=False):
        """Procedure: PutItem. A conditional put whose answer was lost and
        whose retry then failed its condition succeeded if the item is stored
        exactly as sent: that is our own write, not a refusal. A versioned
        model's item holds its next version (next_version): a refusal of the
        version it requires raises VersionConflict (``version_alone``: the
        version is the put's only condition)."""
        meta = self.meta
        try:
            yield from _request("PutItem", self.with_condition(
                {"TableName": table, "Item": item}, condition))
        except ConditionalCheckFailedException as exc:
            key = {attr: item[attr] for attr in meta.key_attrs}
            if exc.maybe_applied:
                stored = yield from self.read_item(table, key)
                if stored is not None and _normal({"M": stored}) == _normal(
                        {"M": item}):
                    return
            if meta.version is not None:
                held = int(item[meta.attr(meta.version)]["N"]) - 1
                self.check_version(exc, key, held or None, version_alone)
            raise

    def put(self, item, overwrite):
        """(native values, stored item, condition, whether the condition is
        the version's alone) of a put of ``item``: validated, ``overwrite``
        made a condition and, on a versioned model, the item given its
        next version and the one it held required."""
        meta = self.meta
        condition = self.overwrite_condition(overwrite)
        native, stored = meta.validate_item(item)
        alone = condition is None
        if meta.version is not None:
            condition = self.next_version(native, stored, condition)
        return native, stored, condition, alone

    def read_item(self, table, key, consistent_read=True, fields=None):
        """Procedure: GetItem: the stored item (``fields``: the names to read;
        None: all), or None."""
        params = {"TableName": table, "Key": key,
                  "ConsistentRead": consistent_read}
        if fields:
            expression = _Expression()
            self.meta.project(params, expression, fields)
            expression.into(params)
        return (yield from _request("GetItem", params)).get("Item")

    def overwrite_condition(self, overwrite):
        """The condition of a save's ``overwrite`` argument, or None."""
        if overwrite is True:
            return None
        if overwrite is False:
            return self.meta.key_fields[0][1].not_exists()
        if isinstance(overwrite, Condition):
            return overwrite
        raise ValidationError(f"overwrite must be True, False or a "
                              f"condition, not {overwrite!r}")

    def applied_update(self, table, key, updates, return_values, refusal):
        """Procedure: after an update whose answer was lost was refused on
        retry: the attributes it would have returned when the stored item shows
        it was applied (every value it sets is there, every attribute it
        removes is gone), None when it shows it was not. When the item cannot
        tell (an add or append is not seen twice) or the old values were lost
        with the answer, the refusal is raised, marked ``maybe_applied``."""
        item = yield from self.read_item(table, key)
        if item is None:  # an update never deletes the item
            return None
        unknown = []
        for update in updates:
            stored = _value_at(item, update.field.stored_path)
            if isinstance(update, RemoveUpdate):
                if stored is not None:
                    return None
            elif isinstance(update, SetUpdate):
                if stored is None or (not update.if_not_exists and _normal(
                        stored) != _normal(update.value)):
                    return None
                if update.if_not_exists:
                    unknown.append(update)
            else:
                unknown.append(update)
        if len(unknown) == len(updates):
            why = f"the stored item cannot tell ({unknown[0]!r})"
        elif return_values in ("ALL_OLD", "UPDATED_OLD"):
            why = "it was, but the old values were lost with the answer"
        else:
            why = None
        if why:
            error = refusal._restated(ConditionalCheckFailedException, (
                f"{refusal} -- the update may have been applied before its "
                f"answer was lost: {why}"))
            error.maybe_applied = True
            raise error from refusal
        if return_values == "ALL_NEW":
            return item
        names = {update.field.stored_path[0] for update in updates}
        return {name: av for name, av in item.items()
                if name in names} if return_values == "UPDATED_NEW" else {}

    def update_request(self, table, key, condition, updates, held=None):
        """(UpdateItem parameters, the bound guards of its adds) of
        ``updates`` (a list) to the item of ``key``: the item must exist
        (UpdateItem would create it), keep its fields' bounds and meet
        ``condition``. On a versioned model ``updates`` gains the version's
        (one more), and the item must be at version ``held`` unless that
        is None."""
        meta = self.meta
        for update in updates:
            _check_field_of(meta.model, update.field)
            if update.field.path[0] in meta.key_names:
                raise ValidationError(
                    f"{meta.name}.{update.field.path[0]} is part of the "
                    "key: it cannot be updated (save a new item instead)")
        if meta.templates:
            updates += self.template_updates(updates)
        bounds = [guard for guard in (update._guard() for update in updates)
                  if guard is not None]
        checks = [meta.key_fields[0][1].exists(), *bounds, condition]
        if meta.version is not None:
            field = meta.fields[meta.version]
            if held is None:  # (an item without a version gets 1)
                updates.append(AddUpdate(field, {"N": "1"}, 1))
            else:
                updates.append(SetUpdate(field, {"N": str(held + 1)}))
                checks.append(self.at_version(held))
        expression = _Expression(model=meta.model)
        params = {"TableName": table, "Key": key,
                  "UpdateExpression": UpdateBuilder._render(updates,
                                                            expression)}
        self.with_condition(params, _and_all(checks), expression)
        return params, bounds

    def check_bounds(self, table, key, updates):
        """Procedure: after a refused update, ValidationError if an add() broke
        a bound of the stored item (a missing item or a failed condition of the
        caller's leaves update_one returning None)."""
        item = yield from self.read_item(table, key)
        if item is None:
            return
        errors = {}
        for update in updates:
            if not isinstance(update, AddUpdate):
                continue
            av = _value_at(item, update.field.stored_path)
            current = None if av is None else update.field._read_stored(av)
            broken = update._broken_bound(current)
            if broken:
                errors[_path_text(update.field.path)] = [broken]
        if errors:
            raise ValidationError(f"{self.meta.name}: update refused: "
                                  f"{_describe(errors)}", errors)

    def delete_item(self, table, key, condition):
        """Procedure: DeleteItem; the old item's attributes, or None if there
        was none."""
        params = self.with_condition(
            {"TableName": table, "Key": key, "ReturnValues": "ALL_OLD"},
            condition)
        try:
            return (yield from _request("DeleteItem", params)).get(
                "Attributes")
        except ConditionalCheckFailedException as exc:
            # An earlier attempt whose answer was lost may have deleted it;
            # its attributes are gone with that answer: only the key is left.
            if exc.maybe_applied and (
                    yield from self.read_item(table, key)) is None:
                return key
            raise

    def with_condition(self, params, condition, expression=None):
        """``params`` with ``condition`` as their ConditionExpression (its
        names and values added to ``expression``'s, if given). A refused
        write of a versioned model asks for the stored item
        (VersionConflict.current)."""
        meta = self.meta
        if condition is not None:
            expression = expression or _Expression(model=meta.model)
            params["ConditionExpression"] = condition._render(expression)
            expression.into(params)
            if meta.version is not None:
                params["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        return params

    # -- optimistic locking (``meta.version`` names the VersionField)

    def next_version(self, native, stored, condition):
        """Before a save of a versioned model: give the item its next
        version, in ``native`` and ``stored`` (1 for an item holding none,
        else one more), and return ``condition`` ANDed with requiring the
        stored item to be at the version the item held."""
        meta = self.meta
        name = meta.version
        held = native.get(name)
        native[name] = (held or 0) + 1
        stored[meta.attr(name)] = {"N": str(native[name])}
        return _and_all([condition, self.at_version(held)])

    def at_version(self, held):
        """The condition that the stored item is at version ``held`` (has
        none, for None: it is new, or was stored without one)."""
        meta = self.meta
        field = meta.fields[meta.version]
        return field.not_exists() if held is None else field == held

    def target(self, strategy, deleting=False):
        """(key, extra condition, held version) of an update's or a
        delete's strategy; a delete's condition requires the version."""
        key, condition = self.meta.strategy(strategy)
        held = self.held_version(strategy)
        if deleting and held is not None:
            condition = _and_all([condition, self.at_version(held)])
        return key, condition, held

    def held_version(self, strategy):
        """The version that an instance or dict strategy holds, validated;
        None for other strategies, for none, and without a VersionField."""
        meta = self.meta
        name = meta.version
        if name is None:
            return None
        if isinstance(strategy, Model):
            held = strategy.__dict__.get(name)
        elif isinstance(strategy, dict):
            held = strategy.get(name)
        else:
            return None
        try:
            return None if held is None else meta.fields[name].validate(held)
        except ValidationError as exc:
            raise _located(exc, name) from None

    def check_version(self, refusal, key, held, alone=False):
        """After a refused write that required the stored item at version
        ``held`` (None: at none): raise VersionConflict, unless the stored
        item DynamoDB sent back with the refusal is at it (another of the
        write's conditions failed). No item sent back: the item is gone,
        a conflict unless it was to be new -- and then too when the
        version was the only condition (``alone``): a server that sends no
        item (dynalite) refused the version."""
        meta = self.meta
        item = refusal.response.get("Item")
        current = meta.from_item(item) if item else None
        stored = current and current.__dict__.get(meta.version)
        if (stored == held) if current else held is None and not alone:
            return
        state = f"is at version {stored}" if stored else \
            "has no version" if current else "is gone" if held else \
            "has one (the refusal came without the stored item)"
        wanted = f"at version {held}" if held else "new"
        conflict = refusal._restated(VersionConflict, (
            f"{refusal.operation} on table {refusal.table!r}: version "
            f"conflict: {meta.name} {_key_text(key)} was to be {wanted}, "
            f"but it {state}"))
        conflict.current = current
        raise conflict from refusal

    def template_updates(self, updates):
        """The updates of the index KeyTemplates that ``updates`` change the
        fields of (set again from the values set, removed when one is set
        to None); ExpressionError for a change no update can make without
        reading the item: of a key template's field, of a template itself,
        of part of a template's fields, or not by a plain set."""
        meta = self.meta
        given = {}  # field name -> the value set (None: removed)
        for update in updates:
            name = update.field.path[0]
            if isinstance(meta.fields[name], KeyTemplate):
                raise ExpressionError(
                    f"{meta.name}.{name} is made from its KeyTemplate: "
                    "update the fields it names instead")
            if len(update.field.path) == 1 and (
                    isinstance(update, RemoveUpdate) or isinstance(
                        update, SetUpdate) and not update.if_not_exists):
                given[name] = None if isinstance(update, RemoveUpdate) \
                    else meta.fields[name]._load(update.value)
        changed = []
        for name, field in meta.templates:
            touched = [used for used in field.names
                       if any(update.field.path[0] == used
                              for update in updates)]
            if not touched:
                continue
            if name in meta.key_names:
                raise ExpressionError(
                    f"{meta.name}.{touched[0]} makes the key {name} "
                    f"({field.template!r}): it cannot change (save a new "
                    "item instead)")
            lacking = [used for used in field.names if used not in given]
            if lacking:
                raise ExpressionError(
                    f"{meta.name}: an update of {', '.join(touched)} "
                    f"rewrites {name} ({field.template!r}), so it must set "
                    f"every field it names: {', '.join(lacking)} too "
                    "(plain sets, no read is made)")
            text, missing = field._text_of(given, meta.fields)
            bound = meta.fields[name]
            changed.append(RemoveUpdate(bound) if missing else
                           SetUpdate(bound, {"S": text}))
        return changed


# -- Reads -------------------------------------------------------------------

class _Reader:
    """Runs a model's read plans: the procedures reading what a Plan
    names -- pages of Queries and Scans (through _pages), keys in
    windows of BatchGetItem, one page and its cursor -- and deleting what
    a condition finds."""

    def __init__(self, meta):
        self.meta = meta

    def read(self, plan, consistent_read, limit=None, progress=None,
             take=None):
        """Procedure: the stored items a plan reads (see iter_keys and
        _read_each), given to ``take(items)`` or handed out (_Items); its
        fields only, when it has them (and its TTLField, to leave out
        expired items). A read by keys stops at ``limit``; a Query's or a
        Scan's, when they are no longer taken. Returns how many were
        read."""
        if plan._keys is None:
            return _read_each(self.requests(plan), _advance(progress, None),
                              take)
        fields, keep, meta = plan._loaded, None, self.meta
        if plan._expiry or plan._entity:
            fields = fields and fields.union(filter(None, (plan._expiry,)))
            now = int(_clock())

            def kept(item):  # not expired, and of the entity
                return not (plan._expiry and meta.expired(item, now)) and \
                    meta.of_entity(item)
            keep = kept
        return self.iter_keys(self.meta.table_name(), plan._keys,
                              consistent_read,
                              limit, fields=fields, progress=progress,
                              keep=keep, take=take)

    def requests(self, plan):
        """The Query or Scan requests of ``plan`` to send now: with an
        expiry, each filter ANDs ``NOT (ttl < now)``, which keeps the items
        without a TTL, and no Limit (it would count the items left
        out)."""
        if not plan._expiry:
            return plan._requests
        meta = self.meta
        unexpired_now = ~(meta.fields[plan._expiry] < int(_clock()))

        def unexpired(operation, params):
            params = dict(params)
            params.pop("Limit", None)
            expression = _Expression.resuming(params, meta.model)
            test = unexpired_now._render(expression)
            given = params.get("FilterExpression")
            params["FilterExpression"] = f"({given}) AND {test}" if given \
                else test
            return operation, expression.into(params)
        if isinstance(plan._requests, _Segments):
            return plan._requests.changed(unexpired)
        return [unexpired(*request) for request in plan._requests]

    def instances(self, plan, consistent_read, limit, progress, meter):
        """_Instances of the items a plan reads, within ``meter``'s
        budget."""
        return _Instances(self.meta, plan, _metered(self.read(
            plan, consistent_read, limit, progress), meter), limit)

    def page(self, plan, limit, cursor, max_scanned):
        """Procedure: (stored items, next cursor or None, items scanned) of
        one page
        of a Query or Scan plan, resuming at ``cursor``. It reads on to
        the first item past the page, so that a page ending at the last
        item has no cursor: DynamoDB sends a LastEvaluatedKey whenever a
        page fills its Limit, whether or not anything follows."""
        requests = self.requests(plan)
        fingerprint = self.fingerprint(plan)
        position, start = 0, None
        if cursor is not None:
            position, start = self.open_cursor(cursor, fingerprint, plan)
        items, scanned, ends_at, last, past = [], 0, None, None, False

        attrs = [self.meta.attr(name) for name in plan._start]

        def after(item):  # the cursor resuming after the page's last item
            return self.make_cursor(fingerprint, ends_at, {
                attr: item[attr] for attr in attrs})

        def take(found):  # the page's items; then those past it, unkept
            nonlocal ends_at, past
            count = 0
            for count, item in enumerate(found, 1):
                if len(items) == limit:  # one past the page: more follow
                    past = True
                else:
                    items.append(item)
                    ends_at = position
            return count

        def then(count, answer):
            nonlocal scanned, last
            scanned += answer.get("ScannedCount", count)
            last = answer.get("LastEvaluatedKey")
            return not past and (max_scanned is None
                                 or scanned < max_scanned)

        def budget():  # each request's Limit
            left = None if max_scanned is None else max_scanned - scanned
            if "FilterExpression" not in params:
                wanted = limit + 1 - len(items)  # and one past the page
                left = wanted if left is None else min(left, wanted)
            return left

        while position < len(requests):
            operation, params = requests[position]
            if start:
                params = dict(params, ExclusiveStartKey=start)
            if (yield from _pages(operation, params, take, then,
                                  budget)) is not None:
                position, start = position + 1, None
                continue
            if past or len(items) == limit:  # (a next item is not known)
                return items, after(items[-1]), scanned
            position += not last  # max_scanned was reached
            return items, self.make_cursor(fingerprint, position, last) \
                if position < len(requests) else None, scanned
        return items, None, scanned

    def fingerprint(self, plan):
        """What a cursor is bound to: the model, and the requests of the
        plan (operation, table by its full name, index, expressions,
        values, order, projection)."""
        import hashlib

        requests = [list(request) for request in plan._requests]
        model = self.meta.model
        text = json.dumps([model.__module__, model.__qualname__,
                           requests],
                          sort_keys=True, default=_json_default)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def make_cursor(self, fingerprint, position, start):
        """The cursor text resuming request ``position`` of the plan with
        ``fingerprint`` at the ExclusiveStartKey ``start``: URL-safe base64
        of its JSON, and its signature after a dot with a secret."""
        import base64

        body = base64.urlsafe_b64encode(json.dumps(
            {"f": fingerprint, "r": position, "k": start},
            separators=(",", ":"), sort_keys=True,
            default=_json_default).encode()).decode()
        body = body.rstrip("=")
        signature = self.sign(body)
        return body if signature is None else f"{body}.{signature}"

    @staticmethod
    def sign(body):
        """The HMAC of a cursor's body under the ``cursor_secret`` setting,
        or None without one."""
        secret = _state().settings["cursor_secret"]
        if secret is None:
            return None
        import base64
        import hashlib
        import hmac

        digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def open_cursor(self, cursor, fingerprint, plan):
        """(request position, ExclusiveStartKey) of a cursor this plan
        handed out, else CursorError: never a request with a start key a
        client made up."""
        import base64
        import hmac

        where = f"{self.meta.name}.get_page"
        if not isinstance(cursor, str) or not cursor.isascii():
            raise CursorError(f"{where}: a cursor is the text "
                              f"a Page gave, not {type(cursor).__name__}")
        body, _, signature = cursor.partition(".")
        expected = self.sign(body)
        if expected is not None and not hmac.compare_digest(
                signature, expected):
            raise CursorError(f"{where}: the cursor was "
                              "altered or signed with another secret")
        try:
            data = json.loads(base64.urlsafe_b64decode(
                body + "=" * (-len(body) % 4)))
            fingerprint_given, position, start = \
                data["f"], data["r"], data["k"]
        except (ValueError, TypeError, KeyError):
            raise CursorError(f"{where}: {cursor[:40]!r} is "
                              "not a cursor") from None
        if fingerprint_given != fingerprint:
            raise CursorError(
                f"{where}: the cursor belongs to another query (another "
                "model or table, condition, index, order or fields)")
        if type(position) is not int or not 0 <= position < len(
                plan._requests):
            raise CursorError(f"{where}: the cursor is not "
                              "one of this query's")
        if start is None:
            return position, None
        kinds = {self.meta.attr(name): self.meta.fields[name].attribute_type
                 for name in plan._start}

        def is_key(name, av):
            kind = kinds[name]
            return isinstance(av, dict) and list(av) == [kind] and \
                isinstance(av[kind], str) and bool(av[kind]) and (
                    kind == "S" or bool(_NUMBER_TEXT.fullmatch(av[kind]))
                    if kind != "B" else bool(_BASE64.fullmatch(av[kind])))

        if not isinstance(start, dict) or set(start) != set(kinds) or \
                not all(is_key(name, av) for name, av in start.items()):
            raise CursorError(f"{where}: the cursor does not "
                              "hold a key of this query")
        start = _with_bytes(start)  # as either path sends binary
        try:
            fixed = plan._fixed[position] if plan._fixed else {}
            if any(_normal(start[self.meta.attr(name)]) != _normal(av)
                   for name, av in fixed.items()):
                raise ValueError
        except (ArithmeticError, ValueError):
            raise CursorError(f"{where}: the cursor's key is "
                              "not in this query's range") from None
        return position, start

    def delete_found(self, table, requests, progress):
        """Procedure: the BatchResult of deleting the keys of the items
        ``requests`` (Queries or Scans) find, a few pages at a time as
        they come; no batch is sent after one that stopped (_stops_batch).
        """
        names, result = self.meta.key_attrs, BatchResult()
        advance = _advance(progress, None)
        batch_size = _BATCH_WRITE_ITEMS * _state().settings["concurrency"]
        found = {}  # the keys of the items found, by identity, in order

        def take(items):
            count = 0
            for count, item in enumerate(items, 1):
                found[self.meta.identity(item)] = {
                    name: item[name] for name in names}
            return count

        def delete(at_least):  # the found keys, in batches
            while found and len(found) >= at_least:
                batch = dict(itertools.islice(found.items(), batch_size))
                for identity in batch:
                    del found[identity]
                done, failed = yield from _batch_write(
                    table, names, {identity: _delete_request(key)
                                   for identity, key in batch.items()},
                    self.meta.identity, advance)
                result.success += [self.meta.from_item(batch[identity])
                                   for identity in done]
                result.fail += [Failure(batch[identity], error)
                                for identity, error in failed]
                if any(_stops_batch(error) for _, error in failed):
                    return False
            return True

        for operation, params in requests:
            if (yield from _pages(operation, params, take,
                                  lambda *_: delete(batch_size))) is None:
                return result
        yield from delete(1)
        return result

    def iter_keys(self, table, keys, consistent_read, limit, *, fields=None,
                  progress=None, keep=None, take=None):
        """Procedure: the stored items of ``keys`` (each sent once) in key
        order, given to ``take(items)`` or handed out (_Items), read by
        BatchGetItem in chunks of 100 in a _Window, the next one sent as each
        answer is taken. With a limit, the chunks hold at most the keys still
        wanting, twice as many once those are all read, and so on.
        ``progress(keys read, keys)`` after each chunk; ``keep(item)`` false
        leaves an item out. Returns how many were found."""
        unique, projection = {}, None
        for key in keys:
            unique.setdefault(self.meta.identity(key), key)
        if fields:
            expression = _Expression()
            projection = expression.into(
                self.meta.project({}, expression, fields))
        pending = list(unique.items())
        width = _state().settings["concurrency"]
        if len(pending) <= _BATCH_GET_KEYS:
            width = 1
        read = done = found = rounds = 0
        while read < len(pending):
            budget = len(pending) if limit is None \
                else (limit - found) << rounds
            rounds += 1
            chunks = []
            while read < len(pending) and budget > 0:
                chunks.append(pending[read:read + min(_BATCH_GET_KEYS,
                                                      budget)])
                read += len(chunks[-1])
                budget -= len(chunks[-1])
            window = _Window((_batch_get(table, [key for _, key in chunk],
                                         consistent_read, projection)
                              for chunk in chunks), width)
            for chunk in chunks:
                answer = yield window
                done += len(chunk)
                if progress is not None:
                    progress(done, len(pending))
                stored = {self.meta.identity(item): item for item in answer}
                kept = [item for item in map(stored.get, dict(chunk))
                        if item is not None and (keep is None or keep(item))]
                del kept[limit - found if limit is not None else len(kept):]
                found += take(kept) if take else (yield _Items(kept))
                if found == limit:
                    return found
        return found


# -- Tables ------------------------------------------------------------------

class _Instances:
    """Instances of the items a read procedure hands out, made as they are
    taken (iter_many, aiter_many): iterated, it is driven on this thread
    (_stream); async-iterated, on the running event loop (_astream); at
    most ``limit`` of them. Each step runs on the connection state in
    force when it was made, as a call made then would."""

    def __init__(self, meta, plan, procedure, limit):
        self.meta, self.loaded, self.limit = meta, plan._loaded, limit
        self.procedure, self.state = procedure, _state()
        self.items = None

    def __iter__(self):
        items = itertools.islice(_stream(self.procedure), self.limit)
        while True:
            with _Pinned(self.state):
                item = next(items, None)
            if item is None:
                return
            yield self._instance(item)

    def __aiter__(self):
        return self._instances()

    async def _instances(self):
        items, left = _astream(self.procedure, []), self.limit
        try:
            while left is None or left > 0:
                with _Pinned(self.state):
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return
                left = left and left - 1
                yield self._instance(item)
        finally:
            await items.aclose()

    def _instance(self, item):
        instance = self.meta.from_item(item)
        if self.loaded is not None:
            instance.__dict__[_LOADED] = self.loaded
        return instance


def _is_active(table):
    """Whether a described table exists and is ACTIVE."""
    return table is not None and table["TableStatus"] == "ACTIVE"


class _SchemaManager:
    """A model's table, as peewee's SchemaManager keeps it apart from the
    model's facts: its definition, and the procedures creating, deleting
    and changing it, which Model.create_table, delete_table and
    sync_table run."""

    def __init__(self, meta):
        self.meta = meta

    def definition(self):
        """CreateTable's parameters, less the table name: keys, billing,
        indexes -- an entity's table's with the indexes of every entity
        sharing it (one declared alike twice is made once)."""
        params = self.own_definition()
        if self.meta.entity is None:
            return params
        attributes = {attribute["AttributeName"]: attribute
                      for attribute in params["AttributeDefinitions"]}
        for other in _sharers(self.meta.model):
            theirs = _SchemaManager(other._meta).own_definition()
            for kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
                mine = {index["IndexName"]: index
                        for index in params.get(kind, ())}
                for index in theirs.get(kind, ()):
                    same = mine.get(index["IndexName"])
                    if same is None:
                        params.setdefault(kind, []).append(index)
                    elif same != index:
                        raise SchemaError(
                            f"{self.meta.name} and {other.__name__} declare "
                            f"the index {index['IndexName']!r} of their "
                            "table differently")
            for attribute in theirs["AttributeDefinitions"]:
                same = attributes.setdefault(attribute["AttributeName"],
                                             attribute)
                if same != attribute:
                    raise SchemaError(
                        f"{self.meta.name} and {other.__name__} give the "
                        f"attribute {attribute['AttributeName']!r} of "
                        "their table's keys different types")
        params["AttributeDefinitions"] = list(attributes.values())
        return params

    def own_definition(self):
        """The model's own part of ``definition``."""
        meta = self.meta
        model = meta.model
        provisioned = model.__billing_mode__ == "PROVISIONED"
        attributes = {}

        def key_schema(schema):
            elements = []
            for fields, kind in ((schema.hash, "HASH"),
                                 (schema.range, "RANGE")):
                for _, field in fields:
                    name = field.stored_path[0]
                    attributes[name] = field.attribute_type
                    elements.append({"AttributeName": name, "KeyType": kind})
            return elements

        def throughput(read, write):
            return {"ReadCapacityUnits": read, "WriteCapacityUnits": write}

        table, *indexes = meta.key_schemas
        params = {"KeySchema": key_schema(table),
                  "BillingMode": model.__billing_mode__}
        if provisioned:
            params["ProvisionedThroughput"] = throughput(
                model.__read_units__, model.__write_units__)
        for schema in indexes:
            declared: Any = schema.declared  # (an index's, not None)
            if schema.projected is None:
                projection = {"ProjectionType": "ALL"}
            else:
                keys = set(table.names() + schema.names())
                extra = sorted(meta.attr(name)
                               for name in schema.projected - keys)
                projection = {"ProjectionType": "INCLUDE",
                              "NonKeyAttributes": extra} if extra \
                    else {"ProjectionType": "KEYS_ONLY"}
            index = {"IndexName": schema.index,
                     "KeySchema": key_schema(schema),
                     "Projection": projection}
            if schema.local:
                params.setdefault("LocalSecondaryIndexes", []).append(index)
                continue
            if provisioned:
                index["ProvisionedThroughput"] = throughput(
                    declared.read_units or model.__read_units__,
                    declared.write_units or model.__write_units__)
            params.setdefault("GlobalSecondaryIndexes", []).append(index)
        params["AttributeDefinitions"] = [
            {"AttributeName": name, "AttributeType": kind}
            for name, kind in attributes.items()]
        if model.__stream__:
            params["StreamSpecification"] = {
                "StreamEnabled": True, "StreamViewType": model.__stream__}
        return params

    def create(self, wait, exist_ok):
        """Procedure: Model.create_table."""
        meta = self.meta
        table = meta.table_name()
        params = dict(self.definition(), TableName=table)
        created = True
        try:
            yield from _request("CreateTable", params)
        except DynamoDBError as exc:
            if exc.code != "ResourceInUseException":
                raise
            if not exist_ok:
                raise exc._restated(DynamoDBError, (
                    f"{meta.name}.create_table: table {table!r} exists "
                    "already (or is being created or deleted); "
                    "create_table(exist_ok=True) accepts it")) from exc
            created = False
        if wait or meta.ttl and created:
            yield from self.wait(_is_active)
        if meta.ttl and created:
            yield from self.enable_ttl(table)

    def delete(self, wait):
        """Procedure: Model.delete_table."""
        yield from _request("DeleteTable",
                            {"TableName": self.meta.table_name()})
        if wait:
            yield from self.wait(lambda table: table is None)

    def sync(self, dry_run, delete_indexes):
        """Procedure: Model.sync_table."""
        meta = self.meta
        name = meta.table_name()
        try:
            table = (yield from _request(
                "DescribeTable", {"TableName": name}))["Table"]
        except TableNotFoundError:
            if not dry_run:
                yield from self.create(True, False)
            return [f"create table {name!r} with its indexes"]
        changes = self.index_changes(table, delete_indexes)
        if not dry_run:
            for _, params, index, created in changes:
                yield from _request("UpdateTable",
                                    dict(params, TableName=name))
                yield from self.wait(self.index_done(index, created))
        steps = [change[0] for change in changes]
        stream = self.stream_change(table)
        if stream:
            steps.append(stream)
            if not dry_run:
                yield from _request("UpdateTable", {
                    "TableName": name, "StreamSpecification": {
                        "StreamEnabled": True,
                        "StreamViewType": meta.model.__stream__}})
                yield from self.wait(_is_active)
        if meta.ttl and (yield from self.ttl_change(name)):
            steps.append(f"turn TTL on for {meta.ttl!r}")
            if not dry_run:
                yield from self.enable_ttl(name)
        return steps

    def wait(self, done, timeout=600.0):
        """Procedure: return once ``done(table)`` holds for DescribeTable's
        ``Table`` (None when there is no table); DynamongoError after
        ``timeout``."""
        name = self.meta.table_name()
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            try:
                table = (yield from _request(
                    "DescribeTable", {"TableName": name}))["Table"]
            except TableNotFoundError:
                table = None
            if done(table):
                return
            if time.monotonic() > deadline:
                status = table and table.get("TableStatus")
                raise DynamongoError(f"table {name!r} is still "
                                     f"{status or 'missing'} after "
                                     f"{timeout:.0f} s")
            yield pause
            pause = min(pause * 2, 1.0)

    def index_changes(self, table, delete_indexes):
        """(step, UpdateTable parameters, index name, whether it creates)
        of each change bringing the indexes of the described ``table`` to
        the model's; SchemaError for what no UpdateTable can do."""
        wanted = self.definition()

        def by_name(definition, kind):
            return {index["IndexName"]: index
                    for index in definition.get(kind) or ()}

        def shape(index):
            projection = index.get("Projection", {})
            return ([(key["AttributeName"], key["KeyType"])
                     for key in index["KeySchema"]],
                    projection.get("ProjectionType"),
                    sorted(projection.get("NonKeyAttributes", ())))

        have, want = (by_name(definition, "LocalSecondaryIndexes")
                      for definition in (table, wanted))
        if {name: shape(index) for name, index in have.items()} != \
                {name: shape(index) for name, index in want.items()}:
            raise SchemaError(
                f"{self.meta.name}: the table's local indexes "
                f"({', '.join(have) or 'none'}) differ from the model's "
                f"({', '.join(want) or 'none'}); local indexes exist only "
                "from a table's creation: recreate the table to change them")
        have, want = (by_name(definition, "GlobalSecondaryIndexes")
                      for definition in (table, wanted))
        changes = []

        def create(name):
            changes.append((
                f"create global index {name!r}",
                {"AttributeDefinitions": wanted["AttributeDefinitions"],
                 "GlobalSecondaryIndexUpdates": [{"Create": want[name]}]},
                name, True))

        def delete(name):
            changes.append((f"delete global index {name!r}", {
                "GlobalSecondaryIndexUpdates": [
                    {"Delete": {"IndexName": name}}]}, name, False))

        for name in want:
            if name not in have:
                create(name)
            elif shape(have[name]) != shape(want[name]):
                if not delete_indexes:
                    raise SchemaError(
                        f"{self.meta.name}: the table's global index {name!r} "
                        "has other keys or projection than the model's; "
                        "sync_table(delete_indexes=True) deletes and "
                        "recreates it")
                delete(name)
                create(name)
        for name in have:
            if name not in want and delete_indexes:
                delete(name)
        return changes

    def index_done(self, name, created):
        """A ``wait`` test: the global index ``name`` is ACTIVE
        (``created``) or gone. A server that shows no sign of the change
        it accepted (DynamoDB lists the index as CREATING or DELETING at
        once) raises DynamongoError rather than being waited for."""
        unmoved = []

        def done(table):
            index = next((index for index in (table or {}).get(
                "GlobalSecondaryIndexes") or ()
                if index["IndexName"] == name), None)
            if created and index is not None:
                return index.get("IndexStatus") == "ACTIVE" and \
                    table["TableStatus"] == "ACTIVE"
            if not created and (index is None
                                or index.get("IndexStatus") == "DELETING"):
                return index is None
            unmoved.append(index)
            if len(unmoved) >= 5:
                raise DynamongoError(
                    f"{self.meta.name}: the server accepted "
                    f"{'creating' if created else 'deleting'} the global "
                    f"index {name!r} but does not do it: it does not "
                    f"{'create' if created else 'delete'} indexes on an "
                    "existing table")
            return False
        return done

    def stream_change(self, table):
        """The step turning on the model's stream on the described
        ``table``, or None when it needs none."""
        wanted = self.meta.model.__stream__
        have = table.get("StreamSpecification") or {}
        if not wanted or have.get("StreamEnabled") and \
                have.get("StreamViewType") == wanted:
            return None
        if have.get("StreamEnabled"):
            raise SchemaError(
                f"{self.meta.name}: the table's stream shows "
                f"{have.get('StreamViewType')}, the model's {wanted}; turn "
                "the stream off first (its records are lost with it)")
        return f"turn the stream on ({wanted})"

    def ttl_change(self, table):
        """Procedure: whether TTL must be turned on for the model's
        TTLField on ``table``; SchemaError when it is on for another
        attribute."""
        ttl = self.meta.attr(self.meta.ttl)
        described = (yield from _request(
            "DescribeTimeToLive", {"TableName": table})).get(
            "TimeToLiveDescription", {})
        status = described.get("TimeToLiveStatus", "DISABLED")
        attribute = described.get("AttributeName")
        if status in ("ENABLED", "ENABLING") and attribute == ttl:
            return False
        if status != "DISABLED":
            raise SchemaError(
                f"{self.meta.name}: the table's TTL is {status.lower()} for "
                f"{attribute!r}, not for {ttl!r}; DynamoDB takes one "
                "TTL attribute: turn it off first")
        return True

    def enable_ttl(self, table):
        """Procedure: turn DynamoDB's TTL on for the model's TTLField."""
        yield from _request("UpdateTimeToLive", {
            "TableName": table, "TimeToLiveSpecification": {
                "Enabled": True,
                "AttributeName": self.meta.attr(self.meta.ttl)}})


# -- Model -------------------------------------------------------------------

# The names a field cannot take: the model's public API, and _meta.
_RESERVED_NAMES = frozenset({
    "_meta", "DoesNotExist", "create_table", "delete_many", "delete_one",
    "delete_table", "estimated_count", "explain", "get_many", "get_one",
    "get_page", "iter_many", "keys_in", "count", "save_many", "save_one",
    "sync_table", "table", "table_name", "to_dict", "update_from_dict",
    "update_one", "from_image", "acreate_table", "adelete_table",
    "async_table", "asave_one", "aget_one", "adelete_one", "aupdate_one",
    "aupdate_from_dict", "asave_many", "aget_many", "aget_page",
    "aiter_many", "acount", "aestimated_count", "adelete_many"})


class _ModelType(type):
    """Makes a model class: collects its fields (inherited ones first) into
    ``cls._meta`` and checks the schema."""

    if not TYPE_CHECKING:  # (which then finds a misspelt field)
        def __getattr__(cls, name):
            # Only reached when normal lookup fails: an unknown field.
            if name.startswith("_"):
                raise AttributeError(name)
            meta = cls.__dict__.get("_meta")
            raise UnknownFieldError(
                f"{cls.__name__} has no field {name!r}; its fields are "
                f"{', '.join(meta.fields if meta else ()) or 'none'}")

    def __new__(mcs, name, bases, namespace):
        for attr, value in namespace.items():
            if isinstance(value, type) and issubclass(value, Field):
                raise SchemaError(
                    f"{name}.{attr} is the class {value.__name__}, not a "
                    f"field: did you mean {value.__name__}()?")
            if isinstance(value, Field) and attr in _RESERVED_NAMES:
                raise SchemaError(f"{name}: a field cannot be called "
                                  f"{attr!r}; Model uses that name")
        cls = super().__new__(mcs, name, bases, namespace)
        fields = {}
        for base in reversed(cls.__mro__[1:]):
            meta = base.__dict__.get("_meta")
            if meta is not None:
                fields.update(meta.fields)
        for attr, value in namespace.items():
            if isinstance(value, Field):
                field = value._bind(cls, (attr,))
                setattr(cls, attr, field)
                fields[attr] = field
        stored = {}
        for field_name, field in fields.items():
            other = stored.setdefault(field.stored_path[0], field_name)
            if other != field_name:
                raise SchemaError(
                    f"{name}.{other} and {name}.{field_name} are both stored "
                    f"as {field.stored_path[0]!r}: each field needs an "
                    "attribute of its own (attr_name)")
        cls._meta = _Metadata(cls, fields)  # pyright: ignore

        base = getattr(cls, "DoesNotExist", DoesNotExist)

        class DoesNotExistForModel(base):  # pyright: ignore
            pass

        DoesNotExistForModel.__name__ = "DoesNotExist"
        DoesNotExistForModel.__qualname__ = f"{name}.DoesNotExist"
        cls.DoesNotExist = DoesNotExistForModel  # pyright: ignore
        if not namespace.get("__abstract__", False):
            mcs._check_schema(cls)
        return cls

    @staticmethod
    def _check_schema(cls):  # pyright: ignore
        """Check a concrete model's declarations against DynamoDB's rules
        and complete its _meta: keys, key schemas, version and TTL."""
        meta = cls._meta
        _check_table_options(cls)
        keys = _checked_keys(cls, meta)
        for kind, attr in ((VersionField, "version"), (TTLField, "ttl")):
            setattr(meta, attr, _single_field(cls, meta, kind, keys))
        meta.key_fields = tuple(keys)
        meta.key_names = tuple(name for name, _ in keys)
        meta.key_attrs = tuple(field.stored_path[0] for _, field in keys)
        meta.key_schemas = _checked_indexes(cls, meta)
        _check_templates(cls, meta)
        _check_entity(cls, meta)
        # Bytes a string key may hold, for table and index keys alike.
        for schema in meta.key_schemas:
            for fields, limit in zip((schema.hash, schema.range),
                                     _KEY_BYTES):
                for name, _ in fields:
                    meta.key_limits[name] = min(
                        limit, meta.key_limits.get(name, limit))


# A model's declarations, checked when its class is made.

def _check_templates(cls, meta):
    """SchemaError unless each KeyTemplate names fields of the model that
    are strings or numbers, and no template; meta.templates lists them."""
    templates = []
    for name, field in meta.fields.items():
        if not isinstance(field, KeyTemplate):
            continue
        for used in field.names:
            other = meta.fields.get(used)
            why = "is not a field of the model" if other is None else \
                "is a KeyTemplate too" if isinstance(other, KeyTemplate) \
                else None if other.attribute_type in ("S", "N") else \
                f"is a {type(other).__name__}, not stored as text or a number"
            if why:
                raise SchemaError(f"{cls.__name__}.{name}: KeyTemplate "
                                  f"{field.template!r} names {used!r}, which "
                                  f"{why}")
        # Written on every save when every field it names must be.
        field.required = all(meta.fields[used].required
                             or used in meta.key_names for used in field.names)
        templates.append((name, field))
    meta.templates = tuple(templates)


def _check_entity(cls, meta):
    """SchemaError unless ``__entity__`` is None or a name, and its
    attribute no field's."""
    entity, attr = cls.__entity__, cls.__entity_attribute__
    if entity is None:
        return
    for what, value in (("__entity__", entity),
                        ("__entity_attribute__", attr)):
        if type(value) is not str or not value:
            raise SchemaError(f"{cls.__name__}.{what} must be a non-empty "
                              f"string, not {value!r}")
    taken = [name for name, field in meta.fields.items()
             if field.stored_path[0] == attr]
    if taken:
        raise SchemaError(
            f"{cls.__name__}.{taken[0]} is stored as {attr!r}, which holds "
            "the entity's name: set __entity_attribute__ to another name")
    meta.entity = entity
    meta.entity_av = {"S": entity}
    meta.entity_field = StringField()._bind(cls, (attr,))
    keys = [(field.stored_path[0], field.attribute_type)
            for _, field in meta.key_fields]
    for other in _sharers(cls):
        theirs = [(field.stored_path[0], field.attribute_type)
                  for _, field in other._meta.key_fields]
        if theirs != keys:
            raise SchemaError(
                f"{cls.__name__} and {other.__name__} share the table "
                f"{cls.__table__!r} but not its key: {keys} and {theirs} "
                "(names and types of the hash and range key attributes)")
    import weakref

    known = _ENTITIES.setdefault(cls.__table__, {})
    for name, ref in list(known.items()):  # (a copy: models are made in
        if ref() is None:                  # any thread)
            known.pop(name, None)  # a model since collected
    known[(cls.__module__, cls.__qualname__)] = weakref.ref(cls)


# The entity models of each __table__ (by module and name: a model made
# again replaces the one before), for the checks and create_table.
_ENTITIES: dict[str, dict[tuple[str, str], Any]] = {}


def _sharers(model):
    """The other entity models of ``model``'s table still alive."""
    known = list(_ENTITIES.get(model.__table__, {}).items())
    return [other for other in (ref() for name, ref in known
                                if name != (model.__module__,
                                            model.__qualname__))
            if other is not None and other is not model]


def _check_table_options(cls):
    """SchemaError unless the table's name, billing mode, stream and
    capacity units are ones DynamoDB takes."""
    name, table = cls.__name__, cls.__table__
    if not isinstance(table, str) or not table:
        raise SchemaError(f"{name} must declare __table__, the table name")
    if not _TABLE_NAME_CHARS.fullmatch(table) or len(table) > 255:
        raise SchemaError(
            f"{name}.__table__ {table!r} may hold only letters, digits, "
            "'_', '-' and '.', and at most 255 of them")
    billing = getattr(cls, "__billing_mode__", "PROVISIONED")
    if billing not in _BILLING_MODES:
        raise SchemaError(f"{name}.__billing_mode__ must be one of "
                          f"{_BILLING_MODES}, not {billing!r}")
    if cls.__stream__ is not None and cls.__stream__ not in _STREAM_VIEWS:
        raise SchemaError(f"{name}.__stream__ must be one of "
                          f"{_STREAM_VIEWS}, not {cls.__stream__!r}")
    for attr in ("__read_units__", "__write_units__"):
        _check_units(f"{name}.{attr}", getattr(cls, attr))


def _check_units(where, units):
    """SchemaError unless ``units`` (capacity units) is a positive int."""
    if type(units) is not int or units < 1:
        raise SchemaError(f"{where} must be a positive int, not {units!r}")


def _checked_keys(cls, meta):
    """[(name, field)] of the table's hash key and range key, if any."""
    name, keys = cls.__name__, []
    for attr in ("__hash_key__", "__range_key__"):
        key = getattr(cls, attr, None)
        if key is None:
            if attr == "__hash_key__":
                raise SchemaError(f"{name} must declare __hash_key__")
            continue
        field = meta.fields.get(key)
        if field is None:
            raise SchemaError(f"{name}.{attr} is {key!r} but {name} has "
                              "no field of that name")
        if field.attribute_type not in _KEY_TYPES:
            raise SchemaError(
                f"{name}.{key} is a key, so it must be a string, number "
                f"or binary field, not {type(field).__name__}")
        keys.append((key, field))
    if len(keys) == 2 and keys[0][0] == keys[1][0]:
        raise SchemaError(f"{name}: __hash_key__ and __range_key__ "
                          "must differ")
    return keys


def _single_field(cls, meta, kind, keys):
    """The name of the model's one field of ``kind`` (VersionField,
    TTLField), not a key, or None."""
    name = cls.__name__
    found = [field_name for field_name, field in meta.fields.items()
             if isinstance(field, kind)]
    if len(found) > 1:
        raise SchemaError(f"{name} has {len(found)} {kind.__name__}s "
                          f"({', '.join(found)}): it may have one")
    if found and found[0] in (key for key, _ in keys):
        raise SchemaError(f"{name}.{found[0]} is a {kind.__name__}: "
                          "it cannot be a key")
    return found[0] if found else None


def _checked_indexes(cls, meta):
    """The key schemas of the table and of each of ``__indexes__``,
    checked against DynamoDB's rules."""
    name = cls.__name__
    table = _KeySchema(None, meta.key_fields[:1], meta.key_fields[1:])
    declared = cls.__indexes__
    if isinstance(declared, _Index):
        raise SchemaError(f"{name}.__indexes__ must be a tuple: write "
                          f"({declared.name!r} ...,) with a comma, as "
                          "in (GlobalIndex(...),)")
    if not isinstance(declared, (list, tuple)) or not all(
            isinstance(index, _Index) for index in declared):
        raise SchemaError(f"{name}.__indexes__ must be a tuple of "
                          "GlobalIndex and LocalIndex")
    schemas, included = [table], set()
    for order, index in enumerate(declared):
        where = f"{name}.__indexes__[{order}]"
        if not isinstance(index.name, str) or \
                not _TABLE_NAME.fullmatch(index.name):
            raise SchemaError(
                f"{where}: the index name {index.name!r} must be 3 to "
                "255 letters, digits, '_', '-' or '.'")
        where = f"{name} index {index.name!r}"
        if any(schema.index == index.name for schema in schemas):
            raise SchemaError(f"{where} is declared twice")
        hash_fields, range_fields = _index_keys(meta, where, index, table)
        keys = {key for key, _ in table.hash + table.range
                + hash_fields + range_fields}
        projected = _index_projection(meta, where, index.projection, keys)
        if projected is not None:
            included.update(projected - keys)
        schemas.append(_KeySchema(
            index.name, hash_fields, range_fields, local=index.local,
            projected=projected, order=order, declared=index))
    for local, limit in _INDEX_LIMITS.items():
        count = sum(schema.local is local for schema in schemas[1:])
        if count > limit:
            raise SchemaError(
                f"{name} declares {count} "
                f"{'local' if local else 'global'} indexes; DynamoDB "
                f"allows at most {limit}")
    if len(included) > _MAX_INCLUDED:
        raise SchemaError(f"{name}'s indexes project {len(included)} "
                          "fields besides their keys; DynamoDB allows "
                          f"at most {_MAX_INCLUDED}")
    return tuple(schemas)


def _index_keys(meta, where, index, table):
    """(hash fields, range fields) of an index (``table``: the table's
    _KeySchema, whose hash key a local index shares)."""
    if index.local:
        if not table.range:
            raise SchemaError(f"{where} is local, but {meta.name} has no "
                              "range key to stand in for")
        range_fields = _index_fields(meta, where, index.range_key,
                                     "range key", 1)
        if range_fields == table.range:
            raise SchemaError(f"{where}: its range key is the table's own")
        return table.hash, range_fields
    for attr in ("read_units", "write_units"):
        units = getattr(index, attr)
        if units is not None:
            _check_units(f"{where}: {attr}", units)
    return (_index_fields(meta, where, index.hash_key, "hash key"),
            () if index.range_key is None else
            _index_fields(meta, where, index.range_key, "range key"))


def _index_fields(meta, where, names, what, most=_MAX_INDEX_KEYS):
    """((name, field), ...) of an index's hash or range key (``what``),
    given as one field name or a tuple of them."""
    names = names if isinstance(names, tuple) else (names,)
    if not 0 < len(names) <= most:
        raise SchemaError(f"{where}: its {what} is one field "
                          f"name, or a tuple of 1 to {most}")
    result = []
    for key in names:
        if not isinstance(key, str):
            raise SchemaError(f"{where}: its {what} must be "
                              f"given by name, not {key!r}")
        field = meta.fields.get(key)
        if field is None:
            raise SchemaError(f"{where}: its {what} {key!r} is "
                              f"not a field of {meta.name}")
        if field.attribute_type not in _KEY_TYPES:
            raise SchemaError(
                f"{where}: its {what} {key!r} must be a string, "
                f"number or binary field, not {type(field).__name__}")
        result.append((key, field))
    return tuple(result)


def _index_projection(meta, where, projection, keys):
    """The names of the fields an index holds (``keys``: its key
    attributes and the table's), or None for every field."""
    if projection == "ALL":
        return None
    if projection == "KEYS_ONLY":
        return frozenset(keys)
    if isinstance(projection, (list, tuple)) and all(
            isinstance(field, str) for field in projection):
        unknown = [key for key in projection if key not in meta.fields]
        if unknown:
            raise SchemaError(f"{where} projects {unknown[0]!r}, "
                              f"which is not a field of {meta.name}")
        return frozenset(keys.union(projection))
    raise SchemaError(
        f"{where}: projection must be 'ALL', 'KEYS_ONLY' or a "
        f"list of field names (strings), not {projection!r}")


class Model(metaclass=_ModelType):
    """Base class of models; one model is one DynamoDB table.

    Class attributes:

    - ``__table__`` (required): the table name, after the connection's
      table prefix.
    - ``__hash_key__`` (required), ``__range_key__`` (optional): the names
      of the key fields, which must be string, number or binary fields.
    - ``__read_units__``/``__write_units__``: provisioned throughput
      (default 8 each), or ``__billing_mode__ = "PAY_PER_REQUEST"``.
    - ``__indexes__``: a tuple of GlobalIndex and LocalIndex.
    - ``__stream__``: ``"NEW_AND_OLD_IMAGES"``, ``"NEW_IMAGE"``,
      ``"OLD_IMAGE"`` or ``"KEYS_ONLY"``: the table's stream, which
      create_table and sync_table turn on (see ``changes``).
    - ``__entity__``: the name of the model's items in a table several
      models share: each item it writes holds it in the attribute
      ``__entity_attribute__`` (``"_type"``), and its reads leave out the
      items of other entities.
    - ``__abstract__ = True``: a base holding shared fields, with no table.

    ``Model(**values)`` makes an instance without checking ``required``
    (partial instances serve as keys); saving validates.

    The class holds its fields and the methods below; everything else the
    model needs is on ``Model._meta`` (see _Metadata), so a field may take
    any name but ``_meta`` and those of the methods.
    """

    __abstract__: ClassVar[bool] = True
    __table__: ClassVar[str | None] = None
    __hash_key__: ClassVar[str | None] = None
    __range_key__: ClassVar[str | None] = None
    __read_units__: ClassVar[int] = 8
    __write_units__: ClassVar[int] = 8
    __billing_mode__: ClassVar[str] = "PROVISIONED"
    __indexes__: ClassVar[tuple[GlobalIndex | LocalIndex, ...]] = ()
    __stream__: ClassVar[str | None] = None
    __entity__: ClassVar[str | None] = None
    __entity_attribute__: ClassVar[str] = "_type"

    if TYPE_CHECKING:
        _meta: ClassVar[_Metadata]
        DoesNotExist: ClassVar[type[DoesNotExist]]

    def __init__(self, **values: Any) -> None:
        fields = self._meta.fields
        for name in values:
            if name not in fields:
                raise ValidationError(
                    f"{type(self).__name__} has no field {name!r}",
                    {name: ["is not a field of the model"]})
        self.__dict__.update(values)  # pyright: ignore

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={value!r}"
                           for name, value in self.to_dict().items())
        return f"{type(self).__name__}({values})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The instance's field values (Python values; unset fields left
        out)."""
        values = self.__dict__
        return {name: values[name] for name in self._meta.fields
                if values.get(name) is not None}

    @classmethod
    def from_image(cls: type[_M], image: dict[str, Any]) -> _M:
        """An instance of a DynamoDB-JSON image, read as a stored item is:
        ``record["dynamodb"]["NewImage"]`` of a Lambda stream event (see
        ``changes``), a Kinesis record's, an export line's ``Item``.
        Binary values may be base64 text, as DynamoDB's JSON has them."""
        if not isinstance(image, dict) or not all(
                isinstance(av, dict) and len(av) == 1
                for av in image.values()):
            raise ValidationError(
                f"{cls.__name__}.from_image takes a DynamoDB-JSON image (a "
                f"dict of attribute values such as {{'S': 'x'}}), not "
                f"{image!r:.80}")
        return cls._meta.from_item(image)

    # -- keys and strategies

    # -- tables

    @classmethod
    def table_name(cls) -> str:
        """The table's full name: the connection's prefix + ``__table__``."""
        return cls._meta.table_name()

    @classmethod
    def table(cls) -> Any:
        """The boto3 ``Table`` resource of this model's table."""
        return Connection.get_table(cls.table_name())

    @classmethod
    @_driven
    def create_table(cls, wait: bool = True,
                     exist_ok: bool = False) -> _Procedure[None]:
        """Create the model's table (with its indexes, and its stream when
        it declares ``__stream__``) and wait until it is ACTIVE; a model
        with a TTLField then has DynamoDB's TTL turned on for it (which
        waits for the table whatever ``wait`` says).

        :param exist_ok: do nothing when the table already exists.
        """
        yield from _SchemaManager(cls._meta).create(wait, exist_ok)

    @classmethod
    @_driven
    def delete_table(cls, wait: bool = True) -> _Procedure[None]:
        """Delete the model's table and every item in it; with ``wait``,
        return once DynamoDB has deleted it."""
        yield from _SchemaManager(cls._meta).delete(wait)

    @classmethod
    @_driven
    def sync_table(cls, dry_run: bool = False,
                   delete_indexes: bool = False) -> _Procedure[list[str]]:
        """Bring the model's table to the model: create it when missing;
        create each global index it lacks (one UpdateTable per index,
        waiting until it is ACTIVE); leave indexes the model does not
        declare, unless ``delete_indexes`` (which also recreates an index
        whose keys or projection differ). Local indexes exist only from
        the table's creation: a difference raises SchemaError. Turns on
        the stream ``__stream__`` declares and TTL for a TTLField (a
        stream of another view, or TTL on another attribute, raises
        SchemaError: DynamoDB must turn those off first). Returns the
        steps taken, or with ``dry_run`` those it would take, sending no
        change."""
        return (yield from _SchemaManager(cls._meta).sync(dry_run,
                                                          delete_indexes))

    # -- single items

    @classmethod
    @_driven
    def save_one(cls: type[_M], item: _M | dict[str, Any],
                 overwrite: bool | Condition = True) -> _Procedure[_M]:
        """Validate and store one item (a dict or an instance); return the
        saved instance, defaults applied.

        :param overwrite: ``True`` replaces an item with the same key;
            ``False`` raises ConditionalCheckFailedException when the key
            exists; a condition replaces only when it holds (else raises).

        On a model with a VersionField the item's version is required of
        the stored item (none: there is no versioned item with its key)
        and the saved instance holds the next one; VersionConflict
        otherwise.
        """
        meta = cls._meta
        table = cls.table_name()
        native, stored, condition, alone = meta.single.put(item, overwrite)
        yield from meta.single.put_item(table, stored, condition, alone)
        return meta.instance(native)

    @classmethod
    @_driven
    def get_one(cls: type[_M], strategy: Any, consistent_read: bool = False,
                fields: _Fields = None,
                include_expired: bool = False) -> _Procedure[_M]:
        """The item named by ``strategy`` (a key value, a (hash, range)
        tuple, a dict, an instance or a key condition); raises
        ``Model.DoesNotExist`` when there is none, or when its TTLField
        has passed (DynamoDB deletes expired items only eventually) unless
        ``include_expired``. ``consistent_read`` asks for a strongly
        consistent read; ``fields`` (fields or names) reads only those and
        the key, and reading another field of the instance raises
        FieldNotLoaded."""
        meta = cls._meta
        table = cls.table_name()
        key, condition = meta.strategy(strategy)
        if condition is not None:
            raise ExpressionError(
                f"{cls.__name__}.get_one takes a key only; {condition!r} is "
                "not part of the key (use get_many to filter)")
        loaded = meta.projection(fields, "get_one")
        expiry = None if include_expired else meta.ttl
        item = yield from meta.single.read_item(
            table, key, consistent_read,
            loaded and (loaded.union((expiry,)) if expiry else loaded))
        if item is None:
            raise cls.DoesNotExist(f"{cls.__name__} with {_key_text(key)} "
                                   "does not exist")
        if not meta.of_entity(item):
            held = item.get(cls.__entity_attribute__, {}).get("S")
            raise cls.DoesNotExist(
                f"{cls.__name__} with {_key_text(key)} does not exist: the "
                f"item there is " + (f"a {held!r}" if held else
                                     "of no entity"))
        if expiry and meta.expired(item, int(_clock())):
            raise cls.DoesNotExist(f"{cls.__name__} with {_key_text(key)} "
                                   f"has expired (its {expiry} has passed)")
        return meta.partial([meta.from_item(item)], loaded)[0]

    @classmethod
    @_driven
    def delete_one(cls: type[_M], strategy: Any) -> _Procedure[_M | None]:
        """Delete the item named by ``strategy``; a key condition may AND
        further conditions, which must hold. Returns the deleted instance,
        or None when nothing matched. An instance or dict holding a
        VersionField's version deletes only the item at that version
        (VersionConflict otherwise)."""
        meta = cls._meta
        single, table = meta.single, cls.table_name()
        key, condition, held = single.target(strategy, deleting=True)
        try:
            old = yield from single.delete_item(table, key, condition)
        except ConditionalCheckFailedException as exc:
            if held is not None:
                single.check_version(exc, key, held)
            return None
        return meta.from_item(old) if old else None

    @classmethod
    @_driven
    def update_one(cls: type[_M], strategy: Any,
                   updates: Update | Iterable[Update],
                   return_values: str = "ALL_NEW") -> _Procedure[_M | None]:
        """Change one existing item in place; never creates one.

        :param strategy: names the item, as for get_one; a key condition
            may AND further conditions, which must hold.
        :param updates: an Update or a list of them, made by field methods:
            ``User.name.set("x")``, ``User.year_of_birth.add(1)``,
            ``User.cities_visited.append("Paris")``,
            ``User.address.city.remove()``.
        :param return_values: ``"ALL_NEW"`` (default), ``"ALL_OLD"``,
            ``"UPDATED_NEW"``, ``"UPDATED_OLD"`` or ``"NONE"``; the partial
            kinds give an instance holding the key and what DynamoDB
            returned.
        :returns: an instance, or None when the item does not exist or the
            extra condition fails. An ``add`` that would take a field out of
            its bounds raises ValidationError and changes nothing.

        A model's VersionField gains one; an instance or dict strategy
        holding a version updates only the item at that version
        (VersionConflict otherwise).
        """
        meta = cls._meta
        single, table = meta.single, cls.table_name()
        if return_values not in _RETURN_VALUES:
            raise ValidationError(f"return_values must be one of "
                                  f"{_RETURN_VALUES}, not {return_values!r}")
        key, condition, held = single.target(strategy)
        updates = _update_list(updates)
        params, bounds = single.update_request(table, key, condition, updates,
                                               held)
        params["ReturnValues"] = return_values
        try:
            attributes = (yield from _request("UpdateItem", params)).get(
                "Attributes", {})
        except ConditionalCheckFailedException as exc:
            attributes = (yield from single.applied_update(
                table, key, updates, return_values, exc)) \
                if exc.maybe_applied else None
            if attributes is None:
                if held is not None:
                    single.check_version(exc, key, held)
                if bounds:
                    yield from single.check_bounds(table, key, updates)
                return None
        if return_values in ("ALL_NEW", "ALL_OLD"):
            return meta.from_item(attributes)
        return meta.from_item(dict(attributes, **key))

    @classmethod
    @_driven
    def update_from_dict(cls: type[_M],
                         item: dict[str, Any]) -> _Procedure[_M | None]:
        """Set every field ``item`` names on the stored item with the same
        key (``None`` removes); return the updated instance, or None when
        there is no such item. A version in ``item`` is required of the
        stored item, as by update_one."""
        if not isinstance(item, dict):
            raise ValidationError(f"{cls.__name__}.update_from_dict takes a "
                                  f"dict, not {type(item).__name__}")
        meta = cls._meta
        # The key (or the fields its templates name), and the version
        # required of the stored item.
        keyed = [used for name, field in meta.templates
                 if name in meta.key_names for used in field.names]
        named = {name: item.get(name) for name in (
            *meta.key_names, *keyed, *filter(None, (meta.version,)))}
        meta.key(named)  # the key must be there and valid
        updates, errors = [], {}
        for name, value in item.items():
            field = meta.fields.get(name)
            if field is None:
                errors[name] = ["is not a field of the model"]
            elif name not in named:
                try:
                    updates.append(field.set(value))
                except ValidationError as exc:
                    errors.update(_located(exc, name).errors
                                  if not exc.errors else exc.errors)
        if errors:
            raise ValidationError(f"{cls.__name__}.update_from_dict: "
                                  f"{_describe(errors)}", errors)
        if not updates:
            raise ValidationError(f"{cls.__name__}.update_from_dict: the "
                                  f"item holds only {', '.join(named)}: "
                                  "nothing to update")
        return (yield from _procedure(cls.update_one)(cls, named,
                                                      updates))

    # -- many items

    @classmethod
    def keys_in(cls, values: Iterable[Any]) -> KeysIn:
        """A get_many/delete_many strategy naming items by key: hash values,
        or ``(hash, range)`` tuples for a composite key."""
        return KeysIn(cls, [key for key, _, _ in
                            cls._meta.entries(values, "keys_in")])

    @classmethod
    @_pausing_collector
    @_driven
    def save_many(cls: type[_M], items: Iterable[_M | dict[str, Any]],
                  overwrite: bool | Condition = True,
                  progress: _Progress = None, *,
                  max_units_per_second: float | None = None
                  ) -> _Procedure[BatchResult[_M]]:
        """Validate and store many items (dicts, instances or both); return
        a BatchResult.

        Every item is validated first: with any invalid one the call raises
        ValidationError naming each bad item's index and field, and writes
        nothing. Items sharing a key: the last one is written, the others
        are neither sent nor counted.

        :param overwrite: ``True`` writes with BatchWriteItem (25 per
            request, unprocessed items resent with backoff); ``False`` or a
            condition writes each item with a conditional PutItem
            (``concurrency`` at a time), and an item whose key exists (or
            whose condition fails) goes to ``fail``.
        :param progress: called as ``progress(done, total)`` from the
            calling thread after each chunk (or item) is written or failed.
        :param max_units_per_second: caps the write capacity units the
            call consumes per second (1 per started KB of each item), over
            all its threads, waiting before a request when they are spent.

        A model with a VersionField is written with conditional puts,
        each requiring its item's version as save_one does; a conflict
        goes to ``fail`` as a VersionConflict.
        """
        meta = cls._meta
        single, table = meta.single, cls.table_name()
        condition = single.overwrite_condition(overwrite)
        conditional = condition is not None or meta.version is not None
        where = f"{cls.__name__}.save_many"
        meter = _meter(max_units_per_second, where)
        if not _is_list_like(items):
            raise ValidationError(f"{where} takes a list of items, not "
                                  f"{type(items).__name__}")
        # By key identity: what is written (the JSON text of a PutRequest,
        # or the DynamoDB item and condition of a conditional put), what the
        # caller gave, and the native values.
        stored: dict[Any, Any] = {}
        givens, natives, errors = {}, {}, {}
        validate, identify = meta.validate_item, meta.identity
        item_json = meta.item_json
        for index, item in enumerate(items):
            if index % _SLICE == _SLICE - 1:
                yield None  # a moment for other tasks
            try:
                native, av_item = validate(item)
            except ValidationError as exc:
                errors.update(_located(exc, f"[{index}]").errors)
                continue
            identity = identify(av_item)
            stored.pop(identity, None)  # the last duplicate wins
            if not conditional:
                stored[identity] = _put_request(item_json(av_item))
            elif meta.version is None:
                stored[identity] = (av_item, condition)
            else:
                stored[identity] = (av_item, single.next_version(
                    native, av_item, condition), condition is None)
            givens[identity], natives[identity] = item, native
        if errors:
            raise ValidationError(f"{where}: invalid items: "
                                  f"{_describe(errors)}", errors)
        if not stored:
            raise ValidationError(f"{where} needs at least one item")
        advance = _advance(progress, len(stored))
        if not conditional:
            done, failed = yield from _metered(_batch_write(
                table, meta.key_attrs, stored, identify, advance), meter)
        else:
            done, failed = yield from _metered(_one_by_one(
                lambda entry: single.put_item(table, *entry), stored, advance),
                meter)
            done = [identity for identity, _ in done]
        saved = yield from _sliced(lambda identity: meta.instance(
            natives[identity]), done)
        return _finished(BatchResult(saved, [
            Failure(givens[identity], error) for identity, error in failed]))

    @classmethod
    @_pausing_collector
    @_driven
    def get_many(cls: type[_M], strategy: Any, *, descending: bool = False,
                 limit: int | None = None, consistent_read: bool = False,
                 segments: int | None = None, index: str | None = None,
                 fields: _Fields = None,
                 progress: _Progress = None,
                 include_expired: bool = False,
                 max_units_per_second: float | None = None
                 ) -> _Procedure[list[_M]]:
        """The items a strategy names, as a list of instances; the first
        of these plans that applies reads them (``explain`` shows which):

        - a list of single-item strategies (key values, tuples, dicts,
          instances, key conditions), ``Model.keys_in(values)`` or
          ``hash_field.in_(values)`` on a table without a range key:
          BatchGetItem, 100 keys per request, results in the order of the
          keys asked for (missing ones left out);
        - ``==`` (or ``in_``: a Query per value) on the hash key, and
          optionally a range key condition: Query on the table, the rest
          as a filter;
        - the same on an index's keys: Query on the index (an index that
          holds every field and every matching item; see README);
        - any other condition: Scan with a filter (see the ``scan``
          setting).

        Queries and scans read every page. ``limit`` caps the number of
        items returned; ``descending`` orders a Query by range key from the
        highest; ``consistent_read`` asks for strongly consistent reads;
        ``segments`` splits a Scan into that many segments read in
        parallel (default: the ``scan_segments`` setting); ``index`` names
        the index to query, even one the planner would not choose;
        ``fields`` (fields or names) reads only those and the key.
        Instances read with ``fields``, or from a forced index holding
        fewer fields, raise FieldNotLoaded for the fields not read.
        ``progress(done, total)``, if given, is called from the calling
        thread after each window of keys (keys read, keys asked for) or
        each page (items read, None). Items whose TTLField has passed are
        left out unless ``include_expired``. ``max_units_per_second`` caps
        the read capacity units the call consumes per second, as DynamoDB
        reports them, over all its threads (a backfill's reads).
        """
        meta = cls._meta
        meter = _meter(max_units_per_second, f"{cls.__name__}.get_many")
        plan = _runnable(meta, _Read.of(meta, "get_many", locals()))
        from_item, reader = meta.from_item, _Reader(meta)
        if plan._keys is None:  # several requests read in parallel
            instances = yield from _metered(_read_pages(
                reader.requests(plan), from_item, limit,
                _advance(progress, None)), meter)
        else:
            instances = []
            yield from _metered(reader.read(
                plan, consistent_read, limit, progress,
                lambda items: _extended(instances, map(from_item, items))),
                meter)
        return meta.partial(instances, plan._loaded)

    @classmethod
    @_driven
    def get_page(cls: type[_M], strategy: Any, limit: int, *,
                 cursor: str | None = None, descending: bool = False,
                 consistent_read: bool = False, index: str | None = None,
                 fields: _Fields = None,
                 max_scanned: int | None = None, segments: None = None,
                 include_expired: bool = False) -> _Procedure[Page[_M]]:
        """One page of the items the condition ``strategy`` matches,
        planned as get_many plans it (a Query on the table or an index,
        else a Scan; with the same ``descending``, ``consistent_read``,
        ``index`` and ``fields``): a Page of exactly ``limit`` instances
        unless the results run out, or ``max_scanned`` items were examined
        first.
        ``Page.cursor`` resumes right after its last item when passed back
        as ``cursor`` (None when nothing comes after); a cursor is bound to
        its query, and one made for another query, altered, or not a
        cursor raises CursorError (see the ``cursor_secret`` setting). A
        list of keys is already a page: get_many reads it; ``segments``
        is refused (a page is read in order). Items whose TTLField has
        passed are left out unless ``include_expired``."""
        meta = cls._meta
        if segments is not None:
            raise ExpressionError(f"{cls.__name__}.get_page reads one page "
                                  "in order: segments cannot split it")
        for name, value in (("limit", limit), ("max_scanned", max_scanned)):
            if (value is not None or name == "limit") and (
                    type(value) is not int or value < 1):
                raise ValidationError(f"{cls.__name__}.get_page: {name} "
                                      f"must be an int >= 1, not {value!r}")
        read = _Read(meta, "get_page", strategy, descending=descending,
                     consistent_read=consistent_read, index=index,
                     fields=fields, segments=1,
                     include_expired=include_expired)
        plan = _runnable(meta, read)
        if plan._keys is not None:
            raise ExpressionError(
                f"{cls.__name__}.get_page pages a condition's Query or "
                "Scan; keys are already a page: get_many reads them")
        if read.fields is not None and not read.fields.issuperset(
                plan._start):
            # A cursor is made of the last item's key attributes.
            read.fields, read.index = read.fields.union(plan._start), \
                plan.index
            plan = _Planner(meta, read).plan()
        items, cursor, scanned = yield from _Reader(meta).page(
            plan, limit, cursor, max_scanned)
        from_item = meta.from_item
        return Page(meta.partial([from_item(item) for item in items],
                                 plan._loaded), cursor, scanned)

    @classmethod
    def iter_many(cls: type[_M], strategy: Any, *,
                  descending: bool = False,
                  limit: int | None = None, consistent_read: bool = False,
                  index: str | None = None,
                  fields: _Fields = None,
                  segments: int | None = None,
                  progress: _Progress = None,
                  include_expired: bool = False,
                  max_units_per_second: float | None = None
                  ) -> Iterator[_M]:
        """The items of ``strategy``, as get_many reads them (with the same
        ``descending``, ``limit``, ``consistent_read``, ``index``,
        ``fields``, ``segments``, ``progress``, ``include_expired`` and
        ``max_units_per_second``),
        as an iterator that
        reads a page (or a window of keys) at a time as it is consumed:
        memory stays bounded whatever the number of items, and an iterator
        left unfinished sends no further request. The plan is made, and
        the arguments checked, when it is called; it reads on the
        connection settings in force then."""
        meta = cls._meta
        meter = _meter(max_units_per_second, f"{cls.__name__}.iter_many")
        plan = _runnable(meta, _Read.of(meta, "iter_many", locals()))
        return iter(_Reader(meta).instances(plan, consistent_read, limit,
                                            progress, meter))

    @classmethod
    @_driven
    def count(cls, strategy: Any = None, consistent_read: bool = False,
              index: str | None = None,
              include_expired: bool = False, *,
              max_units_per_second: float | None = None) -> _Procedure[int]:
        """How many stored items ``strategy`` matches (as get_many takes
        it; None: every item of the table, or of ``index``). DynamoDB
        counts them (Select=COUNT: no item is sent back), following every
        page; a list of keys counts the keys stored, reading keys only.
        ``consistent_read``, ``index``, ``include_expired`` and
        ``max_units_per_second`` are as for get_many."""
        meta = cls._meta
        meter = _meter(max_units_per_second, f"{cls.__name__}.count")
        read = _Read(meta, "count",
                     _EVERY_ITEM if strategy is None else strategy,
                     consistent_read=consistent_read, index=index,
                     segments=1, include_expired=include_expired)
        # Counting every item scans, as asked: the scan setting is for
        # conditions that no key serves.
        plan = _Planner(meta, read).plan() if strategy is None \
            else _runnable(meta, read)
        reader = _Reader(meta)
        if plan._keys is None:
            return (yield from _metered(_count(reader.requests(plan)), meter))
        plan._loaded = frozenset(meta.key_names)
        return (yield from _metered(reader.read(
            plan, consistent_read, take=len), meter)) or 0

    @classmethod
    @_driven
    def estimated_count(cls) -> _Procedure[int]:
        """The table's item count as DynamoDB keeps it (DescribeTable's
        ItemCount), which it refreshes only about every six hours: recent
        writes may be missing. count() counts exactly, at the cost of
        reading the table."""
        return (yield from _request("DescribeTable", {
            "TableName": cls.table_name()}))["Table"]["ItemCount"]

    @classmethod
    def explain(cls, strategy: Any, *, descending: bool = False,
                limit: int | None = None, consistent_read: bool = False,
                segments: int | None = None, index: str | None = None,
                fields: _Fields = None,
                include_expired: bool = False) -> Plan:
        """The Plan get_many would follow for ``strategy`` and
        ``descending``, ``limit``, ``consistent_read``, ``segments``,
        ``index``, ``fields`` and ``include_expired`` (see get_many),
        sending nothing:
        ``print(User.explain(User.name == "x"))``. A single key (as
        get_one takes it) is a GetItem."""
        meta = cls._meta
        return _Planner(meta, _Read.of(meta, "explain", locals(),
                                       key_alone=True)).plan()

    @classmethod
    @_pausing_collector
    @_driven
    def delete_many(cls: type[_M], strategy: Any, segments: int | None = None,
                    progress: _Progress = None, *,
                    max_units_per_second: float | None = None
                    ) -> _Procedure[BatchResult[_M]]:
        """Delete the items a strategy names (as for get_many); return a
        BatchResult.

        Plain keys are deleted by BatchWriteItem (25 per request); list
        entries carrying extra conditions by a conditional DeleteItem each
        (one whose condition fails goes to ``fail``); a condition finds the
        matching keys through the planner (keys only; ``segments`` as for
        get_many) and deletes them page by page as it finds them, holding
        no more than a few pages of keys. ``success`` holds the deleted
        items (key attributes only for batch deletes). ``progress(done,
        total)``, if given, is called from the calling thread after each
        chunk (or conditional item); ``total`` is None while a condition's
        matches are still being found. ``max_units_per_second`` caps the
        capacity units the call consumes per second, its reads and deletes
        together (1 unit per delete), as for save_many and get_many.
        """
        meta = cls._meta
        meter = _meter(max_units_per_second, f"{cls.__name__}.delete_many")
        table = cls.table_name()
        segments = _segments(segments)
        names = meta.key_names
        conditional = []
        if isinstance(strategy, (Condition, KeysIn)):
            plan = _runnable(meta, _Read(
                meta, "delete_many", strategy, fields=names,
                segments=segments, include_expired=True))
            if plan._keys is None:
                return _finished((yield from _metered(_Reader(
                    meta).delete_found(table, plan._requests, progress),
                    meter)))
            entries = [(key, key) for key in plan._keys]
        else:
            entries = []
            for key, condition, entry in meta.entries(
                    strategy, "delete_many", conditions=True):
                if condition is None:
                    entries.append((key, entry))
                else:
                    conditional.append((key, condition, entry))
        batch_keys, givens = {}, {}  # by key identity
        for key, given in entries:
            identity = meta.identity(key)
            if identity not in batch_keys:
                batch_keys[identity], givens[identity] = key, given
        advance = _advance(progress, len(batch_keys) + len(conditional))
        done, failed = yield from _metered(_batch_write(
            table, meta.key_attrs, {identity: _delete_request(key)
                                    for identity, key in batch_keys.items()},
            meta.identity, advance), meter)
        result = BatchResult(
            [meta.from_item(batch_keys[identity]) for identity in done],
            [Failure(givens[identity], error) for identity, error in failed])
        if not any(_stops_batch(failure.error) for failure in result.fail):
            deleted, failed = yield from _metered(_one_by_one(
                lambda entry: meta.single.delete_item(table, *entry[:2]),
                dict(enumerate(conditional)), advance), meter)
            result.success += [meta.from_item(old or conditional[index][0])
                               for index, old in deleted]
            result.fail += [Failure(conditional[index][2], error)
                            for index, error in failed]
        return _finished(result)

    # -- awaitable twins (Django's convention: the ``a`` prefix). Each
    # awaits the procedure of the method it is named after, on the running
    # event loop (_aperform): the same checks, requests, results and
    # exceptions.

    @classmethod
    async def acreate_table(cls, wait: bool = True,
                            exist_ok: bool = False) -> None:
        """``create_table``, awaited."""
        await _aperform(_procedure(cls.create_table)(cls, wait, exist_ok))

    @classmethod
    async def adelete_table(cls, wait: bool = True) -> None:
        """``delete_table``, awaited."""
        await _aperform(_procedure(cls.delete_table)(cls, wait))

    @classmethod
    async def async_table(cls, dry_run: bool = False,
                          delete_indexes: bool = False) -> list[str]:
        """``sync_table``, awaited."""
        return await _aperform(_procedure(cls.sync_table)(
            cls, dry_run, delete_indexes))

    @classmethod
    async def asave_one(cls: type[_M], item: _M | dict[str, Any],
                        overwrite: bool | Condition = True) -> _M:
        """``save_one``, awaited."""
        return await _aperform(_procedure(cls.save_one)(cls, item,
                                                        overwrite))

    @classmethod
    async def aget_one(cls: type[_M], strategy: Any,
                       consistent_read: bool = False, fields: _Fields = None,
                       include_expired: bool = False) -> _M:
        """``get_one``, awaited."""
        return await _aperform(_procedure(cls.get_one)(
            cls, strategy, consistent_read, fields, include_expired))

    @classmethod
    async def adelete_one(cls: type[_M], strategy: Any) -> _M | None:
        """``delete_one``, awaited."""
        return await _aperform(_procedure(cls.delete_one)(cls, strategy))

    @classmethod
    async def aupdate_one(cls: type[_M], strategy: Any,
                          updates: Update | Iterable[Update],
                          return_values: str = "ALL_NEW") -> _M | None:
        """``update_one``, awaited."""
        return await _aperform(_procedure(cls.update_one)(
            cls, strategy, updates, return_values))

    @classmethod
    async def aupdate_from_dict(cls: type[_M],
                                item: dict[str, Any]) -> _M | None:
        """``update_from_dict``, awaited."""
        return await _aperform(_procedure(cls.update_from_dict)(cls, item))

    @classmethod
    async def asave_many(cls: type[_M], items: Iterable[_M | dict[str, Any]],
                         overwrite: bool | Condition = True,
                         progress: _Progress = None, *,
                         max_units_per_second: float | None = None
                         ) -> BatchResult[_M]:
        """``save_many``, awaited: its validation pauses for other tasks
        now and then, and its chunks are sent ``concurrency`` at once."""
        with _collector_paused:
            return await _aperform(_procedure(cls.save_many)(
                cls, items, overwrite, progress,
                max_units_per_second=max_units_per_second))

    @classmethod
    async def aget_many(cls: type[_M], strategy: Any, *,
                        descending: bool = False, limit: int | None = None,
                        consistent_read: bool = False,
                        segments: int | None = None, index: str | None = None,
                        fields: _Fields = None, progress: _Progress = None,
                        include_expired: bool = False,
                        max_units_per_second: float | None = None
                        ) -> list[_M]:
        """``get_many``, awaited."""
        with _collector_paused:
            return await _aperform(_procedure(cls.get_many)(
                cls, strategy, descending=descending, limit=limit,
                consistent_read=consistent_read, segments=segments,
                index=index, fields=fields, progress=progress,
                include_expired=include_expired,
                max_units_per_second=max_units_per_second))

    @classmethod
    async def aget_page(cls: type[_M], strategy: Any, limit: int, *,
                        cursor: str | None = None, descending: bool = False,
                        consistent_read: bool = False,
                        index: str | None = None, fields: _Fields = None,
                        max_scanned: int | None = None, segments: None = None,
                        include_expired: bool = False) -> Page[_M]:
        """``get_page``, awaited; its cursors and get_page's are one
        kind."""
        return await _aperform(_procedure(cls.get_page)(
            cls, strategy, limit, cursor=cursor, descending=descending,
            consistent_read=consistent_read, index=index, fields=fields,
            max_scanned=max_scanned, segments=segments,
            include_expired=include_expired))

    @classmethod
    def aiter_many(cls: type[_M], strategy: Any, *,
                   descending: bool = False,
                   limit: int | None = None, consistent_read: bool = False,
                   index: str | None = None, fields: _Fields = None,
                   segments: int | None = None, progress: _Progress = None,
                   include_expired: bool = False,
                   max_units_per_second: float | None = None
                   ) -> AsyncIterator[_M]:
        """``iter_many`` as an async iterator: ``async for user in
        User.aiter_many(...)``; its arguments are checked when it is
        called."""
        meta = cls._meta
        meter = _meter(max_units_per_second, f"{cls.__name__}.aiter_many")
        plan = _runnable(meta, _Read.of(meta, "aiter_many", locals()))
        return _Reader(meta).instances(plan, consistent_read, limit,
                                       progress, meter).__aiter__()

    @classmethod
    async def acount(cls, strategy: Any = None, consistent_read: bool = False,
                     index: str | None = None,
                     include_expired: bool = False, *,
                     max_units_per_second: float | None = None) -> int:
        """``count``, awaited."""
        return await _aperform(_procedure(cls.count)(
            cls, strategy, consistent_read, index, include_expired,
            max_units_per_second=max_units_per_second))

    @classmethod
    async def aestimated_count(cls) -> int:
        """``estimated_count``, awaited."""
        return await _aperform(_procedure(cls.estimated_count)(cls))

    @classmethod
    async def adelete_many(cls: type[_M], strategy: Any,
                           segments: int | None = None,
                           progress: _Progress = None, *,
                           max_units_per_second: float | None = None
                           ) -> BatchResult[_M]:
        """``delete_many``, awaited."""
        with _collector_paused:
            return await _aperform(_procedure(cls.delete_many)(
                cls, strategy, segments, progress,
                max_units_per_second=max_units_per_second))


# -- Transactions ------------------------------------------------------------

_TRANSACTION_ACTIONS = 100  # DynamoDB's limits on one transaction
_TRANSACTION_BYTES = 4 * 1024 * 1024


def transaction(token: str | None = None) -> Transaction:
    """A Transaction: writes added to it are sent together, in one
    TransactWriteItems, by ``commit()`` -- or on leaving a ``with`` block
    normally (an exception inside the block sends nothing).

    :param token: the ClientRequestToken (at most 36 characters; default:
        a fresh UUID), the same on every retry, so that DynamoDB applies
        the transaction once even when an answer is lost.
    """
    return Transaction(token)


class Transaction:
    """Writes applied all together or not at all; see ``transaction()``,
    which makes one (``token``: its ClientRequestToken). Each action takes
    the ``model`` it writes to and is checked when it is added
    (ValidationError or ExpressionError naming its position,
    ``[2].email``); none is sent before ``commit()``."""

    def __init__(self, token: str | None = None) -> None:
        import uuid

        if token is not None and (not isinstance(token, str)
                                  or not 1 <= len(token) <= 36):
            raise ValidationError(f"token must be a string of 1 to 36 "
                                  f"characters, not {token!r}")
        self.token = token or str(uuid.uuid4())
        # (what was asked, its meta, kind, request) of each action, and the
        # (table, key identity) of each action's item.
        self._actions: list[tuple[str, _Metadata, str, dict[str, Any]]] = []
        self._items: set[tuple[str, Any]] = set()
        self._state = _state()
        self._done = False

    def __repr__(self):
        return (f"<Transaction {self.token} of {len(self._actions)} "
                f"actions{', over' if self._done else ''}>")

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if kind is not None:
            self._done = True  # nothing was sent; nothing will be
        elif not self._done:  # (commit() inside the block sent it)
            self.commit()

    async def __aenter__(self) -> Transaction:
        return self

    async def __aexit__(self, kind: object, error: object,
                        traceback: object) -> None:
        if kind is not None:  # an exception, or a cancellation
            self._done = True
        elif not self._done:
            await self.acommit()

    def save_one(self, model: type[_M], item: _M | dict[str, Any],
                 overwrite: bool | Condition = True) -> _M:
        """Put ``item`` (validated as by ``model.save_one``); ``overwrite``
        and the version it requires as there. Returns the instance that
        will be stored."""
        meta = self._meta(model)
        with self._at("save_one"):
            native, stored, condition, _ = meta.single.put(item, overwrite)
        key = {attr: stored[attr] for attr in meta.key_attrs}
        self._add("save_one", meta, key, "Put", meta.single.with_condition(
            {"TableName": model.table_name(), "Item": stored}, condition))
        return meta.instance(native)

    def update_one(self, model: type[Model], strategy: Any,
                   updates: Update | Iterable[Update]) -> None:
        """Apply ``updates`` (an Update or a list of them) to the existing
        item of ``model`` that ``strategy`` names (a key, or a key condition
        whose other parts must hold, or an instance or dict holding a
        version to require), as ``model.update_one`` does; an ``add``
        beyond a field's bounds cancels the transaction."""
        meta = self._meta(model)
        with self._at("update_one"):
            key, condition, held = meta.single.target(strategy)
            params, _ = meta.single.update_request(
                model.table_name(), key, condition, _update_list(updates),
                held)
        self._add("update_one", meta, key, "Update", params)

    def delete_one(self, model: type[Model], strategy: Any) -> None:
        """Delete the item of ``model`` that ``strategy`` names (a key, a
        key condition whose other parts must hold, or an instance or dict
        holding a version to require)."""
        meta = self._meta(model)
        single = meta.single
        with self._at("delete_one"):
            key, condition, _ = single.target(strategy, deleting=True)
        self._add("delete_one", meta, key, "Delete", single.with_condition(
            {"TableName": model.table_name(), "Key": key}, condition))

    def check(self, model: type[Model], condition: Condition) -> None:
        """Require ``condition`` -- a key condition and more -- to hold of
        the item of ``model`` it names, without changing it
        (ConditionCheck)."""
        meta = self._meta(model)
        with self._at("check"):
            if not isinstance(condition, Condition):
                raise ExpressionError(f"check takes a condition naming "
                                      f"the item's key, not {condition!r}")
            key, rest = meta.strategy(condition)
            if rest is None:
                raise ExpressionError(
                    f"check needs a condition beyond the key, such as "
                    f"{model.__name__}.{meta.key_names[0]}.exists()")
        self._add("check", meta, key, "ConditionCheck",
                  meta.single.with_condition(
                      {"TableName": model.table_name(), "Key": key}, rest))

    def commit(self) -> None:
        """Send the actions in one TransactWriteItems (nothing to send:
        nothing is sent). Raises TransactionCanceled, with a reason per
        action, when DynamoDB cancels it; a transaction cancelled only by
        conflicts with others is retried (``max_attempts`` in all), with
        the same token."""
        _perform(self._commit(), self._state)

    async def acommit(self) -> None:
        """``commit()``, awaited."""
        await _aperform(self._commit(), self._state)

    def _commit(self):
        self._check_open()
        self._done = True
        if not self._actions:
            return
        params = {"TransactItems": [{kind: request} for _, _, kind, request
                                    in self._actions],
                  "ClientRequestToken": self.token}
        size = len(_encode_json(params).encode())
        if size > _TRANSACTION_BYTES:
            raise ValidationError(f"the transaction is {size} bytes, over "
                                  "DynamoDB's limit of 4 MB")
        yield from _request("TransactWriteItems", params, self._conflicted)

    def _conflicted(self, error):
        """Whether a refused TransactWriteItems is worth sending again:
        conflicts with other transactions alone cancelled it. Its reasons
        are filled in (_explain)."""
        if not isinstance(error, TransactionCanceled):
            return False
        self._explain(error)
        codes = {reason.code for reason in error.reasons} - {None}
        return codes <= {"TransactionConflict"}

    # -- internals

    def _meta(self, model):
        self._check_open()
        if len(self._actions) >= _TRANSACTION_ACTIONS:
            raise ValidationError(f"a transaction holds at most "
                                  f"{_TRANSACTION_ACTIONS} actions")
        if not (isinstance(model, type) and issubclass(model, Model)
                and model.__table__ is not None):
            raise ValidationError(f"[{len(self._actions)}]: a transaction's "
                                  f"action takes a model, not {model!r}")
        return model._meta

    def _check_open(self):
        if self._done:
            raise ExpressionError(f"{self!r} is over: start another "
                                  "transaction")

    def _at(self, what):
        """Errors of the action being added, named by its position."""
        return _ActionErrors(f"[{len(self._actions)}]", what)

    def _add(self, what, meta, key, kind, request):
        identity = (request["TableName"], meta.identity(key))
        if identity in self._items:
            raise ValidationError(
                f"[{len(self._actions)}]: {what} {meta.name} "
                f"{_key_text(key)}: another action of the transaction is on "
                "that item, which DynamoDB refuses")
        self._items.add(identity)
        if "ConditionExpression" in request:
            request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        self._actions.append((f"{what} {meta.name} {_key_text(key)}", meta,
                              kind, request))

    def _explain(self, error):
        """Fill ``error.reasons`` from DynamoDB's CancellationReasons, in
        the order the actions were added."""
        given = error.response.get("CancellationReasons") or []
        reasons = []
        for index, (action, meta, _, _) in enumerate(self._actions):
            reason = given[index] if index < len(given) else {}
            code = reason.get("Code")
            code = None if code in (None, "None") else code
            item = reason.get("Item")
            reasons.append(CancellationReason(
                action, code, reason.get("Message"),
                meta.from_item(item) if item and code ==
                "ConditionalCheckFailed" else None))
        error.reasons = reasons


class _ActionErrors:
    """``with`` block turning the errors of a transaction's action into
    errors naming its position (``[2].email``)."""

    def __init__(self, where, what):
        self.where, self.what = where, what

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if isinstance(error, ValidationError):
            raise _located(error, self.where) from None
        if isinstance(error, ExpressionError):
            raise type(error)(f"{self.where}: {self.what}: {error}") \
                from None
        return False


def transact_get(requests: Sequence[tuple[type[Model], Any]],
                 fields: Iterable[str] | None = None) -> list[Model | None]:
    """Read up to 100 items at once, consistently with each other
    (TransactGetItems): ``requests`` is a list of ``(Model, key)`` (a key
    value, a (hash, range) tuple, a dict, an instance or a key condition);
    returns a list of instances in the same order, None for a missing
    item. ``fields`` (names) reads only those and the key of each."""
    return _perform(_transact_get(requests, fields))


async def atransact_get(requests: Sequence[tuple[type[Model], Any]],
                        fields: Iterable[str] | None = None
                        ) -> list[Model | None]:
    """``transact_get``, awaited."""
    return await _aperform(_transact_get(requests, fields))


def _twin_docs(pairs):
    """Each awaitable twin's docstring: its own line, then its sync
    twin's (``help(User.aget_one)`` says all that get_one does)."""
    for twin, method in pairs:
        lines = method.__doc__.splitlines()[1:]
        margin = min((len(line) - len(line.lstrip()) for line in lines
                      if line.strip()), default=0)
        twin.__doc__ = f"{twin.__doc__}\n\n{' ' * margin}{method.__doc__}"


_twin_docs([(atransact_get, transact_get)] + [
    (member.__func__, vars(Model)[name[1:]].__func__)
    for name, member in vars(Model).items()
    if name.startswith("a") and name[1:] in vars(Model)])


def _transact_get(requests, fields):
    """Procedure of transact_get."""
    if not _is_list_like(requests) or not 1 <= len(requests) <= \
            _TRANSACTION_ACTIONS:
        raise ValidationError(f"transact_get takes a list of 1 to "
                              f"{_TRANSACTION_ACTIONS} (model, key) pairs")
    gets, metas = [], []
    for index, request in enumerate(requests):
        where = f"[{index}]"
        if not (isinstance(request, tuple) and len(request) == 2
                and isinstance(request[0], type)
                and issubclass(request[0], Model)):
            raise ValidationError(f"{where}: transact_get takes (model, key) "
                                  f"pairs, not {request!r}")
        model, strategy = request
        meta = model._meta
        with _ActionErrors(where, "transact_get"):
            key, condition = meta.strategy(strategy)
            if condition is not None:
                raise ExpressionError(f"takes a key only, not {condition!r}")
            loaded = meta.projection(fields, "transact_get")
        get = {"TableName": model.table_name(), "Key": key}
        if loaded:
            expression = _Expression()
            meta.project(get, expression, loaded)
            expression.into(get)
        gets.append({"Get": get})
        metas.append((meta, loaded))
    answer = yield from _request("TransactGetItems", {"TransactItems": gets})
    found = []
    for (meta, loaded), response in zip(metas, answer.get("Responses", [])):
        item = response.get("Item")
        if item and loaded:  # (a server may send more than was asked)
            kept = {meta.attr(name) for name in loaded}
            item = {attr: av for attr, av in item.items()
                    if attr in kept or attr in meta.key_attrs}
        found.append(meta.partial([meta.from_item(item)], loaded)[0]
                     if item and meta.of_entity(item) else None)
    return found + [None] * (len(requests) - len(found))


# -- Collections: the entities of one partition, in one Query ----------------

def get_collection(*models: type[Model], consistent_read: bool = False,
                   **values: Any) -> dict[type[Model], list[Model]]:
    """The items of ``models`` -- entities (``__entity__``) sharing a table
    and the template of its hash key -- in the partition that ``values``
    (the fields that template names) make: one Query, read to its last
    page, as ``{model: [instances in sort key order]}``; items of other
    entities are left out. ``consistent_read`` as for get_many.
    ``get_collection(Customer, Order, customer_id="c1")``."""
    return _perform(_collection(models, consistent_read, values))


async def aget_collection(*models: type[Model],
                          consistent_read: bool = False,
                          **values: Any) -> dict[type[Model], list[Model]]:
    """``get_collection``, awaited."""
    return await _aperform(_collection(models, consistent_read, values))


_twin_docs([(aget_collection, get_collection)])


def _collection(models, consistent_read, values):
    """Procedure of get_collection."""
    first, text = _partition(models, values)
    expression = _Expression()
    params = {"TableName": first.table_name(),
              "KeyConditionExpression": (first._meta.key_fields[0][1]
                                         == text)._render(expression)}
    if consistent_read:
        params["ConsistentRead"] = True
    found: dict[type[Model], list[Model]] = {model: [] for model in models}
    entities = {(model.__entity_attribute__, model.__entity__): model
                for model in models}

    def take(items):
        count = 0
        for count, item in enumerate(items, 1):
            for (attr, entity), model in entities.items():
                if item.get(attr) == {"S": entity}:
                    found[model].append(model._meta.from_item(item))
                    break
        return count

    yield from _pages("Query", expression.into(params), take)
    return found


def _partition(models, values):
    """(the first of ``models``, the text of the hash key the ``values``
    make) of a collection; ValidationError or ExpressionError unless the
    models are entities of one table whose hash key templates make the
    same text from the same fields."""
    if not models:
        raise ValidationError("get_collection takes one model or more")
    texts = {}
    for model in models:
        if not (isinstance(model, type) and issubclass(model, Model)) or \
                not model._meta.key_fields:
            raise ValidationError(f"get_collection takes models, not "
                                  f"{model!r}")
        meta = model._meta
        if meta.entity is None:
            raise ValidationError(
                f"get_collection: {model.__name__} declares no __entity__, "
                "so its items cannot be told from others'")
        name, field = meta.key_fields[0]
        if not isinstance(field, KeyTemplate):
            raise ExpressionError(f"get_collection: {model.__name__}.{name} "
                                  "is not a KeyTemplate")
        unknown = sorted(set(values) - set(field.names))
        lacking = [used for used in field.names if used not in values]
        if unknown or lacking:
            raise ExpressionError(
                f"get_collection: {model.__name__}.{name} is made of "
                f"{', '.join(field.names) or 'no field'} "
                f"({field.template!r}), not of "
                f"{', '.join(sorted(values)) or 'no field'}")
        try:
            text = field._text_of(values, meta.fields, True)[0]
        except ValidationError as exc:
            raise ValidationError(f"get_collection: {model.__name__}: {exc}",
                                  exc.errors) from None
        texts[model] = (model.table_name(), field.stored_path[0], text)
    if len(set(texts.values())) > 1:
        raise ExpressionError(
            "get_collection: the models share no partition: " + "; ".join(
                f"{model.__name__} reads {table} where {attr} = {text!r}"
                for model, (table, attr, text) in texts.items()))
    return models[0], texts[models[0]][2]


# -- Stream records ----------------------------------------------------------

Change = collections.namedtuple("Change", "event model keys old new expired")
Change.__doc__ = """One record of a table's stream, as ``changes()`` gives it:
``event`` (``"INSERT"``, ``"MODIFY"`` or ``"REMOVE"``), ``model``, ``keys``
(an instance holding the item's key), ``old`` and ``new`` (instances, or
None where the stream's view type holds no such image), and ``expired``:
True when DynamoDB's TTL removed the item."""


def changes(event: dict[str, Any], *models: type[Model]) -> Iterator[Change]:
    """The records of a Lambda ``event`` from DynamoDB streams, as Change
    objects, in order: ``for change in dynamongo.changes(event, User,
    Order)``. Each record's model is the one of ``models`` whose table (its
    full name, table prefix included) the record's ``eventSourceARN``
    names -- of entities sharing a table, the one whose entity the
    record's image holds (a record without an image, of a KEYS_ONLY
    stream, goes to the table's model only when one is given); records of
    other tables, or entities, are skipped."""
    tables: dict[str, list[type[Model]]] = {}
    for model in models:
        if not (isinstance(model, type) and issubclass(model, Model)
                and model.__table__ is not None):
            raise ValidationError(f"changes takes the event and models, not "
                                  f"{model!r}")
        tables.setdefault(model.table_name(), []).append(model)
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list):
        raise ValidationError(f"changes takes a Lambda event holding "
                              f"\"Records\", not {event!r:.80}")
    return _changes(records, tables)


def _changes(records, tables):
    for record in records:
        # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL
        arn = record.get("eventSourceARN") or ""
        table = arn.partition(":table/")[2].partition("/stream/")[0]
        data = record.get("dynamodb") or {}
        old, new = data.get("OldImage"), data.get("NewImage")
        image, candidates = new or old, tables.get(table, [])
        if image is None:  # (keys only: one model's, or cannot tell)
            model = candidates[0] if len(candidates) == 1 else None
        else:
            model = next((model for model in candidates
                          if model._meta.of_entity(image)), None)
        if model is None:
            continue
        identity = record.get("userIdentity") or {}
        yield Change(
            record.get("eventName"), model,
            model.from_image(data.get("Keys") or {}),
            None if old is None else model.from_image(old),
            None if new is None else model.from_image(new),
            identity.get("type") == "Service"
            and identity.get("principalId") == "dynamodb.amazonaws.com")
