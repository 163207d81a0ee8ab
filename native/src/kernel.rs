//! The env kernel: whole SimpleK8sWebApp steps (v1's asynchronous actuation, v0's
//! immediate one) for a batch of envs on the sim backend, one call from Python per step.
//!
//! A step of one env is what `SimpleK8sWebAppEnv.step` does on a `Twin`, in the same
//! order of floating-point operations: the action's knob indices (the codec's move
//! tables), the knob changes (the layer queue of `infragym/updates.py` and
//! `Twin.request`/`_start_update` for asynchronous actuation, `Twin.set_property` for
//! immediate), the core's advance, the completions of layer updates (`Twin._completed`
//! on the queue), the observation (scales, clipping, NaN → 0), the default reward and the
//! truncation. Python precomputes the knobs' core ops from the env's tables
//! (`infragym/envs/kernel.py`), hands each env's state over at reset, and rebuilds the
//! Python-side state from what the kernel records (the changes and metrics of each step)
//! when something reads it.

use crate::{py_max, py_min, Core, Op, OpState, INF, N_METRICS};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// A knob's change: (knob, domain index).
type KnobIndex = (usize, usize);

/// One knob as the kernel moves it.
struct KnobSpec {
    /// The kernel's id of the knob's layer.
    layer: usize,
    /// The observation of each domain index (index / (n-1)).
    positions: Vec<f64>,
    /// `moves[i][x]`: the index the knob moves to from `i` under action entry `x`.
    moves: Vec<Vec<usize>>,
}

/// What the reward is (`default_reward` or `default_reward_v1`: SLO attainment, error
/// penalty, cost penalty).
struct RewardSpec {
    latency: usize,
    target_s: f64,
    max_error_ratio: f64,
    slo_reward: f64,
    error_weight: f64,
    cost_weight: f64,
    /// v1: cost relative to the reference cost; v0: cost in USD per hour.
    relative: bool,
}

/// An env id's step, shared by the batch.
struct Spec {
    knobs: Vec<KnobSpec>,
    n_layers: usize,
    asynchronous: bool,
    v1: bool,
    /// The metrics' observation scales (v0: the first 13 metrics; v1: all 16, the cost's
    /// scale per env).
    scales: Vec<f64>,
    /// v1: the kernel layers whose "update in flight" the observation shows, in order.
    busy_layers: Vec<usize>,
    reward: RewardSpec,
    step_seconds: f64,
    obs_clip: f64,
    rate_scale: f64,
    load_history: usize,
    obs_len: usize,
}

const COST: usize = 12;
const OFFERED: usize = 1;
const ERRORS: usize = 5;

/// An update in flight: when it started, and its changes in order.
#[derive(Clone)]
struct InFlight {
    /// Which update of the env's this is (the layer queue's order of updates in flight).
    serial: u64,
    started_at: f64,
    changes: Vec<KnobIndex>,
}

/// One env's state beside its core.
struct EnvState {
    core: Py<Core>,
    /// Per knob, the core op that sets it to each domain index (`Twin._core_op`).
    ops: Vec<Vec<Op>>,
    /// Kernel layer → the core's layer id (`Twin._layer_id`).
    layer_ids: Vec<u32>,
    knobs: Vec<usize>,
    requested: Vec<usize>,
    applied: Vec<usize>,
    in_flight: Vec<Option<InFlight>>,
    queued: Vec<Vec<KnobIndex>>,
    /// Per layer, when its waiting changes last became non-empty (`LayerQueue.queued`'s
    /// order of layers), in the same count as `InFlight::serial`.
    queued_since: Vec<u64>,
    serials: u64,
    steps: i64,
    max_steps: i64,
    offered: Vec<f64>,
    cost_reference: f64,
    cost_scale: f64,
    /// Since the hand-over: each step's changes (step, knob, index) and metrics.
    changes: Vec<(u32, KnobIndex)>,
    rows: Vec<[f64; N_METRICS]>,
    // The last step's outputs.
    metrics: [f64; N_METRICS],
    started: u32,
    reward: f64,
    unmodelled: Option<PyObject>,
    /// `request`'s list of the layers whose update starts, kept between steps (empty).
    starting: Vec<(usize, Vec<KnobIndex>)>,
}

/// Several envs of one id, stepped together by the kernel (one env: the single env's
/// own step). Env `i` is handed over with `attach` and stepped by `step`/`step_one`.
#[pyclass(module = "infragym._twin_core")]
pub struct EnvBatch {
    spec: Spec,
    envs: Vec<Option<EnvState>>,
    tables: Option<InfoTables>,
}

