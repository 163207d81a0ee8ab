"""The generated cloud-init of every droplet layer: ``#cloud-config`` YAML whose shell
scripts (``write_files`` ``*.sh`` and ``runcmd`` joined) pass shellcheck, and the env-file
quoting that keeps values out of shell code."""

from __future__ import annotations

import shlex
import subprocess

import pytest
import yaml

from components.do import _cloudinit
from infragym.backends.mockrun import LayerRun
from tests.components.do_droplets import (
    SEED,
    cloud_config,
    droplets,
    run,
    shellcheck,
    shellcheck_path,
    support_run,
)


def _runs() -> dict[str, LayerRun]:
    support = support_run(ssh_cidrs=["198.51.100.0/24"])
    cp = run("do-k8s-control-plane", {"secret_seed": SEED, "schedule_workloads": True})
    managers = run("do-swarm-manager", {"count": 3}, support.outputs)
    return {
        "do-support": support,
        "do-k8s-control-plane": cp,
        "do-k8s-minions": run("do-k8s-minions", {"count": 2}, cp.outputs),
        "do-nomad": run("do-nomad", {"secret_seed": SEED, "server_count": 3}, support.outputs),
        "do-swarm-manager": managers,
        "do-swarm-worker": run(
            "do-swarm-worker", {"count": 2}, {**support.outputs, **managers.outputs}
        ),
    }


@pytest.fixture(scope="module")
def runs() -> dict[str, LayerRun]:
    return _runs()


LAYERS = (
    "do-support",
    "do-k8s-control-plane",
    "do-k8s-minions",
    "do-nomad",
    "do-swarm-manager",
    "do-swarm-worker",
)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_droplets_user_data_is_cloud_config_yaml(
    layer: str, runs: dict[str, LayerRun]
) -> None:
    nodes = droplets(runs[layer])
    assert nodes
    for d in nodes:
        doc = cloud_config(d)  # checks the header and that it parses
        assert set(doc) <= {"write_files", "runcmd"}
        for f in doc["write_files"]:
            assert f["path"].startswith("/")
            assert f["owner"] == "root:root"
            assert f["permissions"] in {"0600", "0644", "0700"}
        assert doc["runcmd"]


@pytest.mark.parametrize("layer", LAYERS)
def test_every_shell_script_passes_shellcheck(layer: str, runs: dict[str, LayerRun]) -> None:
    shellcheck_path()
    checked: set[str] = set()
    for d in droplets(runs[layer]):
        doc = cloud_config(d)
        scripts = {f["path"]: f["content"] for f in doc["write_files"] if f["path"].endswith(".sh")}
        # runcmd runs each entry with /bin/sh; joined they are one sh script.
        runcmd = "\n".join(c if isinstance(c, str) else shlex.join(c) for c in doc["runcmd"])
        scripts["runcmd"] = "#!/bin/sh\n" + runcmd + "\n"
        for name, text in scripts.items():
            if text in checked:
                continue
            checked.add(text)
            shell = "sh" if name == "runcmd" else "bash"
            assert text.startswith("#!/bin/bash\n") or name == "runcmd", name
            findings = shellcheck(text, shell)
            assert findings == "", f"{layer} {d.name} {name}:\n{findings}"
    assert checked


def test_scripts_run_what_runcmd_names(runs: dict[str, LayerRun]) -> None:
    d = droplets(runs["do-k8s-minions"])[0]
    doc = cloud_config(d)
    script = "/usr/local/sbin/infragym-k8s-minion.sh"
    assert doc["runcmd"] == [script]
    (entry,) = [f for f in doc["write_files"] if f["path"] == script]
    assert entry["permissions"] == "0700"
    # The script sources its env file before anything reads a value from it.
    assert ". /etc/infragym/k8s-minion.env\n" in entry["content"]


def test_env_file_values_round_trip_through_bash_unchanged() -> None:
    values = {
        "PLAIN": "abc",
        "SPACES": "a b  c",
        "QUOTES": 'it\'s "quoted"',
        "SHELL_META": "$(rm -rf /); `id` $HOME ; | & > *",
        "NEWLINE": "one\ntwo",
        "LIST": ["10.0.0.1", "10.0.0.2"],
        "FLAG": True,
        "EMPTY": "",
    }
    text = _cloudinit.env_file(values)
    names = " ".join(values)
    script = text + f'for k in {names}; do printf "%s\\0" "${{!k}}"; done'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split("\0")[:-1] == [
        "abc",
        "a b  c",
        'it\'s "quoted"',
        "$(rm -rf /); `id` $HOME ; | & > *",
        "one\ntwo",
        "10.0.0.1 10.0.0.2",
        "1",
        "",
    ]


def test_env_file_refuses_keys_that_are_not_shell_names() -> None:
    with pytest.raises(ValueError, match="not an upper-case shell identifier"):
        _cloudinit.env_file({"A B": "x"})


def test_cloud_config_writes_scripts_as_literal_blocks() -> None:
    text = _cloudinit.cloud_config(
        [_cloudinit.WriteFile("/x.sh", "#!/bin/bash\necho hi\n", "0700")], ["/x.sh"]
    )
    assert text.startswith("#cloud-config\n")
    assert "content: |" in text
    assert yaml.safe_load(text)["write_files"][0]["content"] == "#!/bin/bash\necho hi\n"
