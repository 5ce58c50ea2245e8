"""The README is executed: every ```sh block, in order, in a fresh directory (beside a copy of
`examples/` and the project's .venv), with free ports in place of 8787 and 8080. Any non-zero exit fails the
test; the README announces each one it expects (`|| echo ...`). A block preceded by
`<!-- not run by tests/test_readme.py: why -->` is skipped, and says why."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = "<!-- not run by tests/test_readme.py"


def shell_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of each ```sh block not marked to skip."""
    lines = text.splitlines()
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i
            body = []
            i += 1
            while lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            if not previous.startswith(SKIP):
                out.append((start + 1, "\n".join(body)))
        i += 1
    return out


def test_every_skipped_block_says_why() -> None:
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(SKIP):
            assert re.match(re.escape(SKIP) + r": \S.* -->$", line), line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    blocks = shell_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 3, "the tour, rolling out and training blocks at least"
    workdir = tmp_path / "newcomer"
    workdir.mkdir()
    shutil.copytree(ROOT / "examples", workdir / "examples")
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    port, dashboard = str(_free_port()), str(_free_port())
    script = ["set -eo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for line, body in blocks:
        script.append(f'echo "### README.md line {line} (at $SECONDS s)" >&2')
        script.append(body.replace("8787", port).replace("8080", dashboard))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VARIANTCTL_", "AWS_"))}
    env.update({"HOME": str(workdir), "XDG_DATA_HOME": str(workdir / "xdg"), "PATH": os.environ["PATH"]})
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    where = [line for line in done.stderr.splitlines() if line.startswith("### README.md")]
    assert done.returncode == 0, (
        f"exit {done.returncode} in the block at {where[-1] if where else '?'}\n"
        f"--- stdout (tail)\n{done.stdout[-3000:]}\n--- stderr (tail)\n{done.stderr[-3000:]}"
    )
    assert "rollout 1: promoted" in done.stdout
    assert (workdir / "tour" / "history.csv").read_text().count("\n") > 20
