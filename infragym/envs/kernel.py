"""The env kernel: SimpleK8sWebApp steps run whole in the compiled core, one call a step.

On the sim backend (the twin, :class:`~infragym.twin.twin.Twin`, is the compiled core) and
the default reward, a step of SimpleK8sWebApp-v0 or -v1 is one call into
``infragym._twin_core.EnvBatch`` (``native/src/kernel.rs``): the action's knob moves, the
knob changes (v1's layer queue, or v0's immediate changes), the core's advance, the
completions of layer updates, the observation and the reward. The Python step
(:meth:`SimpleK8sWebAppEnv.step` on the backend) stays the reference, and what runs
everywhere else (the pulumi backend, a custom reward, a graph the kernel does not take).

What the kernel takes over:

- :func:`attach` hands an env's state to a batch slot: the core of its twin, the knobs'
  core ops (from the env's ``_knob_tables`` through ``Twin._core_op``), the layer
  queue, the step count and the offered load so far. The single env attaches to a batch
  of its own at its first step after a reset; the vector env attaches its envs to one
  batch of N.
- While attached, the env's own attributes (``steps``, ``history``, the knobs) are kept
  by its step, but the twin's Python side (its inputs, layer queue, ``_updates``,
  ``_log``) is not. The sim backend asks the kernel to bring it up to date before anyone
  reads the twin (:meth:`Binding.sync`, through ``SimBackend.twin``): the episode's steps
  since the hand-over are added to the twin's log and the twin is rebuilt by replaying
  it, as a copy of a ``Twin`` is. Copies and pickles of envs and vector envs go
  through that, so they run the same episodes as the original.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from infragym.envs.rewards import CostPenalty, ErrorPenalty, RewardSum, SloAttainment
from infragym.twin import twin as twin_module
from infragym.twin.twin import METRIC_NAMES, Twin, UncommonKnob
from infragym.updates import LayerQueue, Update

_NOT_APPLICABLE = False
"""An env's ``_kernel`` when the kernel does not run it (until its next reset)."""


LAZY = ("steps", "history", "knob_values", "_knob_index", "_knob_obs")
"""The env attributes a vector env's kernel batch keeps for the env while it steps it:
stashed in the env's :class:`Binding`, and rebuilt from the kernel's record when read
(``SimpleK8sWebAppEnv.__getattr__``)."""


