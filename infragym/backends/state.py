"""Pulumi state backends (file, S3, DigitalOcean Spaces), the passphrase, and secret scrubbing.

The pulumi backend keeps one stack per layer in a *state backend*:

- ``file://~/.infragym/state`` (the default): a directory, created when missing;
- ``s3://bucket?region=...&endpoint=...&s3ForcePathStyle=true&disableSSL=true``: an S3
  bucket (AWS, or any S3-compatible server through ``endpoint``);
- ``spaces://bucket?region=nyc3``: shorthand for a DigitalOcean Spaces bucket, turned into
  ``s3://bucket?endpoint=nyc3.digitaloceanspaces.com&region=nyc3``.

For S3 and Spaces, boto3 creates the bucket when it is missing, makes it private (public
access block on AWS, a private ACL on Spaces, which has no public access block) and
checks that it can write, so a bad bucket or key gives a clear
:class:`~infragym.errors.StateBackendError` before any engine call. Credentials come from
the usual ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` variables; for Spaces,
``SPACES_ACCESS_KEY_ID``/``SPACES_SECRET_ACCESS_KEY`` are used when the AWS ones are
unset. They are handed to the engine at process start and never stored or printed.

Secrets in the state use Pulumi's passphrase provider: ``PULUMI_CONFIG_PASSPHRASE`` (or
``PULUMI_CONFIG_PASSPHRASE_FILE``) when set, else a generated passphrase kept in
``~/.infragym/passphrase`` (mode 0600, created once; the user is told where).

boto3 is imported where it is used, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from infragym.catalog import SPACES_REGIONS
from infragym.errors import ConfigError, StateBackendError

log = logging.getLogger(__name__)

DEFAULT_STATE_URL = "file://~/.infragym/state"
"""Where stacks live unless told otherwise."""

DEFAULT_PASSPHRASE_FILE = "~/.infragym/passphrase"
"""The generated passphrase, used when ``PULUMI_CONFIG_PASSPHRASE`` is not set."""

PROJECT = "infragym"
"""The one Pulumi project every layer stack belongs to."""

_S3_CHECKSUM_ENV = {
    # S3-compatible servers (Spaces, moto) do not all speak the newer AWS SDKs' default
    # request/response checksums: only use them where an API requires them.
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
}

_SECRET_FILES: set[str] = set()
"""Passphrase files in use by this process (their content is scrubbed from messages)."""

_SECRET_ENV_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSPHRASE|ACCESS_KEY|PRIVATE_KEY|API_KEY")
_AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class StateBackend:
    """A parsed state backend URL.

    Attributes:
        url: The URL handed to the Pulumi CLI (``file:///abs/path`` or ``s3://...``).
        kind: ``"file"`` or ``"s3"`` (Spaces is S3 with an endpoint).
        display: The URL as given, safe to print (no user info).
        path: The state directory (file backends).
        bucket: The bucket (S3 backends).
        region: The bucket's region (S3 backends).
        endpoint: ``host[:port]`` of an S3-compatible server, or ``None`` for AWS.
        path_style: Address the bucket in the path rather than the host name.
        disable_ssl: Speak plain HTTP to ``endpoint`` (local servers only).
        spaces: The bucket is a DigitalOcean Space.
    """

    url: str
    kind: str
    display: str
    path: Path | None = None
    bucket: str | None = None
    region: str | None = None
    endpoint: str | None = None
    path_style: bool = False
    disable_ssl: bool = False
    spaces: bool = False

    def env(self) -> dict[str, str]:
        """Non-secret environment variables the engine needs for this backend."""
        if self.kind != "s3":
            return {}
        env = dict(_S3_CHECKSUM_ENV)
        if self.region:
            env["AWS_REGION"] = self.region
        return env

    def secret_env(self) -> dict[str, str]:
        """Credentials to hand to the engine at process start (Spaces key mapping)."""
        if self.spaces and not os.environ.get("AWS_ACCESS_KEY_ID"):
            key = os.environ.get("SPACES_ACCESS_KEY_ID")
            secret = os.environ.get("SPACES_SECRET_ACCESS_KEY")
            if key and secret:
                return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
        return {}

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint as an URL for boto3 (``None`` for AWS)."""
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return f"{'http' if self.disable_ssl else 'https'}://{self.endpoint}"

    def locks_prefix(self, stack: str, project: str = PROJECT) -> str:
        """Where the engine keeps the lock files of ``stack``, relative to the state root."""
        return f".pulumi/locks/organization/{project}/{stack}/"


def _truthy(value: str | None) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def parse_state_url(url: str | None) -> StateBackend:
    """Parse a state backend URL (``None`` means :data:`DEFAULT_STATE_URL`).

    Raises:
        ConfigError: The URL does not parse, the scheme is unknown, the bucket is
            missing, or a Spaces region is not one of
            :data:`infragym.catalog.SPACES_REGIONS`.
    """
    raw = url or os.environ.get("INFRAGYM_STATE_URL") or DEFAULT_STATE_URL
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018  (parsed lazily: raises for a port out of range)
    except ValueError as exc:  # "Invalid IPv6 URL" (s3://[bad), a bad port
        raise ConfigError(
            f"state URL is not a valid URL ({exc}; the URL is not shown, as it may hold "
            "credentials): use file://DIR, s3://BUCKET?region=... or spaces://BUCKET?region=nyc3"
        ) from None
    scheme = parts.scheme.lower()
    safe = _redact(raw)
    if scheme == "file":
        # file://~/x has "~" as its host; file:///abs has an empty host.
        path = Path(os.path.expanduser(parts.netloc + parts.path))
        if not str(path) or str(path) == ".":
            raise ConfigError(f"state URL {safe!r} names no directory")
        path = path.resolve()
        return StateBackend(url=path.as_uri(), kind="file", display=safe, path=path)
    if scheme in ("s3", "spaces"):
        bucket = parts.hostname
        if not bucket:
            raise ConfigError(f"state URL {safe!r} names no bucket (s3://BUCKET?region=...)")
        query = dict(parse_qsl(parts.query))
        if scheme == "spaces":
            region = query.pop("region", None) or "nyc3"
            if region not in SPACES_REGIONS:
                raise ConfigError(
                    f"unknown Spaces region {region!r} in {safe!r}; "
                    f"valid: {', '.join(SPACES_REGIONS)}"
                )
            query = {"endpoint": f"{region}.digitaloceanspaces.com", "region": region, **query}
        region = query.get("region")
        endpoint = query.get("endpoint")
        path_style = _truthy(query.get("s3ForcePathStyle")) or _truthy(query.get("use_path_style"))
        disable_ssl = _truthy(query.get("disableSSL")) or _truthy(query.get("disable_https"))
        spaces = scheme == "spaces" or bool(endpoint and "digitaloceanspaces.com" in endpoint)
        return StateBackend(
            url=f"s3://{bucket}" + (f"?{urlencode(query)}" if query else ""),
            kind="s3",
            display=safe,
            bucket=bucket,
            region=region,
            endpoint=endpoint,
            path_style=path_style,
            disable_ssl=disable_ssl,
            spaces=spaces,
        )
    raise ConfigError(
        f"unsupported state backend {safe!r}: use file://DIR, s3://BUCKET?region=... "
        "or spaces://BUCKET?region=nyc3"
    )


def _redact(url: str) -> str:
    """``url`` without user info (``s3://key:secret@bucket`` would otherwise leak)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return parts._replace(netloc=netloc).geturl()
    return url


# --------------------------------------------------------------------------- preparing


def prepare_backend(backend: StateBackend, create: bool = True) -> None:
    """Make the backend usable: create the directory, or create and check the bucket.

    Args:
        backend: The parsed backend.
        create: Create a missing directory or bucket (``False`` for read-only commands,
            which then fail clearly instead).

    Raises:
        StateBackendError: The directory or bucket cannot be created or written.
    """
    if backend.kind == "file":
        assert backend.path is not None
        if not backend.path.exists():
            if not create:
                raise StateBackendError(f"state directory {backend.path} does not exist")
            try:
                backend.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StateBackendError(
                    f"cannot create the state directory {backend.path}: {exc.strerror}"
                ) from None
        if not os.access(backend.path, os.W_OK):
            raise StateBackendError(f"the state directory {backend.path} is not writable")
        return
    ensure_bucket(backend, create=create)


def s3_client(backend: StateBackend) -> Any:
    """A boto3 S3 client for the backend, with the backend's credentials and endpoint."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if backend.path_style else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=10,
        read_timeout=30,
    )
    creds = backend.secret_env()
    return boto3.client(
        "s3",
        region_name=backend.region or os.environ.get("AWS_REGION") or "us-east-1",
        endpoint_url=backend.endpoint_url,
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY"),
        config=config,
    )


