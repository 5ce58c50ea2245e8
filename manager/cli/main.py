"""`variantctl`: the root command, global options, and the one place errors become exit codes.

Exit codes: 0 ok, 1 failure, 2 bad usage or input. A user's mistake is one line
on stderr, never a traceback; set VARIANTCTL_DEBUG=1 to see one for a bug.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection
from typing import Any

import click

from manager import __version__
from manager.cli.context import AppContext
from manager.cli.daemon import daemon
from manager.cli.dashboard import dashboard
from manager.cli.demo import demo
from manager.cli.endpoints import endpoints_group
from manager.cli.history import audit_group, history
from manager.cli.local import local_group
from manager.cli.models import models_group
from manager.cli.plan import plan_command
from manager.cli.policy import policy_group
from manager.cli.rollout import rollout_group
from manager.cli.rollout_undo import undo as undo_command
from manager.cli.schema import db_group
from manager.cli.simulate import simulate
from manager.cli.traffic import traffic
from manager.cli.train import train
from manager.cli.webhooks import webhooks_group
from manager.errors import UserError

EXIT_FAILURE = 1
EXIT_USAGE = 2


GLOBAL_OPTIONS = ("--db", "--actor")


def hoist_global_options(args: list[str], keep: Collection[str] = ()) -> list[str]:
    """`--db` and `--actor` work after the subcommand too (`variantctl history --db x.db`): they are
    moved in front of it, in order, unless the subcommand has an option of that name itself (`keep`:
    `history --actor` filters); nothing after `--` is touched."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in keep:
            rest.append(arg)
            i += 1
            continue
        if arg in GLOBAL_OPTIONS and i + 1 < len(args):
            front += args[i : i + 2]
            i += 2
            continue
        if any(arg.startswith(f"{name}=") for name in GLOBAL_OPTIONS):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


class Root(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args), self._own_options(ctx, args)))

    def _own_options(self, ctx: click.Context, args: list[str]) -> set[str]:
        """The global option names the invoked subcommand defines itself."""
        command: click.Command = self
        words = iter(args)
        for word in words:
            if word in GLOBAL_OPTIONS:
                next(words, None)  # its value
                continue
            if word.startswith("-") or not isinstance(command, click.Group):
                continue
            sub = command.get_command(ctx, word)
            if sub is None:
                break
            command = sub
        if command is self:
            return set()
        return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} & set(GLOBAL_OPTIONS)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.UsageError, click.Abort, BrokenPipeError):
            raise  # a closed pipe (`| head`): click's own handling exits quietly, not "error: [Errno 32]"
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            ctx.exit(EXIT_USAGE)
        except Exception as exc:
            code, message = classify(exc)
            if os.environ.get("VARIANTCTL_DEBUG"):
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(code)


def _bad_input(exc: BaseException) -> str | None:
    """The one line for an input no check caught before it reached the database or a parser
    (issue 31, item 10): a number beyond 64 bits, a date past the year 9999, a document nested
    100,000 deep, a `--db` URL naming no installed driver."""
    if isinstance(exc, OverflowError) and "SQLite INTEGER" in str(exc):
        return "a number in the input is too large: the registry holds integers up to 9223372036854775807"
    if isinstance(exc, OverflowError) and "date" in str(exc):
        return f"a time in the input is out of range (before year 1 or after 9999): {exc}"
    if isinstance(exc, RecursionError):
        return "an input file is nested too deeply to be read (a JSON or YAML document of its kind never is)"
    if type(exc).__name__ == "InvalidParameterError" and type(exc).__module__.startswith("sklearn"):
        return f"the training config's params (or search ranges): {str(exc).splitlines()[0]}"
    if type(exc).__name__ == "NoSuchModuleError" and type(exc).__module__.startswith("sqlalchemy"):
        driver = str(exc).rsplit(":", 1)[-1]
        return (
            f"--db: no database driver {driver!r}; give a file path, sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return None


def classify(exc: BaseException) -> tuple[int, str]:
    """The exit code and the one line a user sees for an exception."""
    from sqlalchemy.exc import DatabaseError, IntegrityError

    if isinstance(exc, UserError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, IntegrityError):
        from manager.registry.errors import explain

        return EXIT_USAGE, explain(exc)
    if isinstance(exc, DatabaseError):
        lines = [line.strip() for line in str(exc.orig).strip().splitlines() if line.strip()]
        detail = lines[0] if lines else type(exc.orig).__name__
        usage = (
            "unable to open",
            "readonly",
            "read-only",
            "not a database",
            "connection",
            "password",
            "does not exist",
        )
        if any(word in detail for word in usage):
            return EXIT_USAGE, f"cannot use the registry database: {detail}"
        return EXIT_FAILURE, f"database error: {detail}"
    if type(exc).__module__.startswith("alembic") and type(exc).__name__ == "CommandError":
        return EXIT_USAGE, f"schema: {str(exc).splitlines()[0]}"
    from manager.platforms.base import PlatformError

    if isinstance(exc, PlatformError):
        return EXIT_FAILURE, str(exc)
    if type(exc).__module__ == "botocore.exceptions" and type(exc).__name__ in (
        "NoRegionError",
        "NoCredentialsError",
        "PartialCredentialsError",
        "ProfileNotFound",
        "EndpointConnectionError",
    ):
        return EXIT_USAGE, f"AWS: {exc} (see README: Pointing it at AWS)"
    if isinstance(exc, OSError):
        return EXIT_USAGE, f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    bad_input = _bad_input(exc)
    if bad_input is not None:
        return EXIT_USAGE, bad_input
    return EXIT_FAILURE, f"internal error: {type(exc).__name__}: {exc} (set VARIANTCTL_DEBUG=1 for details)"


@click.group(cls=Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    metavar="PATH|URL",
    help="registry database [env: VARIANTCTL_DB; default: ~/.local/share/variantctl/registry.db]",
)
@click.option(
    "--actor",
    metavar="NAME",
    help="who is acting, for the history [env: VARIANTCTL_ACTOR; default: the OS user]",
)
@click.version_option(__version__, prog_name="variantctl")
@click.pass_context
def cli(ctx: click.Context, db: str | None, actor: str | None) -> None:
    """Endpoint update and A/B traffic manager for SageMaker models."""
    ctx.obj = AppContext.create(db, actor)
    ctx.call_on_close(ctx.obj.close)


cli.add_command(db_group)
cli.add_command(models_group)
cli.add_command(endpoints_group)
cli.add_command(history)
cli.add_command(audit_group)
cli.add_command(local_group)
cli.add_command(train)
cli.add_command(policy_group)
rollout_group.add_command(plan_command)
rollout_group.add_command(undo_command)
cli.add_command(rollout_group)
cli.add_command(daemon)
cli.add_command(dashboard)
cli.add_command(demo)
cli.add_command(simulate)
cli.add_command(traffic)
cli.add_command(webhooks_group)


def main() -> None:
    try:
        cli.main(prog_name="variantctl")
    except BrokenPipeError:
        # A closed pipe (`variantctl history | head`) is not an error.
        sys.stderr.close()
        sys.exit(0)
