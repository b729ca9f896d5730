"""Wire format of broker events: a msgpack envelope with exact dates, times and decimals.

An event on the wire is the msgpack map ``{"g": group, "p": payload, "t": sent_at}`` where
``sent_at`` is Unix seconds (float). Payloads may hold ``None``, ``bool``, ``int`` (64-bit),
``float``, ``str``, ``bytes`` (also ``bytearray``, ``memoryview``; they come back as ``bytes``),
lists, tuples (they come back as lists), dicts (keys of those same scalar types), and the types
below, which msgpack does not know and which travel as application ``ExtType`` s:

====  ==============  ===============================================================
code  type            ext body (itself msgpack unless said otherwise)
====  ==============  ===============================================================
1     ``datetime``    ``[year, month, day, hour, minute, second, microsecond, fold, tz]``
2     ``date``        ``date.toordinal()`` (proleptic Gregorian ordinal)
3     ``Decimal``     ``str(value)`` as raw UTF-8 bytes, not msgpack (exact: digits, exponent,
                      sign, NaN and Infinity survive)
4     ``UUID``        ``UUID.bytes``, 16 raw bytes, not msgpack
5     ``time``        ``[hour, minute, second, microsecond, fold, tz]``
6     ``timedelta``   ``[days, seconds, microseconds]``
====  ==============  ===============================================================

``tz`` is ``nil`` for a naive value; an ``int`` for a fixed offset (``datetime.timezone``, or
any other tzinfo, frozen to its UTC offset at that instant), in microseconds east of UTC; or
``[key, offset]`` for a ``zoneinfo.ZoneInfo`` with a key, where ``offset`` is the same
microsecond offset (``nil`` for a ``time``) used when the receiving host lacks that zone.
So an aware ``datetime`` comes back equal (same instant, same wall time, same ``fold``) with the
same zone, and a naive one comes back naive with the same fields.

Anything else raises ``TypeError`` naming the type when the event is *encoded*, i.e. in the
publisher's ``publish`` call, never later in a subscriber's worker. Codes 0 and 7-127 are free;
negative codes are reserved by msgpack.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any, NamedTuple

import msgpack

EXT_DATETIME = 1
EXT_DATE = 2
EXT_DECIMAL = 3
EXT_UUID = 4
EXT_TIME = 5
EXT_TIMEDELTA = 6

_MICROSECOND = dt.timedelta(microseconds=1)

SUPPORTED_TYPES = (
    "None, bool, int, float, str, bytes, list, tuple, dict, datetime, date, time, timedelta, "
    "Decimal, UUID"
)


class Envelope(NamedTuple):
    """One decoded event."""

    group: str
    payload: Any
    sent_at: float


def _offset_us(offset: dt.timedelta | None) -> int | None:
    return None if offset is None else offset // _MICROSECOND


def _tz_of(tzinfo: dt.tzinfo | None, offset: dt.timedelta | None) -> Any:
    if isinstance(tzinfo, zoneinfo.ZoneInfo) and tzinfo.key:
        return [tzinfo.key, _offset_us(offset)]
    return _offset_us(offset)


def _tz_from(value: Any) -> dt.tzinfo | None:
    if value is None:
        return None
    if isinstance(value, int):
        return dt.timezone(dt.timedelta(microseconds=value))
    key, offset = value
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None if offset is None else dt.timezone(dt.timedelta(microseconds=offset))


def _clock(obj: dt.datetime | dt.time) -> list[Any]:
    """The time-of-day part both datetimes and times carry: h, m, s, us, fold, zone."""
    return [
        obj.hour,
        obj.minute,
        obj.second,
        obj.microsecond,
        obj.fold,
        _tz_of(obj.tzinfo, obj.utcoffset()),
    ]


def _default(obj: Any) -> msgpack.ExtType:
    # datetime before date: a datetime is a date.
    if isinstance(obj, dt.datetime):
        body = [obj.year, obj.month, obj.day, *_clock(obj)]
        return msgpack.ExtType(EXT_DATETIME, msgpack.packb(body))
    if isinstance(obj, dt.date):
        return msgpack.ExtType(EXT_DATE, msgpack.packb(obj.toordinal()))
    if isinstance(obj, Decimal):
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode("ascii"))
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    if isinstance(obj, dt.time):
        body = _clock(obj)
        return msgpack.ExtType(EXT_TIME, msgpack.packb(body))
    if isinstance(obj, dt.timedelta):
        return msgpack.ExtType(
            EXT_TIMEDELTA, msgpack.packb([obj.days, obj.seconds, obj.microseconds])
        )
    kind = type(obj)
    raise TypeError(
        f"cannot send a {kind.__module__}.{kind.__qualname__} through the broker; "
        f"payloads may contain {SUPPORTED_TYPES}"
    )


def _ext_hook(code: int, data: bytes) -> Any:
    if code == EXT_DATETIME:
        year, month, day, hour, minute, second, micro, fold, tz = msgpack.unpackb(data)
        return dt.datetime(
            year, month, day, hour, minute, second, micro, tzinfo=_tz_from(tz), fold=fold
        )
    if code == EXT_DATE:
        return dt.date.fromordinal(msgpack.unpackb(data))
    if code == EXT_DECIMAL:
        return Decimal(data.decode("ascii"))
    if code == EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == EXT_TIME:
        hour, minute, second, micro, fold, tz = msgpack.unpackb(data)
        return dt.time(hour, minute, second, micro, tzinfo=_tz_from(tz), fold=fold)
    if code == EXT_TIMEDELTA:
        days, seconds, micro = msgpack.unpackb(data)
        return dt.timedelta(days=days, seconds=seconds, microseconds=micro)
    return msgpack.ExtType(code, data)


def dumps(value: Any) -> bytes:
    """msgpack bytes of ``value``; ``TypeError`` names an unsupported type."""
    return msgpack.packb(value, default=_default, use_bin_type=True, datetime=False)


def loads(data: bytes) -> Any:
    """The value ``dumps`` encoded; ``ValueError`` when ``data`` is not valid msgpack."""
    try:
        return msgpack.unpackb(
            data, ext_hook=_ext_hook, raw=False, strict_map_key=False, use_list=True, timestamp=0
        )
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"undecodable broker message: {type(exc).__name__}: {exc}") from exc


def encode_envelope(group: str, payload: Any, sent_at: float) -> bytes:
    """The wire bytes of one event; ``TypeError`` names an unsupported payload type."""
    return dumps({"g": group, "p": payload, "t": sent_at})


def decode_envelope(data: bytes) -> Envelope:
    """Decode one event; ``ValueError`` when ``data`` is not an envelope this module wrote."""
    value = loads(data)
    if not isinstance(value, dict) or not {"g", "p", "t"} <= value.keys():
        raise ValueError("broker message is not an envelope {g, p, t}")
    group, sent_at = value["g"], value["t"]
    if not isinstance(group, str) or not isinstance(sent_at, int | float):
        raise ValueError("broker envelope has a bad group or timestamp")
    return Envelope(group, value["p"], float(sent_at))
