"""One generic codec for every message: a dataclass whose fields carry their wire type.

A message is declared once, each field annotated with a :class:`Spec`::

    @dataclass
    class LoopMsg(Message):
        cur_kf: Annotated[int, Int()]
        stamp: Annotated[Stamp, Time()]
        scale: Annotated[float, Num()]

:meth:`Message.to_dict` writes ``{"v": 1, field: wire value, ...}``;
:meth:`Message.from_dict` validates a decoded map field by field and builds the
dataclass, raising :class:`ProtocolError` naming the field and what was expected.
Unknown fields are ignored (a later writer of the same version may add some). A field
missing from the map takes the dataclass default; one without a default is required
(a nullable one then reads as None). ``Spec.key`` places a field inside a nested map
(``"added.ids"``); ``Spec.omit`` leaves a field out when its value is that object
(None, False); :class:`Rest` collects the fields no other spec names.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from slam_protocol import wire
from slam_protocol.names import MAX_IMAGE_SIDE
from slam_protocol.wire import ProtocolError, Stamp, is_int

M = TypeVar("M", bound="Message")
KEEP: Any = object()
"""``Spec.omit`` default: always write the field."""
_CHOICE_CHARS = 32  # longest quoted value in a "must be one of" error


def _got(x: Any) -> str:
    return type(x).__name__


# --- field specs --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """How one field travels. ``null``: None is a valid value (written as msgpack nil);
    ``omit``: leave the key out when the value *is* this object; ``key``: the wire key,
    dotted for a nested map (default: the field's name); ``required``: refuse a map
    without the key even though the field has a default. These options are keywords;
    a subclass's own options may be positional (``Vec(3, null=True)``)."""

    null: bool = False
    omit: Any = KEEP
    key: str | None = None
    required: bool = False
    want: ClassVar[str] = "a value"

    def check(self, x: Any, name: str) -> Any:
        """The field's value from wire value ``x`` (not None); raise when invalid."""
        return x

    def pack(self, value: Any) -> Any:
        """The wire value of ``value`` (None only reaches here when not ``null``)."""
        return value

    def bad(self, x: Any, name: str) -> ProtocolError:
        """The error for a value of the wrong type."""
        null = " or null" if self.null else ""
        return ProtocolError(f"field '{name}' must be {self.want}{null}, got {_got(x)}")


@dataclasses.dataclass(frozen=True)
class Int(Spec):
    """A msgpack integer (not a boolean)."""

    want: ClassVar[str] = "an integer"

    def check(self, x: Any, name: str) -> int:
        if not is_int(x):
            raise self.bad(x, name)
        return int(x)

    def pack(self, value: Any) -> int:
        return int(value)


@dataclasses.dataclass(frozen=True)
class Num(Spec):
    """A number (integer or float on the wire, float in Python). ``positive``: finite
    and > 0."""

    positive: bool = False
    want: ClassVar[str] = "a number"

    def check(self, x: Any, name: str) -> float:
        if not (is_int(x) or isinstance(x, float)):
            raise self.bad(x, name)
        value = float(x)
        if self.positive and not (math.isfinite(value) and value > 0):
            raise ProtocolError(f"field '{name}' must be a positive number")
        return value

    def pack(self, value: Any) -> float:
        return float(value)


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
    """A msgpack boolean."""

    want: ClassVar[str] = "a boolean"

    def check(self, x: Any, name: str) -> bool:
        if not isinstance(x, bool):
            raise self.bad(x, name)
        return x

    def pack(self, value: Any) -> bool:
        return bool(value)


@dataclasses.dataclass(frozen=True)
class Str(Spec):
    """A msgpack string; ``choices``: one of these."""

    choices: tuple[str, ...] | None = None
    want: ClassVar[str] = "a string"

    def check(self, x: Any, name: str) -> str:
        if not isinstance(x, str):
            raise self.bad(x, name)
        if self.choices is not None and x not in self.choices:
            raise ProtocolError(f"field '{name}' must be one of {list(self.choices)}, "
                                f"got {x[:_CHOICE_CHARS]!r}")
        return x


@dataclasses.dataclass(frozen=True)
class Bin(Spec):
    """Opaque bytes (msgpack bin): an encoded image, say."""

    want: ClassVar[str] = "binary (msgpack bin)"

    def check(self, x: Any, name: str) -> bytes:
        if not isinstance(x, bytes):
            raise self.bad(x, name)
        return x


@dataclasses.dataclass(frozen=True)
class Vec(Spec):
    """A list of ``n`` finite numbers; a tuple of floats in Python."""

    n: int = 3

    def check(self, x: Any, name: str) -> tuple[float, ...]:
        if (not isinstance(x, list) or len(x) != self.n
                or not all(is_int(c) or isinstance(c, float) for c in x)):
            null = " or null" if self.null else ""
            raise ProtocolError(f"field '{name}' must be a list of {self.n} numbers{null}")
        out = tuple(float(c) for c in x)
        if not all(math.isfinite(c) for c in out):
            raise ProtocolError(f"field '{name}' must be finite")
        return out

    def pack(self, value: Any) -> list[float]:
        return [float(c) for c in value]


@dataclasses.dataclass(frozen=True)
class Time(Spec):
    """A :class:`Stamp` as ``{"sec": int, "nanosec": int}``."""

    def check(self, x: Any, name: str) -> Stamp:
        return Stamp.from_dict(x, name)

    def pack(self, value: Any) -> dict[str, int]:
        return Stamp(*value).to_dict()


@dataclasses.dataclass(frozen=True)
class Array(Spec):
    """A packed array (``wire.pack_array``): ``dtype`` rows of shape ``tail``; None
    packs as an empty array."""

    dtype: Any = np.float32
    tail: tuple[int, ...] = ()
    want: ClassVar[str] = "binary (msgpack bin)"

    def check(self, x: Any, name: str) -> Any:
        if not isinstance(x, bytes):
            raise self.bad(x, name)
        try:
            return wire.unpack_array(x, self.dtype, self.tail)
        except ProtocolError as exc:
            raise ProtocolError(f"field '{name}': {exc}") from None

    def pack(self, value: Any) -> bytes:
        a = np.zeros((0, *self.tail), self.dtype) if value is None else value
        return wire.pack_array(np.asarray(a, self.dtype).reshape(-1, *self.tail))


@dataclasses.dataclass(frozen=True)
class Shape(Spec):
    """An image shape ``[h, w]`` or ``[h, w, 3]`` with sides in 1..MAX_IMAGE_SIDE."""

    def check(self, x: Any, name: str) -> tuple[int, ...]:
        if (not isinstance(x, list) or len(x) not in (2, 3) or not all(is_int(c) for c in x)
                or not all(0 < c <= MAX_IMAGE_SIDE for c in x[:2])
                or (len(x) == 3 and x[2] != 3)):
            raise ProtocolError(f"field '{name}' must be [h, w] or [h, w, 3] with sides in "
                                f"1..{MAX_IMAGE_SIDE} (raw encoding)")
        return tuple(x)

    def pack(self, value: Any) -> list[int]:
        return [int(c) for c in value]


@dataclasses.dataclass(frozen=True)
class Counts(Spec):
    """A map of string keys to integers; ``always`` keys read as 0 when absent (other
    key types are skipped)."""

    always: tuple[str, ...] = ()
    want: ClassVar[str] = "a map"

    def check(self, x: Any, name: str) -> dict[str, int]:
        if not isinstance(x, dict):
            raise self.bad(x, name)
        out = {k: Int().check(v, f"{name}.{k}") for k, v in x.items() if isinstance(k, str)}
        for key in self.always:
            out.setdefault(key, 0)
        return out

    def pack(self, value: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in value.items()}


@dataclasses.dataclass(frozen=True)
class Nested(Spec):
    """Another message, as its own map (with its own ``v``)."""

    cls: type[Message] | None = None
    want: ClassVar[str] = "a map"

    def check(self, x: Any, name: str) -> Message:
        if not isinstance(x, dict):
            raise self.bad(x, name)
        assert self.cls is not None
        return from_wire(self.cls, x, where=name)

    def pack(self, value: Any) -> dict[str, Any]:
        return to_wire(value)


@dataclasses.dataclass(frozen=True)
class Rest(Spec):
    """The message's fields that no other spec names (a dict), written at top level."""


# --- the codec ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Wire:
    name: str  # the dataclass field
    path: tuple[str, ...]  # wire keys, outermost first
    spec: Spec
    has_default: bool


_WIRE_FIELDS: dict[type, tuple[_Wire, ...]] = {}


def wire_fields(cls: type) -> tuple[_Wire, ...]:
    """The wire description of message class ``cls``: one entry per annotated field
    (worked out on first use, then cached)."""
    cached = _WIRE_FIELDS.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        specs = [m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Spec)]
        if len(specs) != 1:
            raise TypeError(f"{cls.__name__}.{f.name} needs exactly one wire Spec "
                            "(Annotated[type, Spec()])")
        spec = specs[0]
        has_default = (f.default is not dataclasses.MISSING
                       or f.default_factory is not dataclasses.MISSING)
        out.append(_Wire(f.name, tuple((spec.key or f.name).split(".")), spec, has_default))
    _WIRE_FIELDS[cls] = tuple(out)
    return _WIRE_FIELDS[cls]


