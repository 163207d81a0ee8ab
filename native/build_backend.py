"""infragym's build backend: maturin, after checking that there is a Rust toolchain.

``pip install -e .`` builds the compiled twin core (this directory's crate) into the
package. maturin alone, without ``cargo``, would fetch a temporary toolchain behind the
user's back (puccinialin), or fail deep in a build log; this says what to install first.
Every hook is maturin's (PEP 517 and 660).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import maturin
from maturin import build_sdist, get_requires_for_build_sdist  # noqa: F401  (hooks as they are)

RUST_VERSION = (1, 82)
"""The oldest Rust the crate builds with (``rust-version`` in native/Cargo.toml)."""

_HOW = """\
Install one (Rust {need} or newer), then run pip again:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    . "$HOME/.cargo/env"

(rustup.rs; a distribution's cargo package works too when it is recent enough).
"""


def _fail(why: str) -> None:
    need = ".".join(map(str, RUST_VERSION))
    sys.stderr.write(
        f"\ninfragym: building the compiled twin core (native/, Rust) {why}.\n"
        + _HOW.format(need=need)
        + "\n"
    )
    sys.stderr.flush()
    raise SystemExit(1)


def check_rust() -> None:
    """Exit with what to install when ``cargo`` is missing or its Rust is too old.

    rustup's ``~/.cargo/bin`` is put on PATH when it is not there yet (a shell started
    before rustup ran).
    """
    cargo = shutil.which("cargo")
    if cargo is None:
        home_cargo = Path.home() / ".cargo" / "bin" / "cargo"
        if not os.access(home_cargo, os.X_OK):
            _fail("needs a Rust toolchain, and `cargo` is neither on PATH nor in ~/.cargo/bin")
        os.environ["PATH"] = f"{home_cargo.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        cargo = str(home_cargo)
    try:
        out = subprocess.run(
            [cargo, "--version"], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        _fail(f"needs a working Rust toolchain; `{cargo} --version` failed ({exc})")
    found = re.search(r"cargo (\d+)\.(\d+)", out)
    if found is None or tuple(map(int, found.groups())) < RUST_VERSION:
        _fail(f"needs a newer Rust than {out.strip() or 'this'}")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    check_rust()
    return maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    check_rust()
    return maturin.get_requires_for_build_editable(config_settings)


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    check_rust()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: dict[str, Any] | None = None
) -> str:
    check_rust()
    return maturin.prepare_metadata_for_build_editable(metadata_directory, config_settings)


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    check_rust()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    check_rust()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
