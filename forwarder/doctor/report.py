"""A check's result, how results are printed (text or JSON), and the exit status.

The output is meant to be pasted into a support ticket, so every line is scrubbed of the
secrets the environment holds before it is printed, whatever a check put in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import orjson

from forwarder.masking import MASK

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]


@dataclass(frozen=True, slots=True)
class Check:
    """One finding: ``fix`` names the variable to change (WARN and FAIL only)."""

    check: str
    status: Status
    detail: str
    fix: str = ""


def passed(check: str, detail: str) -> Check:
    return Check(check, "PASS", detail)


def warned(check: str, detail: str, fix: str) -> Check:
    return Check(check, "WARN", detail, fix)


def failed(check: str, detail: str, fix: str) -> Check:
    return Check(check, "FAIL", detail, fix)


def skipped(check: str, reason: str) -> Check:
    return Check(check, "SKIP", reason)


def exit_status(results: Iterable[Check]) -> int:
    """0 when nothing failed, 1 when any check failed (WARN and SKIP do not fail the run)."""
    return 1 if any(result.status == "FAIL" for result in results) else 0


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret replaced by ``***``, longest first so a secret that contains
    another one is masked whole."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def scrubbed(results: Iterable[Check], secrets: Sequence[str]) -> list[Check]:
    return [Check(r.check, r.status, redact(r.detail, secrets), redact(r.fix, secrets)) for r in results]


def render_text(results: Sequence[Check]) -> str:
    """One line per check: status, name, finding, and for WARN/FAIL ``fix: ...``."""
    width = max((len(result.check) for result in results), default=0)
    lines = []
    for result in results:
        line = f"{result.status:<4}  {result.check:<{width}}  {result.detail}"
        if result.fix and result.status in ("WARN", "FAIL"):
            line += f"  fix: {result.fix}"
        lines.append(line)
    return "\n".join(lines)


def render_json(results: Sequence[Check]) -> str:
    """A JSON array of ``{check, status, detail, fix}``."""
    return orjson.dumps([asdict(result) for result in results], option=orjson.OPT_INDENT_2).decode()