class Binding:
    """An env's slot in a kernel batch; the hooks that bring the env's own state and its
    twin's Python side up to date.

    Args:
        batch: The ``EnvBatch``.
        index: The env's slot in it.
        env: The env (unwrapped).

    Attributes:
        kept: How many of the kernel's steps since the hand-over the env's own attributes
            have (all of them, except while :meth:`stash` holds them).
        stashed: The env's :data:`LAZY` attributes while the batch steps it, else None.
    """

    def __init__(self, batch: Any, index: int, env: Any) -> None:
        self.batch = batch
        self.index = index
        self.env = env
        self.kept = 0
        self.stashed: dict[str, Any] | None = None
        self.flags: np.ndarray | None = None  # a vector env's "attached" flags, if any
        # A vector env's "stashed" flags, if any: which envs need no stash at a step.
        self.stash_flags: np.ndarray | None = None

    def __call__(self) -> None:
        """Bring the env and its twin up to date (the sim backend's hook, ``SimBackend.twin``)."""
        if self.stashed is not None:
            self.restore()
        if self.batch.pending(self.index):
            self.sync()

    def queue(self) -> LayerQueue:
        """The env's layer queue as the kernel has it (a copy: the sim backend's
        ``queue`` while the kernel runs the env, without rebuilding the twin)."""
        env = self.env
        requested, applied, updates, waiting_order = self.batch.queue(self.index)
        tables = env._knob_tables
        layers = _knob_layers(env.knobs) or []
        queue = LayerQueue()
        queue.requested = {env.knobs[k].name: tables[k][1][i] for k, i in enumerate(requested)}
        queue.applied = {env.knobs[k].name: tables[k][1][i] for k, i in enumerate(applied)}
        waiting_of = {}
        for layer, started_at, flight, waiting in updates:
            name = layers[layer]
            changes = tuple(tables[k][3][i] for k, i in flight)
            queue.in_flight[name] = Update(name, changes, started_at)
            waiting_of[layer] = waiting
        for layer in waiting_order:
            queue.queued[layers[layer]] = {
                env.knobs[k].name: tables[k][3][i] for k, i in waiting_of[layer]
            }
        return queue

    def stash(self) -> None:
        """Take the env's :data:`LAZY` attributes out while a batch steps it (no per-step
        Python work for them); reading one brings them back (:meth:`restore`)."""
        pop = self.env.__dict__.pop
        self.stashed = {name: pop(name) for name in LAZY}
        if self.stash_flags is not None:
            self.stash_flags[self.index] = True

    def restore(self) -> None:
        """Put the env's :data:`LAZY` attributes back, with the kernel's steps since."""
        env = self.env
        env.__dict__.update(self.stashed or {})
        self.stashed = None
        if self.stash_flags is not None:
            self.stash_flags[self.index] = False
        _, rows, knobs = self.batch.record(self.index)
        new = rows[self.kept :]
        if not new:
            return
        names = tuple(env.metric_names)
        v1 = hasattr(env, "cost_reference")
        for row in new:
            observed = dict(zip(names, row, strict=False))  # v0: 13 of the 16 metrics
            if v1:
                observed["cost_reference"] = env.cost_reference
            env.history.append(observed)
        env.steps += len(new)
        self.kept = len(rows)
        env._knob_index, values, env._knob_obs = env._kernel_info.knobs_of(tuple(knobs))
        env.knob_values = values.copy()

    def sync(self) -> None:
        """Rebuild the twin from its log and the kernel's steps, then hand it over again."""
        env = self.env
        if self.stashed is not None:
            self.restore()
        backend = env.backend
        twin = backend._twin_obj
        changes, rows, _ = self.batch.record(self.index)
        tables = env._knob_tables
        by_step: dict[int, list[Any]] = {}
        for step, (k, i) in changes:
            by_step.setdefault(step, []).append(tables[k][3][i])
        log = list(twin._log)
        seconds = float(env.step_seconds)
        asynchronous = backend.actuation == "async"
        for step in range(len(rows)):
            made = tuple(by_step.get(step, ()))
            if made and asynchronous:
                log.append(("request", made))
            elif made:
                log.extend(("set", (k.type, k.resource), k.path, v) for k, v in made)
            log.append(seconds)
        new = twin_module._replayed(twin._origin, log)
        if not asynchronous:  # the backend's record of immediate changes (queue.made)
            new.queue.requested.update(twin.queue.requested)
            new.queue.applied.update(twin.queue.applied)
            new.queue.made(tables[k][3][i] for _, (k, i) in changes)
        backend._twin_obj = new
        _hand_over(env, self.batch, self.index, new)


def spec_args(env: Any) -> tuple[Any, ...] | None:
    """The ``EnvBatch`` arguments of ``env``'s step (less the batch size), or ``None`` when
    the kernel does not run it: not the sim backend, a custom reward, or an env the kernel
    does not know."""
    from infragym.backends.sim import SimBackend
    from infragym.envs import simple_k8s_web_app as v0
    from infragym.envs import simple_k8s_web_app_v1 as v1

    if type(env) is v1.SimpleK8sWebAppV1Env:
        is_v1 = True
        metric_names = v1.OBSERVED_METRICS_V1
    elif type(env) is v0.SimpleK8sWebAppEnv:
        is_v1 = False
        metric_names = v0.OBSERVED_METRICS
    else:
        return None
    backend = env.backend
    if type(backend) is not SimBackend or tuple(env.metric_names) != metric_names:
        return None
    if metric_names != METRIC_NAMES[: len(metric_names)]:
        return None
    if [n for n, _ in env._scales] != list(metric_names):
        return None
    reward = _reward_args(env.reward_fn, relative=is_v1)
    if reward is None:
        return None
    layers = _knob_layers(env.knobs)
    if layers is None:
        return None
    knobs = [
        (layers.index(knob.layer), list(positions), _moves(env.codec, j))
        for j, (knob, (_, _, positions, _)) in enumerate(
            zip(env.knobs, env._knob_tables, strict=True)
        )
    ]
    scales = [float(s) for _, s in env._scales]
    update_layers = tuple(getattr(env, "update_layers", v1.UPDATE_LAYERS)) if is_v1 else ()
    if any(layer not in layers for layer in update_layers):
        return None
    busy = [layers.index(layer) for layer in update_layers]
    return (
        knobs,
        len(layers),
        backend.actuation == "async",
        is_v1,
        scales,
        busy,
        reward,
        float(env.step_seconds),
        float(v0.OBS_CLIP),
        float(v1.RATE_SCALE),
        v1.LOAD_HISTORY,
        int(env.observation_space.shape[0]),
    )


