"""The auditor's commands on a large history: point in time, export, and signed digests.

Builds a real SQLite registry of N events (default 1,000,000: 50 endpoints over a year, each with
nightly-style rollouts: registration and training, configs, deploy, weight phases, decisions,
promotion, status moves), every event with the payloads the product writes and a valid hash chain;
then, in the same run:

  * `history --endpoint`, which also gathers the training and gate events of every model the
    endpoint served, newest 100 (target: under 100 ms, as the plain filtered query);
  * `endpoints show --at` (`timeline.state_at`) at random endpoints and instants, against replaying
    the history from the start up to the instant (`timeline.replay_all`): medians and the ratio.
    Target: median under 50 ms.
  * `audit export` (jsonl) of 10% and of all of the events, each in a fresh process: events per
    second and peak memory (RSS), which must not grow with the number of events.
  * `audit verify --digests` with hourly signed digests over the year (8,760 of them), against plain
    `audit verify` of the chain.

    python benchmarks/auditor.py [--events 1000000] [--endpoints 50] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from manager.db import Database
from manager.history import audit, digests, timeline
from manager.registry import migrate

sys.path.insert(0, str(Path(__file__).parent))
from history_query import insert

START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR = timedelta(days=365)


class Endpoint:
    """One endpoint's story, one event at a time: created, then rollout after rollout."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.name = f"endpoint-{index:03d}"
        self.model = f"model-{index:03d}"
        self.rng = rng
        self.version = 0
        self.config = 0
        self.serving: str | None = None
        self.rollout_id = 0
        self.queue: list[tuple[str, str, str, str | None, dict[str, Any]]] = []

    def next_event(self, rollouts: list[int]) -> tuple[str, str, str, str | None, dict[str, Any]]:
        if not self.queue:
            self.queue = self._story(rollouts)
        return self.queue.pop(0)

    def _config(self, variants: list[tuple[str, str, float]]) -> tuple[str, dict[str, Any]]:
        self.config += 1
        name = f"{self.name}-c{self.config}"
        payload = {
            "variants": [
                {
                    "variant": v,
                    "model": m,
                    "instance_type": "ml.m5.large",
                    "instance_count": 1,
                    "weight": w,
                    "shadow": False,
                }
                for v, m, w in variants
            ],
            "capture": None,
        }
        return name, payload

    def _story(self, rollouts: list[int]) -> list[tuple[str, str, str, str | None, dict[str, Any]]]:
        out: list[tuple[str, str, str, str | None, dict[str, Any]]] = []
        self.version += 1
        ref = f"{self.model}:{self.version}"
        register = {
            "artifact_uri": f"s3://models/{ref}.tar.gz",
            "dataset_fingerprint": f"{self.version:064x}",
            "training_run": self.version,
            "status": "candidate",
        }
        out.append(("model.register", "model_version", ref, None, register))
        out.append(("model.train", "model_version", ref, None, {"training_run": self.version}))
        out.append(("model.gate", "model_version", ref, None, {"from": "candidate", "status": "approved"}))
        if self.serving is None:
            name, payload = self._config([("baseline", ref, 1.0)])
            out.append(("endpoint.config", "endpoint_config", name, self.name, payload))
            out.append(("endpoint.create", "endpoint", self.name, self.name, {"config": name}))
            out.append(("endpoint.serves", "endpoint", self.name, self.name, {"config": name}))
            self.serving = ref
            return out
        rollouts[0] += 1
        rid = str(rollouts[0])
        base_variant = "baseline"
        cand_variant = f"{self.model}-v{self.version}"

        def snap(state: str, step: int, phase: int, weight: float) -> dict[str, Any]:
            return {
                "rollout": {
                    "state": state,
                    "step": step,
                    "phase": phase,
                    "weight": weight,
                    "started_by": "scheduler:retrain",
                }
            }

        out.append(
            (
                "rollout.start",
                "rollout",
                rid,
                self.name,
                {
                    "baseline": self.serving,
                    "candidate": ref,
                    "variants": {"baseline": base_variant, "candidate": cand_variant},
                    **snap("pending", 0, 0, 0),
                },
            )
        )
        ab, payload = self._config([(base_variant, self.serving, 1.0), (cand_variant, ref, 0.0)])
        out.append(("endpoint.config", "endpoint_config", ab, self.name, payload))
        out.append(("rollout.deploy", "rollout", rid, self.name, {"config": ab, **snap("pending", 0, 0, 0)}))
        out.append(("endpoint.serves", "endpoint", self.name, self.name, {"config": ab}))
        out.append(
            ("rollout.deployed", "rollout", rid, self.name, {"config": ab, **snap("running", 0, 0, 0)})
        )
        step = 0
        for phase, weight in enumerate((5.0, 10.0, 25.0, 50.0), start=1):
            out.append(
                (
                    "rollout.set_weight",
                    "rollout",
                    rid,
                    self.name,
                    {"decision": "set_weight", **snap("running", step, phase - 1, weight)},
                )
            )
            out.append(
                (
                    "rollout.phase",
                    "rollout",
                    rid,
                    self.name,
                    {"phase": phase, "weight": weight, **snap("running", step, phase, weight)},
                )
            )
            step += 1
            out.append(
                (
                    "rollout.advance",
                    "rollout",
                    rid,
                    self.name,
                    {
                        "decision": "advance",
                        "metrics": {"accuracy": {"improvement_low": -0.01}},
                        **snap("running", step, phase, weight),
                    },
                )
            )
        promoted = self.rng.random() < 0.8
        out.append(
            (
                "rollout.promote" if promoted else "rollout.rollback",
                "rollout",
                rid,
                self.name,
                {"decision": "promote", **snap("promoting" if promoted else "rolling_back", step, 4, 50.0)},
            )
        )
        survivor = (cand_variant, ref) if promoted else (base_variant, self.serving)
        final, payload = self._config([(survivor[0], survivor[1], 1.0)])
        out.append(("endpoint.config", "endpoint_config", final, self.name, payload))
        out.append(("endpoint.serves", "endpoint", self.name, self.name, {"config": final}))
        state = "promoted" if promoted else "rolled_back"
        out.append(
            (f"rollout.{state}", "rollout", rid, self.name, {"config": final, **snap(state, step, 4, 50.0)})
        )
        if promoted:
            self.serving = ref
        return out


