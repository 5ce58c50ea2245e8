"""Signed digests of the history, as CloudTrail signs digests of its own logs.

A digest says: the events `first_seq..last_seq` were written, the newest had hash `head_hash`, at
`at`; it names the previous digest's signature, and it is signed with an Ed25519 key. Digests go to a
directory or an `s3://bucket/prefix`, one file each (`variantctl-digest-<last_seq>-<time>.json`).

An auditor who holds only the public key checks, with `audit verify --digests`:
- each digest's signature (a forged or edited digest, or one from another key, is named);
- that the digests form one chain: each names the previous one's signature, and their seq ranges
  meet (a deleted digest is named by the range it covered);
- that the history agrees with every digest: the hash at each digest's `last_seq` is the signed one
  (a chain rewritten consistently, which passes `verify` on its own, is caught here), and no event a
  digest covers is missing.
The newest digest can be deleted without a trace, as in CloudTrail: `--max-age` says how old the
newest may be (the daemon writes one every hour).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from manager.clock import format_instant, parse_instant, utcnow
from manager.errors import UserError
from manager.history import audit

FORMAT = "variantctl-digest/1"
PREFIX = "variantctl-digest-"
SIGNED_FIELDS = ("format", "first_seq", "last_seq", "head_hash", "at", "previous_signature", "key_id")


def default_key_path() -> Path:
    from manager.config import data_dir

    return Path(os.environ.get("VARIANTCTL_SIGNING_KEY") or data_dir() / "signing-key.pem")


# Keys.


def generate_key(path: Path) -> str:
    """A new Ed25519 private key at `path` (mode 0600; never overwritten); returns the public key PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if path.exists():
        raise UserError(f"{path} exists; a signing key is never overwritten (move it away first)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return public_pem(key.public_key())


def load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise UserError(
            f"no signing key at {path}; create one with `variantctl audit keygen --key {path}`"
        ) from None
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a PEM private key without a password: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UserError(f"{path} is not an Ed25519 key")
    return key


def load_public(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key: Any = serialization.load_pem_public_key(data)
    except ValueError:
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            private = None
        if isinstance(private, Ed25519PrivateKey) or b"PRIVATE KEY" in data:
            # A verifier never needs the signing key; handing it around is how it leaks.
            raise UserError(
                f"{path} is a private key: give the public key (`variantctl audit public-key` prints it)"
            ) from None
        raise UserError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UserError(f"{path} is not an Ed25519 public key")
    return key


def public_pem(public: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    pem: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def key_id(public: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# Where digests live.


class Store(Protocol):
    @property
    def where(self) -> str: ...

    def names(self) -> list[str]: ...
    def read(self, name: str) -> bytes: ...
    def write(self, name: str, data: bytes) -> None: ...


@dataclass
class DirectoryStore:
    path: Path

    @property
    def where(self) -> str:
        return str(self.path)

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        return sorted(
            p.name for p in self.path.iterdir() if p.name.startswith(PREFIX) and p.suffix == ".json"
        )

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        partial = self.path / f".{name}.partial"
        partial.write_bytes(data)
        os.replace(partial, self.path / name)


@dataclass
class S3Store:
    bucket: str
    prefix: str
    client: Any

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def names(self) -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if name.startswith(PREFIX) and name.endswith(".json") and "/" not in name:
                    out.append(name)
        return sorted(out)

    def read(self, name: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)["Body"].read())

    def write(self, name: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=self.prefix + name, Body=data, ContentType="application/json"
        )


def store_for(location: str, client_factory: Callable[[], Any] | None = None) -> Store:
    """A directory, or `s3://bucket/prefix` (through boto3's S3 client)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise UserError(f"{location!r}: name a bucket, as s3://bucket/prefix")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if client_factory is None:
            from manager.platforms import aws

            def client_factory() -> Any:
                return aws.client("s3")

        return S3Store(bucket, prefix, client_factory())
    return DirectoryStore(Path(location))


# Writing.


@dataclass(frozen=True)
class Digest:
    name: str
    body: dict[str, Any]
    signature: str

    @property
    def first_seq(self) -> int:
        return int(self.body["first_seq"])

    @property
    def last_seq(self) -> int:
        return int(self.body["last_seq"])

    def covers(self) -> str:
        if self.first_seq > self.last_seq:
            return f"no new events after seq {self.last_seq}"
        return f"seqs {self.first_seq}..{self.last_seq}"

    def describe(self) -> str:
        return f"{self.name} ({self.covers()}, signed {self.body['at']})"


def _signed_text(body: dict[str, Any]) -> bytes:
    return audit.canonical_json({k: body[k] for k in SIGNED_FIELDS}).encode()


def _parse(name: str, data: bytes) -> Digest:
    try:
        value = json.loads(data)
        body = {k: value[k] for k in SIGNED_FIELDS}
        if body["format"] != FORMAT:
            raise ValueError(f"format {body['format']!r}")
        int(body["first_seq"]), int(body["last_seq"])
        return Digest(name, body, str(value["signature"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptDigest(f"digest {name} is corrupt: not a variantctl digest ({exc})") from None


class CorruptDigest(UserError):
    """A digest file that does not parse: evidence of tampering (or damage), not a usage mistake."""


def load_all(store: Store) -> list[Digest]:
    return [_parse(name, store.read(name)) for name in store.names()]


def write_digest(database: Any, store: Store, private: Any, now: datetime | None = None) -> Digest:
    """Sign the history's head now, chained to the newest digest already in `store`."""
    from manager.registry.tables import AuditHead

    with database.read() as session:
        head = session.get(AuditHead, 1)
        if head is None:
            raise UserError("the registry has no history head; was it created by its migrations?")
        seq, digest_hash = int(head.seq), str(head.hash)
    # Names sort as (last seq, time): the newest is the last; the others need not be read each time.
    names = store.names()
    previous = _parse(names[-1], store.read(names[-1])) if names else None
    if previous is not None and previous.last_seq > seq:
        raise UserError(
            f"the newest digest in {store.where} covers seq {previous.last_seq}, beyond this history's "
            f"head {seq}: is it another registry's, or were events deleted?"
        )
    now = now or utcnow()
    body = {
        "format": FORMAT,
        "first_seq": previous.last_seq + 1 if previous else 1,
        "last_seq": seq,
        "head_hash": digest_hash,
        "at": format_instant(now),
        "previous_signature": previous.signature if previous else None,
        "key_id": key_id(private.public_key()),
    }
    signature = base64.b64encode(private.sign(_signed_text(body))).decode()
    name = f"{PREFIX}{seq:012d}-{now:%Y%m%dT%H%M%S%fZ}.json"
    text = json.dumps({**body, "signature": signature}, indent=2, sort_keys=True) + "\n"
    store.write(name, text.encode())
    return Digest(name, body, signature)


# Checking.


@dataclass(frozen=True)
class DigestCheck:
    ok: bool
    count: int
    problems: tuple[str, ...] = ()
    covered_to: int = 0  # the newest seq a digest vouches for

    def first(self) -> str:
        return self.problems[0] if self.problems else ""


def check_digests(
    digests: list[Digest], public: Any, max_age: timedelta | None = None, now: datetime | None = None
) -> tuple[list[str], list[Digest]]:
    """Signatures and the chain of digests; returns the problems and the digests whose signature holds."""
    from cryptography.exceptions import InvalidSignature

    problems: list[str] = []
    ours = key_id(public)
    good: list[Digest] = []
    for digest in digests:
        try:
            public.verify(base64.b64decode(digest.signature, validate=True), _signed_text(digest.body))
            good.append(digest)
        except (InvalidSignature, ValueError):
            if digest.body.get("key_id") != ours:
                problems.append(
                    f"digest {digest.describe()} was signed by another key "
                    f"(key id {digest.body.get('key_id')}, not {ours})"
                )
            else:
                problems.append(
                    f"digest {digest.describe()} has an invalid signature: it was forged or edited"
                )
    good.sort(key=lambda d: (d.last_seq, d.body["at"]))
    by_signature = {d.signature: d for d in good}
    for before, after in zip([None, *good], good, strict=False):
        wanted = after.body["previous_signature"]
        if before is None:
            if wanted is not None:
                lost = by_signature.get(wanted)
                problems.append(
                    f"the digest before {after.describe()} is missing (deleted): its chain starts there"
                    if lost is None
                    else f"digest {after.describe()} follows {lost.describe()} out of order"
                )
            continue
        if wanted != before.signature:
            problems.append(
                f"a digest between {before.describe()} and {after.describe()} is missing (deleted): "
                f"the one covering seqs {before.last_seq + 1}..{after.first_seq - 1}"
            )
        elif after.first_seq != before.last_seq + 1:
            problems.append(f"digest {after.describe()} does not start where {before.describe()} ended")
    if max_age is not None and good:
        newest = parse_instant(good[-1].body["at"])
        if (now or utcnow()) - newest > max_age:
            problems.append(
                f"{STALE}, {good[-1].describe()}, is older than {max_age}: newer ones may have been deleted "
                "(or the daemon has not written one since)"
            )
    if not digests:
        problems.append("there are no digests to check against (were they deleted?)")
    return problems, good


STALE = "the newest digest"  # how a too-old newest digest's problem begins (`audit verify` says STALE)


def check_history(good: list[Digest], hashes: dict[int, str], first: int, last: int) -> list[str]:
    """Each digest's signed head against the history's hash at that seq (`hashes`), where the history
    (seqs `first`..`last`) covers it."""
    problems = []
    for digest in good:
        seq, signed = digest.last_seq, digest.body["head_hash"]
        if seq == 0:
            continue
        if seq > last:
            problems.append(
                f"digest {digest.describe()} vouches for seq {seq}, but the history ends at {last}: "
                "events were deleted"
            )
        elif seq >= first and hashes.get(seq) != signed:
            problems.append(
                f"seq {seq}'s hash differs from the one signed in digest {digest.describe()}: "
                "the history was rewritten"
            )
    return problems
