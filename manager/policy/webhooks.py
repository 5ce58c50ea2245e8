"""Event webhooks and gates: who is told of a rollout's events, and who must answer before it moves."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal, get_args

from pydantic import Field, field_validator, model_validator

from manager.clock import parse_duration
from manager.policy.specs import Duration, Spec

# What an event webhook can be told of (the history's rollout events, grouped as operators think of
# them); `webhooks.events` maps each history action to one.
WebhookEvent = Literal[
    "started",
    "step_changed",
    "paused",
    "resumed",
    "promoting",
    "promoted",
    "rolling_back",
    "rolled_back",
    "aborted",
    "failed",
    "sample_ratio_mismatch",
    "data_problem",
    "gate",
]
WEBHOOK_EVENTS: tuple[str, ...] = get_args(WebhookEvent)
GateType = Literal["confirm-rollout", "pre-rollout", "confirm-promotion"]
FINAL_KINDS = ("promoted", "rolled_back", "aborted", "failed")  # what a post-rollout hook is told of
HOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
EMAIL = r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}$"
# What a hook's `template` may say ($name): each event's fields (manager.webhooks.events.fields).
TEMPLATE_FIELDS = (
    "kind",
    "rollout",
    "endpoint",
    "candidate",
    "baseline",
    "state",
    "weight",
    "reason",
    "actor",
    "action",
    "seq",
    "link",
    "text",
)


class Webhook(Spec):
    """An event webhook (told of what happens, never waited for) or a gate with Flagger's semantics:
    `confirm-rollout` before the candidate is deployed, `pre-rollout` before it gets live traffic,
    `confirm-promotion` before an analysis promotes it. A gate is asked every `every` until it answers
    2xx; after `deadline` the rollout applies `onDeadline` (abort: it ends on the baseline)."""

    name: str
    # Flagger's hooks beside the gates: `rollback` is asked every `every` while the rollout runs, and
    # a 2xx answer rolls it back; `post-rollout` is told once the rollout has ended (promoted, rolled
    # back, aborted or failed), delivered and retried as an event; its failure changes nothing.
    type: Literal[
        "event", "confirm-rollout", "pre-rollout", "confirm-promotion", "rollback", "post-rollout"
    ] = "event"
    url: str | None = None
    # Where the URL is read from when it is a credential (a Slack or Teams URL): `env:NAME` (the
    # daemon's environment) or `file:PATH`, read when it is sent; never stored or shown.
    url_from: str | None = Field(
        None, alias="urlFrom", pattern=r"^(env:[A-Za-z_][A-Za-z0-9_]{0,127}|file:[^\x00]{1,4096})$"
    )
    # json (ours, signed), slack, teams (an Adaptive Card), pagerduty (Events API v2, the routing key
    # from secretEnv/secretFile) or email (url smtp://[user@]host:port or smtps://, `to`, `from`)
    format: Literal["json", "slack", "teams", "pagerduty", "email"] = "json"
    template: str | None = Field(None, max_length=2000)  # the line each event says: string.Template
    to: list[Annotated[str, Field(pattern=EMAIL)]] = Field(default_factory=list, max_length=20)
    sender: str | None = Field(None, alias="from", pattern=EMAIL)
    events: list[WebhookEvent] = Field(default_factory=list, max_length=len(WEBHOOK_EVENTS))
    secret_env: str | None = Field(None, alias="secretEnv", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    secret_file: str | None = Field(None, alias="secretFile", max_length=4096)
    timeout: Duration = "5s"
    every: Duration = "30s"
    deadline: Duration = "1h"
    on_deadline: Literal["abort", "proceed"] = Field("abort", alias="onDeadline")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not HOOK_NAME.match(value):
            raise ValueError("1-63 letters, digits, '-', '_' or '.', starting with a letter or digit")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "smtp", "smtps") or not parts.hostname or len(value) > 2048:
            raise ValueError(f"{value!r} is not an http(s) URL (nor smtp:// or smtps:// for email)")
        return value

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        from string import Template

        if value is None:
            return None
        template = Template(value)
        if not template.is_valid():
            raise ValueError("not a template: write $name or ${name}, and $$ for a dollar sign")
        unknown = sorted(set(template.get_identifiers()) - set(TEMPLATE_FIELDS))
        if unknown:
            raise ValueError(f"${unknown[0]} is not a field; the fields are {', '.join(TEMPLATE_FIELDS)}")
        return value

    @model_validator(mode="after")
    def _fits_type(self) -> Webhook:
        if (self.url is None) == (self.url_from is None):
            raise ValueError("give `url`, or `urlFrom` (env:NAME or file:PATH) for a URL that is a secret")
        if self.secret_env and self.secret_file:
            raise ValueError("give `secretEnv` or `secretFile`, not both")
        if self.type not in ("event", "post-rollout") and (
            self.format != "json" or self.events or self.template
        ):
            raise ValueError(
                f"a {self.type} gate is called with JSON; `format`, `events` and `template` are for events"
            )
        self._fits_format()
        if parse_duration(self.timeout) > timedelta(minutes=5):
            raise ValueError("`timeout` is at most 5m: a call never holds the daemon longer")
        return self

    def _fits_format(self) -> None:
        from urllib.parse import urlsplit

        mail = urlsplit(self.url).scheme in ("smtp", "smtps") if self.url else None
        if self.format == "email":
            if mail is False:
                raise ValueError("an email hook's url is smtp://[user@]host:port or smtps://...")
            if not self.to or not self.sender:
                raise ValueError("an email hook needs `to` (1-20 addresses) and `from`")
        elif mail or self.to or self.sender:
            raise ValueError("smtp:// URLs, `to` and `from` are for `format: email`")
        if self.format == "pagerduty" and not (self.secret_env or self.secret_file):
            raise ValueError("a pagerduty hook needs its routing key: `secretEnv` or `secretFile`")

    @property
    def gate(self) -> bool:
        """Asked (and answered) rather than told: the gates and the rollback hook."""
        return self.type not in ("event", "post-rollout")

    @property
    def target(self) -> str:
        """What a call is sent to: the URL, or the `env:`/`file:` reference read at send time."""
        return self.url if self.url is not None else str(self.url_from)

    @property
    def shown(self) -> str:
        """The hook's URL as the history and the pages may show it."""
        return shown(self.target)


def shown(target: str) -> str:
    from manager.history.redaction import shown as redacted

    return redacted(target)