/// The keys of a step's info, and of its `updates` entries (interned once).
const INFO_KEYS: [&str; 14] = [
    "metrics",
    "missing",
    "knobs",
    "layers_updated",
    "unmodelled",
    "cost_usd",
    "time_s",
    "updates",
    "knobs_running",
    "cost_reference",
    "in_flight",
    "started_at",
    "queued",
    "",
];

/// What a single env's info is built from (`EnvBatch::set_tables`).
struct InfoTables {
    knob_names: Vec<Py<PyString>>,
    domains: Vec<Vec<PyObject>>,
    layer_names: Vec<Py<PyString>>,
    metric_names: Vec<Py<PyString>>,
    keys: [Py<PyString>; 14],
}

type KnobArgs = (usize, Vec<f64>, Vec<Vec<usize>>);
type RewardArgs = (usize, f64, f64, f64, f64, f64, bool);
type InFlightArgs = Option<(u64, f64, Vec<KnobIndex>)>;

fn value_error<T>(message: &str) -> PyResult<T> {
    Err(PyValueError::new_err(message.to_string()))
}

fn contains_or_push<T: PartialEq>(items: &mut Vec<T>, item: T) {
    if !items.contains(&item) {
        items.push(item);
    }
}

#[pymethods]
impl EnvBatch {
    /// A batch of `n` envs (none attached yet). `knobs`: per knob (its kernel layer, the
    /// observation of each domain index, the move tables);
    /// `scales`: the metrics' observation scales; `busy_layers`: v1's layers in flight;
    /// `reward`: (latency metric, target, max error ratio, SLO reward, error weight, cost
    /// weight, relative cost).
    #[new]
    #[pyo3(signature = (
        n, knobs, n_layers, asynchronous, v1, scales, busy_layers, reward, step_seconds,
        obs_clip, rate_scale, load_history, obs_len
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        n: usize,
        knobs: Vec<KnobArgs>,
        n_layers: usize,
        asynchronous: bool,
        v1: bool,
        scales: Vec<f64>,
        busy_layers: Vec<usize>,
        reward: RewardArgs,
        step_seconds: f64,
        obs_clip: f64,
        rate_scale: f64,
        load_history: usize,
        obs_len: usize,
    ) -> PyResult<Self> {
        let _ = py;
        let mut specs = Vec::with_capacity(knobs.len());
        for (layer, positions, moves) in knobs {
            if layer >= n_layers || moves.len() != positions.len() {
                return value_error("a knob's tables disagree");
            }
            if moves.iter().flatten().any(|&i| i >= positions.len()) {
                return value_error("a knob's move leaves its domain");
            }
            specs.push(KnobSpec {
                layer,
                positions,
                moves,
            });
        }
        let n_metrics = if v1 { N_METRICS } else { 13 };
        if scales.len() != n_metrics || busy_layers.iter().any(|&l| l >= n_layers) {
            return value_error("scales or busy layers do not fit the env");
        }
        let (latency, target_s, max_error_ratio, slo_reward, error_weight, cost_weight, relative) =
            reward;
        let expected = if v1 {
            N_METRICS + busy_layers.len() + 2 * specs.len() + 1 + load_history
        } else {
            13 + specs.len()
        };
        if obs_len != expected || latency >= N_METRICS || specs.len() > 32 || n_layers > 32 {
            return value_error("the observation does not fit the env");
        }
        Ok(EnvBatch {
            spec: Spec {
                knobs: specs,
                n_layers,
                asynchronous,
                v1,
                scales,
                busy_layers,
                reward: RewardSpec {
                    latency,
                    target_s,
                    max_error_ratio,
                    slo_reward,
                    error_weight,
                    cost_weight,
                    relative,
                },
                step_seconds,
                obs_clip,
                rate_scale,
                load_history,
                obs_len,
            },
            envs: (0..n).map(|_| None).collect(),
            tables: None,
        })
    }

    /// Hand env `i` over: its core, per knob the core op of each domain index
    /// (`Twin._core_op`'s tuples), the core's id of each kernel layer, its knob indices,
    /// its layer queue (requested and applied indices, per layer the update in flight (its
    /// rank among those in flight, its start, its changes) and the changes waiting (with
    /// the rank of the layer among those with changes waiting, plus the layers)), its step count and limit, the offered load of its steps so
    /// far, and its cost reference and cost scale (v1).
    #[pyo3(signature = (
        i, core, ops, layer_ids, knobs, requested, applied, in_flight, queued, steps, max_steps,
        offered, cost_reference, cost_scale
    ))]
    #[allow(clippy::too_many_arguments)]
    fn attach(
        &mut self,
        i: usize,
        core: Py<Core>,
        ops: Vec<Vec<OpState>>,
        layer_ids: Vec<u32>,
        knobs: Vec<usize>,
        requested: Vec<usize>,
        applied: Vec<usize>,
        in_flight: Vec<InFlightArgs>,
        queued: Vec<(u64, Vec<KnobIndex>)>,
        steps: i64,
        max_steps: i64,
        offered: Vec<f64>,
        cost_reference: f64,
        cost_scale: f64,
    ) -> PyResult<()> {
        let spec = &self.spec;
        let k = spec.knobs.len();
        let l = spec.n_layers;
        let size = |j: usize| spec.knobs[j].positions.len();
        let fits = |v: &[usize]| v.len() == k && v.iter().enumerate().all(|(j, &i)| i < size(j));
        let fits_changes = |c: &[KnobIndex]| c.iter().all(|&(n, i)| n < k && i < size(n));
        if i >= self.envs.len()
            || ops.len() != k
            || ops.iter().enumerate().any(|(j, o)| o.len() != size(j))
            || layer_ids.len() != l
            || !fits(&knobs)
            || !fits(&requested)
            || !fits(&applied)
            || in_flight.len() != l
            || queued.len() != l
            || !queued
                .iter()
                .all(|(r, c)| *r < 2 * l as u64 && fits_changes(c))
            || !in_flight
                .iter()
                .flatten()
                .all(|(s, _, c)| *s < l as u64 && fits_changes(c))
            || offered.is_empty()
        {
            return value_error("the env's state does not fit the batch");
        }
        let ops = ops
            .into_iter()
            .map(|o| o.into_iter().map(op_of).collect::<PyResult<Vec<_>>>())
            .collect::<PyResult<Vec<_>>>()?;
        self.envs[i] = Some(EnvState {
            core,
            ops,
            layer_ids,
            knobs,
            requested,
            applied,
            in_flight: in_flight
                .into_iter()
                .map(|f| {
                    f.map(|(serial, started_at, changes)| InFlight {
                        serial,
                        started_at,
                        changes,
                    })
                })
                .collect(),
            serials: 2 * l as u64,
            queued_since: queued.iter().map(|q| q.0).collect(),
            queued: queued.into_iter().map(|q| q.1).collect(),
            steps,
            max_steps,
            offered,
            cost_reference,
            cost_scale,
            changes: Vec::new(),
            rows: Vec::new(),
            metrics: [f64::NAN; N_METRICS],
            started: 0,
            reward: 0.0,
            unmodelled: None,
            starting: Vec::new(),
        });
        Ok(())
    }

    /// Let env `i` go (its Python state is rebuilt, or it was reset).
    fn detach(&mut self, i: usize) {
        if let Some(slot) = self.envs.get_mut(i) {
            *slot = None;
        }
    }

    /// Whether env `i` is attached.
    fn attached(&self, i: usize) -> bool {
        matches!(self.envs.get(i), Some(Some(_)))
    }

    /// How many steps env `i` took since its hand-over (0 when not attached).
    fn pending(&self, i: usize) -> usize {
        match self.envs.get(i) {
            Some(Some(env)) => env.rows.len(),
            _ => 0,
        }
    }

    /// The Python objects a single env's info is built from: the knobs' names and the
    /// value of each domain index, the layers' names, the observed metrics' names (v0:
    /// 13, v1: 16) and, per env, its unmodelled resources (`set_unmodelled`).
    fn set_tables(
        &mut self,
        py: Python<'_>,
        knob_names: Vec<Py<PyString>>,
        domains: Vec<Vec<PyObject>>,
        layer_names: Vec<Py<PyString>>,
        metric_names: Vec<Py<PyString>>,
    ) -> PyResult<()> {
        let k = self.spec.knobs.len();
        let fits = domains.len() == k
            && domains
                .iter()
                .zip(&self.spec.knobs)
                .all(|(d, s)| d.len() == s.positions.len());
        if knob_names.len() != k
            || !fits
            || layer_names.len() != self.spec.n_layers
            || metric_names.len() != self.spec.scales.len()
        {
            return value_error("the info tables do not fit the env");
        }
        let key = |s: &str| PyString::intern(py, s).unbind();
        self.tables = Some(InfoTables {
            knob_names,
            domains,
            layer_names,
            metric_names,
            keys: INFO_KEYS.map(key),
        });
        Ok(())
    }

    /// Env `i`'s unmodelled resources (`Twin.unmodelled`), for its infos.
    fn set_unmodelled(&mut self, i: usize, unmodelled: PyObject) -> PyResult<()> {
        match self.envs.get_mut(i) {
            Some(Some(env)) => {
                env.unmodelled = Some(unmodelled);
                Ok(())
            }
            _ => value_error("env not attached"),
        }
    }

    /// Step env `i` (a single env's step): write the observation into `obs` (float32,
    /// the observation's length) and return (reward, truncated, the step's info, the
    /// requested knob indices). The info is the Python step's, key for key (`set_tables`
    /// first).
    fn step_one<'py>(
        &mut self,
        py: Python<'py>,
        i: usize,
        action: Vec<i64>,
        obs: PyBuffer<f32>,
    ) -> PyResult<(f64, bool, Bound<'py, PyDict>, Bound<'py, PyTuple>)> {
        let spec = &self.spec;
        let Some(tables) = &self.tables else {
            return value_error("no info tables (set_tables)");
        };
        let Some(Some(env)) = self.envs.get_mut(i) else {
            return value_error("env not attached");
        };
        if action.len() != spec.knobs.len() || obs.item_count() != spec.obs_len || obs.readonly() {
            return value_error("action or observation of the wrong size");
        }
        let new = decode(spec, &env.knobs, &action)?;
        step_env(py, spec, env, &new)?;
        let mut out = vec![0.0f32; spec.obs_len];
        let missing = observe(spec, env, &mut out);
        obs.copy_from_slice(py, &out)?;
        let info = info_dict(py, spec, tables, env, missing)?;
        Ok((
            env.reward,
            env.steps >= env.max_steps,
            info,
            PyTuple::new(py, &env.knobs)?,
        ))
    }

    /// Step the envs whose `active` entry is nonzero, each with its row of `actions`
    /// (int64, n × knobs), and write their rows of the outputs: `obs` (float32, n ×
    /// observation), `rewards` (float64), `truncated` (uint8), `metrics` (float64, n ×
    /// 16), `info` (uint32, n × 2: NaN mask, layers started), `knobs` (int64, n × 4 ×
    /// knobs: requested, applied, in flight or -1, queued or -1), `times` (float64, n ×
    /// (2 + layers): time, cost so far, each layer's update start or NaN).
    ///
    /// Every action is checked before any env steps: an entry out of range raises
    /// ValueError and nothing changes.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        py: Python<'_>,
        actions: PyBuffer<i64>,
        active: PyBuffer<u8>,
        obs: PyBuffer<f32>,
        rewards: PyBuffer<f64>,
        truncated: PyBuffer<u8>,
        metrics: PyBuffer<f64>,
        info: PyBuffer<u32>,
        knobs: PyBuffer<i64>,
        times: PyBuffer<f64>,
    ) -> PyResult<()> {
        let spec = &self.spec;
        let n = self.envs.len();
        let k = spec.knobs.len();
        let l = spec.n_layers;
        let writable = [
            obs.readonly(),
            rewards.readonly(),
            truncated.readonly(),
            metrics.readonly(),
            info.readonly(),
            knobs.readonly(),
            times.readonly(),
        ];
        if actions.item_count() != n * k
            || active.item_count() != n
            || obs.item_count() != n * spec.obs_len
            || rewards.item_count() != n
            || truncated.item_count() != n
            || metrics.item_count() != n * N_METRICS
            || info.item_count() != n * 2
            || knobs.item_count() != n * 4 * k
            || times.item_count() != n * (2 + l)
            || writable.iter().any(|&r| r)
            || !actions.is_c_contiguous()
        {
            return value_error("a buffer of the wrong size, or read-only");
        }
        let contiguous = [
            obs.is_c_contiguous(),
            rewards.is_c_contiguous(),
            truncated.is_c_contiguous(),
            metrics.is_c_contiguous(),
            info.is_c_contiguous(),
            knobs.is_c_contiguous(),
            times.is_c_contiguous(),
            active.is_c_contiguous(),
        ];
        if contiguous.iter().any(|&c| !c) {
            return value_error("a buffer that is not C-contiguous");
        }
        // The buffers are read and written in place (no copies in and out): they are
        // C-contiguous, of the checked sizes and distinct arrays (KernelBatch's own).
        let actions = unsafe { as_slice(&actions) };
        let active = unsafe { as_slice(&active) };
        let mut news = vec![0usize; n * k];
        for (e, env) in self.envs.iter().enumerate() {
            if active[e] == 0 {
                continue;
            }
            let Some(env) = env else {
                return value_error("an active env is not attached");
            };
            decode_into(
                spec,
                &env.knobs,
                &actions[e * k..(e + 1) * k],
                &mut news[e * k..(e + 1) * k],
            )?;
        }
        let o = unsafe { as_slice_mut(&obs) };
        let r = unsafe { as_slice_mut(&rewards) };
        let tr = unsafe { as_slice_mut(&truncated) };
        let m = unsafe { as_slice_mut(&metrics) };
        let inf = unsafe { as_slice_mut(&info) };
        let kn = unsafe { as_slice_mut(&knobs) };
        let ti = unsafe { as_slice_mut(&times) };
        for e in 0..n {
            if active[e] == 0 {
                continue;
            }
            let new = &news[e * k..(e + 1) * k];
            let env = self.envs[e].as_mut().expect("checked");
            step_env(py, spec, env, new)?;
            let row = &mut o[e * spec.obs_len..(e + 1) * spec.obs_len];
            inf[2 * e] = observe(spec, env, row);
            inf[2 * e + 1] = env.started;
            r[e] = env.reward;
            tr[e] = u8::from(env.steps >= env.max_steps);
            m[e * N_METRICS..(e + 1) * N_METRICS].copy_from_slice(&env.metrics);
            let base = e * 4 * k;
            for j in 0..k {
                kn[base + j] = env.knobs[j] as i64;
                kn[base + k + j] = env.applied[j] as i64;
                kn[base + 2 * k + j] = -1;
                kn[base + 3 * k + j] = -1;
            }
            let tb = e * (2 + l);
            let core = env.core.bind(py).borrow();
            ti[tb] = core.t;
            ti[tb + 1] = core.cost_usd;
            for layer in 0..l {
                ti[tb + 2 + layer] = match &env.in_flight[layer] {
                    None => f64::NAN,
                    Some(f) => {
                        for &(j, idx) in &f.changes {
                            kn[base + 2 * k + j] = idx as i64;
                        }
                        for &(j, idx) in &env.queued[layer] {
                            kn[base + 3 * k + j] = idx as i64;
                        }
                        f.started_at
                    }
                };
            }
        }
        Ok(())
    }

    /// Env `i`'s layer queue: requested and applied knob indices, the updates in flight
    /// in the order they started (layer, started at, changes in flight, changes queued),
    /// and the layers with changes queued in the order their queues began.
    #[allow(clippy::type_complexity)]
    fn queue(
        &self,
        i: usize,
    ) -> PyResult<(
        Vec<usize>,
        Vec<usize>,
        Vec<(usize, f64, Vec<KnobIndex>, Vec<KnobIndex>)>,
        Vec<usize>,
    )> {
        let Some(Some(env)) = self.envs.get(i) else {
            return value_error("env not attached");
        };
        let mut flights: Vec<(u64, usize)> = (0..self.spec.n_layers)
            .filter_map(|l| env.in_flight[l].as_ref().map(|f| (f.serial, l)))
            .collect();
        flights.sort_unstable();
        let updates = flights
            .into_iter()
            .map(|(_, l)| {
                let f = env.in_flight[l].as_ref().expect("in flight");
                (l, f.started_at, f.changes.clone(), env.queued[l].clone())
            })
            .collect();
        let mut waiting: Vec<(u64, usize)> = (0..self.spec.n_layers)
            .filter(|&l| !env.queued[l].is_empty())
            .map(|l| (env.queued_since[l], l))
            .collect();
        waiting.sort_unstable();
        let order = waiting.into_iter().map(|(_, l)| l).collect();
        Ok((env.requested.clone(), env.applied.clone(), updates, order))
    }

    /// What env `i` did since its hand-over, for the Python side to replay: each step's
    /// changes (step, knob, index), each step's metrics, and its knob indices now.
    #[allow(clippy::type_complexity)]
    fn record(
        &self,
        i: usize,
    ) -> PyResult<(Vec<(u32, KnobIndex)>, Vec<[f64; N_METRICS]>, Vec<usize>)> {
        match self.envs.get(i) {
            Some(Some(env)) => Ok((env.changes.clone(), env.rows.clone(), env.knobs.clone())),
            _ => value_error("env not attached"),
        }
    }
}