def _knob_layers(knobs: Sequence[Any]) -> list[str] | None:
    """The knobs' layers in order, or ``None`` unless each layer's knobs are adjacent (the
    kernel reports the layers an action updated in this order: the Python step's order,
    that of their first change, only then)."""
    layers: list[str] = []
    for knob in knobs:
        if knob.layer not in layers:
            layers.append(knob.layer)
        elif layers[-1] != knob.layer:
            return None
    return layers


def _moves(codec: Any, j: int) -> list[list[int]]:
    """Knob ``j``'s move table (``ActionCodec._moves``) as dense lists."""
    return [[moves[x] for x in range(len(moves))] for moves in codec._moves[j]]


def _reward_args(fn: Any, relative: bool) -> tuple[Any, ...] | None:
    """The kernel's reward arguments when ``fn`` is the env's default reward, else None."""
    from infragym.envs.simple_k8s_web_app_v1 import RelativeCostPenalty

    if type(fn) is not RewardSum or len(fn.terms) != 3:
        return None
    slo, errors, cost = fn.terms
    cost_type = RelativeCostPenalty if relative else CostPenalty
    if (
        type(slo) is not SloAttainment
        or type(errors) is not ErrorPenalty
        or type(cost) is not cost_type
        or slo.latency_metric not in METRIC_NAMES
    ):
        return None
    numbers = (slo.target_s, slo.max_error_ratio, slo.reward, errors.weight, cost.weight)
    if not all(type(x) in (int, float) for x in numbers):
        return None
    return (METRIC_NAMES.index(slo.latency_metric), *(float(x) for x in numbers), relative)


def new_batch(env: Any, n: int) -> Any | None:
    """An ``EnvBatch`` of ``n`` envs like ``env``, or ``None`` when the kernel does not run it."""
    args = spec_args(env)
    if args is None:
        return None
    module = twin_module.core_module()
    if module is None or not hasattr(module, "EnvBatch"):
        return None
    batch = module.EnvBatch(n, *args)
    batch.set_tables(
        [knob.name for knob in env.knobs],
        [list(table[1]) for table in env._knob_tables],
        _knob_layers(env.knobs),
        list(env.metric_names),
    )
    return batch


def _own_batch(env: Any) -> Any | None:
    """The single env's batch of one, kept across resets while what it was built from
    (the reward, the step length, the actuation) stays the env's."""
    key = (env.reward_fn, env.step_seconds, env.backend.actuation, env.max_episode_steps)
    kept = env.__dict__.get("_kernel_batch")
    if kept is not None and kept[0] == key:
        return kept[1]
    batch = new_batch(env, 1)
    env._kernel_batch = (key, batch)
    return batch


def attach(env: Any, batch: Any, index: int, flags: np.ndarray | None = None) -> bool:
    """Hand ``env``'s state (just reset, or synced) to slot ``index`` of ``batch``.

    Returns:
        Whether the kernel runs the env now (its twin is compiled and its knobs' changes
        are ones the core makes).
    """
    twin = env.backend._twin_obj
    if type(twin) is not Twin or twin.autoscalers:
        return False
    try:
        _hand_over(env, batch, index, twin, flags)
    except UncommonKnob:
        return False
    return True


