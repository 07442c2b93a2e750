"""Config overrides by dotted key: `--grid KEY=V1,V2,...` for sweeps, `--set KEY=VALUE`
for one backtest.

A value is read as TOML (1.5, 4, true, "erc", ["volatility", "stops"]); text TOML cannot
read (erc, inverse_vol) stays text. It is set at its dotted key in the full dump of the
validated config, and the result is validated again by the same pydantic settings as a
file, so a bad value fails with the field's name and the value before anything runs.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.config import Settings, describe_override, parse_settings
from bot.errors import BotError, ConfigError

# Sections a sweep cannot vary: the data is loaded once for every combination, and the
# sweep's runs go to one trade log.
FIXED_SECTIONS = {
    "data": "the data is loaded once for the whole sweep; use --data-dir or --synthetic",
    "store": "every run of a sweep goes to one trade log; use --database",
}
# Keys that must be equal across combinations for a walk-forward: its windows cut one span.
SPAN_KEYS = ("backtest.start", "backtest.end")


@dataclass(frozen=True)
class Axis:
    """One parameter of a grid and the values it takes, in the order given."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Variant:
    """One combination: its place in the grid, the values it sets, the validated config."""

    position: int
    params: dict[str, Any]
    settings: Settings

    @property
    def label(self) -> str:
        return describe(self.params)


def describe(params: dict[str, Any]) -> str:
    """`risk.vol_high=1.5, rebalance.every_days=4`: how tables and errors name a
    combination (a URL's value, which may hold a token, not repeated)."""
    return ", ".join(describe_override(f"{key}={format_value(value)}") for key, value in params.items())


def format_value(value: Any, *, nested: bool = False) -> str:
    """A value as it would be typed after KEY= (parse_value reads it back): TOML, with a
    plain word left bare at the top level."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v, nested=True) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{k}={format_value(v, nested=True)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, str) and (nested or parse_value(value) != value):
        return json.dumps(value)  # a TOML basic string
    return str(value)


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself when TOML does not read it (bare words)."""
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if isinstance(value, dt.date | dt.time):  # dates stay text, as the config keeps them
        return text
    return value


def _split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes, so list values keep their commas."""
    parts: list[str] = []
    depth, quote, current = 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _split_assignment(spec: str, option: str, example: str) -> tuple[str, str]:
    key, sep, rest = spec.partition("=")
    key = key.strip()
    if not sep or not key or not rest.strip() or any(not p for p in key.split(".")):
        raise BotError(f"{option} {describe_override(spec)!r}: expected {example}")
    return key, rest


def parse_assignment(spec: str) -> tuple[str, Any]:
    """`--set KEY=VALUE` as (key, value)."""
    key, text = _split_assignment(spec, "--set", "KEY=VALUE, e.g. risk.vol_high=1.5")
    return key, parse_value(text)


def parse_axis(spec: str) -> Axis:
    """`--grid KEY=V1,V2,...` as an Axis; empty or repeated values are refused."""
    example = "KEY=V1,V2,..., e.g. risk.vol_high=1.25,1.5,2"
    key, text = _split_assignment(spec, "--grid", example)
    texts = _split_values(text)
    if any(not t for t in texts):
        raise BotError(f"--grid {describe_override(spec)!r}: an empty value; expected {example}")
    values = tuple(parse_value(t) for t in texts)
    seen: list[tuple[type, Any]] = []
    for value in values:
        typed = (type(value), value)  # true is not 1, nor 4.0 4: validation names those
        if typed in seen:
            shown = describe_override(f"{key}={format_value(value)}").partition("=")[2]
            raise BotError(f"--grid {key}: the value {shown} is given twice")
        seen.append(typed)
    return Axis(key, values)


def parse_grid(specs: Sequence[str], *, walk_forward: bool = False) -> list[Axis]:
    """Every --grid, checked for keys a sweep cannot vary and keys given twice."""
    if not specs:
        raise BotError("bot sweep: give at least one --grid KEY=V1,V2,...")
    axes = [parse_axis(spec) for spec in specs]
    keys = [a.key for a in axes]
    for axis in axes:
        section = axis.key.split(".")[0]
        if section in FIXED_SECTIONS:
            raise BotError(f"--grid {axis.key}: cannot vary in a sweep: {FIXED_SECTIONS[section]}")
        if walk_forward and any(k == axis.key or k.startswith(axis.key + ".") for k in SPAN_KEYS):
            raise BotError(
                f"--grid {axis.key}: cannot vary with --walk-forward, whose windows cut one "
                "span; use --start/--end"
            )
        if keys.count(axis.key) > 1:
            raise BotError(f"--grid {axis.key}: given more than once; list its values in one --grid")
        for other in keys:
            if other != axis.key and other.startswith(axis.key + "."):
                raise BotError(f"--grid {axis.key} and --grid {other} set the same field")
    return axes


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set `value` at dotted `key` in a config dump; a missing top-level section is
    created (the validation then names an unknown key), a value in the way is an error,
    and so is an entry missing inside a section: `universe.TQQ.leverage=3` (a typo for
    TQQQ) added a seventh fund to the universe, and the run traded it."""
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None and depth >= 1:
            where, section = ".".join(parts[: depth + 1]), ".".join(parts[:depth])
            known = ", ".join(sorted(node)) or "none"
            raise BotError(f"{key}: {where} is not in the config; an override changes what is "
                           f"there, it adds no entry ({section} has {known})")
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise BotError(f"{key}: {where} is a value, not a section")
        node = child
    node[parts[-1]] = value


