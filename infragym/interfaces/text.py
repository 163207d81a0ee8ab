"""A text interface for training language models with RL: text in, JSON knob values out.

:class:`TextActionWrapper` wraps an infragym knob environment made with
``action_mode="absolute"``:

- **Observation:** the text the MCP server's ``observe()`` gives (ASCII): metrics with
  units, the knobs as requested and as running, updates in flight, the recent load, the
  last reward.
- **Action:** a string holding a JSON object of knob values in their own units, for
  example ``'{"heater_replicas": 8, "node_size": "s-4vcpu-8gb"}'``. Knobs not named keep
  their requested values; ``{}`` changes nothing. A Markdown code fence around the
  object (````` ```json ... ``` `````) is allowed.
- **Invalid actions:** text that is not a JSON object, an unknown knob or a value outside
  its domain is not applied: no time passes and the env's state is untouched. The next
  observation starts with ``INVALID ACTION:`` and the reason, and the reward is
  :data:`INVALID_ACTION_PENALTY` (``-1.0`` by default, the value of one SLO-met step, so
  an invalid action never pays). After :data:`MAX_INVALID_ACTIONS` invalid actions in a
  row the episode is truncated.
- **Reward, termination, info:** a valid action is one ``env.step`` (the same as the MCP
  server's ``set_knobs`` then ``wait(1)``): its reward, truncation and info, plus
  ``info["invalid_action"]`` (``None``, or the reason).

:func:`make_text_env` builds one by id (sim backend by default; pulumi only with
``allow_spend=True``).

OpenEnv (``openenv-core``) is not adapted: its ``Environment`` interface would fit (a
``reset``/``step``/``state`` server with pydantic actions and observations), but
openenv-core 0.3.0 installs 104 packages (475 MB: gradio, openai, pandas,
huggingface_hub, fastapi, fastmcp) for what would be a 50-line adapter. Its MCP support
(``MCPEnvironment``) wraps an in-process FastMCP server and reserves the tool names
``reset``, ``step``, ``state`` and ``close``, so ``infragym mcp`` is no drop-in there.
"""

from __future__ import annotations

import copy
import json
import re
import string
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from infragym.errors import ActionError, ConfigError
from infragym.interfaces.session import DEFAULT_ENV_ID, AgentSession

INVALID_ACTION_PENALTY = -1.0
"""Reward for an action that is not applied (bad JSON, unknown knob, value out of domain)."""
MAX_INVALID_ACTIONS = 8
"""Invalid actions in a row after which the episode is truncated."""
OBS_MAX_CHARS = 16_000
ACTION_MAX_CHARS = 4_000
CHARSET = string.printable
"""Characters of observations (ASCII printable and whitespace) and of sampled actions."""
_MESSAGE_MAX_CHARS = 500
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL)