def generate(n: int, endpoints: int, seed: int, checkpoints: set[int]) -> Iterator[SimpleNamespace]:
    rng = random.Random(seed)
    stories = [Endpoint(i, rng) for i in range(endpoints)]
    rollouts = [0]
    step = YEAR / n
    prev = audit.GENESIS
    for seq in range(1, n + 1):
        ep = stories[rng.randrange(endpoints)] if seq > endpoints * 6 else stories[(seq - 1) // 6]
        action, kind, subject, endpoint, payload = ep.next_event(rollouts)
        row = SimpleNamespace(
            seq=seq,
            at=START + step * seq,
            actor="daemon" if kind in ("rollout", "endpoint", "endpoint_config") else "scheduler:retrain",
            action=action,
            subject_type=kind,
            subject_id=subject,
            endpoint=endpoint,
            model=ep.model,
            reason=None,
            payload=audit.canonical_json(payload),
            prev_hash=prev,
        )
        row.hash = audit.event_hash(prev, row)
        prev = row.hash
        if seq in checkpoints:
            CHECKPOINT_HASHES[seq] = (row.hash, row.at)
        yield row


CHECKPOINT_HASHES: dict[int, tuple[str, datetime]] = {}


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


EXPORT_CHILD = """
import resource, sys, time
from manager import exports
from manager.db import Database
db = Database(sys.argv[1])
with db.read() as session:
    first, last = 1, int(sys.argv[2])
    t0 = time.perf_counter()
    with open(sys.argv[3], "w", encoding="utf-8") as out:
        count = exports.write(exports.rows(session, first, last), "jsonl", out)
    seconds = time.perf_counter() - t0
print(count, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--baseline-repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--keep", type=Path, help="copy the registry here at the end, to look at it")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()} on {platform.machine()}; {args.events:,} events, "
        f"{args.endpoints} endpoints over a year"
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/registry.db"
        database = Database(url)
        migrate.upgrade(database)
        hourly = max(1, args.events // (365 * 24))
        checkpoints = set(range(hourly, args.events + 1, hourly)) | {args.events}
        t0 = time.perf_counter()
        insert(database, generate(args.events, args.endpoints, args.seed, checkpoints))
        # No ANALYZE: a user's registry has no planner statistics, and the queries must not need them.
        print(f"built the registry in {time.perf_counter() - t0:.1f} s")

        rng = random.Random(args.seed)
        names = [f"endpoint-{i:03d}" for i in range(args.endpoints)]
        looks = [(rng.choice(names), START + YEAR * rng.uniform(0.05, 1.0)) for _ in range(args.repeat)]
        fast, answers = [], []
        for name, at in looks:
            t = time.perf_counter()
            with database.read() as session:
                state = timeline.state_at(session, name, at)
            fast.append(time.perf_counter() - t)
            answers.append(state)
        slow = []
        for (name, at), answer in list(zip(looks, answers, strict=True))[: args.baseline_repeat]:
            t = time.perf_counter()
            with database.read() as session:
                replayed = timeline.replay_all(session, until=at).state(name, at)
            slow.append(time.perf_counter() - t)
            assert replayed is not None and answer is not None and replayed.essence() == answer.essence()
        print(
            f"endpoints show --at: median {_median_ms(fast):.2f} ms over {len(fast)} looks "
            f"(max {max(fast) * 1000:.2f} ms); replay from the start: median {_median_ms(slow):.0f} ms "
            f"over {len(slow)}; {statistics.median(slow) / statistics.median(fast):,.0f}x faster, "
            "same answers"
        )

        widened = []
        for name, _ in looks:
            t = time.perf_counter()
            found = audit.history(database, audit.HistoryFilter(endpoint=name, limit=100))
            widened.append(time.perf_counter() - t)
            assert len(found) == 100
        print(
            f"history --endpoint (with its models' training and gate events), newest 100: "
            f"median {_median_ms(widened):.1f} ms"
        )

        for share in (0.1, 1.0):
            last = max(1, int(args.events * share))
            out = subprocess.run(
                [sys.executable, "-c", EXPORT_CHILD, url, str(last), f"{tmp}/export-{share}.jsonl"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            count, seconds, rss_kb = int(out[0]), float(out[1]), int(out[2])
            size = Path(f"{tmp}/export-{share}.jsonl").stat().st_size
            print(
                f"audit export jsonl of {count:,} events: {count / seconds:,.0f} events/s, "
                f"{size / 1e6:,.0f} MB written, peak RSS {rss_kb / 1024:.0f} MB"
            )

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        store = digests.DirectoryStore(Path(tmp) / "digests")
        previous, first = None, 1
        t0 = time.perf_counter()
        for seq in sorted(CHECKPOINT_HASHES):
            digest_hash, at = CHECKPOINT_HASHES[seq]
            body = {
                "format": digests.FORMAT,
                "first_seq": first,
                "last_seq": seq,
                "head_hash": digest_hash,
                "at": at.isoformat(),
                "previous_signature": previous,
                "key_id": digests.key_id(key.public_key()),
            }
            import base64

            signature = base64.b64encode(key.sign(digests._signed_text(body))).decode()
            store.write(
                f"{digests.PREFIX}{seq:012d}.json", json.dumps({**body, "signature": signature}).encode()
            )
            previous, first = signature, seq + 1
        print(f"wrote {len(CHECKPOINT_HASHES):,} hourly digests in {time.perf_counter() - t0:.1f} s")
        plain, signed = [], []
        for _ in range(3):
            t = time.perf_counter()
            verdict = audit.verify(database, rows=False)
            plain.append(time.perf_counter() - t)
            assert verdict.ok
            t = time.perf_counter()
            problems, good = digests.check_digests(digests.load_all(store), key.public_key())
            verdict = audit.verify(database, rows=False, collect={d.last_seq for d in good})
            problems += digests.check_history(good, dict(verdict.hashes), 1, verdict.head_seq)
            signed.append(time.perf_counter() - t)
            assert verdict.ok and not problems, problems[:1]
        print(
            f"audit verify: median {statistics.median(plain):.2f} s; with {len(good):,} digests checked: "
            f"median {statistics.median(signed):.2f} s "
            f"({statistics.median(signed) / statistics.median(plain):.2f}x)"
        )

        database.dispose()
        if args.keep:
            import shutil

            shutil.copy(f"{tmp}/registry.db", args.keep)


if __name__ == "__main__":
    main()
