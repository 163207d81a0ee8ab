"""Pulumi backend parts that need no engine: state URLs, buckets, passphrase, scrubbing,
the knob transformation (under Pulumi's mock runtime), error mapping, credentials and
settings checks before any engine call, and the destroy order of ``infragym stacks``."""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import pytest

from infragym.backends import LayerSpec, make_backend
from infragym.backends.state import (
    ensure_bucket,
    parse_state_url,
    passphrase_env,
    prepare_backend,
    s3_client,
    scrub,
)
from infragym.errors import (
    ConfigError,
    CredentialsError,
    EngineError,
    MetricsError,
    StackLockedError,
    StateBackendError,
)
from tests.backends.conftest import AWS_TEST_SECRET, s3_url

# ------------------------------------------------------------------------------ URLs


def test_default_state_url_is_home_state_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INFRAGYM_STATE_URL", raising=False)
    b = parse_state_url(None)
    assert b.kind == "file"
    assert b.path == Path("~/.infragym/state").expanduser().resolve()
    assert b.url == b.path.as_uri()


def test_file_url_is_created(tmp_path: Path) -> None:
    b = parse_state_url(f"file://{tmp_path}/a/b")
    assert b.url == f"file://{tmp_path}/a/b"
    prepare_backend(b)
    assert (tmp_path / "a" / "b").is_dir()


def test_s3_url_keeps_engine_parameters() -> None:
    b = parse_state_url(s3_url("127.0.0.1:9000", "bkt"))
    assert (b.kind, b.bucket, b.region, b.endpoint) == ("s3", "bkt", "us-east-1", "127.0.0.1:9000")
    assert b.path_style and b.disable_ssl and not b.spaces
    assert b.endpoint_url == "http://127.0.0.1:9000"
    assert b.url.startswith("s3://bkt?") and "s3ForcePathStyle=true" in b.url
    assert b.env()["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"


def test_spaces_shorthand_becomes_s3_with_the_region_endpoint() -> None:
    b = parse_state_url("spaces://my-state?region=fra1")
    assert b.kind == "s3" and b.spaces
    assert (b.bucket, b.region, b.endpoint) == ("my-state", "fra1", "fra1.digitaloceanspaces.com")
    assert b.url == "s3://my-state?endpoint=fra1.digitaloceanspaces.com&region=fra1"
    assert b.endpoint_url == "https://fra1.digitaloceanspaces.com"


def test_spaces_keys_are_mapped_for_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("SPACES_ACCESS_KEY_ID", "DOKEY")
    monkeypatch.setenv("SPACES_SECRET_ACCESS_KEY", "dosecret")
    b = parse_state_url("spaces://my-state?region=nyc3")
    assert b.secret_env() == {"AWS_ACCESS_KEY_ID": "DOKEY", "AWS_SECRET_ACCESS_KEY": "dosecret"}
    assert "dosecret" not in repr(b)


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("spaces://b?region=mars1", "unknown Spaces region 'mars1'.*nyc3"),
        ("gs://bucket", "unsupported state backend"),
        ("s3://?region=us-east-1", "names no bucket"),
    ],
)
def test_bad_state_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_state_url(url)


def test_user_info_never_shown() -> None:
    with pytest.raises(ConfigError) as err:
        parse_state_url("gs://KEYID:topsecret@bucket")
    assert "topsecret" not in str(err.value)


# ------------------------------------------------------------------------------ buckets


def test_bucket_is_created_private_and_checked(moto_s3: str) -> None:
    b = parse_state_url(s3_url(moto_s3, "fresh-state-bucket"))
    ensure_bucket(b)
    client = s3_client(b)
    client.head_bucket(Bucket="fresh-state-bucket")
    block = client.get_public_access_block(Bucket="fresh-state-bucket")
    assert all(block["PublicAccessBlockConfiguration"].values())
    grants = client.get_bucket_acl(Bucket="fresh-state-bucket")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert "Contents" not in client.list_objects_v2(Bucket="fresh-state-bucket")
    ensure_bucket(b)  # idempotent


