"""Log-space helpers for e-values and likelihood ratios, which pass the largest float (1.8e308) once
evidence is strong: they are kept and compared as logs, and only turned into numbers for people.
Pure math: the CLI imports this to print an e-value without loading numpy."""

from __future__ import annotations

import math

# log of the largest float (sys.float_info.max): exp of anything above it overflows.
_LOG_MAX = math.log(float.fromhex("0x1.fffffffffffffp+1023"))


def saturating_exp(log_e: float) -> float:
    """exp(log_e), or the largest float where that overflows: for display and JSON only."""
    return math.exp(min(log_e, _LOG_MAX))


def readable(log_e: float) -> str:
    """An e-value in a sentence: 3 significant digits, as 10^k once it is past any float."""
    if log_e <= _LOG_MAX:
        return f"{math.exp(log_e):.3g}"
    return f"10^{log_e / math.log(10):.1f}"