def to_wire(msg: Message) -> dict[str, Any]:
    """The wire map of ``msg``: ``v`` and each field (see the module docstring)."""
    out: dict[str, Any] = {}
    fields = wire_fields(type(msg))
    for w in fields:  # the free-form fields first: declared ones win a clash
        if isinstance(w.spec, Rest):
            out.update(getattr(msg, w.name))
    out["v"] = wire.SCHEMA_VERSION
    for w in fields:
        value = getattr(msg, w.name)
        if isinstance(w.spec, Rest) or value is w.spec.omit:
            continue
        target = out
        for key in w.path[:-1]:
            target = target.setdefault(key, {})
        target[w.path[-1]] = None if value is None and w.spec.null else w.spec.pack(value)
    return out


def _lookup(d: Mapping[Any, Any], path: tuple[str, ...], where: str) -> tuple[bool, Any]:
    """(present, value) of the key ``path`` in ``d``; intermediate maps must be maps."""
    for depth, key in enumerate(path[:-1]):
        name = ".".join(filter(None, (where, *path[:depth + 1])))
        if key not in d:
            raise ProtocolError(f"field '{name}' is missing")
        if not isinstance(d[key], dict):
            raise ProtocolError(f"field '{name}' must be a map, got {_got(d[key])}")
        d = d[key]
    return (path[-1] in d), d.get(path[-1])