def parse_action(text: Any) -> dict[str, Any]:
    """The JSON object in ``text`` (a Markdown code fence around it is allowed).

    Raises:
        ActionError: ``text`` is not a string holding a JSON object.
    """
    if not isinstance(text, str):
        raise ActionError(f"the action must be a string of JSON, got {type(text).__name__}")
    s = text.strip()
    fenced = _FENCE.fullmatch(s)
    if fenced:
        s = fenced.group(1)
    try:
        obj = json.loads(s)
    except json.JSONDecodeError as exc:
        raise ActionError(
            f"the action is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(obj, dict):
        raise ActionError(
            f"the action must be a JSON object of knob values, got a JSON {type(obj).__name__}"
        )
    return obj


def _ascii(text: str, limit: int | None = None) -> str:
    """``text`` in :data:`CHARSET`: non-ASCII escaped, cut at ``limit`` characters."""
    out = text.encode("ascii", "backslashreplace").decode("ascii")
    out = "".join(c if c in CHARSET else f"\\x{ord(c):02x}" for c in out)
    if limit is not None and len(out) > limit:
        out = out[: limit - 3] + "..."
    return out


class TextActionWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Text observations and JSON-object actions over an infragym knob environment.

    Args:
        env: An infragym knob env made with ``action_mode="absolute"``.
        invalid_penalty: Reward of an action that is not applied.
        max_invalid_actions: Invalid actions in a row that truncate the episode.

    Raises:
        ConfigError: ``env`` is not a knob env in absolute action mode.
    """

    def __init__(
        self,
        env: gym.Env,
        invalid_penalty: float = INVALID_ACTION_PENALTY,
        max_invalid_actions: int = MAX_INVALID_ACTIONS,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, invalid_penalty=invalid_penalty, max_invalid_actions=max_invalid_actions
        )
        gym.Wrapper.__init__(self, env)
        if max_invalid_actions < 1:
            raise ConfigError(f"max_invalid_actions must be at least 1, got {max_invalid_actions}")
        self.session = AgentSession(env)
        self.invalid_penalty = float(invalid_penalty)
        self.max_invalid_actions = int(max_invalid_actions)
        self.observation_space = spaces.Text(OBS_MAX_CHARS, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(ACTION_MAX_CHARS, min_length=0, charset=CHARSET)
        self._invalid_in_a_row = 0
        self._over = True

    @property
    def task_description(self) -> str:
        """The prompt-sized task description (the MCP server's instructions)."""
        return _ascii(self.session.task_description())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode; ``options`` may hold ``scenario`` and ``split``.

        Raises:
            ConfigError: Unknown options, scenario or split.
        """
        options = dict(options or {})
        unknown = sorted(set(options) - {"scenario", "split"})
        if unknown:
            raise ConfigError(f"unknown reset options {unknown}; valid: ['scenario', 'split']")
        text = self.session.reset(seed=seed, **options)
        self._invalid_in_a_row = 0
        self._over = False
        return _ascii(text), self._info(None)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Apply a JSON object of knob values for one step, or answer why it is invalid.

        Raises:
            ActionError: The episode is over (call :meth:`reset`).
        """
        if self._over:
            raise ActionError("the episode is over (or never started): call reset()")
        try:
            self.session.set_knobs(parse_action(action))
        except ActionError as exc:
            self._invalid_in_a_row += 1
            truncated = self._invalid_in_a_row >= self.max_invalid_actions
            self._over = truncated
            reason = _ascii(str(exc), _MESSAGE_MAX_CHARS)
            example = json.dumps(self.session.info["knobs"])
            text = (
                f"INVALID ACTION: {reason}\n"
                f"Nothing was applied and no time passed (reward {self.invalid_penalty:+g}; "
                f"{self._invalid_in_a_row} invalid in a row, the episode ends at "
                f"{self.max_invalid_actions}). Answer with a JSON object of knob values, "
                f"for example {example}.\n\n" + self.session.observe()
            )
            return _ascii(text), self.invalid_penalty, False, truncated, self._info(reason)
        self._invalid_in_a_row = 0
        out = self.session.wait(1)
        self._over = self.session.done
        s = self.session
        return _ascii(s.observe()), out["rewards"][0], s.terminated, s.truncated, self._info(None)

    def _info(self, invalid: str | None) -> dict[str, Any]:
        # An invalid action repeats the last info: a deep copy, as callers may keep both.
        info = copy.deepcopy(self.session.info) if invalid else dict(self.session.info or {})
        info["invalid_action"] = invalid
        info["invalid_in_a_row"] = self._invalid_in_a_row
        return info


def make_text_env(
    env_id: str = DEFAULT_ENV_ID,
    *,
    backend: str = "sim",
    allow_spend: bool = False,
    invalid_penalty: float = INVALID_ACTION_PENALTY,
    max_invalid_actions: int = MAX_INVALID_ACTIONS,
    **env_kwargs: Any,
) -> TextActionWrapper:
    """``gym.make(env_id, action_mode="absolute", ...)`` wrapped in :class:`TextActionWrapper`.

    Raises:
        ConfigError: A spending backend without ``allow_spend``, or a bad argument.
    """
    session = AgentSession.make(env_id, backend=backend, allow_spend=allow_spend, **env_kwargs)
    return TextActionWrapper(session.env, invalid_penalty, max_invalid_actions)