def _hand_over(
    env: Any, batch: Any, index: int, twin: Twin, flags: np.ndarray | None = None
) -> None:
    """Attach ``env`` with ``twin`` to slot ``index`` and hook the backend to it
    (``flags``: the owner's "attached" flags, which :func:`detach` clears)."""
    ops = _ops(env, twin)
    layers = _knob_layers(env.knobs) or []
    asynchronous = env.backend.actuation == "async"
    layer_ids = [twin._layer_id(layer) if asynchronous else 0 for layer in layers]
    position = {knob.name: j for j, knob in enumerate(env.knobs)}
    queue = twin.queue

    def index_of(name: str, value: Any) -> int:
        return env.knobs[position[name]].index_of(value)

    def changes(pairs: Any) -> list[tuple[int, int]]:
        return [(position[name], index_of(name, value)) for name, value in pairs]

    in_flight = []
    queued = []
    rank = {layer: r for r, layer in enumerate(queue.in_flight)}  # the order they started
    waiting_rank = {layer: r for r, layer in enumerate(queue.queued)}
    for layer in layers:
        update = queue.in_flight.get(layer)
        in_flight.append(
            None
            if update is None
            else (
                rank[layer],
                update.started_at,
                changes((k.name, v) for k, v in update.changes),
            )
        )
        waiting = queue.queued.get(layer, {})
        queued.append(
            (waiting_rank.get(layer, 0), changes((n, c.value) for n, c in waiting.items()))
        )
    names = [knob.name for knob in env.knobs]
    cost_reference = getattr(env, "cost_reference", math.nan)
    batch.attach(
        index,
        twin._core,
        ops,
        layer_ids,
        list(env._knob_index),
        [index_of(n, queue.requested[n]) for n in names],
        [index_of(n, queue.applied[n]) for n in names],
        in_flight,
        queued,
        env.steps,
        env.max_episode_steps,
        [h["offered_rate"] for h in env.history],
        cost_reference,
        getattr(env, "_cost_scale", 1.0),
    )
    batch.set_unmodelled(index, twin.unmodelled)
    old = env.__dict__.get("_kernel")
    env._kernel = Binding(batch, index, env)
    env._kernel.flags = old.flags if flags is None and old else flags
    info = env.__dict__.get("_kernel_info")
    if info is None or info.unmodelled != twin.unmodelled:
        info = _InfoTables(env, layers, twin)
    env._kernel_info = info  # kept across resets: its memos stay warm
    env.backend._sync = env._kernel


_OPS_MEMO: dict[tuple[Any, ...], tuple[Any, list[list[tuple]]]] = {}
"""Knob ops by the knobs' resource records (the same objects in the graphs of episodes
that differ in their load only: the sim backend caches the graph per layer), and what the
ops depend on besides (the core's indices of them); the records are kept with the ops, so
that their ids stay theirs."""


def _ops(env: Any, twin: Twin) -> list[list[tuple]]:
    """Per knob, the core op of each domain index (``Twin._core_op``), memoised."""
    records = [twin.records.get((k.type, k.resource)) for k in env.knobs]
    key = (
        type(twin).fast_paths,
        *(
            (id(r), k.path, twin._workload_index.get((k.type, k.resource)),
             twin._pool_index.get((k.type, k.resource)), k.values)
            for r, k in zip(records, env.knobs, strict=True)
        ),
    )  # fmt: skip
    hit = _OPS_MEMO.get(key)
    if hit is not None:
        return hit[1]
    ops = [[twin._core_op(change) for change in table[3]] for table in env._knob_tables]
    if len(_OPS_MEMO) >= _MEMO_SIZE:
        _OPS_MEMO.clear()
    _OPS_MEMO[key] = (records, ops)
    return ops


def detach(env: Any) -> None:
    """Let the kernel go of ``env`` (at its reset: what it did is discarded)."""
    binding = env.__dict__.get("_kernel")
    if binding:
        binding.batch.detach(binding.index)
        if binding.flags is not None:
            binding.flags[binding.index] = False
    env._kernel = None
    backend = env.backend
    if getattr(backend, "_sync", None) is not None:
        backend._sync = None


_MEMO_SIZE = 4096
"""Entries a memo of :class:`_InfoTables` keeps before it starts over."""


def release(env: Any) -> None:
    """Bring ``env`` and its twin up to date and let the kernel go of them (the Python
    step carries on from there)."""
    binding = env.__dict__.get("_kernel")
    if binding:
        binding()
    detach(env)