fn op_of((kind, index, count, limit, size): OpState) -> PyResult<Op> {
    Ok(match kind {
        0 => Op::Replicas(index, count),
        1 => Op::CpuLimit(index, limit),
        2 => Op::PoolCount(index, count),
        3 => Op::PoolSize(index, crate::size_from(size)),
        _ => return value_error("no such knob op"),
    })
}

/// The knob indices `action` moves to from `current` (`ActionCodec.decode_indices`).
fn decode(spec: &Spec, current: &[usize], action: &[i64]) -> PyResult<Vec<usize>> {
    let mut out = vec![0; action.len()];
    decode_into(spec, current, action, &mut out)?;
    Ok(out)
}

/// `decode` into `out` (one entry per knob).
fn decode_into(spec: &Spec, current: &[usize], action: &[i64], out: &mut [usize]) -> PyResult<()> {
    for (((knob, &i), &x), o) in spec.knobs.iter().zip(current).zip(action).zip(out) {
        let moves = &knob.moves[i];
        if x < 0 || x as usize >= moves.len() {
            return value_error("an action entry out of range");
        }
        *o = moves[x as usize];
    }
    Ok(())
}

/// A C-contiguous buffer's items, read in place.
///
/// # Safety
/// The buffer is C-contiguous and nothing writes to it while the slice lives.
unsafe fn as_slice<T: pyo3::buffer::Element>(buffer: &PyBuffer<T>) -> &[T] {
    std::slice::from_raw_parts(buffer.buf_ptr() as *const T, buffer.item_count())
}

