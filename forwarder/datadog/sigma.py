"""The Sigma rules of ``monitors/sigma/``, read with pySigma, and their base rules as Datadog log searches.

The detections live once, as Sigma. The Datadog log monitors and Cloud SIEM rules are generated
from these files (``detections``), so a threshold changed in a ``.yml`` reaches Datadog through
``datadog generate`` and ``datadog apply``, and ``datadog validate`` fails while the generated
files lag behind.

A base rule's ``detection`` becomes a Datadog log search through a small pySigma text backend
(``DatadogLogSearch``): pySigma parses the condition and the values, the backend only says how
Datadog writes a term (``@field:value``, ``AND``/``OR``/``NOT``, ``*`` wildcards). The published
``pysigma-backend-datadog`` is not used: it pins pySigma 0.11, has no correlations and writes a
severity Datadog's API refuses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sigma.collection import SigmaCollection
from sigma.conditions import ConditionAND, ConditionFieldEqualsValueExpression, ConditionNOT, ConditionOR
from sigma.conversion.base import TextQueryBackend
from sigma.conversion.state import ConversionState
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.rule import SigmaRule
from sigma.types import SigmaCompareExpression, SpecialChars

SIGMA_DIRECTORY = Path("monitors") / "sigma"


class SigmaLoadError(Exception):
    """A Sigma file cannot be read or converted; the message names the file and the reason."""


class DatadogLogSearch(TextQueryBackend):
    """Sigma detections as Datadog log search syntax, for the base rules the correlations count."""

    name: ClassVar[str] = "Datadog log search (workos-forwarder)"
    formats: ClassVar[dict[str, str]] = {"default": "Datadog log search query"}
    requires_pipeline: ClassVar[bool] = False

    precedence: ClassVar[tuple[type[ConditionNOT], type[ConditionAND], type[ConditionOR]]] = (
        ConditionNOT,
        ConditionAND,
        ConditionOR,
    )
    group_expression: ClassVar[str] = "({expr})"
    token_separator: str = " "
    or_token: ClassVar[str] = "OR"
    and_token: ClassVar[str] = "AND"
    not_token: ClassVar[str] = "-"
    eq_token: ClassVar[str] = ":"

    str_quote: ClassVar[str] = '"'
    # Quote values with anything Datadog's search parser treats as syntax; plain words stay bare
    # so that wildcards keep working.
    str_quote_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[\w.@*-]+$")
    str_quote_pattern_negation: ClassVar[bool] = True
    escape_char: ClassVar[str] = "\\"
    wildcard_multi: ClassVar[str] = "*"
    wildcard_single: ClassVar[str] = "?"
    add_escaped: ClassVar[str] = ':()[]{}<>=!~^"'
    bool_values: ClassVar[dict[bool, str | None]] = {True: "true", False: "false"}

    field_exists_expression: ClassVar[str] = "{field}:*"
    compare_op_expression: ClassVar[str] = "{field}:{operator}{value}"
    compare_operators: ClassVar[dict[Any, str]] = {
        SigmaCompareExpression.CompareOperators.LT: "<",
        SigmaCompareExpression.CompareOperators.LTE: "<=",
        SigmaCompareExpression.CompareOperators.GT: ">",
        SigmaCompareExpression.CompareOperators.GTE: ">=",
    }

    def escape_and_quote_field(self, field_name: str) -> str:
        """Datadog names event attributes (facets) with a leading ``@``."""
        return f"@{field_name}"

    def convert_condition_not(self, cond: ConditionNOT, state: ConversionState) -> Any:
        # "-" binds to the term that follows it, without a space.
        converted = super().convert_condition_not(cond, state)
        return converted.replace("- ", "-", 1) if isinstance(converted, str) else converted

    def convert_condition_field_eq_val_str(
        self, cond: ConditionFieldEqualsValueExpression, state: ConversionState
    ) -> Any:
        if any(part == SpecialChars.WILDCARD_SINGLE for part in getattr(cond.value, "s", ())):
            raise SigmaError("Datadog's log search has no single-character wildcard: use *")
        return super().convert_condition_field_eq_val_str(cond, state)


@dataclass(frozen=True)
class SigmaRules:
    """The rules of one directory, references resolved: base rules and correlations by name."""

    directory: Path
    collection: SigmaCollection

    @property
    def base_rules(self) -> dict[str, SigmaRule]:
        return {str(r.name): r for r in self.collection.rules if isinstance(r, SigmaRule) and r.name}

    @property
    def correlations(self) -> dict[str, SigmaCorrelationRule]:
        return {
            str(r.name): r for r in self.collection.rules if isinstance(r, SigmaCorrelationRule) and r.name
        }


def load_rules(root: Path, extra: Path | None = None) -> SigmaRules:
    """Every ``*.yml`` of ``<root>/monitors/sigma``, then of ``extra`` (``FORWARDER_DETECTION_RULES``),
    parsed by pySigma with references resolved. As in the forwarder's engine, a rule of ``extra``
    with a shipped rule's ``name`` replaces it: that is how a threshold is changed."""
    directory = root / SIGMA_DIRECTORY
    paths = sorted(directory.glob("*.yml"))
    if not paths:
        raise SigmaLoadError(f"{directory}: no Sigma rule (*.yml) found")
    by_name: dict[str, SigmaCollection] = {}
    for path in [*paths, *(sorted(extra.glob("*.yml")) if extra is not None else [])]:
        try:  # one file at a time, so that an error names its file
            loaded = SigmaCollection.load_ruleset([str(path)], resolve_references=False)
        except SigmaError as exc:
            raise SigmaLoadError(f"{path}: {exc}") from None
        names = {str(rule.name) for rule in loaded.rules if rule.name} or {str(path)}
        for name in names:
            by_name.pop(name, None)
        by_name[min(names)] = loaded
    try:
        collection = SigmaCollection.merge(by_name.values(), resolve_references=False)
        collection.resolve_rule_references()
    except SigmaError as exc:
        raise SigmaLoadError(f"{directory}: {exc}") from None
    return SigmaRules(directory, collection)


