"""The pulumi backend against the real engine, with its state in S3 (moto on 127.0.0.1).

The state URL is ``s3://BUCKET?region=us-east-1&endpoint=127.0.0.1:PORT&
s3ForcePathStyle=true&disableSSL=true``; the bucket does not exist beforehand, so the
backend creates it (private) with boto3. The same create / one-layer update / upstream
outputs checks as on ``file://`` run here, then the stacks are kept on ``close`` and
removed with ``infragym stacks destroy``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infragym.backends import Change, LayerSpec
from infragym.backends.pulumi import PulumiBackend
from infragym.backends.state import parse_state_url, s3_client
from infragym.cli_stacks import stacks_app
from tests.backends import dynlayers as dl
from tests.backends.conftest import AWS_TEST_SECRET, TEST_PASSPHRASE, s3_url

pytestmark = [pytest.mark.engine, pytest.mark.timeout(300)]

DEPLOYMENT = "s3dep"


class Ctx:
    def __init__(self, base: Path, endpoint: str) -> None:
        self.files = base / "files"
        self.files.mkdir()
        self.bucket = f"infragym-state-{uuid.uuid4().hex[:8]}"
        self.url = s3_url(endpoint, self.bucket)
        self.backend = PulumiBackend(
            DEPLOYMENT, self.url, keep=True, step_wait=False, progress=False
        )

    def record(self, which: str) -> dict | None:
        return dl.read_record(self.files, DEPLOYMENT, which)

    def state_keys(self) -> list[str]:
        client = s3_client(parse_state_url(self.url))
        listing = client.list_objects_v2(Bucket=self.bucket)
        return [o["Key"] for o in listing.get("Contents", [])]

    def objects_text(self) -> str:
        client = s3_client(parse_state_url(self.url))
        return "".join(
            client.get_object(Bucket=self.bucket, Key=k)["Body"].read().decode(errors="replace")
            for k in self.state_keys()
        )


@pytest.fixture(scope="module")
def ctx(pulumi_env: Path, moto_server: str, aws_env: None, test_layers: None) -> Iterator[Ctx]:
    c = Ctx(pulumi_env, moto_server)
    try:
        yield c
    finally:
        c.backend.keep = False
        c.backend.close()


def test_create_on_a_new_private_bucket(ctx: Ctx) -> None:
    ctx.backend.reset(
        [
            LayerSpec("test-base", {"dir": str(ctx.files)}),
            LayerSpec("test-app", {"dir": str(ctx.files)}),
        ]
    )
    assert ctx.backend.engine_calls == 2
    assert ctx.record("app")["upstreamFile"] == str(ctx.files / f"{DEPLOYMENT}-base.json")
    keys = ctx.state_keys()
    for layer in ("test-base", "test-app"):
        assert f".pulumi/stacks/infragym/{DEPLOYMENT}.{layer}.json" in keys
    client = s3_client(parse_state_url(ctx.url))
    block = client.get_public_access_block(Bucket=ctx.bucket)
    assert all(block["PublicAccessBlockConfiguration"].values())


def test_one_layer_change_and_upstream_outputs(ctx: Ctx) -> None:
    r1 = ctx.backend.apply([Change(dl.APP_REPLICAS, 4)])
    assert (r1.layers_updated, r1.engine_calls) == (("test-app",), 1)
    assert ctx.record("app")["spec"]["replicas"] == 4
    r2 = ctx.backend.apply([Change(dl.BASE_SIZE, "large")])
    assert (r2.layers_updated, r2.engine_calls) == (("test-base", "test-app"), 2)
    assert ctx.record("app")["upstreamSize"] == "large"
    assert ctx.backend.apply([]).engine_calls == 0


def test_no_secret_in_the_bucket(ctx: Ctx) -> None:
    text = ctx.objects_text()
    for secret in (TEST_PASSPHRASE, AWS_TEST_SECRET, f"s3cret-of-{DEPLOYMENT}"):
        assert secret not in text


def test_kept_stacks_are_listed_and_destroyed_by_the_cli(ctx: Ctx) -> None:
    ctx.backend.close()  # keep=True
    assert ctx.record("base") is not None
    runner = CliRunner()
    out = runner.invoke(stacks_app, ["list", "--backend", ctx.url, "--deployment", DEPLOYMENT])
    assert out.exit_code == 0, out.output
    assert f"{DEPLOYMENT}.test-base" in out.output and f"{DEPLOYMENT}.test-app" in out.output
    out = runner.invoke(stacks_app, ["destroy", DEPLOYMENT, "--backend", ctx.url, "--yes"])
    assert out.exit_code == 0, out.output
    assert out.output.index("test-app") < out.output.index("test-base")  # downstream first
    assert ctx.record("base") is None and ctx.record("app") is None
    # (The engine keeps a ``.json.bak`` of a removed stack.)
    assert not [
        k for k in ctx.state_keys() if k.startswith(".pulumi/stacks/") and k.endswith(".json")
    ]
