"""Modbus register maps: where a point lives in a device and how its raw words become a value.

Kept apart from the polling (L{hvac_push.sources.modbus}) so that the plant
file, tools and tests can check and decode register maps without a client.
Every register is 16 bits. C{byte_order} says which byte of a register comes
first ("big": the high byte, as the Modbus specification has it), and
C{word_order} which register of a 32- or 64-bit value ("big": the most
significant register at C{address}). A C{bit} reads one bit of an integer
register (a status word) as a bool. A C{string} holds C{length} characters,
two per register.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal, Sequence

from hvac_push.core.points import Value, check_point_id

TABLES = ("holding", "input", "coil", "discrete")
TYPES = (
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bool",
)
ORDERS = ("big", "little")
#: struct codes of the numeric register types (always read big-endian once the words are in order).
_STRUCT = {
    "int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "int64": ">q", "uint64": ">Q",
    "float32": ">f", "float64": ">d",
}
_INTEGERS = ("int16", "uint16", "int32", "uint32", "int64", "uint64")
#: Longest string: the characters one read can carry (125 registers).
MAX_STRING = 250


def registers_of(kind: str, length: int = 0) -> int:
    """How many registers a value of type C{kind} takes (C{length} characters for a string)."""
    if kind == "string":
        return (length + 1) // 2
    if kind.endswith("64"):
        return 4
    if kind.endswith("32"):
        return 2
    return 1


@dataclass(frozen=True, slots=True)
class ModbusPoint:
    """One point's place in a device and how to turn its raw words into a value."""

    point_id: str
    address: int
    table: str = "holding"
    type: str = "uint16"
    #: For 32- and 64-bit types: "big" = most significant word first (at C{address}), "little" = least first.
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    #: Read one bit (0 = least significant) of an integer register as a bool (a status word).
    bit: int | None = None
    #: Within each register: "big" = high byte first (Modbus), "little" = bytes swapped.
    byte_order: str = "big"
    #: For C{string}: the number of characters (two per register).
    length: int = 0
    #: Seconds between reads of this point; None: the device's poll interval.
    interval: float | None = None

    def __post_init__(self) -> None:
        check_point_id(self.point_id)
        if self.table not in TABLES:
            raise ValueError(f"{self.point_id}: table must be one of {', '.join(TABLES)}")
        kind = "bool" if self.table in ("coil", "discrete") else self.type
        if kind != self.type:
            object.__setattr__(self, "type", kind)
        if self.type not in TYPES or (self.type == "bool") != (self.table in ("coil", "discrete")):
            raise ValueError(f"{self.point_id}: type {self.type!r} does not fit table {self.table!r}")
        if self.word_order not in ORDERS:
            raise ValueError(f"{self.point_id}: word_order must be 'big' or 'little'")
        if self.byte_order not in ORDERS:
            raise ValueError(f"{self.point_id}: byte_order must be 'big' or 'little'")
        if self.type == "string":
            if not 1 <= self.length <= MAX_STRING:
                raise ValueError(f"{self.point_id}: length must be 1..{MAX_STRING} characters for a string")
        elif self.length:
            raise ValueError(f"{self.point_id}: length is only for a string")
        if self.bit is not None:
            if self.type not in _INTEGERS:
                raise ValueError(f"{self.point_id}: bit needs an integer type, not {self.type}")
            if not 0 <= self.bit < 16 * self.count:
                raise ValueError(f"{self.point_id}: bit must be 0..{16 * self.count - 1} for {self.type}")
            if (self.scale, self.offset) != (1.0, 0.0):
                raise ValueError(f"{self.point_id}: bit and scale/offset do not go together")
        if not 0 <= self.address <= 65535 - (self.count - 1):
            raise ValueError(f"{self.point_id}: address {self.address} out of range")
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ValueError(f"{self.point_id}: scale must be finite and non-zero, offset finite")
        if self.interval is not None and not (math.isfinite(self.interval) and self.interval > 0):
            raise ValueError(f"{self.point_id}: interval must be > 0")

    @property
    def count(self) -> int:
        """Registers (or bits) the point occupies."""
        if self.type == "bool":
            return 1
        return registers_of(self.type, self.length)


def _to_bytes(point: ModbusPoint, words: Sequence[int]) -> bytes:
    """The point's registers as one big-endian byte string (word and byte order undone)."""
    raw = [int(w) & 0xFFFF for w in words]
    if point.word_order == "little" and point.type != "string":
        raw.reverse()
    order: Literal["big", "little"] = "big" if point.byte_order == "big" else "little"
    return b"".join(w.to_bytes(2, order) for w in raw)


def _to_words(point: ModbusPoint, data: bytes) -> list[int]:
    order: Literal["big", "little"] = "big" if point.byte_order == "big" else "little"
    words = [int.from_bytes(data[i : i + 2], order) for i in range(0, len(data), 2)]
    if point.word_order == "little" and point.type != "string":
        words.reverse()
    return words


def decode(point: ModbusPoint, words: Sequence[int] | Sequence[bool]) -> Value:
    """The value of C{point} from its own raw registers (or bits), scaled.

    Raises C{ValueError} for a value that cannot be carried (NaN, infinity).
    """
    if point.type == "bool":
        return bool(words[0])
    if len(words) < point.count:
        raise ValueError(f"expected {point.count} registers, got {len(words)}")
    data = _to_bytes(point, [int(w) for w in words[: point.count]])
    if point.type == "string":
        # Devices pad with NULs or spaces; a byte that is not ASCII is shown, not dropped.
        return data[: point.length].split(b"\0", 1)[0].decode("latin-1").rstrip()
    if point.bit is not None:
        return bool((int.from_bytes(data, "big") >> point.bit) & 1)
    number: int | float
    (number,) = struct.unpack(_STRUCT[point.type], data)
    if point.type.startswith("float"):
        if not math.isfinite(number):
            raise ValueError(f"not a finite number: {number}")
        if point.type == "float32":
            number = float(f"{number:.7g}")  # the precision a float32 really has
    if point.scale == 1.0 and point.offset == 0.0:
        return number
    scaled = number * point.scale + point.offset
    if not math.isfinite(scaled):
        raise ValueError(f"scaled value is not finite: {scaled}")
    return float(f"{scaled:.12g}")  # drop binary noise such as 21.500000000000004


def encode(point: ModbusPoint, value: Value) -> list[int]:
    """The raw registers a device holds for C{value} (the inverse of L{decode}); for tests and tools.

    For a C{bit} point: the register with only that bit set (or none).
    """
    if point.type == "bool":
        return [int(bool(value))]
    if point.type == "string":
        data = str(value).encode("latin-1")[: point.length].ljust(2 * point.count, b"\0")
        return _to_words(point, data)
    if point.bit is not None:
        data = (int(bool(value)) << point.bit).to_bytes(2 * point.count, "big")
        return _to_words(point, data)
    if isinstance(value, str):
        raise TypeError(f"{point.point_id}: a {point.type} takes a number")
    raw: float | int = (value - point.offset) / point.scale if (point.scale, point.offset) != (1.0, 0.0) else value
    if not point.type.startswith("float"):
        raw = int(round(raw))
    return _to_words(point, struct.pack(_STRUCT[point.type], raw))


__all__ = ["MAX_STRING", "ModbusPoint", "ORDERS", "TABLES", "TYPES", "decode", "encode", "registers_of"]