def test_unreachable_bucket_is_a_clear_error_without_keys(
    moto_s3: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.procs import free_port

    b = parse_state_url(s3_url(f"127.0.0.1:{free_port()}", "nobody-home"))
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(
        StateBackendError, match=r"cannot reach bucket 'nobody-home' at 127\.0\.0\.1"
    ):
        ensure_bucket(b)


def test_missing_bucket_without_create(moto_s3: str) -> None:
    b = parse_state_url(s3_url(moto_s3, "never-created"))
    with pytest.raises(StateBackendError, match="does not exist"):
        ensure_bucket(b, create=False)


# ------------------------------------------------------------------------------ secrets


def test_passphrase_file_is_generated_once_with_mode_0600(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    path = tmp_path / "infragym" / "passphrase"
    with caplog.at_level(logging.WARNING):
        env = passphrase_env(path)
    assert env == {"PULUMI_CONFIG_PASSPHRASE_FILE": str(path)}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text().strip()
    assert len(secret) >= 32
    assert str(path) in caplog.text and secret not in caplog.text
    caplog.clear()
    passphrase_env(path)
    assert path.read_text().strip() == secret and "generated" not in caplog.text
    assert scrub(f"oops {secret} leaked") == "oops *** leaked"


def test_inspecting_commands_never_generate_a_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    assert passphrase_env(tmp_path / "p", generate=False) == {}
    assert not (tmp_path / "p").exists()


def test_env_passphrase_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "from-env")
    assert passphrase_env(tmp_path / "p") == {}
    assert not (tmp_path / "p").exists()


def test_scrub_removes_tokens_keys_and_passphrases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_abcdef123456")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "hunter2hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_SECRET)
    text = (
        f"token dop_v1_abcdef123456, pass hunter2hunter2, key {AWS_TEST_SECRET}, "
        "id AKIAABCDEFGHIJKLMNOP"
    )
    out = scrub(text)
    secrets = ("dop_v1_abcdef123456", "hunter2hunter2", AWS_TEST_SECRET, "AKIAABCDEFGHIJKLMNOP")
    for secret in secrets:
        assert secret not in out
    assert out.count("***") == 4


# ------------------------------------------------------------------------------ errors


def _command_result(stderr: str, stdout: str = "") -> object:
    from pulumi.automation._cmd import CommandResult

    return CommandResult(stdout=stdout, stderr=stderr, code=255)


def test_concurrent_update_maps_to_stack_locked_naming_the_lock(tmp_path: Path) -> None:
    from pulumi.automation.errors import create_command_error

    from infragym.backends.engine import map_error

    backend = parse_state_url(f"file://{tmp_path}")
    lock_dir = tmp_path / backend.locks_prefix("dev.test-base")
    lock_dir.mkdir(parents=True)
    (lock_dir / "0b7c.json").write_text(
        '{"pid":4242,"username":"u","hostname":"h","timestamp":"2026-01-01T00:00:00Z"}'
    )
    exc = create_command_error(
        _command_result(
            "error: the stack is currently locked by 1 lock(s). Either wait for the other "
            "process(es) to end or delete the lock file with `pulumi cancel`.\n"
            f"  file://{lock_dir}/0b7c.json: created by u@h (pid 4242) at 2026-01-01T00:00:00Z"
        )
    )
    err = map_error(exc, "dev.test-base", "up", backend)
    assert isinstance(err, StackLockedError)
    assert "0b7c.json (pid 4242 on h" in str(err) and "pulumi cancel" in str(err)


def test_engine_error_keeps_diagnostics_but_not_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from pulumi.automation.errors import create_command_error

    from infragym.backends.engine import map_error

    monkeypatch.setenv("DIGITALOCEAN_TOKEN", "dop_v1_secretsecret")
    stdout = (
        "Updating (dev.x):\n\nDiagnostics:\n  digitalocean:index/droplet:Droplet (web):\n"
        "    error: POST https://api.digitalocean.com/v2/droplets: 422 size unavailable "
        "(token dop_v1_secretsecret)\n\nResources:\n    1 unchanged\n"
    )
    err = map_error(create_command_error(_command_result("", stdout)), "dev.x", "up")
    assert type(err) is EngineError
    assert "422 size unavailable" in str(err) and "dev.x" in str(err)
    assert "dop_v1_secretsecret" not in str(err)


def test_wrong_passphrase_maps_to_state_backend_error() -> None:
    from pulumi.automation.errors import create_command_error

    from infragym.backends.engine import map_error

    exc = create_command_error(
        _command_result("error: constructing secrets manager: incorrect passphrase")
    )
    err = map_error(exc, "dev.x", "up")
    assert isinstance(err, StateBackendError) and "PULUMI_CONFIG_PASSPHRASE" in str(err)