def with_overrides(
    base: Settings, overrides: Sequence[tuple[str, Any]], source: str
) -> Settings:
    """`base` with each (dotted key, value) set, validated like a config file."""
    raw = base.model_dump(mode="json")
    for key, value in overrides:
        set_dotted(raw, key, value)
    return parse_settings(raw, source)


def expand(base: Settings, axes: Sequence[Axis], source: str) -> list[Variant]:
    """Every combination of `axes` (the first varies slowest), each validated.

    All combinations are checked before any runs; the error lists every distinct problem
    once, each with the first combination that has it, so one pass fixes the grid."""
    variants: list[Variant] = []
    problems: dict[str, str] = {}
    for position, values in enumerate(itertools.product(*(a.values for a in axes))):
        params = {axis.key: value for axis, value in zip(axes, values, strict=True)}
        try:
            settings = with_overrides(base, list(params.items()), source)
        except ConfigError as exc:
            for problem in exc.problems:
                problems.setdefault(problem, describe(params))
            continue
        except BotError as exc:
            problems.setdefault(str(exc), describe(params))
            continue
        variants.append(Variant(position, params, settings))
    if problems:
        lines = [f"{problem} [with {combo}]" for problem, combo in problems.items()]
        raise ConfigError(f"{source} with the --grid values", lines)
    refuse_equal_combinations(variants)
    return variants


def refuse_equal_combinations(variants: Sequence[Variant]) -> None:
    """Refuse two combinations whose validated configs are the same (one fingerprint):
    `risk.vol_high=2,2.0`, or rule lists in two orders. They ran the same backtest twice,
    and the warning that a key changes nothing then named a key that does change things."""
    first_with: dict[str, Variant] = {}
    for variant in variants:
        first = first_with.setdefault(variant.settings.fingerprint(), variant)
        if first is not variant:
            raise BotError(_equal_message(first, variant))


def _equal_message(first: Variant, second: Variant) -> str:
    """Names each key whose two spellings validate to the same value."""
    def shown(key: str, value: Any) -> str:
        return describe_override(f"{key}={format_value(value)}").partition("=")[2]

    keys = [k for k in first.params
            if format_value(first.params[k]) != format_value(second.params[k])]
    spellings = "; ".join(
        f"--grid {key}: the values {shown(key, first.params[key])} and "
        f"{shown(key, second.params[key])}"
        for key in keys
    )
    return (f"{spellings} give the same config (combinations {first.label} and "
            f"{second.label}); give each value once")
