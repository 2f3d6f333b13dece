"""Load the detection rules: the shipped Sigma files, a user's directory, parsed by pySigma.

The shipped rules are ``monitors/sigma/*.yml``; ``FORWARDER_DETECTION_RULES`` names a
directory of more. A user file whose rule has the ``name`` of a shipped one replaces it:
that is how a threshold is changed (copy the file, edit the number). pySigma parses
every file and resolves the references between rules; this module then checks that each
rule is something the engine evaluates (``RuleError`` otherwise, naming the file and the
reason) and turns it into the plain description the engine runs:

- a base rule (a Sigma detection) becomes a test over one record (``matching``);
- a correlation becomes a ``Correlation``: ``event_count``, ``value_count`` (with the
  optional ``also_required`` thresholds over the same events, see docs/detections.md) or
  ``temporal_ordered``, over a timespan, per group.

Other correlation types, extended (boolean) correlation conditions and field aliases are
refused: better a clear error at start than a rule that silently never fires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.exceptions import SigmaError, SigmaRuleLocation
from sigma.rule import SigmaRule

from forwarder.detections.matching import Test, Unsupported, compile_rule

SHIPPED_RULES = Path(__file__).resolve().parent / "sigma"
"""The shipped rules: a link to ``monitors/sigma`` in the source tree, a copy in a wheel."""

Kind = Literal["event_count", "value_count", "temporal_ordered"]
_SEVERITIES = ("informational", "low", "medium", "high", "critical")


class RuleError(ValueError):
    """A rule file that does not parse or asks for what the engine cannot evaluate."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class About:
    """What a firing says about its rule (and docs/detections.md about each)."""

    name: str
    title: str
    severity: str
    attack: tuple[str, ...]
    path: Path


@dataclass(frozen=True, slots=True)
class Threshold:
    """One condition over a window's events: how many, or how many distinct ``field`` values."""

    kind: Literal["event_count", "value_count"]
    at_least: int
    field: str | None = None

    def describe(self) -> str:
        what = "events" if self.field is None else f"distinct {self.field}"
        return f"{what} >= {self.at_least}"


@dataclass(frozen=True, slots=True)
class BaseRule:
    about: About
    test: Test
    fields: frozenset[str]
    standalone: bool
    """No correlation uses it: each matching record fires on its own."""


@dataclass(frozen=True, slots=True)
class Correlation:
    about: About
    kind: Kind
    sources: tuple[str, ...]
    """The rules it counts (base or correlation), by name, in the order the rule lists them."""
    group_by: tuple[str, ...]
    span_s: float
    thresholds: tuple[Threshold, ...] = ()
    """For the count kinds: the rule's condition first, then ``also_required``."""

    @property
    def value_fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.field for t in self.thresholds if t.field is not None))


@dataclass(frozen=True)
class RuleSet:
    base: dict[str, BaseRule] = field(default_factory=dict)
    correlations: dict[str, Correlation] = field(default_factory=dict)
    """In evaluation order: every correlation after the correlations it uses."""

    @property
    def names(self) -> list[str]:
        return [*self.base, *self.correlations]


def load_rules(directories: Sequence[Path]) -> RuleSet:
    """Parse every ``*.yml``/``*.yaml`` of ``directories``; a later directory overrides by name."""
    by_name: dict[str, tuple[SigmaRule | SigmaCorrelationRule, Path]] = {}
    for directory in directories:
        if not directory.is_dir():
            raise RuleError(directory, "not a directory of Sigma rules")
        files = sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")])
        for path in files:
            for rule in _parse_file(path):
                by_name[_name(rule, path)] = (rule, path)
    paths = {id(rule): path for rule, path in by_name.values()}
    collection = SigmaCollection([rule for rule, _ in by_name.values()], resolve_references=False)
    for rule, path in by_name.values():
        if isinstance(rule, SigmaCorrelationRule):
            try:
                rule.resolve_rule_references(collection)
            except SigmaError as exc:
                raise RuleError(path, _reason(exc)) from None
    return _compile(by_name, paths)