# ------------------------------------------------------------------------------ checks


def _backend(tmp_path: Path, **kw: object):
    return make_backend("pulumi", state_url=f"file://{tmp_path}/state", step_wait=False, **kw)


def test_missing_digitalocean_token_fails_before_any_engine_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("PULUMI_CLI", "/nonexistent/pulumi")  # any engine use would fail
    b = _backend(tmp_path)
    with pytest.raises(CredentialsError, match="DIGITALOCEAN_TOKEN"):
        b.reset([LayerSpec("do-core", {}), LayerSpec("do-managed-k8s", {})])
    assert b.engine_calls == 0 and b._engine is None
    assert not (tmp_path / "state").exists()


def test_env_with_pulumi_backend_needs_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gymnasium as gym

    monkeypatch.delenv("DIGITALOCEAN_TOKEN", raising=False)
    monkeypatch.delenv("DIGITALOCEAN_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("PULUMI_CLI", "/nonexistent/pulumi")
    env = gym.make(
        "SimpleK8sWebApp-v0",
        backend="pulumi",
        backend_options={"state_url": f"file://{tmp_path}/state", "deployment": "nocred"},
    )
    with pytest.raises(CredentialsError, match="DIGITALOCEAN_TOKEN"):
        env.reset(seed=0)
    env.close()


def test_invalid_settings_fail_before_any_engine_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, test_layers: None
) -> None:
    monkeypatch.setenv("PULUMI_CLI", "/nonexistent/pulumi")
    b = _backend(tmp_path)
    with pytest.raises(ConfigError, match=r"invalid settings for layer 'test-base'.*replicas"):
        b.reset([LayerSpec("test-base", {"dir": str(tmp_path), "replicas": -1})])
    with pytest.raises(ConfigError, match="needs 'test-base' upstream"):
        b.reset([LayerSpec("test-app", {"dir": str(tmp_path)})])
    with pytest.raises(ConfigError, match="unknown layer"):
        b.reset([LayerSpec("no-such-layer", {})])
    assert b._engine is None


def test_bad_deployment_name() -> None:
    with pytest.raises(ConfigError, match="invalid deployment name"):
        make_backend("pulumi", deployment="dev.prod")


def test_observe_needs_a_metrics_source(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="prometheus_url"):
        _backend(tmp_path).observe(["request_rate"])


def test_observe_delegates_to_the_metrics_source(tmp_path: Path) -> None:
    class Source:
        def instant(self, names):
            return {n: (math.nan if n == "p95" else 1.5) for n in names}, ["p95"]

    b = _backend(tmp_path, metrics=Source())
    values = b.observe(["rate", "p95"])
    assert values["rate"] == 1.5 and math.isnan(values["p95"])


