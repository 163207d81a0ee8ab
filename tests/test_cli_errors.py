"""``infragym evaluate`` with bad arguments: a one-line error and exit code 2, before the
run starts, never a traceback; and a plot written where the command says it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infragym import evaluate as ev
from infragym.cli import app
from infragym.errors import ConfigError

ENV_ID = "SimpleK8sWebApp-v0"


def _run(*args: str):
    return CliRunner().invoke(app, ["evaluate", *args])


def _user_error(result, *expected: str) -> str:
    """The command failed as a user error: exit 2, the expected text, no traceback."""
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out and "evaluating" not in out and "┏" not in out, out
    for text in expected:
        assert text in out, out
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return out


def test_unknown_env_id_is_named_with_the_infragym_ids() -> None:
    out = _user_error(_run("SimpleK8sWebApp-v9"), "unknown environment 'SimpleK8sWebApp-v9'")
    assert ENV_ID in out
    assert len([line for line in out.splitlines() if line.strip()]) == 1


def test_other_packages_env_is_refused() -> None:
    _user_error(_run("CartPole-v1"), "'CartPole-v1' is not an infragym environment", ENV_ID)


def test_negative_seed_is_a_usage_error() -> None:
    _user_error(_run(ENV_ID, "--seed", "-5"), "--seed")


@pytest.mark.parametrize(
    ("agents", "expected"),
    [
        ("", "no agents given"),
        (" , ,", "no agents given"),
        ("hpa,hpa", "agent 'hpa' is given twice"),
        ("hpa,stati", "unknown agent 'stati'; did you mean static?"),
    ],
)
def test_bad_agent_lists(agents: str, expected: str) -> None:
    _user_error(_run(ENV_ID, "--agents", agents), expected)


def test_plot_in_a_missing_directory_fails_before_the_run(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.png"
    _user_error(_run(ENV_ID, "--plot", str(target)), "no directory", str(target.parent))


def test_plot_with_an_unknown_format_fails_before_the_run(tmp_path: Path) -> None:
    _user_error(_run(ENV_ID, "--plot", str(tmp_path / "out.v1")), "unknown image format '.v1'")


def test_plot_in_an_unwritable_directory_fails_before_the_run(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere chmod allows nothing: use sysfs
        if not Path("/sys").is_dir():
            pytest.skip("no unwritable directory for root here")
        target = Path("/sys/evaluate.png")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
        target = locked / "evaluate.png"
    _user_error(_run(ENV_ID, "--plot", str(target)), "is not writable")
    assert not target.exists()


def test_plot_to_a_directory_or_a_bare_name_says_the_file_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "plots"
    out_dir.mkdir()
    common = ["--agents", "static", "--episodes", "1"]
    # After the bad runs above, a good one runs (the prefixed id form too).
    result = _run(f"infragym:{ENV_ID}", *common, "--plot", str(out_dir))
    assert result.exit_code == 0, result.output
    written = out_dir / "evaluate.png"
    assert written.is_file() and f"plot written to {written}" in result.output
    result = _run(ENV_ID, *common, "--plot", "bare")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bare.png").is_file() and not (tmp_path / "bare").exists()
    assert "plot written to bare.png" in result.output


def test_python_api_refuses_empty_input() -> None:
    with pytest.raises(ConfigError, match="no agents to evaluate"):
        ev.evaluate(lambda: None, [], 1)
    with pytest.raises(ConfigError, match="episodes must be an integer >= 1"):
        ev.evaluate(lambda: None, [object()], 0)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        ev.evaluate(lambda: None, [object()], 1, seed=-5)
    with pytest.raises(ConfigError, match="no results to plot"):
        ev.plot([], "x.png", 30.0)