def from_wire(cls: type[M], d: Any, where: str = "") -> M:
    """The validated message ``cls`` of the decoded map ``d``; ``where`` prefixes field
    names in errors (a nested message).

    :raises ProtocolError: naming the first field that is missing or invalid.
    """
    if not isinstance(d, Mapping):
        raise ProtocolError(f"{where or cls.__name__} must be a map, got {_got(d)}")
    kwargs: dict[str, Any] = {}
    top = {"v"}
    fields = wire_fields(cls)
    for w in fields:
        top.add(w.path[0])
        if isinstance(w.spec, Rest):
            continue
        name = ".".join(filter(None, (where, *w.path)))
        present, x = _lookup(d, w.path, where)
        if not present:
            if w.spec.required or not (w.has_default or w.spec.null):
                raise ProtocolError(f"field '{name}' is missing")
            if not w.has_default:
                kwargs[w.name] = None
        elif x is None and w.spec.null:
            kwargs[w.name] = None
        else:
            kwargs[w.name] = w.spec.check(x, name)
    for w in fields:
        if isinstance(w.spec, Rest):
            kwargs[w.name] = {k: v for k, v in d.items() if k not in top}
    msg = cls(**kwargs)
    msg.validate()
    return msg


def read_field(d: Mapping[Any, Any], key: str, spec: Spec) -> Any:
    """Field ``key`` of ``d`` checked by ``spec`` (for rules that depend on other fields).

    :raises ProtocolError: the field is missing or invalid.
    """
    if key not in d:
        raise ProtocolError(f"field '{key}' is missing")
    return spec.check(d[key], key)


class Message:
    """Base of the message dataclasses: the generic codec as methods."""

    def validate(self) -> None:
        """Rules across fields, run after decoding (raise :class:`ProtocolError`)."""

    def to_dict(self) -> dict[str, Any]:
        """The wire map (with ``v``), ready for :func:`wire.encode`."""
        return to_wire(self)

    @classmethod
    def from_dict(cls: type[M], d: Mapping[Any, Any]) -> M:
        """The validated message of a decoded wire map (``v`` is checked by ``decode``)."""
        return from_wire(cls, d)

    def encode(self) -> bytes:
        """The message's msgpack bytes."""
        return wire.encode(to_wire(self))

    @classmethod
    def decode(cls: type[M], data: bytes | bytearray | memoryview,
               max_bytes: int = wire.MAX_MESSAGE_BYTES) -> M:
        """The validated message of msgpack ``data`` (version and size checked)."""
        return from_wire(cls, wire.decode(data, max_bytes))