/// A C-contiguous writable buffer's items, written in place.
///
/// # Safety
/// The buffer is C-contiguous, writable, and no other slice of its memory lives.
#[allow(clippy::mut_from_ref)]
unsafe fn as_slice_mut<T: pyo3::buffer::Element>(buffer: &PyBuffer<T>) -> &mut [T] {
    std::slice::from_raw_parts_mut(buffer.buf_ptr() as *mut T, buffer.item_count())
}

/// Make `op` in the core as `Twin.set_property` does through the knob handlers (the
/// kernel's ops are the common knobs': `Twin._core_op`); the pool or workload it changed.
fn apply_op(core: &mut Core, op: &Op) -> (Option<usize>, Option<usize>) {
    match op {
        Op::Replicas(w, n) => {
            core.set_replicas(*w, *n);
            (None, Some(*w))
        }
        Op::CpuLimit(w, limit) => {
            core.set_cpu_limit(*w, *limit);
            (None, Some(*w))
        }
        Op::PoolCount(p, n) => {
            core.pools[*p].count = *n;
            core.pool_changed(*p);
            (Some(*p), None)
        }
        Op::PoolSize(p, size) => {
            core.pools[*p].size = *size;
            core.pool_changed(*p);
            (Some(*p), None)
        }
        other => core.make(other.clone()), // not built by `op_of`: the core's general path
    }
}