def log_search(rule: SigmaRule) -> str:
    """The base rule's detection as one Datadog log search (its conditions joined by OR)."""
    try:
        # convert_rule returns nothing for a rule a correlation uses (its output is disabled);
        # the conversion result it stores on the rule is what we want.
        DatadogLogSearch().convert_rule(rule)
        queries = rule.get_conversion_result()
    except SigmaError as exc:
        raise SigmaLoadError(f"{rule.source.path if rule.source else rule.name}: {exc}") from None
    if not queries:
        raise SigmaLoadError(f"{rule.name}: the detection converts to no query")
    return " OR ".join(f"({query})" for query in queries) if len(queries) > 1 else str(queries[0])


def attack_techniques(rule: SigmaRule | SigmaCorrelationRule) -> list[str]:
    """ATT&CK technique ids from the ``attack.t1110.001`` tags, as ``T1110.001``."""
    return [
        tag.name.upper()
        for tag in rule.tags
        if tag.namespace == "attack" and re.fullmatch(r"t\d{4}(?:\.\d{3})?", tag.name)
    ]


def source_name(rule: SigmaRule | SigmaCorrelationRule) -> str:
    """The rule's file: relative to the checkout for a shipped rule (``monitors/sigma/x.yml``, the
    same in every checkout), as given for one of ``FORWARDER_DETECTION_RULES``."""
    if rule.source is None or rule.source.path is None:
        return f"{SIGMA_DIRECTORY}/{rule.name}.yml"
    path = Path(str(rule.source.path))
    return str(SIGMA_DIRECTORY / path.name) if path.parent.parts[-2:] == SIGMA_DIRECTORY.parts else str(path)
