"""The endpoint page's data (`views/endpoint_page.py`): periods CloudWatch takes, and a page that still
says what it knows when SageMaker cannot be reached."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from manager.errors import UserError
from manager.views import endpoint_page
from manager.web import pages

from .rollout_support import ENDPOINT, make_world


@pytest.mark.parametrize(
    "window,base,period",
    [
        (timedelta(minutes=15), 1, 5),  # 900 s over 360 points: 2.5 s, up to an allowed 5
        (timedelta(hours=1), 1, 10),
        (timedelta(hours=1), 60, 60),
        (timedelta(hours=6), 1, 60),
        (timedelta(days=1), 60, 240),
        (timedelta(days=7), 60, 1680),
    ],
)
def test_a_period_is_one_getmetricdata_takes(window: timedelta, base: int, period: int) -> None:
    chosen = endpoint_page.period_for(window, base)
    assert chosen == period
    assert chosen in (1, 5, 10, 20, 30) or chosen % 60 == 0  # MetricStat.Period's rule
    assert window.total_seconds() / chosen <= endpoint_page.MAX_POINTS


def test_the_page_says_what_it_could_not_read(
    tmp_path: Path, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with make_world(tmp_path, artifacts) as world:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        page = endpoint_page.build(world.database, ENDPOINT, "15m")
        assert [p.split(":")[0] for p in page.problems] == [
            f"SageMaker could not be asked about {ENDPOINT}",
            f"CloudWatch could not be read for {ENDPOINT}",
        ]
        html = pages.endpoint(page, "{}")
        assert "churn:1" in html and "ml.m5.large" in html and "None: no rollout has run" in html
        with pytest.raises(UserError, match="window '2h': one of 15m, 1h, 6h, 1d, 7d"):
            endpoint_page.build(world.database, ENDPOINT, "2h")