/// One env's step, up to its observation.
fn step_env(py: Python<'_>, spec: &Spec, env: &mut EnvState, new: &[usize]) -> PyResult<()> {
    let step = env.rows.len() as u32;
    let mut buffer = [(0usize, 0usize); 32]; // at most 32 knobs (EnvBatch::new)
    let mut count = 0;
    for (j, (&i, &was)) in new.iter().zip(&env.knobs).enumerate() {
        if i != was {
            buffer[count] = (j, i);
            count += 1;
        }
    }
    let changes = &buffer[..count];
    let bound = env.core.bind(py);
    let mut core = bound.borrow_mut();
    env.started = 0;
    if !changes.is_empty() {
        if spec.asynchronous {
            request(spec, env, &mut core, changes);
        } else {
            for &(j, i) in changes {
                apply_op(&mut core, &env.ops[j][i]);
                env.requested[j] = i;
                env.applied[j] = i;
                env.started |= 1 << spec.knobs[j].layer;
            }
        }
        env.changes.extend(changes.iter().map(|&c| (step, c)));
    }
    env.knobs.copy_from_slice(new);
    let metrics = core.advance_metrics(py, spec.step_seconds)?;
    if !core.completions.is_empty() {
        let mut done = std::mem::take(&mut core.completions);
        completed(env, &done)?;
        done.clear();
        core.completions = done; // its room kept for the next completions
    }
    core.scaled.clear(); // the HPAs' changes: the Python side replays them on a rebuild
    drop(core);
    env.metrics = metrics;
    env.rows.push(metrics);
    env.steps += 1;
    env.offered.push(metrics[OFFERED]);
    env.reward = reward(spec, env);
    Ok(())
}