class _InfoTables:
    """What a kernel step's info is built from: per hand-over, the knobs' names and
    domains, and memos of the dicts each kernel state gives (copied into each info, since
    callers may keep and change what a step returns)."""

    def __init__(self, env: Any, layers: list[str], twin: Twin) -> None:
        self.layers = layers
        self.names = [knob.name for knob in env.knobs]
        self.domains = [table[1] for table in env._knob_tables]
        self.positions = [table[2] for table in env._knob_tables]
        self.unmodelled = twin.unmodelled
        self.metric_names = tuple(env.metric_names)
        self.v1 = hasattr(env, "cost_reference")
        self.layer_sets: dict[int, tuple[str, ...]] = {}
        self.missing: dict[int, tuple[str, ...]] = {}
        self.knobs: dict[tuple[int, ...], tuple[list[int], dict[str, Any], list[float]]] = {}
        self.values: dict[tuple[int, ...], dict[str, Any]] = {}

    def layers_of(self, mask: int) -> tuple[str, ...]:
        """The layers of a bit mask, in order (memoised: one tuple per mask)."""
        out = self.layer_sets.get(mask)
        if out is None:
            out = self.layer_sets[mask] = tuple(
                layer for b, layer in enumerate(self.layers) if mask >> b & 1
            )
        return out

    def missing_of(self, mask: int) -> list[str]:
        """The metric names of a NaN mask, as a fresh list."""
        out = self.missing.get(mask)
        if out is None:
            out = self.missing[mask] = tuple(
                n for b, n in enumerate(self.metric_names) if mask >> b & 1
            )
        return list(out)

    def knobs_of(self, indices: tuple[int, ...]) -> tuple[list[int], dict[str, Any], list[float]]:
        """(the indices as a list, the knob values, the knobs' observations) of ``indices``
        (memoised: copy the dict before handing it out)."""
        out = self.knobs.get(indices)
        if out is None:
            if len(self.knobs) >= _MEMO_SIZE:
                self.knobs.clear()
            out = self.knobs[indices] = (
                list(indices),
                self.values_of(indices),
                [p[i] for p, i in zip(self.positions, indices, strict=True)],
            )
        return out

    def values_of(self, indices: tuple[int, ...]) -> dict[str, Any]:
        """The knob values of ``indices`` (memoised: copy before handing it out)."""
        out = self.values.get(indices)
        if out is None:
            if len(self.values) >= _MEMO_SIZE:
                self.values.clear()
            out = self.values[indices] = {
                n: d[i] for n, d, i in zip(self.names, self.domains, indices, strict=True)
            }
        return out


def step(env: Any, action: Any) -> tuple[Any, ...] | None:
    """``env.step(action)`` through the kernel, or ``None`` when the kernel does not run
    ``env`` (the caller takes the Python step)."""
    binding = env._kernel
    if not env.use_kernel:  # switched off: the Python step from here on
        if binding:
            release(env)
        return None
    if binding is None:  # first step since reset (or a copy's first step)
        batch = _own_batch(env)
        if batch is None or not attach(env, batch, 0):
            env._kernel = _NOT_APPLICABLE
            return None
        binding = env._kernel
    elif binding is _NOT_APPLICABLE:
        return None
    if binding.stashed is not None:  # stepped by a vector env's batch until now
        binding.restore()
    codec = env.codec
    if (
        isinstance(action, np.ndarray)
        and action.shape == codec._shape
        and action.dtype.kind in "iu"
    ):
        entries = action.tolist()
    else:
        entries = codec._entries(action)  # raises ActionError
    obs = np.empty(env.observation_space.shape, dtype=np.float32)
    try:
        reward, truncated, info, knobs = binding.batch.step_one(binding.index, entries, obs)
    except (ValueError, OverflowError):
        codec.decode_indices(action, env._knob_index)  # raises the ActionError
        raise
    env._knob_index, _, env._knob_obs = env._kernel_info.knobs_of(knobs)
    env.knob_values = info["knobs"].copy()
    env.steps += 1
    binding.kept += 1
    env.history.append(info["metrics"])
    if reward - reward != 0.0:  # NaN or infinite: the reference raises, after the step
        from infragym.envs import arguments

        arguments.reward_value(env.reward_fn, info["metrics"])
    return obs, reward, False, truncated, info


