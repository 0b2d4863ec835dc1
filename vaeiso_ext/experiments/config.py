"""What a run is: its configuration, a dataclass whose fields are the run's full description
(stored in its checkpoint, compared on ``--resume``, printed in its report) and, through their
metadata, its command-line options (:func:`opt`, with the option types below)."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

from ..checkpoint import CheckpointError


class UsageError(Exception):
    """A user error: the CLI prints ``error: <message>`` and exits with code 2."""


# ------------------------------------------------------------------ option types


def _number(kind, s: str):
    try:
        return kind(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {s!r}") from None


def positive_float(s: str) -> float:
    v = _number(float, s)
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {s!r}")
    return v


def int_at_least(low: int):
    def parse(s: str) -> int:
        v = _number(int, s)
        if v < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {s!r}")
        return v

    parse.__name__ = f"int>={low}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def opt(
    default, help: str, *, flag: str | None = None, type=None, choices=None, metavar=None, analysis_only: bool = False
):
    """A config field that is also a command-line option (``--field-name`` unless ``flag``).
    ``analysis_only``: the field changes the analysis, not the training (e.g. how many held-out
    samples are analysed), so a different value never blocks ``--resume`` or the re-analysis of
    a finished run; the value asked for is used."""
    return field(
        default=default,
        metadata={
            "help": help,
            "flag": flag,
            "type": type,
            "choices": choices,
            "metavar": metavar,
            "analysis_only": analysis_only,
        },
    )


def option_name(f) -> str:
    """The command-line flag of a config field (``--lambda`` for ``lam``); a field that is not an
    option keeps its name."""
    if "help" not in f.metadata:
        return f.name
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


# ------------------------------------------------------------------ configs


@dataclass
class Config:
    """Base of the experiment configs. Every field is part of the run's description (stored in
    its checkpoint, compared on ``--resume``, printed in its report); fields made with
    :func:`opt` are command-line options too. ``LENGTH`` names the field that may grow on
    ``--resume`` (``epochs`` or ``iterations``)."""

    LENGTH: ClassVar[str] = "epochs"
    # Fields added after runs were recorded: the value a stored description lacking the field
    # means (how those runs were trained), where that differs from today's default.
    LEGACY: ClassVar[dict] = {}

    def validate(self) -> "Config":
        """Cross-field checks; raise :class:`UsageError`."""
        return self

    def description(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in fields(cls)}
        unknown = {k: v for k, v in d.items() if k not in names and v is not None}
        if unknown:
            raise CheckpointError(
                f"the run description holds fields this version does not know: "
                f"{sorted(unknown)} (written by a newer vaeiso_ext?)"
            )
        return cls(
            **{**{k: v for k, v in cls.LEGACY.items() if k not in d}, **{k: v for k, v in d.items() if k in names}}
        )

    def length(self) -> int:
        return int(getattr(self, self.LENGTH))

    @classmethod
    def analysis_only(cls) -> tuple[str, ...]:
        """The fields that do not change the training (:func:`opt`'s ``analysis_only``)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("analysis_only"))

    def training_description(self) -> dict:
        """The description without the analysis-only fields: what a run folder's training is."""
        skip = self.analysis_only()
        return {k: v for k, v in self.description().items() if k not in skip}


def differing_fields(saved: Config, requested: Config, ignore=()) -> list[str]:
    """``--flag: saved -> requested`` for every field that differs (analysis-only fields never
    do: they change no training), named by its command-line flag."""
    a, b = asdict(saved), asdict(requested)
    skip = set(ignore) | set(type(requested).analysis_only())
    return [
        f"{option_name(f)}: {a[f.name]!r} (saved) -> {b[f.name]!r} (requested)"
        for f in fields(requested)
        if f.name in a and f.name not in skip and a[f.name] != b[f.name]
    ]