/// `Twin.request` (the layer queue's `request`, then `_start_update` of each update
/// that starts and `set_queued` of each layer whose changes wait).
fn request(spec: &Spec, env: &mut EnvState, core: &mut Core, changes: &[KnobIndex]) {
    let mut starting = std::mem::take(&mut env.starting); // empty, with room
    let mut waiting_layers = 0u32; // a bit per layer (at most 32: EnvBatch::new)
    for &(j, i) in changes {
        env.requested[j] = i;
        let layer = spec.knobs[j].layer;
        if let Some(flight) = &env.in_flight[layer] {
            let after = flight
                .changes
                .iter()
                .rev()
                .find(|c| c.0 == j)
                .map_or(env.applied[j], |c| c.1);
            let waiting = &mut env.queued[layer];
            let was_empty = waiting.is_empty();
            let at = waiting.iter().position(|c| c.0 == j);
            if i == after {
                if let Some(at) = at {
                    waiting.remove(at);
                }
            } else if let Some(at) = at {
                waiting[at].1 = i;
            } else {
                waiting.push((j, i));
            }
            if was_empty && !waiting.is_empty() {
                env.queued_since[layer] = env.serials;
                env.serials += 1;
            }
            waiting_layers |= 1 << layer;
        } else if let Some(entry) = starting.iter_mut().find(|s| s.0 == layer) {
            entry.1.push((j, i));
        } else {
            starting.push((layer, vec![(j, i)]));
        }
    }
    let t = core.t;
    for (layer, layer_changes) in starting.drain(..) {
        let mut pools = Vec::new();
        let mut workloads = Vec::new();
        for &(j, i) in &layer_changes {
            let (pool, workload) = apply_op(core, &env.ops[j][i]);
            if let Some(p) = pool {
                contains_or_push(&mut pools, p);
            } else if let Some(w) = workload {
                contains_or_push(&mut workloads, w);
            }
        }
        let deadline = if workloads.is_empty() {
            INF
        } else {
            t + core.deployment_await_s
        };
        let lid = env.layer_ids[layer];
        core.updates.retain(|u| u.layer != lid);
        core.updates.push(crate::Update {
            layer: lid,
            pools,
            workloads,
            deadline,
        });
        env.in_flight[layer] = Some(InFlight {
            serial: env.serials,
            started_at: t,
            changes: layer_changes,
        });
        env.serials += 1;
        env.started |= 1 << layer;
    }
    env.starting = starting;
    // Each layer's queued ops are its own: the order the layers are visited is immaterial.
    for layer in (0..spec.n_layers).filter(|l| waiting_layers >> l & 1 == 1) {
        let lid = env.layer_ids[layer] as usize;
        if core.queued.len() <= lid {
            core.queued.resize(lid + 1, None);
        }
        let waiting = &env.queued[layer];
        if waiting.is_empty() {
            core.queued[lid] = None;
        } else {
            // The layer's Vec of ops refilled (no new allocation while it has room).
            let ops = core.queued[lid].get_or_insert_with(Vec::new);
            ops.clear();
            ops.extend(waiting.iter().map(|&(j, i)| env.ops[j][i].clone()));
        }
    }
}