class KernelBatch:
    """A vector env's envs in one ``EnvBatch``: one call into the core steps them all.

    Args:
        envs: The envs (unwrapped, of one id and arguments).

    Attributes:
        batch: The ``EnvBatch``, or ``None`` when the kernel does not run these envs.
        attached: Per env, whether the batch steps it (else its own Python step does).
    """

    def __init__(self, envs: Sequence[Any]) -> None:
        self.envs = list(envs)
        n = len(self.envs)
        self.batch = new_batch(self.envs[0], n)
        self.attached = np.zeros(n, dtype=np.bool_)
        first = self.envs[0]
        k = len(first.knobs)
        self.n_layers = len(_knob_layers(first.knobs) or [])
        self._actions = np.zeros((n, k), dtype=np.int64)
        self._obs = np.zeros((n, *first.observation_space.shape), dtype=np.float32)
        self._rewards = np.zeros(n, dtype=np.float64)
        self._truncated = np.zeros(n, dtype=np.uint8)
        self._metrics = np.zeros((n, len(METRIC_NAMES)), dtype=np.float64)
        self._info = np.zeros((n, 2), dtype=np.uint32)
        self._knobs = np.zeros((n, 4, k), dtype=np.int64)
        self._times = np.zeros((n, 2 + self.n_layers), dtype=np.float64)
        # Each knob's domain as an array (object for strings: the info arrays' dtypes,
        # those VectorEnv._add_info picks), for indexing by the knob indices of all envs.
        self._domains = [_domain_array(table[1]) for table in first._knob_tables]
        self._cost_references = np.zeros(n, dtype=np.float64)
        self._unmodelled = np.full(n, None, dtype=object)
        self._stashed = np.zeros(n, dtype=np.bool_)  # per env: its attributes stashed
        self._knob_layers = [
            _knob_layers(first.knobs).index(knob.layer) for knob in first.knobs
        ] if self.n_layers else []  # fmt: skip

    def __getstate__(self) -> dict[str, Any]:
        """For copy and pickle: without the batch (attached again at the next step)."""
        state = self.__dict__.copy()
        state["batch"] = None
        state["attached"] = np.zeros_like(self.attached)
        state["_stashed"] = np.zeros_like(self.attached)
        return state

    def attach(self, i: int) -> bool:
        """Hand env ``i`` (just reset, or copied) to the batch; whether it runs there."""
        env = self.envs[i]
        if self.batch is None:
            self.batch = new_batch(env, len(self.envs))
        ok = (
            self.batch is not None
            and env.use_kernel
            and spec_args(env) is not None
            and attach(env, self.batch, i, self.attached)
        )
        self.attached[i] = ok
        self._stashed[i] = False
        if ok:
            self._cost_references[i] = getattr(env, "cost_reference", 0.0)
            self._unmodelled[i] = env._kernel_info.unmodelled
            env._kernel.stash_flags = self._stashed
        return ok

    def step(self, actions: np.ndarray, active: np.ndarray, shared: bool = False) -> dict[str, Any]:
        """Step the attached envs where ``active``; their infos, batched.

        Args:
            actions: One row of knob action entries per env.
            active: Per env, whether to step it.
            shared: Whether the infos' ``_key`` masks may be one read-only array (per
                content) shared by every key; else each key gets a writable mask of its
                own (what ``VectorEnv._add_info`` needs to add other envs' infos).

        Returns:
            The batched infos of the stepped envs (``VectorEnv._add_info``'s form); their
            observations, rewards and truncations are in :attr:`obs`, :attr:`rewards`
            and :attr:`truncated` rows.

        Raises:
            ActionError: An action out of the action space (nothing stepped then).
        """
        stepping = active & self.attached
        if not stepping.any():
            return {}
        np.copyto(self._actions, actions, casting="unsafe")
        try:
            self.batch.step(
                self._actions,
                stepping.view(np.uint8),
                self._obs,
                self._rewards,
                self._truncated,
                self._metrics,
                self._info,
                self._knobs,
                self._times,
            )
        except ValueError:
            for i in np.flatnonzero(stepping):  # the env's own decoding raises the error
                self.envs[i].codec.decode_indices(actions[i], self.envs[i]._knob_index)
            raise
        return self._after(stepping, shared)

    def _after(self, stepping: np.ndarray, shared: bool) -> dict[str, Any]:
        """The batched infos of the stepped envs; their own attributes are stashed
        (:meth:`Binding.stash`: rebuilt from the kernel's record when read).

        The infos are what ``VectorEnv._add_info`` makes of the envs' infos, built from
        the kernel's arrays with a constant number of array operations per step (none per
        env): one block per step holds the metrics, each metric a row of it; a mask is
        computed once and, when ``shared``, is the one read-only ``_key`` array of every
        key that has it (else a copy per key); the lists and tuples of envs with the same
        content are one object (``_objects``).
        """
        envs = self.envs
        for i in np.flatnonzero(stepping & ~self._stashed).tolist():
            env = envs[i]
            if "history" in env.__dict__:
                env._kernel.stash()
            self._stashed[i] = True
        rewards = self._rewards
        if not np.isfinite(rewards[stepping]).all():
            for i in np.flatnonzero(stepping & ~np.isfinite(rewards)).tolist():
                from infragym.envs import arguments  # the reference raises, after the step

                arguments.reward_value(envs[i].reward_fn, envs[i].history[-1])
        first = envs[int(np.argmax(stepping))]
        tables = first._kernel_info
        names = tables.metric_names
        v1 = tables.v1
        everyone = bool(stepping.all())
        idle = None if everyone else ~stepping
        if shared:
            mask = stepping.copy()
            mask.flags.writeable = False
            masks = _Same(mask)
        else:
            mask = stepping
            masks = _Copies(mask)
        # The float rows: the metrics, then time, cost so far and the cost reference.
        m = len(names)
        block = np.empty((m + 3, len(envs)), dtype=np.float64)
        block[:m] = self._metrics[:, :m].T
        block[m] = self._times[:, 0]
        block[m + 1] = self._times[:, 1]
        block[m + 2] = self._cost_references
        if idle is not None:
            block[:, idle] = 0.0
        metrics = dict(zip(names, block, strict=False))
        for name in names:
            metrics[f"_{name}"] = masks()
        infos: dict[str, Any] = {}
        if v1:
            metrics["cost_reference"] = block[m + 2].copy()
            metrics["_cost_reference"] = masks()
        infos["metrics"], infos["_metrics"] = metrics, masks()
        infos["missing"] = _objects(self._info[:, 0], stepping, everyone, tables.missing_of)
        infos["_missing"] = masks()
        infos["knobs"] = self._knob_info(tables, self._knobs[:, 0, :], idle, masks)
        infos["_knobs"] = masks()
        infos["layers_updated"] = _objects(self._info[:, 1], stepping, everyone, tables.layers_of)
        infos["_layers_updated"] = masks()
        unmodelled = self._unmodelled.copy()
        if idle is not None:
            unmodelled[idle] = None
        infos["unmodelled"], infos["_unmodelled"] = unmodelled, masks()
        infos["cost_usd"], infos["_cost_usd"] = block[m + 1], masks()
        infos["time_s"], infos["_time_s"] = block[m], masks()
        infos["updates"] = self._updates_info(tables, stepping, shared)
        infos["_updates"] = masks()
        if v1:
            applied = self._knobs[:, 1, :]
            infos["knobs_running"] = self._knob_info(tables, applied, idle, masks)
            infos["_knobs_running"] = masks()
            infos["cost_reference"], infos["_cost_reference"] = block[m + 2], masks()
        return infos

    def _knob_info(
        self, tables: _InfoTables, indices: np.ndarray, idle: np.ndarray | None, masks: Any
    ) -> dict:
        """A knob values dict of every env, batched: values where stepped (``idle`` the
        others, None when every env stepped), else zero (or None)."""
        out: dict[str, Any] = {}
        for j, name in enumerate(tables.names):
            values = self._domains[j][indices[:, j]]  # a fresh array
            if idle is not None:
                values[idle] = None if values.dtype == object else 0
            out[name] = values
            out[f"_{name}"] = masks()
        return out

    def _updates_info(self, tables: _InfoTables, stepping: np.ndarray, shared: bool) -> dict:
        """``LayerQueue.state()`` of every env, batched.

        Whole-batch array operations first (each knob's entries in flight and queued,
        every layer's start, as rows of fresh arrays), then per busy layer and knob only
        the lookup of the knob's values.
        """
        out: dict[str, Any] = {}
        # (layer, env): each layer's update start where stepped and in flight, else 0.
        starts = self._times[:, 2:].T.copy()
        busy_all = ~np.isnan(starts)
        busy_all &= stepping
        busy_layers = busy_all.any(axis=1).tolist()
        if not any(busy_layers):
            return out
        starts[~busy_all] = 0.0
        # (in flight or queued, knob, env): the domain index (the kernel writes -1 for a
        # knob not in flight or not queued, and only for a layer in flight).
        table = self._knobs[:, 2:, :].transpose(1, 2, 0)
        has_all = table >= 0
        has_all &= stepping
        indices = np.where(has_all, table, 0)
        any_has = has_all.any(axis=2).tolist()
        all_has = has_all.all(axis=2).tolist()
        knob_layers = self._knob_layers
        for layer_id, layer in enumerate(tables.layers):
            if not busy_layers[layer_id]:
                continue
            busy = busy_all[layer_id]
            if shared:
                busy.flags.writeable = False
                masks: Any = _Same(busy)
            else:
                masks = _Copies(busy)
            entry: dict[str, Any] = {}
            for t, key in enumerate(("in_flight", "queued")):
                sub: dict[str, Any] = {}
                for j, name in enumerate(tables.names):
                    if knob_layers[j] != layer_id or not any_has[t][j]:
                        continue
                    has = has_all[t, j]
                    values = self._domains[j][indices[t, j]]
                    if not all_has[t][j]:
                        values[~has] = None if values.dtype == object else 0
                    sub[name] = values
                    sub[f"_{name}"] = has
                entry[key] = sub
                entry[f"_{key}"] = masks()
                if key == "in_flight":
                    entry["started_at"], entry["_started_at"] = starts[layer_id], masks()
            out[layer] = entry
            out[f"_{layer}"] = masks()
        return out

    @property
    def obs(self) -> np.ndarray:
        """The last step's observations (a row per env; stepped envs only)."""
        return self._obs

    @property
    def rewards(self) -> np.ndarray:
        """The last step's rewards."""
        return self._rewards

    @property
    def truncated(self) -> np.ndarray:
        """The last step's truncations (uint8)."""
        return self._truncated


