"""variantctl as a user installs it: a wheel built from this tree, installed into a fresh virtualenv,
runs the demo from another directory, with everything it reads shipped inside the package."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VARIANTCTL_", "PYTHON"))}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
def test_the_demo_runs_from_a_wheel_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    # Built from a copy of the files git tracks, so no stale build/ directory can stand in for the
    # package's own data.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path / "dist",
        source,
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("variantctl-*.whl")

    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    fresh_site = Path(
        _run(python, "-c", "import site; print(site.getsitepackages()[0])", cwd=tmp_path).stdout.strip()
    )
    # The dependencies come from this test run's environment, as plain path entries: a .pth line that
    # names a directory adds it to sys.path without running the .pth files in it, so the editable
    # install of this checkout stays invisible to the fresh environment.
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = _run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--target", fresh_site, wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr

    where = _run(python, "-c", "import manager; print(manager.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(fresh_site)), where.stdout + where.stderr
    variantctl = [python, "-m", "manager"]
    demo = _run(*variantctl, "demo", "--workdir", tmp_path / "demo", cwd=tmp_path, timeout=240)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "promoted" in demo.stdout
    verified = _run(*variantctl, "--db", tmp_path / "demo" / "registry.db", "audit", "verify", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