def _s3_error(backend: StateBackend, action: str, exc: Exception) -> StateBackendError:
    """A clear error for a failed S3 call: bucket, endpoint and the service's code only."""
    code = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        code = f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    detail = code or type(exc).__name__
    where = f"bucket {backend.bucket!r}" + (f" at {backend.endpoint}" if backend.endpoint else "")
    hint = (
        "check SPACES_ACCESS_KEY_ID/SPACES_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY)"
        if backend.spaces
        else "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the region"
    )
    return StateBackendError(scrub(f"cannot {action} {where}: {detail}; {hint}"))


def ensure_bucket(backend: StateBackend, create: bool = True) -> None:
    """Create the state bucket if missing, make it private, and check write access.

    Raises:
        StateBackendError: The bucket cannot be reached, created or written (the message
            names the bucket and endpoint, never a key).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(backend)
    bucket = backend.bucket
    try:
        client.head_bucket(Bucket=bucket)
        exists = True
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
            exists = False
        else:
            raise _s3_error(backend, "access", exc) from None
    except BotoCoreError as exc:
        raise _s3_error(backend, "reach", exc) from None
    if not exists:
        if not create:
            raise StateBackendError(f"state bucket {bucket!r} does not exist")
        try:
            kwargs: dict[str, Any] = {"Bucket": bucket, "ACL": "private"}
            region = backend.region
            if region and region != "us-east-1" and not backend.spaces:
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            client.create_bucket(**kwargs)
            log.info("created the private state bucket %s", bucket)
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(backend, "create", exc) from None
        _make_private(client, backend)
    try:
        key = ".infragym/access-check"
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
        client.delete_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(backend, "write to", exc) from None


def _make_private(client: Any, backend: StateBackend) -> None:
    """Block public access (AWS) and set a private ACL (Spaces has only ACLs)."""
    from botocore.exceptions import ClientError

    if not backend.spaces:
        try:
            client.put_public_access_block(
                Bucket=backend.bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
        except ClientError as exc:
            # S3-compatible servers without the API still got a private ACL at creation.
            log.debug("public access block not set on %s: %s", backend.bucket, exc)
    try:
        client.put_bucket_acl(Bucket=backend.bucket, ACL="private")
    except ClientError as exc:
        log.debug("private ACL not set on %s: %s", backend.bucket, exc)


# --------------------------------------------------------------------------- locks


@dataclass(frozen=True)
class LockInfo:
    """A lock file the engine leaves while it updates a stack (file and S3 backends).

    Attributes:
        key: The lock's path relative to the state root.
        pid: The engine process that took it.
        username: Its user.
        hostname: Its host.
        timestamp: When it was taken (as the engine wrote it).
    """

    key: str
    pid: int
    username: str
    hostname: str
    timestamp: str

    def describe(self) -> str:
        """One line naming the lock and its owner."""
        return f"{self.key} (pid {self.pid} on {self.hostname}, since {self.timestamp})"

    @property
    def stale(self) -> bool:
        """The owner was on this host and is gone (or a zombie): nobody will release it."""
        if self.hostname != socket.gethostname():
            return False
        return not pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def list_locks(backend: StateBackend, stack: str, project: str = PROJECT) -> list[LockInfo]:
    """The engine's lock files on ``stack`` (empty when it is not being updated)."""
    prefix = backend.locks_prefix(stack, project)
    blobs: list[tuple[str, bytes]] = []
    if backend.kind == "file":
        assert backend.path is not None
        folder = backend.path / prefix
        if folder.is_dir():
            for f in sorted(folder.glob("*.json")):
                try:
                    blobs.append((prefix + f.name, f.read_bytes()))
                except OSError:
                    continue
    else:
        client = s3_client(backend)
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            listing = client.list_objects_v2(Bucket=backend.bucket, Prefix=prefix)
            for obj in listing.get("Contents", []):
                if obj["Key"].endswith(".json"):
                    body = client.get_object(Bucket=backend.bucket, Key=obj["Key"])["Body"].read()
                    blobs.append((obj["Key"], body))
        except (ClientError, BotoCoreError) as exc:
            raise _s3_error(backend, "list the locks in", exc) from None
    locks = []
    for key, body in blobs:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        locks.append(
            LockInfo(
                key=key,
                pid=int(data.get("pid", 0) or 0),
                username=str(data.get("username", "?")),
                hostname=str(data.get("hostname", "?")),
                timestamp=str(data.get("timestamp", "?")),
            )
        )
    return locks


