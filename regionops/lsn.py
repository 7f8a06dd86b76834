"""PostgreSQL log sequence numbers as a small comparable value type."""

from __future__ import annotations

from functools import total_ordering
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema


@total_ordering
class Lsn:
    """A WAL position such as ``0/5000060``; ordered, subtractable (bytes)."""

    __slots__ = ("value",)

    def __init__(self, value: int):
        if value < 0:
            raise ValueError(f"an LSN cannot be negative: {value}")
        self.value = int(value)

    @classmethod
    def parse(cls, text: str | Lsn | int) -> Lsn:
        """Parse ``'0/5000060'`` (or pass an Lsn / int through)."""
        if isinstance(text, Lsn):
            return text
        if isinstance(text, int):
            return cls(text)
        try:
            hi, lo = str(text).strip().split("/")
            return cls((int(hi, 16) << 32) + int(lo, 16))
        except ValueError as exc:
            raise ValueError(f"not an LSN: {text!r}") from exc

    def __str__(self) -> str:
        return f"{self.value >> 32:X}/{self.value & 0xFFFFFFFF:X}"

    def __repr__(self) -> str:
        return f"Lsn('{self}')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lsn) and other.value == self.value

    def __lt__(self, other: Lsn) -> bool:
        return self.value < other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __sub__(self, other: Lsn) -> int:
        """Bytes of WAL between two positions."""
        return self.value - other.value

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler):
        return core_schema.no_info_plain_validator_function(
            cls.parse,
            serialization=core_schema.plain_serializer_function_ser_schema(str),
            json_schema_input_schema=core_schema.str_schema(),
        )
