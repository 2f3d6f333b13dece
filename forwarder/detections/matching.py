"""Compile a Sigma rule's detection (parsed by pySigma) into a test over one normalized record.

pySigma parses the YAML and the condition into a tree of AND, OR, NOT and "field equals
value" nodes; this module only walks that tree once per rule and builds closures, so a
record is tested without pySigma on the path. It supports what identity detections use:
exact values and wildcards (Sigma's default, case-insensitive), ``|cased``, ``|re``,
``|cidr``, numeric comparisons (``|lt``, ``|gte``...), ``|exists``, null, booleans and
numbers. Anything else (keyword search without a field, field references, time parts,
placeholders) raises ``Unsupported`` with what it was, which the rule loader reports as
a configuration error naming the file.

Field names are dotted paths into the record (``usr.email`` is ``record["usr"]["email"]``),
the names docs/record.md gives.
"""

from __future__ import annotations

import ipaddress
import operator
import re
from collections.abc import Callable
from typing import Any

from sigma.conditions import (
    ConditionAND,
    ConditionFieldEqualsValueExpression,
    ConditionNOT,
    ConditionOR,
    ConditionValueExpression,
)
from sigma.rule import SigmaRule
from sigma.types import (
    CompareOperators,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaString,
)

Test = Callable[[dict[str, Any]], bool]
_MISSING = object()

_COMPARE = {
    CompareOperators.LT: operator.lt,
    CompareOperators.LTE: operator.le,
    CompareOperators.GT: operator.gt,
    CompareOperators.GTE: operator.ge,
    CompareOperators.NEQ: operator.ne,
}


class Unsupported(ValueError):
    """The rule uses a Sigma feature this engine does not evaluate; the message says which."""


def compile_rule(rule: SigmaRule) -> tuple[Test, frozenset[str]]:
    """A test for ``rule``'s condition and the fields it reads (for ``depends_on_type_only``)."""
    conditions = rule.detection.parsed_condition
    fields: set[str] = set()
    tests = [_compile(condition.parsed, fields) for condition in conditions]
    if len(tests) == 1:
        return tests[0], frozenset(fields)
    return (lambda record: any(test(record) for test in tests)), frozenset(fields)


def value_at(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of ``record``, or None when any step is missing."""
    found = _lookup(record, path)
    return None if found is _MISSING else found


def _lookup(record: dict[str, Any], path: str) -> Any:
    if path in record:  # a flat key with dots wins, as in Datadog's attribute search
        return record[path]
    current: Any = record
    for part in path.split("."):
        if type(current) is not dict or part not in current:
            return _MISSING
        current = current[part]
    return current


def _compile(node: Any, fields: set[str]) -> Test:
    if isinstance(node, ConditionAND):
        parts = [_compile(arg, fields) for arg in node.args]
        return lambda record: all(part(record) for part in parts)
    if isinstance(node, ConditionOR):
        parts = [_compile(arg, fields) for arg in node.args]
        return lambda record: any(part(record) for part in parts)
    if isinstance(node, ConditionNOT):
        inner = _compile(node.args[0], fields)
        return lambda record: not inner(record)
    if isinstance(node, ConditionFieldEqualsValueExpression):
        fields.add(node.field)
        return _field_test(node.field, node.value)
    if isinstance(node, ConditionValueExpression):
        raise Unsupported(f"keyword search without a field ({node.value!s}): name the field it should match")
    raise Unsupported(f"condition element {type(node).__name__}")


def _field_test(path: str, value: Any) -> Test:
    if isinstance(value, SigmaExists):
        wanted = bool(value)
        return lambda record: (_lookup(record, path) is not _MISSING) == wanted
    if isinstance(value, SigmaNull):
        return lambda record: _lookup(record, path) in (None, _MISSING)
    match = _value_test(value)

    def test(record: dict[str, Any]) -> bool:
        found = _lookup(record, path)
        if found is _MISSING or found is None:
            return False
        if type(found) is list:  # a list field matches when any element does
            return any(match(item) for item in found)
        return match(found)

    return test


def _value_test(value: Any) -> Callable[[Any], bool]:
    if isinstance(value, SigmaBool):
        wanted = bool(value)
        return lambda found: found is wanted or str(found).lower() == str(wanted).lower()
    if isinstance(value, SigmaNumber):
        number = value.number
        return lambda found: _number(found) == number
    if isinstance(value, SigmaCompareExpression):
        compare, limit = _COMPARE[value.op], value.number.number

        def compared(found: Any) -> bool:
            number = _number(found)
            return number is not None and compare(number, limit)

        return compared
    if isinstance(value, SigmaCIDRExpression):
        network = value.network

        def within(found: Any) -> bool:
            try:
                return ipaddress.ip_address(str(found)) in network
            except ValueError:
                return False

        return within
    if isinstance(value, SigmaRegularExpression):
        flags = 0
        for flag in value.flags:
            flags |= SigmaRegularExpression.sigma_to_python_flags[flag]
        pattern = re.compile(str(value.regexp), flags)
        return lambda found: pattern.search(str(found)) is not None
    if isinstance(value, SigmaString):
        return _string_test(value)
    raise Unsupported(f"value type {type(value).__name__} ({value!s})")


def _string_test(value: SigmaString) -> Callable[[Any], bool]:
    if value.contains_placeholder():
        raise Unsupported(f"placeholder in {value!s}: placeholders need a processing pipeline")
    cased = isinstance(value, SigmaCasedString)
    if not value.contains_special():
        plain = value.to_plain()
        if cased:
            return lambda found: str(found) == plain
        folded = plain.casefold()
        return lambda found: str(found).casefold() == folded
    expression = value.to_regex()
    pattern = re.compile(str(expression.regexp), 0 if cased else re.IGNORECASE | re.DOTALL)
    return lambda found: pattern.fullmatch(str(found)) is not None


def _number(found: Any) -> float | None:
    if type(found) in (int, float):
        return float(found)
    try:
        return float(found)
    except (TypeError, ValueError):
        return None
