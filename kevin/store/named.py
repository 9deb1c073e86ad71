"""Statements with named parameters, written once and rendered in two forms.

A ``NamedStatement`` is SQL text with ``{name}`` placeholders and the type of each
parameter. ``one()`` renders it for a single set of values (``$1::type`` … in the order
of ``params``) and ``args`` binds a mapping of values by name in that order; ``many()``
renders the same text run once per line of a batch (LATERAL over the lines, each
placeholder becoming that line's column of the same name) and ``lines`` turns mappings
into the lines. Neither form is obtained by editing the other's text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Columns = Sequence[tuple[str, str]]  # (name, PostgreSQL type), in order


def lines_source(columns: Columns, param: str = "$1") -> str:
    """A subquery with one row per line of a batch: ``param`` is one jsonb array holding
    one array per line, its elements the ``columns`` in order (jsonb kept as jsonb), and
    ``ord`` the line's 1-based position. A batch travels as one jsonb parameter because
    PostgreSQL takes JSON apart faster than asyncpg encodes arrays element by element."""
    fields = ", ".join(f"r->{i} AS {name}" if type_ == "jsonb" else
                       f"(r->>{i})::{type_} AS {name}"
                       for i, (name, type_) in enumerate(columns))
    # Names and types come from constant column lists, never from values.
    source = f"FROM jsonb_array_elements({param}::jsonb) WITH ORDINALITY AS e(r, ord)"
    return f"(SELECT {fields}, ord {source})"  # noqa: S608


def line_values(columns: Columns, values: Mapping[str, Any]) -> list[Any]:
    """One line for ``lines_source``: the values of ``columns``, by name."""
    return [values[name] for name, _ in columns]


@dataclass(frozen=True)
class NamedStatement:
    """SQL text with ``{name}`` placeholders (``{{``/``}}`` for literal braces) and the
    (name, type) of every parameter."""

    text: str
    params: Columns

    def one(self) -> str:
        """The statement for one set of values: ``{name}`` → ``$n::type``."""
        return self.text.format(**{name: f"${i}::{type_}"
                                   for i, (name, type_) in enumerate(self.params, 1)})

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The values of ``one()``'s parameters, in order, taken by name."""
        return [values[name] for name, _ in self.params]

    def many(self, select: str, alias: str = "line") -> str:
        """The statement once per line of a batch (``lines``), as
        ``SELECT <select> FROM <lines> AS line CROSS JOIN LATERAL (<statement>) AS found``;
        ``select`` may name ``line.ord`` (the line's position) and ``found.*``."""
        per_line = self.text.format(**{name: f"{alias}.{name}" for name, _ in self.params})
        lateral = f"CROSS JOIN LATERAL ({per_line}) AS found ORDER BY {alias}.ord"
        return f"SELECT {select} FROM {lines_source(self.params)} AS {alias} {lateral}"  # noqa: S608

    def lines(self, values: Iterable[Mapping[str, Any]]) -> list[list[Any]]:
        """``many()``'s one parameter: a line per mapping, taken by name."""
        return [line_values(self.params, v) for v in values]