def _domain_array(values: Sequence[Any]) -> np.ndarray:
    """A knob's domain as an array of the dtype ``VectorEnv._add_info`` gives its values."""
    kind = type(values[0])
    if kind in (int, float, bool) and all(type(v) is kind for v in values):
        return np.array(values, dtype=kind)
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


class _Same:
    """A ``_key`` mask for every key: the one read-only array."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask

    def __call__(self) -> np.ndarray:
        return self.mask


class _Copies:
    """A ``_key`` mask for every key: a writable copy each."""

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = mask

    def __call__(self) -> np.ndarray:
        return self.mask.copy()


def _objects(codes: np.ndarray, mask: np.ndarray, everyone: bool, of: Any) -> np.ndarray:
    """An object array of ``of(code)`` where ``mask`` (``everyone``: all of it), else None
    (one object per distinct code: the envs of one step that have the same list share it).

    A step's envs have few distinct codes (bit masks of NaN metrics, or of layers
    started), so each distinct code costs one comparison over the envs; no sorting.
    """
    out = np.full(len(codes), None, dtype=object)
    stepped = codes if everyone else codes[mask]
    low = int(stepped.min())
    if low == stepped.max():  # the usual case: one code for all (nothing missing, say)
        if everyone:
            out.fill(of(low))
        else:
            out[mask] = _one(of(low))
        return out
    for code in set(stepped.tolist()):
        where = codes == code
        if not everyone:
            where &= mask
        out[where] = _one(of(code))
    return out


def _one(value: Any) -> np.ndarray:
    """A 0-d object array holding ``value`` (for assigning one list or tuple to many
    entries of an object array: assigning the list itself would spread its items)."""
    box = np.empty((), dtype=object)
    box[()] = value
    return box