def _parse_file(path: Path) -> list[SigmaRule | SigmaCorrelationRule]:
    try:
        text = path.read_text(encoding="utf-8")
        documents = [document for document in yaml.safe_load_all(text) if document is not None]
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(path, f"cannot read the file ({exc})") from None
    except yaml.YAMLError as exc:
        raise RuleError(path, f"not valid YAML ({' '.join(str(exc).split())})") from None
    if not documents:
        raise RuleError(path, "holds no rule")
    for document in documents:
        if not isinstance(document, dict):
            raise RuleError(path, "a Sigma rule must be a YAML mapping")
        if document.get("action") is not None or "filter" in document:
            raise RuleError(path, "Sigma filters and collection actions are not supported")
    try:
        collection = SigmaCollection.from_dicts(
            documents, collect_errors=True, source=SigmaRuleLocation(path), resolve_references=False
        )
    except SigmaError as exc:
        raise RuleError(path, _reason(exc)) from None
    errors = [*collection.errors, *(error for rule in collection.rules for error in rule.errors)]
    if errors:
        raise RuleError(path, "; ".join(_reason(error) for error in errors))
    return list(collection.rules)


def _reason(exc: SigmaError) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _name(rule: SigmaRule | SigmaCorrelationRule, path: Path) -> str:
    return rule.name or (str(rule.id) if rule.id else path.stem)


def _about(rule: SigmaRule | SigmaCorrelationRule, path: Path) -> About:
    severity = str(rule.level) if rule.level is not None else "medium"
    attack = tuple(
        str(tag.name).upper() for tag in rule.tags if tag.namespace == "attack" and str(tag.name)[:1] in "tT"
    )
    return About(_name(rule, path), rule.title or _name(rule, path), severity, attack, path)


def _compile(
    by_name: dict[str, tuple[SigmaRule | SigmaCorrelationRule, Path]], paths: dict[int, Path]
) -> RuleSet:
    used = {
        _name(reference.rule, paths[id(reference.rule)])
        for rule, _ in by_name.values()
        if isinstance(rule, SigmaCorrelationRule)
        for reference in rule.referenced_rules
    }
    base: dict[str, BaseRule] = {}
    correlations: dict[str, Correlation] = {}
    for name, (rule, path) in by_name.items():
        if isinstance(rule, SigmaRule):
            try:
                test, fields = compile_rule(rule)
            except (Unsupported, SigmaError) as exc:
                raise RuleError(path, f"rule {name}: {exc}") from None
            base[name] = BaseRule(_about(rule, path), test, fields, standalone=name not in used)
        else:
            correlations[name] = _correlation(rule, path, paths)
    return RuleSet(base, dict(_in_order(correlations)))


