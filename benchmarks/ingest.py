"""Ground-truth ingestion throughput and memory.

Writes N captured predictions (two variants, Model Monitor capture format) and N labels
(ground-truth format) to a local directory, then runs the ingestor over them into a real SQLite
registry: every prediction waits, then every label joins one. Each size runs in a fresh process
so that its peak RSS is its own; memory that does not grow with N shows as a flat peak.
Baseline, same run: parsing the same lines with json.loads and nothing else (the floor).
Target: >= 50,000 records/s (a record is a prediction or a label).

    python benchmarks/ingest.py [--records 1000000] [--small 100000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

LINES_PER_FILE = 5000


def write_data(root: Path, n: int, start: datetime) -> None:
    out = '{"captureData":{"endpointInput":{"observedContentType":"text/csv","mode":"INPUT","data":"%s","encoding":"CSV"},"endpointOutput":{"observedContentType":"text/csv; charset=utf-8","mode":"OUTPUT","data":"%.6f\\n","encoding":"CSV"}},"eventMetadata":{"eventId":"e%d","inferenceId":"i%d","inferenceTime":"%s"},"eventVersion":"0"}\n'  # noqa: E501
    label = '{"groundTruthData":{"data":"%d","encoding":"CSV"},"eventMetadata":{"eventId":"i%d"},"eventVersion":"0"}\n'  # noqa: E501
    features = ",".join(f"{0.1 * k:.3f}" for k in range(30))
    for f in range(0, n, LINES_PER_FILE):
        at = start + timedelta(seconds=f // 50)
        stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        hour = at.strftime("%Y/%m/%d/%H")
        for variant, parity in (("baseline", 0), ("candidate", 1)):
            folder = root / "capture" / "ep" / variant / hour
            folder.mkdir(parents=True, exist_ok=True)
            lines = [
                out % (features, (i * 7919 % 1000) / 1000, i, i, stamp)
                for i in range(f, min(f + LINES_PER_FILE, n))
                if i % 2 == parity
            ]
            (folder / f"{f:09d}.jsonl").write_text("".join(lines))
        folder = root / "labels" / hour
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{f:09d}.jsonl").write_text(
            "".join(label % (i % 3 != 0, i) for i in range(f, min(f + LINES_PER_FILE, n)))
        )


def parse_only(root: Path) -> tuple[int, float]:
    t0, count = time.perf_counter(), 0
    for path in sorted(root.rglob("*.jsonl")):
        with open(path, "rb") as handle:
            for line in handle:
                json.loads(line)
                count += 1
    return count, time.perf_counter() - t0


def child(records: int) -> None:
    """Generate, then ingest, in this process; print one JSON line of figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from manager.db import Database
    from manager.groundtruth.ingest import GroundTruthIngestor, QualitySpec
    from manager.registry import migrate
    from tests.registry_fixtures import bare_rollout

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = datetime.now(UTC) - timedelta(hours=12)
        write_data(root, records, start)
        database = Database(f"sqlite:///{root / 'registry.db'}")
        migrate.upgrade(database)
        bare_rollout(database, start - timedelta(hours=1))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        spec = QualitySpec(
            "ep", (root / "capture").as_uri(), (root / "labels").as_uri(), label_ttl=timedelta(days=2)
        )
        ingestor = GroundTruthIngestor(database, settle=timedelta(0))
        t0 = time.perf_counter()
        report = ingestor.run(spec)
        took = time.perf_counter() - t0
        assert report.predictions == records and report.joined == records, report
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        parsed, parse_took = parse_only(root)
        print(
            json.dumps(
                {
                    "records": records,
                    "seconds": took,
                    "rss_before_kib": rss_before,
                    "rss_peak_kib": peak,
                    "parse_lines": parsed,
                    "parse_seconds": parse_took,
                }
            )
        )
        database.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    rows = []
    for n in (args.small, args.records):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"{'records':>10} {'ingest s':>9} {'records/s':>11} {'peak RSS MiB':>13} {'parse-only lines/s':>19}"
    )
    for r in rows:
        total = 2 * r["records"]  # a prediction and a label each
        print(
            f"{r['records']:>10,} {r['seconds']:>9.1f} {total / r['seconds']:>11,.0f} "
            f"{r['rss_peak_kib'] / 1024:>13.0f} {r['parse_lines'] / r['parse_seconds']:>19,.0f}"
        )
    small, big = rows
    rate = 2 * big["records"] / big["seconds"]
    print(
        f"\npeak RSS at {big['records']:,} / at {small['records']:,}: "
        f"{big['rss_peak_kib'] / small['rss_peak_kib']:.2f}x "
        f"for {big['records'] / small['records']:.0f}x the records"
    )
    print(
        f"ingest = {rate / (big['parse_lines'] / big['parse_seconds']):.2f}x the parse-only rate; "
        f"target >= 50,000 records/s: {'PASS' if rate >= 50_000 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