# --------------------------------------------------------------------------- passphrase


def passphrase_env(
    passphrase_file: str | os.PathLike[str] | None = None, generate: bool = True
) -> dict[str, str]:
    """Environment selecting the passphrase secrets provider's passphrase.

    ``PULUMI_CONFIG_PASSPHRASE`` or ``PULUMI_CONFIG_PASSPHRASE_FILE`` from the environment
    win (nothing to add: the engine inherits them). Otherwise a random passphrase is
    generated once into ``passphrase_file`` (mode 0600) and the engine is pointed at it.
    The passphrase itself is never returned, logged or put in an error.

    Args:
        passphrase_file: The generated passphrase's file (default ``~/.infragym/passphrase``).
        generate: Create the file when missing (commands that only read or remove
            existing stacks pass ``False``: a new passphrase could not decrypt them).
    """
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE") is not None:
        return {}
    if os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return {}
    path = Path(os.path.expanduser(str(passphrase_file or DEFAULT_PASSPHRASE_FILE)))
    if not path.exists() and not generate:
        return {}
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        log.warning(
            "generated a passphrase for the Pulumi state's secrets in %s (mode 0600); keep "
            "it: the stacks cannot be decrypted without it (or set PULUMI_CONFIG_PASSPHRASE)",
            path,
        )
    else:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning("%s is readable by others (mode %o): chmod 600 it", path, mode)
    _SECRET_FILES.add(str(path))
    return {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}


# --------------------------------------------------------------------------- scrubbing


def secret_values(extra: Iterable[str] = ()) -> list[str]:
    """Values that must never appear in a message: secret-looking env vars and ``extra``."""
    values = [v for k, v in os.environ.items() if _SECRET_ENV_NAME.search(k) and v]
    path = os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    candidates = [path] if path else []
    candidates.extend(sorted(_SECRET_FILES))
    candidates.append(os.path.expanduser(DEFAULT_PASSPHRASE_FILE))
    for p in candidates:
        try:
            text = Path(p).read_text().strip()
        except OSError:
            continue
        if text:
            values.append(text)
    values.extend(v for v in extra if v)
    # Longest first, so a secret containing another is replaced whole.
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every known secret value (and AWS key ids) replaced by ``***``."""
    for value in secret_values(extra):
        text = text.replace(value, "***")
    return _AWS_KEY_ID.sub("***", text)