def _correlation(rule: SigmaCorrelationRule, path: Path, paths: dict[int, Path]) -> Correlation:
    name = _name(rule, path)

    def refuse(reason: str) -> RuleError:
        return RuleError(path, f"correlation {name}: {reason}")

    supported = (
        SigmaCorrelationType.EVENT_COUNT,
        SigmaCorrelationType.VALUE_COUNT,
        SigmaCorrelationType.TEMPORAL_ORDERED,
    )
    if rule.type not in supported:
        raise refuse(
            f"type {rule.type} is not evaluated by the forwarder (it evaluates event_count,"
            " value_count and temporal_ordered)"
        )
    if len(rule.aliases):
        raise refuse("field aliases are not supported; use the same field names in the rules it uses")
    condition = rule.condition
    if not isinstance(condition, SigmaCorrelationCondition):
        raise refuse("extended (boolean) correlation conditions are not supported")
    sources = tuple(_name(ref.rule, paths[id(ref.rule)]) for ref in rule.referenced_rules)
    group_by = tuple(rule.group_by or ())
    for ref in rule.referenced_rules:
        child = ref.rule
        if isinstance(child, SigmaCorrelationRule) and not set(group_by) <= set(child.group_by or ()):
            raise refuse(
                f"it groups by {list(group_by)} but uses correlation {_name(child, paths[id(child)])}"
                f" grouped by {list(child.group_by or [])}: group by a subset of the used rule's fields"
            )
    about = _about(rule, path)
    if about.severity not in _SEVERITIES:
        raise refuse(f"level {about.severity!r} is not one of {', '.join(_SEVERITIES)}")
    span = float(rule.timespan.seconds)
    if rule.type == SigmaCorrelationType.TEMPORAL_ORDERED:
        if (condition.op, condition.count) != (SigmaCorrelationConditionOperator.GTE, len(sources)):
            raise refuse("a temporal_ordered condition other than all of its rules in order is not supported")
        if len(sources) < 2:
            raise refuse("temporal_ordered needs at least two rules")
        return Correlation(about, "temporal_ordered", sources, group_by, span)
    kind: Literal["event_count", "value_count"] = (
        "event_count" if rule.type == SigmaCorrelationType.EVENT_COUNT else "value_count"
    )
    thresholds = [_threshold(kind, condition, refuse)]
    also = rule.custom_attributes.get("also_required", [])
    if not isinstance(also, list):
        raise refuse("also_required must be a list of {type, condition}")
    for item in also:
        thresholds.append(_also_required(item, path, refuse))
    return Correlation(about, kind, sources, group_by, span, tuple(thresholds))


def _also_required(item: Any, path: Path, refuse: Any) -> Threshold:
    if not isinstance(item, dict) or set(item) != {"type", "condition"}:
        raise refuse("each also_required item needs exactly a type and a condition")
    kind = item["type"]
    if kind not in ("event_count", "value_count"):
        raise refuse(f"also_required type {kind!r} is not event_count or value_count")
    if not isinstance(item["condition"], dict):
        raise refuse("an also_required condition must be a mapping such as {gte: 25}")
    try:
        condition = SigmaCorrelationCondition.from_dict(item["condition"], source=SigmaRuleLocation(path))
    except SigmaError as exc:
        raise refuse(f"also_required: {_reason(exc)}") from None
    return _threshold(kind, condition, refuse)


def _threshold(
    kind: Literal["event_count", "value_count"], condition: SigmaCorrelationCondition, refuse: Any
) -> Threshold:
    """``gte n`` or ``gt n`` (as ``gte n+1``): the conditions that can start an attack."""
    if not float(condition.count).is_integer():
        raise refuse(f"threshold {condition.count} must be a whole number")
    count = int(condition.count)
    if condition.op == SigmaCorrelationConditionOperator.GTE:
        at_least = count
    elif condition.op == SigmaCorrelationConditionOperator.GT:
        at_least = count + 1
    else:
        raise refuse(
            f"condition {condition.op.name.lower()} is not supported: a detection fires when a count"
            " reaches a threshold (gte or gt)"
        )
    if at_least < 1:
        raise refuse(f"threshold {count} must reach at least 1")
    field_name = condition.fieldref
    if kind == "event_count":
        if field_name is not None:
            raise refuse("event_count takes no field")
        return Threshold(kind, at_least)
    if not isinstance(field_name, str):
        raise refuse("value_count needs one field to count distinct values of")
    return Threshold(kind, at_least, field_name)


def _in_order(correlations: dict[str, Correlation]) -> Iterable[tuple[str, Correlation]]:
    """Correlations after those they use (pySigma refuses cycles when resolving)."""
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> Iterable[tuple[str, Correlation]]:
        if name in done or name not in correlations:
            return
        if name in trail:
            raise RuleError(correlations[name].about.path, f"correlation {name} uses itself")
        for source in correlations[name].sources:
            yield from visit(source, (*trail, name))
        done.add(name)
        yield name, correlations[name]

    for name in list(correlations):
        yield from visit(name, ())