/// `Twin._completed` on the kernel's queue: each completed update's changes are
/// applied, and the layer's queued update (which the core started) is in flight.
fn completed(env: &mut EnvState, done: &[(u32, f64, bool, bool)]) -> PyResult<()> {
    for &(lid, t, _, started) in done {
        let Some(layer) = env.layer_ids.iter().position(|&l| l == lid) else {
            return value_error("the core completed an update of a layer the kernel has not");
        };
        let Some(flight) = env.in_flight[layer].take() else {
            return value_error("the core completed an update the kernel has not in flight");
        };
        for (j, i) in flight.changes {
            env.applied[j] = i;
        }
        let waiting = std::mem::take(&mut env.queued[layer]);
        if waiting.is_empty() {
            if started {
                return value_error("the core started an update the kernel has not queued");
            }
            continue;
        }
        env.in_flight[layer] = Some(InFlight {
            serial: env.serials,
            started_at: t,
            changes: waiting,
        });
        env.serials += 1;
    }
    Ok(())
}

/// The observation of env's last step (`_observation` of v0 or v1); the NaN mask.
fn observe(spec: &Spec, env: &EnvState, out: &mut [f32]) -> u32 {
    let clip = spec.obs_clip;
    let mut missing = 0u32;
    let mut o = 0;
    for (n, &scale) in spec.scales.iter().enumerate() {
        let scale = if spec.v1 && n == COST {
            env.cost_scale
        } else {
            scale
        };
        let mut v = env.metrics[n] / scale;
        if !(0.0 <= v && v <= clip) {
            if v.is_nan() {
                missing |= 1 << n;
            }
            v = if v > clip { clip } else { 0.0 };
        }
        out[o] = v as f32;
        o += 1;
    }
    if spec.v1 {
        for &layer in &spec.busy_layers {
            out[o] = if env.in_flight[layer].is_some() {
                1.0
            } else {
                0.0
            };
            o += 1;
        }
    }
    for (knob, &i) in spec.knobs.iter().zip(&env.knobs) {
        out[o] = knob.positions[i] as f32;
        o += 1;
    }
    if spec.v1 {
        for (knob, &i) in spec.knobs.iter().zip(&env.applied) {
            out[o] = knob.positions[i] as f32;
            o += 1;
        }
        let progress = env.steps as f64 / env.max_steps as f64;
        out[o] = py_min(progress, 1.0) as f32;
        o += 1;
        let len = env.offered.len();
        for back in 2..spec.load_history + 2 {
            let rate = env.offered[if back <= len { len - back } else { 0 }];
            out[o] = py_min(py_max(0.0, rate / spec.rate_scale), clip) as f32; // NaN: 0
            o += 1;
        }
    }
    missing
}

