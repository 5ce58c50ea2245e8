"""The install before and after a dependency change: the size of `.venv` and the time of the Makefile's
setup (`python -m venv`, upgrade pip, `pip install -e '.[test]'`), for two revisions, in the same run.

Each revision's tree is exported with `git archive` into a temporary directory and set up there
from nothing but that tree, as on a fresh clone. Both setups use the same pip cache (warm when pip
has run on this machine before), so the times compare the two dependency sets, not the network.

    python benchmarks/install.py [--before f4ad57b] [--after HEAD]

The default `--before` is the last revision with `sagemaker-core` in the extras, before the switch
to the SageMaker Python SDK v2 (`sagemaker`) and `xgboost-cpu` (issue 14).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def setup(revision: str, where: Path) -> tuple[float, int, str]:
    """(seconds, bytes of .venv, the SageMaker packages installed) for one revision's setup."""
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    venv = where / ".venv"
    python = venv / "bin" / "python"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", ".[test]"], cwd=where, check=True)
    seconds = time.perf_counter() - started
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    )
    wanted = ("sagemaker", "sagemaker-core", "xgboost-cpu", "packaging")
    packages = ", ".join(line for line in listed.stdout.splitlines() if line.split("==")[0].lower() in wanted)
    return seconds, size(venv), packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="f4ad57b")
    parser.add_argument("--after", default="HEAD")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="variantctl-install-") as tmp:
        rows = []
        for label, revision in (("before", args.before), ("after", args.after)):
            seconds, venv_bytes, packages = setup(revision, Path(tmp) / label)
            rows.append((label, revision, seconds, venv_bytes, packages))
            mib = venv_bytes / 2**20
            print(f"{label:6} {revision:10} setup {seconds:6.1f} s   .venv {mib:7.1f} MiB   {packages}")
        (_, _, t0, b0, _), (_, _, t1, b1, _) = rows
        grown = (b1 - b0) / 2**20
        print(f"after/before: setup time x{t1 / t0:.2f}, .venv size x{b1 / b0:.2f} (+{grown:.1f} MiB)")


if __name__ == "__main__":
    main()
