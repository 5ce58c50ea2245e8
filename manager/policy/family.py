"""The family-wise error of a policy: the chance that *any* of its acting metrics wrongly decides when
the candidate is no different from the baseline (an A/A).

Each metric's test holds its own alpha under continuous monitoring (a confidence sequence or an
e-value, by Ville's inequality), so by the union bound (Bonferroni) the chance that one of k acting
metrics falsely fails is at most the sum of their alphas; only the primary promotes, so a false
promotion is at most the primary's alpha. `decisions.familyAlpha` sets the sum: it is split evenly
over the acting metrics (dry runs never act and keep their own alpha). Bonferroni is valid whatever
the dependence between the metrics, which share requests and so are far from independent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from manager.policy import RolloutPolicy


def split(policy: RolloutPolicy) -> None:
    """With `familyAlpha`, each acting metric's alpha becomes its share of it (refused when a metric
    states its own alpha as well: the two would disagree on what the operator asked for)."""
    family = policy.decisions.family_alpha
    if family is None:
        return
    acting = [m for m in policy.metrics if not m.dry_run]
    stated = [m.name for m in acting if "alpha" in m.model_fields_set]
    if stated:
        raise ValueError(
            f"decisions.familyAlpha splits {family:g} over the metrics; metric {', '.join(stated)}"
            " also sets its own `alpha`: give one or the other"
        )
    for metric in acting:
        object.__setattr__(metric, "alpha", family / len(acting))


@dataclass(frozen=True)
class FamilyError:
    false_rollback: float  # at most: any acting metric failing on an A/A
    false_promotion: float  # at most: the primary showing a difference that is not there
    acting: int
    family_alpha: float | None  # what the policy asked for, if it did

    def lines(self) -> list[str]:
        how = (
            f"familyAlpha {self.family_alpha:g} split over {self.acting} acting metrics"
            if self.family_alpha is not None
            else f"the sum of {self.acting} acting metrics' alphas (set decisions.familyAlpha to bound it)"
        )
        return [
            f"family-wise false rollback of an A/A candidate: at most {self.false_rollback:.3g} ({how})",
            f"false promotion of a candidate worse by the margin: at most {self.false_promotion:.3g}"
            " (the primary's alpha)",
        ]


def family_error(policy: RolloutPolicy) -> FamilyError:
    """The bounds; with `onSampleRatioMismatch: rollback`, the sample-ratio test's own alpha (which is
    not split: it guards the comparison rather than judging the candidate) counts as well."""
    from manager.stats.srm import ALPHA as SRM_ALPHA

    acting = [m for m in policy.metrics if not m.dry_run]
    primary = policy.primary
    ratio = SRM_ALPHA if policy.decisions.on_sample_ratio_mismatch == "rollback" else 0.0
    return FamilyError(
        min(1.0, sum(m.alpha for m in acting) + ratio),
        primary.alpha if primary is not None else 0.0,
        len(acting),
        policy.decisions.family_alpha,
    )