/// The default reward of the last step (`RewardSum` of `SloAttainment`, `ErrorPenalty`
/// and `CostPenalty` or `RelativeCostPenalty`, summed in that order from 0).
fn reward(spec: &Spec, env: &EnvState) -> f64 {
    let r = &spec.reward;
    let m = &env.metrics;
    let latency = m[r.latency];
    let errors = m[ERRORS];
    let met = if latency.is_nan() {
        !(m[OFFERED] > 0.0)
    } else {
        latency <= r.target_s && (errors.is_nan() || errors <= r.max_error_ratio)
    };
    let mut total = 0.0;
    total += if met { r.slo_reward } else { 0.0 };
    total += if errors.is_nan() {
        0.0
    } else {
        -r.error_weight * errors
    };
    total += if r.relative {
        -r.cost_weight * m[COST] / env.cost_reference
    } else {
        -r.cost_weight * m[COST]
    };
    total
}

/// A single env's info after a step: `SimpleK8sWebAppEnv._info`'s (and v1's) keys, in
/// its order, with the layer queue's state as `LayerQueue.state()` gives it.
fn info_dict<'py>(
    py: Python<'py>,
    spec: &Spec,
    tables: &InfoTables,
    env: &EnvState,
    missing: u32,
) -> PyResult<Bound<'py, PyDict>> {
    let keys = &tables.keys;
    let key = |n: usize| keys[n].bind(py);
    let knobs_dict = |indices: &[usize]| -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (j, &idx) in indices.iter().enumerate() {
            d.set_item(
                tables.knob_names[j].bind(py),
                tables.domains[j][idx].bind(py),
            )?;
        }
        Ok(d)
    };
    let changes_dict = |changes: &[KnobIndex]| -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for &(j, idx) in changes {
            d.set_item(
                tables.knob_names[j].bind(py),
                tables.domains[j][idx].bind(py),
            )?;
        }
        Ok(d)
    };
    let metrics = PyDict::new(py);
    for (name, &value) in tables.metric_names.iter().zip(&env.metrics) {
        metrics.set_item(name.bind(py), value)?;
    }
    if spec.v1 {
        metrics.set_item(key(9), env.cost_reference)?;
    }
    let names = tables
        .metric_names
        .iter()
        .enumerate()
        .filter(|(n, _)| missing >> n & 1 == 1)
        .map(|(_, name)| name.bind(py))
        .collect::<Vec<_>>();
    let layers = tables
        .layer_names
        .iter()
        .enumerate()
        .filter(|(l, _)| env.started >> l & 1 == 1)
        .map(|(_, name)| name.bind(py))
        .collect::<Vec<_>>();
    let mut flights: Vec<(u64, usize)> = (0..spec.n_layers)
        .filter_map(|l| env.in_flight[l].as_ref().map(|f| (f.serial, l)))
        .collect();
    flights.sort_unstable();
    let updates = PyDict::new(py);
    for (_, l) in flights {
        let f = env.in_flight[l].as_ref().expect("in flight");
        let state = PyDict::new(py);
        state.set_item(key(10), changes_dict(&f.changes)?)?;
        state.set_item(key(11), f.started_at)?;
        state.set_item(key(12), changes_dict(&env.queued[l])?)?;
        updates.set_item(tables.layer_names[l].bind(py), state)?;
    }
    let core = env.core.bind(py).borrow();
    let info = PyDict::new(py);
    info.set_item(key(0), metrics)?;
    info.set_item(key(1), PyList::new(py, names)?)?;
    info.set_item(key(2), knobs_dict(&env.knobs)?)?;
    info.set_item(key(3), PyTuple::new(py, layers)?)?;
    match &env.unmodelled {
        Some(u) => info.set_item(key(4), u.bind(py))?,
        None => info.set_item(key(4), PyTuple::empty(py))?,
    }
    info.set_item(key(5), core.cost_usd)?;
    info.set_item(key(6), core.t)?;
    info.set_item(key(7), updates)?;
    if spec.v1 {
        info.set_item(key(8), knobs_dict(&env.applied)?)?;
        info.set_item(key(9), env.cost_reference)?;
    }
    Ok(info)
}