def test_booting_nodes_on_digitalocean_come_from_the_pools_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prometheus cannot see a droplet before it registers: the backend counts the nodes
    its pools ask for (as deployed, or as the update in flight sets them) against the
    Ready ones, and expects the next after DigitalOcean's boot time from the update's start."""
    from infragym.backends import Change
    from infragym.graph import ResourceRecord
    from infragym.knobs import Choice, IntRange, Knob
    from infragym.prometheus import PrometheusSource
    from infragym.twin.cost import CLUSTER, NODE_POOL
    from infragym.twin.model import TwinParams
    from infragym.updates import Update

    asked: list[list[str]] = []

    class Source(PrometheusSource):  # its measures(); instant() answers nodes_ready
        def __init__(self) -> None:
            super().__init__("http://127.0.0.1:1", 30.0)

        def instant(self, names, at=None):
            asked.append(list(names))
            return {n: 3.0 for n in names}, []

    b = _backend(tmp_path, metrics=Source())
    records = [
        ResourceRecord("do-managed-k8s", CLUSTER, "cluster", {"nodePool": {"nodeCount": 1}}),
        ResourceRecord("do-managed-k8s", NODE_POOL, "workers", {"nodeCount": 2, "size": "x"}),
    ]
    monkeypatch.setattr(b, "resources", lambda: records)
    names = ["nodes_booting", "next_node_ready_s", "replicas_ready"]
    assert b.observe(names) == {"nodes_booting": 0.0, "next_node_ready_s": 0.0,
                                "replicas_ready": 3.0}  # fmt: skip
    assert asked[-1] == ["replicas_ready", "nodes_ready"]  # never the two without PromQL

    count = Knob("node_count", "do-managed-k8s", NODE_POOL, "workers", "nodeCount", IntRange(1, 9))
    size = Knob("node_size", "do-managed-k8s", NODE_POOL, "workers", "size", Choice(("x", "y")))
    started = b._now() - 100.0
    b.queue.in_flight["do-managed-k8s"] = Update(
        "do-managed-k8s", (Change(count, 5),), started_at=started
    )
    got = b.observe(["nodes_booting", "next_node_ready_s"])
    assert got["nodes_booting"] == 1 + 5 - 3
    assert TwinParams().node_boot_s - 100.0 - 1.0 < got["next_node_ready_s"]
    assert got["next_node_ready_s"] <= TwinParams().node_boot_s - 100.0

    b.queue.in_flight["do-managed-k8s"] = Update(
        "do-managed-k8s", (Change(size, "y"),), started_at=b._now() - 1000.0
    )
    got = b.observe(["nodes_booting", "next_node_ready_s"])
    assert got == {"nodes_booting": 1 + 2 + 2 - 3, "next_node_ready_s": 0.0}


def test_cli_not_found_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from infragym.backends.engine import find_cli

    monkeypatch.setenv("PULUMI_CLI", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="PULUMI_CLI"):
        find_cli()
    monkeypatch.delenv("PULUMI_CLI")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("INFRAGYM_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"install-pulumi-cli\.sh") as err:
        find_cli()
    assert "pulumi.com/docs/install" in str(err.value) and "PULUMI_CLI" in str(err.value)


# ------------------------------------------------------------------------------ state


def test_records_from_state_hide_secrets_and_skip_providers() -> None:
    from infragym.backends.pulumi import records_from_state

    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}
    state = {
        "resources": [
            {
                "urn": "urn:pulumi:d.l::infragym::pulumi:pulumi:Stack::infragym-d.l",
                "custom": False,
                "type": "pulumi:pulumi:Stack",
            },
            {
                "urn": "urn:pulumi:d.l::infragym::pulumi:providers:k8s::default",
                "custom": True,
                "type": "pulumi:providers:k8s",
                "inputs": {},
            },
            {
                "urn": "urn:pulumi:d.l::infragym::kubernetes:apps/v1:Deployment::heater",
                "custom": True,
                "type": "kubernetes:apps/v1:Deployment",
                "inputs": {
                    "spec": {"replicas": 2},
                    "token": {**secret, "plaintext": '"x"'},
                    "__provider": "blob",
                },
            },
        ]
    }
    (rec,) = records_from_state("l", state)
    assert (rec.layer, rec.type, rec.name) == ("l", "kubernetes:apps/v1:Deployment", "heater")
    assert rec.inputs == {"spec": {"replicas": 2}, "token": "[secret]"}


def test_destroy_order_downstream_first_unknown_first() -> None:
    from infragym.cli_stacks import destroy_order

    names = ["k8s-core", "do-core", "mystery-b", "k8s-heater", "do-managed-k8s", "mystery-a"]
    order = destroy_order(names)
    assert order[:2] == ["mystery-b", "mystery-a"]
    known = order[2:]
    assert known.index("k8s-heater") < known.index("k8s-core") < known.index("do-managed-k8s")
    assert known[-1] == "do-core"
    # An upstream that is gone already is ignored.
    assert destroy_order(["k8s-heater", "k8s-core"]) == ["k8s-heater", "k8s-core"]
    # An optional upstream layer outlives its reader.
    order = destroy_order(["k8s-postgresql", "k8s-core", "k8s-heater"])
    assert order.index("k8s-heater") < order.index("k8s-postgresql") < order.index("k8s-core")


def test_optional_upstream_outputs_reach_the_layer_when_present(tmp_path: Path) -> None:
    """The backend passes k8s-postgresql's outputs to k8s-heater only when deployed."""
    from infragym.backends.pulumi import _LayerState
    from stacks.registry import get_layer

    b = _backend(tmp_path)
    outputs = {
        "do-managed-k8s": {"kubeconfig": "kc"},
        "k8s-core": {"namespace": "apps"},
        "k8s-postgresql": {"postgresql_dsn": "postgresql://db"},
        "k8s-heater": {},
    }
    for name, out in outputs.items():
        b._layers[name] = _LayerState(name, get_layer(name), None, outputs=out)
    heater = b._layers["k8s-heater"]
    base = {"kubeconfig": "kc", "namespace": "apps"}
    b._order = ["do-managed-k8s", "k8s-core", "k8s-postgresql", "k8s-heater"]
    assert b._upstream(heater) == {**base, "postgresql_dsn": "postgresql://db"}
    b._order = ["do-managed-k8s", "k8s-core", "k8s-heater"]
    assert b._upstream(heater) == base


# ------------------------------------------------------------------------------ transformation


def _run_under_mocks(program) -> dict[str, dict]:
    """Run ``program`` under Pulumi's mock runtime; the inputs each resource got."""
    import pulumi
    from pulumi.runtime import mocks as pmocks
    from pulumi.runtime import settings as psettings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    seen: dict[str, dict] = {}

    class Mocks(pmocks.Mocks):
        def new_resource(self, args: pmocks.MockResourceArgs):
            seen[args.name] = dict(args.inputs)
            return f"{args.name}-id", args.inputs

        def call(self, args: pmocks.MockCallArgs):
            return {}

    psettings.ROOT.set(None)
    pmocks.set_mocks(Mocks(), project="infragym", stack="t.t", preview=False)
    _sync_await(run_pulumi_func(program))
    assert pulumi  # imported for its side effects on the runtime
    return seen


def test_transformation_sets_camel_paths_on_typed_args_dicts_and_outputs() -> None:
    import pulumi
    import pulumi_digitalocean as do
    import pulumi_kubernetes as k8s

    from infragym.backends.transform import Override, transformation

    deployment = "kubernetes:apps/v1:Deployment"
    cluster = "digitalocean:index/kubernetesCluster:KubernetesCluster"
    container = "spec.template.spec.containers[0].resources"
    knobs = transformation(
        [
            Override(deployment, "typed", "spec.replicas", 5),
            Override(deployment, "typed", f"{container}.limits.cpu", "750m"),
            Override(deployment, "typed", f"{container}.requests.memory", "64Mi"),
            Override(deployment, "typed", "spec.strategy.rollingUpdate.maxSurge", 2),
            Override(deployment, "dicts", "spec.replicas", 7),
            Override(deployment, "dicts", f"{container}.limits.cpu", "2"),
            Override(cluster, "c", "nodePool.nodeCount", 4),
            Override(cluster, "c", "nodePool.size", "s-4vcpu-8gb"),
        ]
    )
    shared_limits = {"cpu": "500m"}
    labels = {"app": "x"}

    def program() -> None:
        pulumi.runtime.register_stack_transformation(knobs)
        limits = k8s.core.v1.ResourceRequirementsArgs(limits=shared_limits)
        container = k8s.core.v1.ContainerArgs(name="c", image="i", resources=limits)
        k8s.apps.v1.Deployment(
            "typed",
            metadata={"name": "typed", "namespace": pulumi.Output.from_input("ns")},
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=2,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata={"labels": labels},
                    spec=k8s.core.v1.PodSpecArgs(containers=[container]),
                ),
            ),
        )
        k8s.apps.v1.Deployment(
            "dicts",
            spec=pulumi.Output.from_input(
                {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {"name": "c", "image": "i", "resources": {"limits": shared_limits}}
                            ]
                        },
                    },
                }
            ),
        )
        do.KubernetesCluster(
            "c",
            region="nyc1",
            version="1.33.6-do.0",
            node_pool=do.KubernetesClusterNodePoolArgs(name="p", size="s-2vcpu-4gb", node_count=2),
        )

    seen = _run_under_mocks(program)
    typed = seen["typed"]["spec"]
    assert typed["replicas"] == 5
    resources = typed["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "750m"}, "requests": {"memory": "64Mi"}}
    assert typed["strategy"] == {"rollingUpdate": {"maxSurge": 2}}
    dicts = seen["dicts"]["spec"]
    assert dicts["replicas"] == 7
    assert dicts["template"]["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "2"}
    pool = seen["c"]["nodePool"]
    assert pool["nodeCount"] == 4 and pool["size"] == "s-4vcpu-8gb"
    assert shared_limits == {"cpu": "500m"}, "a value shared by the program was mutated"
    assert knobs.unmatched() == []
    knobs.check()


def test_transformation_reports_unmatched_knobs_and_bad_paths() -> None:
    from infragym.backends.transform import Override, set_property, transformation

    t = transformation([Override("a:b:C", "missing", "spec.replicas", 1, knob="ghost")])
    with pytest.raises(ConfigError, match=r"ghost \(a:b:C 'missing'\)"):
        t.check()
    with pytest.raises(ConfigError, match="out of range"):
        set_property({"items": [1]}, "items[3]", 0)
    assert set_property({"spec": None}, "spec.replicas", 3) == {"spec": {"replicas": 3}}
    # New keys follow the style of the dict's existing keys (snake_case when unsure).
    camel = set_property({"fooBar": {"someKey": 1}}, "fooBar.newKey", 2)
    assert camel == {"fooBar": {"someKey": 1, "newKey": 2}}
    assert set_property({"spec": {"x": 1}}, "spec.newKey", 2) == {"spec": {"x": 1, "new_key": 2}}


def test_camel_to_snake() -> None:
    from infragym.backends.transform import camel_to_snake

    cases = {
        "nodeCount": "node_count",
        "apiVersion": "api_version",
        "cpu": "cpu",
        "matchLabels": "match_labels",
        "targetCPUUtilization": "target_cpu_utilization",
    }
    for camel, snake in cases.items():
        assert camel_to_snake(camel) == snake


def test_generated_passphrase_not_in_workspace_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials reach the engine at spawn only: a workspace's repr cannot leak them."""
    from infragym.backends.engine import Engine

    cli = tmp_path / "pulumi"
    cli.write_text("#!/bin/sh\necho v3.274.1\n")
    cli.chmod(0o755)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("SPACES_ACCESS_KEY_ID", "DO00SPACESKEYID")
    monkeypatch.setenv("SPACES_SECRET_ACCESS_KEY", "spaces-secret-value")
    engine = Engine(
        parse_state_url("spaces://b?region=nyc3"), passphrase_file=tmp_path / "pp", cli=str(cli)
    )
    try:
        text = repr(engine.options().__dict__) + repr(engine.command)
        for secret in ("spaces-secret-value", (tmp_path / "pp").read_text().strip()):
            assert secret not in text
        assert os.fspath(tmp_path / "pp") in text  # the file's path is not a secret
    finally:
        engine.close()


# ------------------------------------------------------------------------------ progress


def test_progress_renders_engine_events_and_is_quiet_off_a_terminal() -> None:
    from pulumi.automation.events import EngineEvent
    from rich.console import Console

    from infragym.backends.progress import EngineProgress

    urn = "urn:pulumi:dev.x::infragym::kubernetes:apps/v1:Deployment::heater"
    meta = {"op": "update", "urn": urn, "type": "kubernetes:apps/v1:Deployment", "provider": ""}
    events = [
        {"resourcePreEvent": {"metadata": meta}},
        {"resOutputsEvent": {"metadata": meta}},
        {"resOpFailedEvent": {"metadata": {**meta, "op": "create"}, "status": 1, "steps": 1}},
        {"diagnosticEvent": {"message": "quota [exceeded]\n", "color": "never",
                             "severity": "error", "urn": urn}},
        {"summaryEvent": {"maybeCorrupt": False, "durationSeconds": 1,
                          "resourceChanges": {"update": 1, "same": 0}, "PolicyPacks": {}}},
    ]  # fmt: skip
    console = Console(record=True, force_terminal=True, width=120)
    progress = EngineProgress(console=console)
    with progress.operation("up dev.x") as on_event:
        assert on_event is not None
        for e in events:
            on_event(EngineEvent.from_json({"sequence": 1, "timestamp": 0, **e}))
    text = console.export_text()
    assert "~ kubernetes:apps/v1:Deployment heater updated" in text
    assert "✗ kubernetes:apps/v1:Deployment heater failed" in text
    assert "error kubernetes:apps/v1:Deployment heater: quota [exceeded]" in text
    assert "up dev.x: 1 update" in text

    quiet = EngineProgress(console=Console(record=True, force_terminal=False))
    assert not quiet.enabled
    with quiet.operation("up dev.x") as on_event:
        assert on_event is None
