//! The digital twin's step loop: infragym's twin is this core.
//!
//! `Core` holds the world of a twin (node pools and nodes, workloads and their pod
//! batches, the HPAs, the cluster autoscaler's pools, the database, the layer updates in
//! flight) and runs every step: knob changes, pool reconciliation, eviction, scheduling,
//! the serving plan, the analytic serving of each piece of the step (heater pods as
//! M/G/c queues, the database as a closed queue of their workers), the metrics, and the
//! autoscalers after them. It is held to account by external references
//! (`tests/twin/`: queueing theory, discrete-event simulations, the catalogue's
//! allocatable figures and prices, the HPA formula, the real kube-scheduler).
//!
//! `infragym.twin.twin.Twin` is its Python API: it reads the resource graph into the
//! core's world (`infragym.twin.builder`), translates property changes into ops
//! (`set_replicas`, `set_cpu_limit`, `set_pool_count`, `set_pool_size`, `apply_op`),
//! and presents nodes, pods and metrics. The core calls back into Python for two things
//! only: the siege-engine schedules it does not integrate itself (steps, a diurnal curve
//! clipped at zero) and the M/G/c latency of pods that are neither M/M/1 nor saturated
//! (`infragym.twin.latency.pod_latency`).
//!
//! The core was ported line by line from a Python twin (retired; see the git history),
//! with the same floating-point operations in the same order; the docs below name the
//! Python methods each part was ported from (`Twin._schedule`, ...).
//!
//! Layer updates (asynchronous actuation, `Twin.request`): the layer queue's bookkeeping
//! stays in Python (`infragym.updates.LayerQueue`), but the core watches every update in
//! flight and completes it inside its event loop, at the instant its pools converge and
//! its rollouts are done (or at its await deadline), and starts the layer's queued update
//! there, from the knob changes Python translated for it beforehand (`set_queued`). It
//! logs each completion for Python to replay on the queue (`take_completions`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{PyTraverseError, PyVisit};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

mod kernel;

const INF: f64 = f64::INFINITY;
/// The metrics `Core::advance` returns (`infragym.twin.twin.METRIC_NAMES`).
const N_METRICS: usize = 16;

const ROLE_HEATER: u8 = 1;
const ROLE_SIEGE: u8 = 2;
const ROLE_DATABASE: u8 = 3;

#[derive(Clone, Copy)]
struct Size {
    id: u32,
    cpu: f64,
    memory: f64,
    price: f64,
}

#[derive(Clone)]
struct Node {
    pool: usize,
    serial: u32,
    size: Size,
    created_at: f64,
    ready_at: f64,
    removed_at: Option<f64>,
    cpu_requested: f64,
    memory_requested: f64,
    unneeded_since: Option<f64>, // the cluster autoscaler's mark
}

impl Node {
    fn ready(&self, t: f64) -> bool {
        self.ready_at <= t && self.removed_at.is_none_or(|r| r > t)
    }

    fn fits(&self, w: &Workload) -> bool {
        self.cpu_requested + w.cpu_request <= self.size.cpu + 1e-9
            && self.memory_requested + w.memory_request <= self.size.memory + 1e-9
    }
}

#[derive(Clone)]
struct Pool {
    size: Size,
    count: i64,
    nodes: Vec<usize>,
    serial: u32,
    /// The cluster autoscaler's bounds, when it scales this pool.
    auto_scale: Option<(i64, i64)>,
}

#[derive(Clone, Copy)]
struct Batch {
    count: i64,
    created_at: f64,
    node: Option<usize>,
    ready_at: f64,
}

impl Batch {
    fn ready(&self, t: f64) -> bool {
        self.node.is_some() && self.ready_at <= t
    }
}

#[derive(Clone, Copy, PartialEq)]
struct Work {
    scv: f64,
    timeout: f64,
    cpu_s: f64,
}

/// A siege-engine schedule (`infragym.apps.workload.Schedule.mean_rate`): the shapes with
/// an exact integral here, the others in Python: steps (`Step.integral` sums with
/// `sum()`, which Python 3.12 compensates) and a diurnal curve clipped at zero.
#[derive(Clone)]
enum Arrivals {
    Constant {
        rate: f64,
    },
    Ramp {
        start: f64,
        end: f64,
        duration: f64,
    },
    Diurnal {
        base: f64,
        amplitude: f64,
        period: f64,
        phase: f64,
    },
    Spikes {
        base: f64,
        spike_rate: f64,
        every: f64,
        spike_seconds: f64,
        offset: f64,
    },
    /// `Trace`, as its `_TraceIndex`: point times and rates, the cumulative integral at
    /// each point, the loop period (0: no loop) and the requests of one period.
    Trace(TraceIndex),
    Python,
}

/// `infragym.apps.workload._TraceIndex`, taken over from Python.
#[derive(Clone)]
struct TraceIndex {
    times: Vec<f64>,
    rates: Vec<f64>,
    cum: Vec<f64>,
    period: f64,
    per_period: f64,
    /// The last `bisect_right` answer: the next lookup gallops forward from there (a
    /// step's pieces move forward through the trace), not a search of the whole trace.
    hint: usize,
    /// The last `looped` time and its value: a piece starts where the last one ended.
    last: Option<(f64, f64)>,
}

/// The trace data `Twin` sends: (times, rates, cumulative, period, per period).
type TraceState = (Vec<f64>, Vec<f64>, Vec<f64>, f64, f64);

impl TraceIndex {
    /// `bisect_right(times, t)` (`partition_point`'s answer: the first `i` with
    /// `!(times[i] <= t)`, else the length), galloping forward from the last answer when
    /// `t` is at or past it, else by a search of the whole trace.
    fn bisect_right(&mut self, t: f64) -> usize {
        let times = &self.times;
        let n = times.len();
        let h = self.hint;
        let i = if h <= n && (h == 0 || times[h - 1] <= t) {
            // Every index below `low` has times <= t; probe low, low+1, low+3, low+7, ...
            let mut low = h;
            let mut step = 1;
            loop {
                let probe = low + step - 1;
                if probe >= n {
                    break low + times[low..].partition_point(|&x| x <= t);
                }
                if times[probe] <= t {
                    low = probe + 1;
                    step *= 2;
                } else {
                    break low + times[low..probe].partition_point(|&x| x <= t);
                }
            }
        } else {
            times.partition_point(|&x| x <= t)
        };
        self.hint = i;
        i
    }

    /// `_TraceIndex.cumulative`.
    fn cumulative(&mut self, t: f64) -> f64 {
        let i = self.bisect_right(t); // bisect_right
        if i == 0 {
            return self.rates[0] * (t - self.times[0]);
        }
        let i = i - 1;
        self.cum[i] + self.rates[i] * (t - self.times[i])
    }

    /// `_TraceIndex.looped`.
    fn looped(&mut self, t: f64) -> f64 {
        if let Some((at, value)) = self.last {
            if at.to_bits() == t.to_bits() {
                return value; // the same time as the last call: the same value
            }
        }
        let value = if self.period == 0.0 {
            self.cumulative(t)
        } else {
            let (k, r) = py_divmod(t - self.times[0], self.period);
            k * self.per_period + self.cumulative(self.times[0] + r)
        };
        self.last = Some((t, value));
        value
    }
}

/// Python's `divmod(x, y)` of two floats (CPython's `_float_div_mod`).
fn py_divmod(vx: f64, wx: f64) -> (f64, f64) {
    let mut m = vx % wx; // C's fmod
    let mut div = (vx - m) / wx;
    if m != 0.0 {
        if (wx < 0.0) != (m < 0.0) {
            m += wx;
            div -= 1.0;
        }
    } else {
        m = 0.0f64.copysign(wx);
    }
    let floordiv = if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f64.copysign(vx / wx)
    };
    (floordiv, m)
}

struct Schedule {
    arrivals: Arrivals,
    duration: Option<f64>,
    mean_rate: PyObject,
}

/// A Python object held by a core, shared (not copied) by a copy of the core.
struct Shared<T>(Py<T>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(Python::with_gil(|py| self.0.clone_ref(py)))
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = Py<T>;
    fn deref(&self) -> &Py<T> {
        &self.0
    }
}

impl Clone for Schedule {
    fn clone(&self) -> Self {
        Schedule {
            arrivals: self.arrivals.clone(),
            duration: self.duration,
            mean_rate: Python::with_gil(|py| self.mean_rate.clone_ref(py)),
        }
    }
}

impl Schedule {
    fn from_spec(
        kind: &str,
        p: &[f64],
        duration: Option<f64>,
        mean_rate: PyObject,
        trace: Option<TraceState>,
    ) -> Self {
        let arrivals = match (kind, p, trace) {
            ("trace", _, Some((times, rates, cum, period, per_period)))
                if !times.is_empty() && times.len() == rates.len() && times.len() == cum.len() =>
            {
                Arrivals::Trace(TraceIndex {
                    times,
                    rates,
                    cum,
                    period,
                    per_period,
                    hint: 0,
                    last: None,
                })
            }
            (kind, p, _) => Self::closed_form(kind, p),
        };
        Schedule {
            arrivals,
            duration,
            mean_rate,
        }
    }

    fn closed_form(kind: &str, p: &[f64]) -> Arrivals {
        match (kind, p) {
            ("constant", &[rate]) => Arrivals::Constant { rate },
            ("ramp", &[start, end, duration]) => Arrivals::Ramp {
                start,
                end,
                duration,
            },
            ("diurnal", &[base, amplitude, period, phase]) if amplitude <= base => {
                Arrivals::Diurnal {
                    base,
                    amplitude,
                    period,
                    phase,
                }
            }
            ("spikes", &[base, spike_rate, every, spike_seconds, offset]) => Arrivals::Spikes {
                base,
                spike_rate,
                every,
                spike_seconds,
                offset,
            },
            _ => Arrivals::Python,
        }
    }

    /// `Schedule.mean_rate` over `[t0, t1)`.
    fn mean_rate(&mut self, py: Python<'_>, t0: f64, t1: f64) -> PyResult<f64> {
        if matches!(self.arrivals, Arrivals::Python) || t1 <= t0 {
            return self.mean_rate.call1(py, (t0, t1))?.extract::<f64>(py);
        }
        let end = match self.duration {
            Some(d) if t0 >= d => return Ok(0.0),
            Some(d) => py_min(t1, d),
            None => t1,
        };
        Ok(self.integral(t0, end) / (t1 - t0))
    }

    fn integral(&mut self, t0: f64, t1: f64) -> f64 {
        match self.arrivals {
            Arrivals::Constant { rate } => rate * (t1 - t0),
            Arrivals::Ramp {
                start,
                end,
                duration,
            } => {
                let rate_at =
                    |t: f64| start + (end - start) * py_min(py_max(t / duration, 0.0), 1.0);
                let cut = py_min(py_max(duration, t0), t1);
                let ramp = (rate_at(t0) + rate_at(cut)) / 2.0 * (cut - t0);
                ramp + end * (t1 - cut)
            }
            Arrivals::Diurnal {
                base,
                amplitude,
                period,
                phase,
            } => {
                let w = 2.0 * std::f64::consts::PI / period;
                base * (t1 - t0)
                    + amplitude / w * ((w * (t0 + phase)).cos() - (w * (t1 + phase)).cos())
            }
            Arrivals::Spikes {
                base,
                spike_rate,
                every,
                spike_seconds,
                offset,
            } => {
                let mut total = base * (t1 - t0);
                let extra = spike_rate - base;
                let mut k = ((py_max(t0, offset) - offset) / every).floor().max(0.0);
                loop {
                    let start = offset + k * every;
                    if start >= t1 {
                        break;
                    }
                    let overlap = py_min(t1, start + spike_seconds) - py_max(t0, start);
                    if overlap > 0.0 {
                        total += extra * overlap;
                    }
                    k += 1.0;
                }
                total
            }
            Arrivals::Trace(ref mut index) => {
                // looped(t0) first: it is the last piece's looped(t1), kept (pure, so the
                // order of the two calls does not change the difference).
                let start = index.looped(t0);
                index.looped(t1) - start
            }
            Arrivals::Python => unreachable!("mean_rate calls Python for these"),
        }
    }
}

#[derive(Clone)]
struct Workload {
    role: u8,
    replicas: i64,
    cpu_request: f64,
    memory_request: f64,
    cpu_limit: Option<f64>,
    workers: i64,
    work: Option<Work>,
    schedule: Option<Schedule>,
    queries: bool, // a heater whose requests each query the database
    pool_ok: Vec<bool>,
    /// What else makes the pod template (selector, work, schedule), interned by Python:
    /// with the requests and the limit, what tells a rolling update from a scale.
    template: u32,
    batches: Vec<Batch>,
    rollout_done_at: f64,
    prev_cores: Option<f64>,
}

impl Workload {
    fn pod_count(&self) -> i64 {
        self.batches.iter().map(|b| b.count).sum()
    }

    fn cores_per_pod(&self) -> f64 {
        let cap = self.workers as f64;
        match self.cpu_limit {
            None => cap,
            Some(limit) => py_min(cap, limit),
        }
    }
}

/// Python's `max(a, b)`: `b` only when it is larger.
#[inline]
fn py_max(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// Python's `min(a, b)`: `b` only when it is smaller.
#[inline]
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// Heater pods alike between two events (`Twin._serving_plan`'s groups).
#[derive(Clone, Copy)]
struct Group {
    count: i64,
    workers: i64,
    cores: f64,
    work: Work,
    queries: bool,
    free: f64,
    on_node: i64,
}

#[derive(Clone, Default)]
struct Plan {
    groups: Vec<Group>,
    schedules: Vec<usize>,
    heater_pods: i64,
    replicas_desired: i64,
    replicas_ready: i64,
    replicas_starting: i64,
    database_ready: bool,
    nodes_ready: usize,
    pods_pending: i64,
    requested_cpu: f64,
    limit_cpu: f64,
    hourly: f64,
    next_pod_event: f64,
}

#[derive(Clone, Default)]
struct Accumulator {
    sent: f64,
    answered: f64,
    served: f64,
    failed: f64,
    busy_cpu: f64,
    requested_cpu: f64,
    limit_cpu: f64,
    p50: f64,
    p95: f64,
    p99: f64,
}

/// Python's `random.Random` (MT19937, `random()` and `gauss()`), taken over from its
/// `getstate()`, so that the core draws the same arrival noise as `Twin._poisson`.
#[derive(Clone)]
struct PyRandom {
    mt: [u32; 624],
    index: usize,
    gauss_next: Option<f64>,
}

impl PyRandom {
    fn from_state(words: &[u32], index: usize, gauss_next: Option<f64>) -> PyResult<Self> {
        let mt: [u32; 624] = words
            .try_into()
            .map_err(|_| PyValueError::new_err("a Mersenne Twister state has 624 words"))?;
        Ok(PyRandom {
            mt,
            index,
            gauss_next,
        })
    }

    /// The state of `random.Random(seed)` for a seed of at most 64 bits: CPython's
    /// `random_seed` (the seed's absolute value as little-endian 32-bit words, at least
    /// one) and `init_by_array`; index 624, no gauss_next: what `getstate()` gives.
    fn from_seed(seed: u64) -> Self {
        const N: usize = 624;
        let key: Vec<u32> = if seed >> 32 == 0 {
            vec![seed as u32]
        } else {
            vec![seed as u32, (seed >> 32) as u32]
        };
        let mut mt = [0u32; N];
        mt[0] = 19_650_218;
        for i in 1..N {
            mt[i] = 1_812_433_253u32
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            mt[i] = (mt[i] ^ (mt[i - 1] ^ (mt[i - 1] >> 30)).wrapping_mul(1_566_083_941))
                .wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        PyRandom {
            mt,
            index: N,
            gauss_next: None,
        }
    }

    /// CPython's `genrand_uint32`.
    fn next_u32(&mut self) -> u32 {
        const N: usize = 624;
        const M: usize = 397;
        if self.index >= N {
            let mt = &mut self.mt;
            for kk in 0..N {
                let y = (mt[kk] & 0x8000_0000) | (mt[(kk + 1) % N] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                mt[kk] = mt[(kk + M) % N] ^ (y >> 1) ^ mag;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random.random()`: 53 random bits in [0, 1).
    fn random(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) * (1.0 / 9007199254740992.0)
    }

    /// `random.gauss(mu, sigma)`.
    fn gauss(&mut self, mu: f64, sigma: f64) -> f64 {
        let z = match self.gauss_next.take() {
            Some(z) => z,
            None => {
                let x2pi = self.random() * (2.0 * std::f64::consts::PI);
                let g2rad = (-2.0 * (1.0 - self.random()).ln()).sqrt();
                self.gauss_next = Some(x2pi.sin() * g2rad);
                x2pi.cos() * g2rad
            }
        };
        mu + z * sigma
    }

    /// `Twin._poisson`: a Poisson draw (normal approximation above 50, exact below).
    fn poisson(&mut self, mean: f64) -> f64 {
        if mean > 50.0 {
            let k = self.gauss(mean, mean.sqrt()).round_ties_even();
            return if k > 0.0 { k } else { 0.0 };
        }
        let limit = (-mean).exp();
        let mut k = 0u64;
        let mut p = self.random();
        while p > limit {
            k += 1;
            p *= self.random();
        }
        k as f64
    }
}

/// A min-heap entry of the scheduler: (-free share, node order), as in `Twin._schedule`.
struct Slot {
    key: f64,
    order: usize,
    node: usize,
}

impl PartialEq for Slot {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Slot {}
impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slot {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, the scheduler wants the least key first.
        other
            .key
            .partial_cmp(&self.key)
            .unwrap_or(Ordering::Equal)
            .then(other.order.cmp(&self.order))
    }
}

/// Python's `round(x, 3)`: correctly rounded to three decimals, half to even.
///
/// Python rounds the exact value of `x` to an integer number of thousandths `q` and
/// returns the double nearest `q / 1000`, which is what IEEE division of the integer
/// `q` by 1000 gives. `x * 1000` is within half an ulp of the exact product, so its
/// nearest integer is `q` unless it lies within an ulp or so of a half: then (and for
/// huge or non-finite `x`) the exact decimal formatting decides.
fn round3(x: f64) -> f64 {
    let p = x * 1000.0;
    if p.abs() < 4.5e15 {
        let floor = p.floor();
        let frac = p - floor;
        let ulp = f64::from_bits(p.abs().to_bits() + 1) - p.abs();
        if (frac - 0.5).abs() > 4.0 * ulp + 1e-15 {
            let q = if frac < 0.5 { floor } else { floor + 1.0 };
            // The sign of a zero as Python gives it: round(-0.0001, 3) is -0.0.
            return if q == 0.0 {
                0.0f64.copysign(x)
            } else {
                q / 1000.0
            };
        }
    }
    format!("{x:.3}").parse().unwrap_or(x)
}

fn size_from(t: (u32, f64, f64, f64)) -> Size {
    Size {
        id: t.0,
        cpu: t.1,
        memory: t.2,
        price: t.3,
    }
}

/// One knob change, translated for the core (what `Twin`'s knob handlers send it).
#[derive(Clone)]
enum Op {
    /// `Twin._set_replicas`: (workload, replicas).
    Replicas(usize, i64),
    /// `Twin._set_cpu_limit`: (workload, limit).
    CpuLimit(usize, Option<f64>),
    /// `Twin._change_pool` with a node count: (pool, count).
    PoolCount(usize, i64),
    /// `Twin._change_pool` with a size: (pool, size).
    PoolSize(usize, Size),
    /// `Twin._update_workload`: a Deployment (or the database's pod) re-read.
    Workload(usize, Box<WorkloadSpec>),
    /// A pool re-read (`Twin._apply_property`): (pool, count, size, autoscaler bounds).
    Pool(usize, i64, Size, Option<(i64, i64)>),
    /// `Twin._rebuild_autoscalers`: every HPA of the graph, re-read.
    Hpas(Vec<HpaSpec>),
    /// The price of the graph's resources other than nodes, re-read.
    StaticHourly(f64),
    /// The database re-read: its CPU (cores).
    DatabaseCores(f64),
}

/// A workload re-read from its inputs, as Python sends it (see `Core::apply_op`).
#[derive(Clone)]
struct WorkloadSpec {
    role: u8,
    replicas: Option<i64>, // None: keep the core's count (a queued change made later)
    cpu_request: f64,
    memory_request: f64,
    cpu_limit: Option<f64>,
    workers: i64,
    work: Option<Work>,
    schedule: Option<Schedule>,
    queries: bool,
    pool_ok: Vec<bool>,
    template: u32,
}

/// A workload spec as Python sends it: (role, replicas or None, CPU request, memory
/// request, CPU limit, workers, work, schedule, queries the database, pool fits, template).
type WorkloadSpecState = (
    u8,
    Option<i64>,
    f64,
    f64,
    Option<f64>,
    i64,
    Option<(f64, f64, f64)>,
    Option<ScheduleState>,
    bool,
    Vec<bool>,
    u32,
);

/// A schedule as Python sends it: (shape kind, parameters, duration, `mean_rate`, trace).
type ScheduleState = (String, Vec<f64>, Option<f64>, PyObject, Option<TraceState>);

/// A pool re-read as Python sends it: (node count, size, autoscaler bounds or None).
type PoolOpState = (i64, (u32, f64, f64, f64), Option<(i64, i64)>);

/// An HPA as Python sends it: (key id, workload, min, max, target utilisation, window s).
type HpaSpec = (u32, usize, i64, i64, f64, f64);

impl WorkloadSpec {
    fn from_state(s: WorkloadSpecState) -> Self {
        WorkloadSpec {
            role: s.0,
            replicas: s.1,
            cpu_request: s.2,
            memory_request: s.3,
            cpu_limit: s.4,
            workers: s.5,
            work: s.6.map(|(scv, timeout, cpu_s)| Work {
                scv,
                timeout,
                cpu_s,
            }),
            schedule: s.7.map(|(kind, p, duration, mean_rate, trace)| {
                Schedule::from_spec(&kind, &p, duration, mean_rate, trace)
            }),
            queries: s.8,
            pool_ok: s.9,
            template: s.10,
        }
    }
}

/// The database (`infragym.twin.model.Database`): its CPU and the CPU one query costs.
#[derive(Clone, Copy)]
struct Database {
    cores: f64,
    query_ms: f64,
}

/// A layer's update in flight (`Twin._updates`' entries): what it changed, and when it
/// gives up waiting for its Deployments.
#[derive(Clone)]
struct Update {
    layer: u32,
    pools: Vec<usize>,
    workloads: Vec<usize>,
    deadline: f64,
}

/// A HorizontalPodAutoscaler on CPU (`infragym.twin.model.Autoscaler`): its workload,
/// replica bounds, target utilisation of requests, scale-down window and recommendations.
#[derive(Clone)]
struct Hpa {
    key: u32,
    workload: usize,
    min: i64,
    max: i64,
    target: f64,
    window: f64,
    history: Vec<(f64, i64)>,
}

/// `infragym.twin.twin.hpa_proposal`: Kubernetes' replica recommendation.
fn hpa_proposal(
    busy_cores: f64,
    cpu_request: f64,
    ready: i64,
    current: i64,
    target: f64,
    tolerance: f64,
) -> i64 {
    let ready_ratio = busy_cores / (ready as f64 * cpu_request) / target;
    let ratio = if ready_ratio > 1.0 {
        let ratio = busy_cores / (current.max(ready) as f64 * cpu_request) / target;
        if ratio <= 1.0 {
            return current;
        }
        ratio
    } else {
        ready_ratio
    };
    if (ratio - 1.0).abs() <= tolerance {
        return current;
    }
    (current as f64 * ratio).ceil() as i64
}

/// An op as Python sends it: (kind, index, count, limit, size); kind 0 replicas, 1 CPU
/// limit, 2 pool count, 3 pool size (the fields a kind does not use are ignored).
type OpState = (u8, usize, i64, Option<f64>, (u32, f64, f64, f64));

type NodeState = (u32, (u32, f64, f64, f64), f64, f64, Option<f64>, f64, f64);
type PoolState = ((u32, f64, f64, f64), i64, u32, Vec<NodeState>);
type BatchState = (i64, f64, Option<(usize, usize)>, f64);
type WorkloadState = (
    u8,
    i64,
    f64,
    f64,
    Option<f64>,
    i64,
    Option<(f64, f64, f64)>,
    Option<ScheduleState>,
    Vec<bool>,
    Vec<BatchState>,
    f64,
    Option<f64>,
);

/// The state and step loop of one twin (see the module docs).
#[pyclass(module = "infragym._twin_core")]
#[derive(Clone)]
struct Core {
    nodes: Vec<Node>,
    pools: Vec<Pool>,
    workloads: Vec<Workload>,
    node_boot_s: f64,
    pod_startup_s: f64,
    exp_quantiles: [f64; 3],
    pod_latency: Option<Shared<PyAny>>, // None once cleared by the garbage collector
    database: Option<Database>,
    static_hourly: f64,
    #[pyo3(get)]
    t: f64,
    #[pyo3(get)]
    cost_usd: f64,
    next_event: f64,
    first_removal: f64,
    ready: Vec<usize>,
    hourly: f64,
    next_node_ready: f64,
    booting: i64,
    deployment_await_s: f64,
    updates: Vec<Update>,
    queued: Vec<Option<Vec<Op>>>, // by layer id: the changes waiting for its update
    completions: Vec<(u32, f64, bool, bool)>, // (layer, when, timed out, next started)
    #[pyo3(get)]
    update_timeouts: u64,
    hpas: Vec<Hpa>,
    hpa_tolerance: f64,
    ca_unneeded_s: f64,
    ca_utilisation: f64,
    scaled: Vec<(usize, i64)>, // the HPAs' replica changes since take_scaled: (workload, n)
    nodes_dirty: bool,
    sched_dirty: bool,
    planned_at: f64,
    changed_pools: Vec<usize>,
    current: Plan,
    acc: Accumulator,
    rng: Option<PyRandom>,
    metric_names: Vec<Shared<PyString>>,
    /// `serving_plan`'s working lists, kept between plans (no allocation per plan).
    scratch: Scratch,
}

/// Working lists of `Core::serving_plan`, cleared and refilled by each plan.
#[derive(Clone, Default)]
struct Scratch {
    /// (workload, node, count) of the Ready heater batches.
    heater_ready: Vec<(usize, usize, i64)>,
    /// (node, heater pods, their requests) of the nodes with Ready heater pods.
    per_node: Vec<(usize, i64, f64)>,
    /// `schedule_with`'s Pending batches, open nodes and new bound batches.
    pending: Vec<usize>,
    heap: BinaryHeap<Slot>,
    placed: Vec<Batch>,
    /// `settle_updates`' layers in flight.
    layers: Vec<u32>,
}

impl Clone for Slot {
    fn clone(&self) -> Self {
        Slot {
            key: self.key,
            order: self.order,
            node: self.node,
        }
    }
}

#[pymethods]
impl Core {
    /// A twin's world as `infragym.twin.twin.Twin` builds it (then `deploy`).
    #[new]
    #[pyo3(signature = (
        pools, workloads, static_hourly, node_boot_s, pod_startup_s, exp_quantiles,
        pod_latency, clock, sched_dirty, noise, metric_names, deployment_await_s
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        pools: Vec<PoolState>,
        workloads: Vec<WorkloadState>,
        static_hourly: f64,
        node_boot_s: f64,
        pod_startup_s: f64,
        exp_quantiles: (f64, f64, f64),
        pod_latency: PyObject,
        clock: (f64, f64, f64, f64, f64),
        sched_dirty: bool,
        noise: Option<(Vec<u32>, usize, Option<f64>)>,
        metric_names: Vec<Py<PyString>>,
        deployment_await_s: f64,
    ) -> PyResult<Self> {
        if metric_names.len() != N_METRICS {
            return Err(PyValueError::new_err(format!(
                "the core computes {N_METRICS} metrics"
            )));
        }
        let rng = match noise {
            None => None,
            Some((words, index, gauss_next)) => {
                Some(PyRandom::from_state(&words, index, gauss_next)?)
            }
        };
        let mut nodes = Vec::new();
        let mut node_ids: Vec<Vec<usize>> = Vec::new();
        let mut core_pools = Vec::new();
        for (pi, (size, count, serial, pool_nodes)) in pools.into_iter().enumerate() {
            let mut ids = Vec::new();
            for (serial, size, created_at, ready_at, removed_at, cpu_req, mem_req) in pool_nodes {
                ids.push(nodes.len());
                nodes.push(Node {
                    pool: pi,
                    serial,
                    size: size_from(size),
                    created_at,
                    ready_at,
                    removed_at,
                    cpu_requested: cpu_req,
                    memory_requested: mem_req,
                    unneeded_since: None,
                });
            }
            core_pools.push(Pool {
                size: size_from(size),
                count,
                nodes: ids.clone(),
                serial,
                auto_scale: None,
            });
            node_ids.push(ids);
        }
        let mut core_workloads = Vec::new();
        for w in workloads {
            let (role, replicas, cpu_request, memory_request, cpu_limit, workers, work, schedule) =
                (w.0, w.1, w.2, w.3, w.4, w.5, w.6, w.7);
            let (pool_ok, batches, rollout_done_at, prev_cores) = (w.8, w.9, w.10, w.11);
            if pool_ok.len() != core_pools.len() {
                return Err(PyValueError::new_err("pool_ok needs one entry per pool"));
            }
            let mut core_batches = Vec::new();
            for (count, created_at, node, ready_at) in batches {
                let node = match node {
                    None => None,
                    Some((p, i)) => Some(
                        *node_ids
                            .get(p)
                            .and_then(|ids| ids.get(i))
                            .ok_or_else(|| PyValueError::new_err("a batch names no node"))?,
                    ),
                };
                core_batches.push(Batch {
                    count,
                    created_at,
                    node,
                    ready_at,
                });
            }
            core_workloads.push(Workload {
                role,
                replicas,
                cpu_request,
                memory_request,
                cpu_limit,
                workers,
                work: work.map(|(scv, timeout, cpu_s)| Work {
                    scv,
                    timeout,
                    cpu_s,
                }),
                schedule: schedule.map(|(kind, p, duration, mean_rate, trace)| {
                    Schedule::from_spec(&kind, &p, duration, mean_rate, trace)
                }),
                pool_ok,
                batches: core_batches,
                rollout_done_at,
                prev_cores,
                queries: false,
                template: 0,
            });
        }
        let (t, next_event, first_removal, planned_at, cost_usd) = clock;
        let mut core = Core {
            nodes,
            pools: core_pools,
            workloads: core_workloads,
            node_boot_s,
            pod_startup_s,
            exp_quantiles: [exp_quantiles.0, exp_quantiles.1, exp_quantiles.2],
            pod_latency: Some(Shared(pod_latency)),
            database: None,
            static_hourly,
            t,
            cost_usd,
            next_event,
            first_removal,
            ready: Vec::new(),
            hourly: 0.0,
            next_node_ready: INF,
            booting: 0,
            deployment_await_s,
            updates: Vec::new(),
            queued: Vec::new(),
            completions: Vec::new(),
            update_timeouts: 0,
            hpas: Vec::new(),
            hpa_tolerance: 0.0,
            ca_unneeded_s: 0.0,
            ca_utilisation: 0.0,
            scaled: Vec::new(),
            nodes_dirty: true,
            sched_dirty,
            planned_at,
            changed_pools: Vec::new(),
            current: Plan::default(),
            acc: Accumulator::default(),
            rng,
            metric_names: metric_names.into_iter().map(Shared).collect(),
            scratch: Scratch::default(),
        };
        core.refresh_nodes(t);
        core.sched_dirty = sched_dirty;
        core.current = core.serving_plan(t);
        Ok(core)
    }

    /// The Python objects the core holds, for the garbage collector: the latency callback
    /// is the twin's bound method, so twin and core form a cycle.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(f) = &self.pod_latency {
            visit.call(&f.0)?;
        }
        for w in &self.workloads {
            if let Some(schedule) = &w.schedule {
                visit.call(&schedule.mean_rate)?;
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.pod_latency = None;
    }

    /// The database: the heaters whose requests query it, its CPU (cores) and the CPU
    /// milliseconds of one query (`TwinParams.db_query_ms`).
    fn set_database(&mut self, queries: Vec<usize>, cores: f64, query_ms: f64) -> PyResult<()> {
        for wi in queries {
            self.workloads
                .get_mut(wi)
                .ok_or_else(|| PyValueError::new_err("no such workload"))?
                .queries = true;
        }
        self.database = Some(Database { cores, query_ms });
        self.current = self.serving_plan(self.t); // the querying pods grouped apart
        Ok(())
    }

    /// Schedule the pods of the deployed state at once, Ready now (the twin starts from
    /// what was deployed, not from an empty cluster).
    fn deploy(&mut self) {
        let t = self.t;
        self.refresh_nodes(t);
        self.schedule_with(t, 0.0);
        self.current = self.serving_plan(t);
    }

    /// Each workload's template id (`WorkloadSpec.template`), in order.
    fn set_templates(&mut self, templates: Vec<u32>) -> PyResult<()> {
        if templates.len() != self.workloads.len() {
            return Err(PyValueError::new_err("one template per workload"));
        }
        for (w, t) in self.workloads.iter_mut().zip(templates) {
            w.template = t;
        }
        Ok(())
    }

    /// Make a knob change at once (`Twin.set_property`'s handlers), from an op as
    /// `set_queued` takes them.
    fn apply_op(&mut self, op: &Bound<'_, PyAny>) -> PyResult<()> {
        let op = self.op_from_py(op)?;
        self.make(op);
        Ok(())
    }

    /// Replace a siege-engine's schedule from now on (a planner's forecast), and plan again.
    #[pyo3(signature = (workload, schedule))]
    fn set_schedule(&mut self, workload: usize, schedule: Option<ScheduleState>) -> PyResult<()> {
        let w = self
            .workloads
            .get_mut(workload)
            .ok_or_else(|| PyValueError::new_err("no such workload"))?;
        w.schedule = schedule.map(|(kind, p, duration, mean_rate, trace)| {
            Schedule::from_spec(&kind, &p, duration, mean_rate, trace)
        });
        self.next_event = py_min(self.next_event, self.t);
        Ok(())
    }

    /// Replace the arrival noise's generator state (`random.Random.getstate()`'s words,
    /// index and gauss_next); ignored when the twin runs without noise.
    #[pyo3(signature = (words, index, gauss_next))]
    fn set_noise(
        &mut self,
        words: Vec<u32>,
        index: usize,
        gauss_next: Option<f64>,
    ) -> PyResult<()> {
        if self.rng.is_some() {
            self.rng = Some(PyRandom::from_state(&words, index, gauss_next)?);
        }
        Ok(())
    }

    /// `set_noise` with the state of `random.Random(seed)` (a seed of at most 64 bits,
    /// its absolute value), made here: a twin's respawn at every env reset, without
    /// building the 624 words in Python. Ignored when the twin runs without noise.
    fn seed_noise(&mut self, seed: u64) {
        if self.rng.is_some() {
            self.rng = Some(PyRandom::from_seed(seed));
        }
    }

    /// The arrival noise's generator state as `set_noise` takes it (words, index,
    /// gauss_next), or `None` without noise: for tests of `seed_noise`.
    fn noise_state(&self) -> Option<(Vec<u32>, usize, Option<f64>)> {
        self.rng
            .as_ref()
            .map(|r| (r.mt.to_vec(), r.index, r.gauss_next))
    }

    /// An independent copy of this core, in the same state (a fork of the twin).
    fn copy(&self) -> Self {
        self.clone()
    }

    /// `Twin._set_replicas`.
    fn set_replicas(&mut self, workload: usize, replicas: i64) {
        self.workloads[workload].replicas = replicas;
        self.scale(workload, replicas);
        self.next_event = self.t;
    }

    /// `Twin._set_cpu_limit`.
    #[pyo3(signature = (workload, limit))]
    fn set_cpu_limit(&mut self, workload: usize, limit: Option<f64>) {
        let t = self.t;
        let w = &mut self.workloads[workload];
        if limit != w.cpu_limit {
            let prev = w.cores_per_pod();
            w.cpu_limit = limit;
            w.rollout_done_at = t + self.pod_startup_s;
            w.prev_cores = Some(prev);
        }
        self.next_event = t;
    }

    /// `Twin._change_pool` with a node count.
    fn set_pool_count(&mut self, pool: usize, count: i64) {
        self.pools[pool].count = count;
        self.pool_changed(pool);
    }

    /// `Twin._change_pool` with a size: (id, allocatable CPU, allocatable GiB, $/h).
    fn set_pool_size(&mut self, pool: usize, size: (u32, f64, f64, f64)) {
        self.pools[pool].size = size_from(size);
        self.pool_changed(pool);
    }

    /// Watch a layer's update that `Twin.request` started (`Twin._start_update`'s entry):
    /// the pools and workloads it changed, and its await deadline.
    fn start_update(
        &mut self,
        layer: u32,
        pools: Vec<usize>,
        workloads: Vec<usize>,
        deadline: f64,
    ) {
        self.updates.retain(|u| u.layer != layer);
        self.updates.push(Update {
            layer,
            pools,
            workloads,
            deadline,
        });
    }

    /// The knob changes waiting for `layer`'s update in flight (the layer queue's
    /// coalesced entry, in its order), or `None` when nothing waits.
    #[pyo3(signature = (layer, ops))]
    fn set_queued(&mut self, layer: u32, ops: Option<Vec<Bound<'_, PyAny>>>) -> PyResult<()> {
        let ops = match ops {
            None => None,
            Some(ops) => Some(
                ops.iter()
                    .map(|op| self.op_from_py(op))
                    .collect::<PyResult<_>>()?,
            ),
        };
        let layer = layer as usize;
        if self.queued.len() <= layer {
            self.queued.resize(layer + 1, None);
        }
        self.queued[layer] = ops;
        Ok(())
    }

    /// The graph's HPAs, in the twin's order: (key id, workload, min replicas, max
    /// replicas, target utilisation, scale-down window s), and the tolerance
    /// (`TwinParams.hpa_tolerance`). An HPA whose key id the core had keeps its
    /// recommendations (`Twin._rebuild_autoscalers`).
    fn set_autoscalers(&mut self, hpas: Vec<HpaSpec>, tolerance: f64) -> PyResult<()> {
        self.check_hpas(&hpas)?;
        self.rebuild_hpas(hpas);
        self.hpa_tolerance = tolerance;
        Ok(())
    }

    /// The pools the cluster autoscaler scales: (pool, min nodes, max nodes), with its
    /// scale-down unneeded time and utilisation threshold (`TwinParams.ca_*`).
    fn set_cluster_autoscaler(
        &mut self,
        pools: Vec<(usize, i64, i64)>,
        unneeded_s: f64,
        utilisation: f64,
    ) -> PyResult<()> {
        for (p, min, max) in pools {
            let pool = self
                .pools
                .get_mut(p)
                .ok_or_else(|| PyValueError::new_err("no such pool"))?;
            pool.auto_scale = Some((min, max));
        }
        self.ca_unneeded_s = unneeded_s;
        self.ca_utilisation = utilisation;
        Ok(())
    }

    /// The replica counts the HPAs set since the last call, in order: (workload, replicas).
    fn take_scaled(&mut self) -> Vec<(usize, i64)> {
        std::mem::take(&mut self.scaled)
    }

    /// The updates completed since the last call, in order: (layer, when, whether it hit
    /// the await deadline, whether the layer's queued update started then).
    fn take_completions(&mut self) -> Vec<(u32, f64, bool, bool)> {
        std::mem::take(&mut self.completions)
    }

    /// Simulate `seconds` and return the step's metrics (`Twin.advance` without the
    /// autoscalers, which the core does not model).
    fn advance<'py>(&mut self, py: Python<'py>, seconds: f64) -> PyResult<Bound<'py, PyDict>> {
        let values = self.advance_metrics(py, seconds)?;
        let metrics = PyDict::new(py);
        for (name, value) in self.metric_names.iter().zip(values) {
            metrics.set_item(name.bind(py), value)?;
        }
        Ok(metrics)
    }

    /// `Twin.hourly_cost`.
    fn hourly_cost(&mut self) -> f64 {
        if self.nodes_dirty || self.next_node_ready <= self.t {
            self.refresh_nodes(self.t);
        }
        self.hourly
    }

    /// The pools' nodes (live, or removed and not dropped yet), pool order, pool changes
    /// applied: (id, pool, serial, size id, created, Ready at, removed at, CPU requested,
    /// memory requested).
    #[allow(clippy::type_complexity)]
    fn pool_nodes(&mut self) -> Vec<(usize, usize, u32, u32, f64, f64, Option<f64>, f64, f64)> {
        if !self.changed_pools.is_empty() {
            self.reconcile_pools();
        }
        let mut out = Vec::new();
        for pool in &self.pools {
            for &id in &pool.nodes {
                let n = &self.nodes[id];
                out.push((
                    id,
                    n.pool,
                    n.serial,
                    n.size.id,
                    n.created_at,
                    n.ready_at,
                    n.removed_at,
                    n.cpu_requested,
                    n.memory_requested,
                ));
            }
        }
        out
    }

    /// Every pod batch: (workload, count, node id or None, Ready at).
    fn batches(&self) -> Vec<(usize, i64, Option<usize>, f64)> {
        let mut out = Vec::new();
        for (wi, w) in self.workloads.iter().enumerate() {
            for b in &w.batches {
                out.push((wi, b.count, b.node, b.ready_at));
            }
        }
        out
    }
}

impl Accumulator {
    /// Scale the request counts (sampling noise), keeping ratios and quantiles.
    fn scale(&mut self, f: f64) {
        self.sent *= f;
        self.answered *= f;
        self.served *= f;
        self.failed *= f;
        self.busy_cpu *= f;
        self.p50 *= f;
        self.p95 *= f;
        self.p99 *= f;
    }

    /// Add `n` requests of a group of pods, a share `fail` of them failed, each served
    /// one using `cpu_s` CPU seconds, at the group's latency quantiles.
    fn add(&mut self, n: f64, fail: f64, cpu_s: f64, (p50, p95, p99): (f64, f64, f64)) {
        let served = n * (1.0 - fail);
        self.answered += n;
        self.failed += n - served;
        self.served += served;
        self.busy_cpu += served * cpu_s;
        self.p50 += p50 * served;
        self.p95 += p95 * served;
        self.p99 += p99 * served;
    }
}

impl Core {
    /// `Core::advance` without the dict: the step's metrics in `METRIC_NAMES`' order (the
    /// env kernel reads them as an array).
    fn advance_metrics(&mut self, py: Python<'_>, seconds: f64) -> PyResult<[f64; N_METRICS]> {
        let t0 = self.t;
        let t1 = t0 + seconds;
        self.acc = Accumulator::default();
        let mut a = t0;
        while a < t1 {
            if self.next_event <= a {
                self.next_event = self.plan(a);
            }
            let b = py_min(self.next_event, t1);
            self.serve(py, a, b)?;
            self.cost_usd += self.current.hourly * (b - a) / 3600.0;
            self.t = b;
            a = b;
        }
        if self.next_event <= t1 {
            self.next_event = self.plan(t1);
        }
        let sent = self.acc.sent;
        if let Some(rng) = self.rng.as_mut() {
            if sent > 0.0 {
                let factor = rng.poisson(sent) / sent;
                self.acc.scale(factor);
            }
        }
        let metrics = self.metrics(seconds);
        if !self.hpas.is_empty() || self.pools.iter().any(|p| p.auto_scale.is_some()) {
            self.autoscale(seconds);
        }
        Ok(metrics)
    }

    /// The step's metrics, in `Twin._metrics`' order.
    fn metrics(&self, seconds: f64) -> [f64; N_METRICS] {
        let acc = &self.acc;
        let plan = &self.current;
        let served = acc.served;
        let busy = acc.busy_cpu;
        let per_served = |x: f64| if served > 0.0 { x / served } else { f64::NAN };
        [
            acc.answered / seconds,
            acc.sent / seconds,
            per_served(acc.p50),
            per_served(acc.p95),
            per_served(acc.p99),
            if acc.sent > 0.0 {
                acc.failed / acc.sent
            } else {
                f64::NAN
            },
            if acc.requested_cpu > 0.0 {
                busy / acc.requested_cpu
            } else {
                f64::NAN
            },
            if acc.limit_cpu > 0.0 {
                busy / acc.limit_cpu
            } else {
                f64::NAN
            },
            plan.replicas_desired as f64,
            plan.replicas_ready as f64,
            plan.nodes_ready as f64,
            plan.pods_pending as f64,
            plan.hourly,
            plan.replicas_starting as f64,
            self.booting as f64,
            if self.next_node_ready < INF {
                self.next_node_ready - self.t
            } else {
                0.0
            },
        ]
    }

    /// `Twin._autoscale` for the HPAs (after the step's metrics, on its CPU use).
    fn autoscale(&mut self, seconds: f64) {
        let t = self.t;
        let busy = self.acc.busy_cpu / seconds;
        for h in 0..self.hpas.len() {
            let wi = self.hpas[h].workload;
            let w = &self.workloads[wi];
            let ready: i64 = w
                .batches
                .iter()
                .filter(|b| b.ready(t))
                .map(|b| b.count)
                .sum();
            if ready == 0 {
                continue;
            }
            let current = w.replicas;
            let hpa = &mut self.hpas[h];
            let proposal = hpa_proposal(
                busy,
                w.cpu_request,
                ready,
                current,
                hpa.target,
                self.hpa_tolerance,
            );
            let window = hpa.window;
            hpa.history.retain(|&(s, _)| t - s < window);
            hpa.history.push((t, proposal));
            let mut desired = if proposal >= current {
                proposal
            } else {
                hpa.history
                    .iter()
                    .map(|&(_, r)| r)
                    .max()
                    .unwrap_or(proposal)
            };
            desired = desired.max(hpa.min).min(hpa.max);
            if desired != current {
                self.set_replicas(wi, desired);
                self.scaled.push((wi, desired));
            }
        }
        for p in 0..self.pools.len() {
            if let Some((min, max)) = self.pools[p].auto_scale {
                self.cluster_autoscale(p, t, min, max);
            }
        }
    }

    /// `Twin._cluster_autoscale`: add nodes for Pending pods; remove one node unneeded
    /// for `ca_unneeded_s`.
    fn cluster_autoscale(&mut self, p: usize, t: f64, min_nodes: i64, max_nodes: i64) {
        let live = self.live(p);
        let alloc = self.pools[p].size.cpu;
        // CPU requested by the Pending pods a node of this pool could take.
        let mut pending = 0.0;
        for w in &self.workloads {
            if w.pool_ok[p] && w.cpu_request <= alloc {
                let count: i64 = w
                    .batches
                    .iter()
                    .filter(|b| b.node.is_none())
                    .map(|b| b.count)
                    .sum();
                pending += w.cpu_request * count as f64;
            }
        }
        let n_live = live.len() as i64;
        let booting = live.iter().any(|&n| !self.nodes[n].ready(t));
        if pending != 0.0 && !booting && n_live < max_nodes {
            let need = (pending / alloc).ceil() as i64;
            let add = need.max(1).min(max_nodes - n_live);
            self.add_nodes(p, add, t + self.node_boot_s);
            self.pools[p].count = self.live(p).len() as i64;
            self.next_event = t;
            return;
        }
        if pending != 0.0 || n_live <= min_nodes {
            return;
        }
        for &n in &live {
            let node = &mut self.nodes[n];
            if node.ready(t) && node.cpu_requested / node.size.cpu < self.ca_utilisation {
                if node.unneeded_since.is_none() {
                    node.unneeded_since = Some(t);
                }
            } else {
                node.unneeded_since = None;
            }
        }
        for &n in &live {
            let node = &self.nodes[n];
            let Some(since) = node.unneeded_since else {
                continue;
            };
            if t - since < self.ca_unneeded_s {
                continue;
            }
            let mut others_free = 0.0;
            for &o in &live {
                let other = &self.nodes[o];
                if o != n && other.ready(t) {
                    others_free += other.size.cpu - other.cpu_requested;
                }
            }
            if node.cpu_requested <= others_free {
                self.nodes[n].removed_at = Some(t);
                self.pools[p].count = n_live - 1;
                self.first_removal = t;
                self.evict(t);
                self.next_event = t;
                return;
            }
        }
    }

    fn op_from(&self, (kind, index, count, limit, size): OpState) -> PyResult<Op> {
        let (workloads, pools) = (self.workloads.len(), self.pools.len());
        match kind {
            0 if index < workloads => Ok(Op::Replicas(index, count)),
            1 if index < workloads => Ok(Op::CpuLimit(index, limit)),
            2 if index < pools => Ok(Op::PoolCount(index, count)),
            3 if index < pools => Ok(Op::PoolSize(index, size_from(size))),
            _ => Err(PyValueError::new_err(format!(
                "no such knob op: {kind} on {index}"
            ))),
        }
    }

    /// An op from Python: `OpState` for kinds 0-3, else (kind, index, payload): 4 a
    /// workload spec, 5 a pool (count, size, bounds or None), 6 the HPAs, 7 the static
    /// hourly cost, 8 the database's cores.
    fn op_from_py(&self, op: &Bound<'_, PyAny>) -> PyResult<Op> {
        let kind: u8 = op.get_item(0)?.extract()?;
        if kind <= 3 {
            return self.op_from(op.extract()?);
        }
        let index: usize = op.get_item(1)?.extract()?;
        let payload = op.get_item(2)?;
        let (workloads, pools) = (self.workloads.len(), self.pools.len());
        match kind {
            4 if index < workloads => {
                let spec = WorkloadSpec::from_state(payload.extract()?);
                if spec.pool_ok.len() != pools {
                    return Err(PyValueError::new_err("pool_ok needs one entry per pool"));
                }
                Ok(Op::Workload(index, Box::new(spec)))
            }
            5 if index < pools => {
                let (count, size, bounds): PoolOpState = payload.extract()?;
                Ok(Op::Pool(index, count, size_from(size), bounds))
            }
            6 => {
                let hpas: Vec<HpaSpec> = payload.extract()?;
                self.check_hpas(&hpas)?;
                Ok(Op::Hpas(hpas))
            }
            7 => Ok(Op::StaticHourly(payload.extract()?)),
            8 => Ok(Op::DatabaseCores(payload.extract()?)),
            _ => Err(PyValueError::new_err(format!(
                "no such knob op: {kind} on {index}"
            ))),
        }
    }

    fn check_hpas(&self, hpas: &[HpaSpec]) -> PyResult<()> {
        if hpas.iter().any(|h| h.1 >= self.workloads.len()) {
            return Err(PyValueError::new_err("an HPA targets no workload"));
        }
        Ok(())
    }

    /// `Twin._rebuild_autoscalers`: the HPAs anew, each keeping the recommendations of
    /// the one of its key before.
    fn rebuild_hpas(&mut self, hpas: Vec<HpaSpec>) {
        let old = std::mem::take(&mut self.hpas);
        for (key, workload, min, max, target, window) in hpas {
            let history = old
                .iter()
                .find(|h| h.key == key)
                .map(|h| h.history.clone())
                .unwrap_or_default();
            self.hpas.push(Hpa {
                key,
                workload,
                min,
                max,
                target,
                window,
                history,
            });
        }
    }

    /// Make one knob change at `self.t`; the pool or workload it changed, for an update
    /// to watch (`Twin._start_update`).
    fn make(&mut self, op: Op) -> (Option<usize>, Option<usize>) {
        self.next_event = self.t; // Twin.set_property: re-plan from now
        match op {
            Op::Replicas(w, n) => {
                self.set_replicas(w, n);
                (None, Some(w))
            }
            Op::CpuLimit(w, limit) => {
                self.set_cpu_limit(w, limit);
                (None, Some(w))
            }
            Op::PoolCount(p, n) => {
                self.pools[p].count = n;
                self.pool_changed(p);
                (Some(p), None)
            }
            Op::PoolSize(p, size) => {
                self.pools[p].size = size;
                self.pool_changed(p);
                (Some(p), None)
            }
            Op::Pool(p, count, size, bounds) => {
                let pool = &mut self.pools[p];
                pool.auto_scale = bounds;
                pool.count = count;
                pool.size = size;
                self.pool_changed(p);
                (Some(p), None)
            }
            Op::Workload(w, spec) => {
                self.update_workload(w, *spec);
                (None, Some(w))
            }
            Op::Hpas(hpas) => {
                self.rebuild_hpas(hpas);
                (None, None)
            }
            Op::StaticHourly(hourly) => {
                self.static_hourly = hourly;
                self.nodes_dirty = true;
                (None, None)
            }
            Op::DatabaseCores(cores) => {
                if let Some(db) = self.database.as_mut() {
                    db.cores = cores;
                }
                (None, None)
            }
        }
    }

    /// `Twin._update_workload`: the workload re-read; a changed pod template rolls the
    /// pods (the old ones serve as they were until the new ones are Ready).
    fn update_workload(&mut self, wi: usize, spec: WorkloadSpec) {
        let t = self.t;
        let w = &mut self.workloads[wi];
        let rolled = spec.template != w.template
            || spec.cpu_request != w.cpu_request
            || spec.memory_request != w.memory_request
            || spec.cpu_limit != w.cpu_limit;
        let old_cores = w.cores_per_pod();
        w.role = spec.role;
        if let Some(replicas) = spec.replicas {
            w.replicas = replicas;
        }
        w.cpu_request = spec.cpu_request;
        w.memory_request = spec.memory_request;
        w.cpu_limit = spec.cpu_limit;
        w.workers = spec.workers;
        w.work = spec.work;
        w.schedule = spec.schedule;
        w.queries = spec.queries;
        w.pool_ok = spec.pool_ok;
        w.template = spec.template;
        if rolled {
            w.rollout_done_at = t + self.pod_startup_s;
            w.prev_cores = Some(old_cores);
            self.recount_requests();
        }
        self.sched_dirty = true; // the selector or requests may have changed
        let replicas = self.workloads[wi].replicas;
        self.scale(wi, replicas);
    }

    /// `Twin._recount_requests`: every node's requests summed again from its pods.
    fn recount_requests(&mut self) {
        for pool in &self.pools {
            for &id in &pool.nodes {
                let n = &mut self.nodes[id];
                n.cpu_requested = 0.0;
                n.memory_requested = 0.0;
            }
        }
        for w in &self.workloads {
            let (cpu, memory) = (w.cpu_request, w.memory_request);
            for b in &w.batches {
                if let Some(node) = b.node {
                    let n = &mut self.nodes[node];
                    n.cpu_requested += cpu * b.count as f64;
                    n.memory_requested += memory * b.count as f64;
                }
            }
        }
        self.sched_dirty = true;
    }

    /// Start `layer`'s queued update at `self.t` (`Twin._start_update`), if one waits.
    fn start_queued(&mut self, layer: u32) -> bool {
        let Some(ops) = self.queued.get_mut(layer as usize).and_then(Option::take) else {
            return false;
        };
        let mut pools = Vec::new();
        let mut workloads = Vec::new();
        for op in ops {
            let (pool, workload) = self.make(op);
            if let Some(p) = pool {
                if !pools.contains(&p) {
                    pools.push(p);
                }
            }
            if let Some(w) = workload {
                if !workloads.contains(&w) {
                    workloads.push(w);
                }
            }
        }
        let deadline = if workloads.is_empty() {
            INF
        } else {
            self.t + self.deployment_await_s
        };
        self.updates.push(Update {
            layer,
            pools,
            workloads,
            deadline,
        });
        true
    }

    /// `Twin._settle_updates`: complete the updates done at `t`, start what waited for
    /// them; whether a queued update started (the world changed: plan again).
    fn settle_updates(&mut self, t: f64) -> bool {
        let mut started = false;
        let mut layers = std::mem::take(&mut self.scratch.layers);
        layers.clear();
        layers.extend(self.updates.iter().map(|u| u.layer));
        for &layer in &layers {
            let i = self
                .updates
                .iter()
                .position(|u| u.layer == layer)
                .expect("in flight");
            let u = &self.updates[i];
            let converged = u.pools.iter().all(|&p| self.pool_converged(p, t))
                && u.workloads.iter().all(|&w| self.rollout_done(w, t));
            if !converged && t < u.deadline {
                continue;
            }
            if !converged {
                self.update_timeouts += 1;
            }
            self.updates.remove(i);
            let next = self.start_queued(layer);
            self.completions.push((layer, t, !converged, next));
            started |= next;
        }
        self.scratch.layers = layers;
        started
    }

    /// `Twin._pool_converged`: every node Ready at the pool's size and count, none going.
    fn pool_converged(&self, p: usize, t: f64) -> bool {
        let pool = &self.pools[p];
        pool.nodes.len() as i64 == pool.count
            && pool.nodes.iter().all(|&id| {
                let n = &self.nodes[id];
                n.removed_at.is_none() && n.ready_at <= t && n.size.id == pool.size.id
            })
    }

    /// `Twin._rollout_done`: the rollout over and every replica Ready.
    fn rollout_done(&self, wi: usize, t: f64) -> bool {
        let w = &self.workloads[wi];
        w.rollout_done_at <= t
            && w.pod_count() == w.replicas
            && w.batches
                .iter()
                .filter(|b| b.ready(t))
                .map(|b| b.count)
                .sum::<i64>()
                == w.replicas
    }

    fn pool_changed(&mut self, pool: usize) {
        if !self.changed_pools.contains(&pool) {
            self.changed_pools.push(pool);
        }
        self.next_event = self.t;
    }

    fn live(&self, pool: usize) -> Vec<usize> {
        self.pools[pool]
            .nodes
            .iter()
            .copied()
            .filter(|&id| self.nodes[id].removed_at.is_none())
            .collect()
    }

    fn reconcile_pools(&mut self) {
        let changed = std::mem::take(&mut self.changed_pools);
        for &p in &changed {
            let live = self.live(p);
            let id = self.pools[p].size.id;
            if live.iter().any(|&n| self.nodes[n].size.id != id) {
                self.replace_pool_nodes(p);
            } else if live.len() as i64 != self.pools[p].count {
                let count = self.pools[p].count;
                self.resize_pool(p, count);
            }
        }
    }

    fn replace_pool_nodes(&mut self, p: usize) {
        let t = self.t;
        let ready_at = t + self.node_boot_s;
        let mut kept = Vec::new();
        for &id in &self.pools[p].nodes {
            let node = &mut self.nodes[id];
            if node.ready_at <= t {
                if node.removed_at.is_none_or(|r| r > t) {
                    node.removed_at = Some(ready_at);
                }
                kept.push(id);
            }
        }
        self.pools[p].nodes = kept;
        self.nodes_dirty = true;
        self.first_removal = t;
        self.evict(t);
        let count = self.pools[p].count;
        self.add_nodes(p, count, ready_at);
        self.first_removal = py_min(self.first_removal, ready_at);
    }

    fn resize_pool(&mut self, p: usize, count: i64) {
        let live = self.live(p).len() as i64;
        if count > live {
            self.add_nodes(p, count - live, self.t + self.node_boot_s);
        } else if count < live {
            self.remove_nodes(p, live - count);
        }
        self.pools[p].count = count;
    }

    fn add_nodes(&mut self, p: usize, count: i64, ready_at: f64) {
        let t = self.t;
        let size = self.pools[p].size;
        for _ in 0..count {
            self.pools[p].serial += 1;
            let id = self.nodes.len();
            self.nodes.push(Node {
                pool: p,
                serial: self.pools[p].serial,
                size,
                created_at: t,
                ready_at,
                removed_at: None,
                cpu_requested: 0.0,
                memory_requested: 0.0,
                unneeded_since: None,
            });
            self.pools[p].nodes.push(id);
        }
        if count > 0 && ready_at > t {
            self.booting += count;
        }
        if count > 0 && ready_at < self.next_node_ready {
            self.next_node_ready = ready_at;
        }
    }

    fn refresh_nodes(&mut self, t: f64) {
        let mut ready = Vec::new();
        let mut hourly = self.static_hourly;
        let mut boot = INF;
        let mut booting = 0;
        for pool in &self.pools {
            for &id in &pool.nodes {
                let n = &self.nodes[id];
                let ra = n.ready_at;
                if ra <= t {
                    if n.removed_at.is_none_or(|r| r > t) {
                        ready.push(id);
                        hourly += n.size.price;
                    }
                } else {
                    booting += 1;
                    if ra < boot {
                        boot = ra;
                    }
                }
            }
        }
        self.ready = ready;
        self.booting = booting;
        self.hourly = hourly;
        self.next_node_ready = boot;
        self.nodes_dirty = false;
        self.sched_dirty = true;
    }

    fn remove_nodes(&mut self, p: usize, count: i64) {
        let t = self.t;
        let mut live = self.live(p);
        let nodes = &self.nodes;
        live.sort_by(|&x, &y| {
            let (a, b) = (&nodes[x], &nodes[y]);
            a.ready(t)
                .cmp(&b.ready(t))
                .then(
                    a.cpu_requested
                        .partial_cmp(&b.cpu_requested)
                        .unwrap_or(Ordering::Equal),
                )
                .then(
                    (-a.created_at)
                        .partial_cmp(&-b.created_at)
                        .unwrap_or(Ordering::Equal),
                )
        });
        for &id in live.iter().take(count as usize) {
            self.nodes[id].removed_at = Some(t);
        }
        self.first_removal = t;
        self.evict(t);
    }

    fn evict(&mut self, t: f64) {
        if self.first_removal > t {
            return;
        }
        let mut gone: Vec<usize> = Vec::new();
        let mut first = INF;
        for pool in &mut self.pools {
            let mut dropped = false;
            for &id in &pool.nodes {
                if let Some(r) = self.nodes[id].removed_at {
                    if r <= t {
                        gone.push(id);
                        dropped = true;
                    } else if r < first {
                        first = r;
                    }
                }
            }
            if dropped {
                pool.nodes.retain(|id| !gone.contains(id));
            }
        }
        if !gone.is_empty() {
            for w in &mut self.workloads {
                for batch in &mut w.batches {
                    if let Some(node) = batch.node {
                        if gone.contains(&node) {
                            batch.node = None;
                            batch.ready_at = INF;
                        }
                    }
                }
            }
            self.sched_dirty = true;
        }
        self.first_removal = first;
        self.nodes_dirty = true;
    }

    fn add_pods(&mut self, wi: usize, count: i64) {
        if count > 0 {
            let t = self.t;
            self.workloads[wi].batches.push(Batch {
                count,
                created_at: t,
                node: None,
                ready_at: INF,
            });
            self.sched_dirty = true;
        }
    }

    fn scale(&mut self, wi: usize, replicas: i64) {
        let mut extra = self.workloads[wi].pod_count() - replicas;
        if extra < 0 {
            self.add_pods(wi, -extra);
        } else if extra > 0 {
            // A ReplicaSet deletes unscheduled pods first, then not-ready, then the newest.
            let t = self.t;
            let w = &mut self.workloads[wi];
            let mut order: Vec<usize> = (0..w.batches.len()).collect();
            let batches = &w.batches;
            order.sort_by(|&x, &y| {
                let (a, b) = (&batches[x], &batches[y]);
                a.node
                    .is_some()
                    .cmp(&b.node.is_some())
                    .then(a.ready(t).cmp(&b.ready(t)))
                    .then(
                        (-a.created_at)
                            .partial_cmp(&-b.created_at)
                            .unwrap_or(Ordering::Equal),
                    )
            });
            for i in order {
                let batch = &mut w.batches[i];
                let take = extra.min(batch.count);
                batch.count -= take;
                if let Some(node) = batch.node {
                    let n = &mut self.nodes[node];
                    n.cpu_requested -= w.cpu_request * take as f64;
                    n.memory_requested -= w.memory_request * take as f64;
                    self.sched_dirty = true;
                }
                extra -= take;
                if extra == 0 {
                    break;
                }
            }
            w.batches.retain(|b| b.count != 0);
        }
    }

    fn schedule(&mut self, t: f64) {
        self.schedule_with(t, self.pod_startup_s);
    }

    /// `Twin._schedule`: bind Pending pods to Ready nodes, Ready `startup` s later.
    fn schedule_with(&mut self, t: f64, startup: f64) {
        self.sched_dirty = false;
        // The working lists kept between calls (cleared here: no allocation per call).
        let mut pending = std::mem::take(&mut self.scratch.pending);
        let mut heap = std::mem::take(&mut self.scratch.heap);
        let mut placed = std::mem::take(&mut self.scratch.placed);
        for wi in 0..self.workloads.len() {
            let w = &self.workloads[wi];
            pending.clear();
            pending.extend((0..w.batches.len()).filter(|&i| w.batches[i].node.is_none()));
            if pending.is_empty() {
                continue;
            }
            let (cpu_req, mem_req) = (w.cpu_request, w.memory_request);
            heap.clear();
            for (i, &id) in self.ready.iter().enumerate() {
                let n = &self.nodes[id];
                if !w.pool_ok[n.pool] {
                    continue;
                }
                if n.fits(w) {
                    let free = 1.0 - n.cpu_requested / n.size.cpu;
                    if free > -1.0 {
                        heap.push(Slot {
                            key: -free,
                            order: i,
                            node: id,
                        });
                    }
                }
            }
            if heap.is_empty() {
                continue;
            }
            let ready_at = t + startup;
            placed.clear();
            let w = &mut self.workloads[wi];
            for &bi in &pending {
                while w.batches[bi].count != 0 {
                    let (best, order) = {
                        let top = heap.peek().expect("heap is not empty");
                        (top.node, top.order)
                    };
                    let node = &mut self.nodes[best];
                    node.cpu_requested += cpu_req;
                    node.memory_requested += mem_req;
                    w.batches[bi].count -= 1;
                    match placed.iter_mut().find(|b| b.node == Some(best)) {
                        Some(bound) => bound.count += 1,
                        None => placed.push(Batch {
                            count: 1,
                            created_at: w.batches[bi].created_at,
                            node: Some(best),
                            ready_at,
                        }),
                    }
                    let node = &self.nodes[best];
                    let free = 1.0 - node.cpu_requested / node.size.cpu;
                    heap.pop();
                    if node.fits(w) && free > -1.0 {
                        heap.push(Slot {
                            key: -free,
                            order,
                            node: best,
                        });
                    } else if heap.is_empty() {
                        break;
                    }
                }
                if heap.is_empty() {
                    break;
                }
            }
            w.batches.retain(|b| b.count != 0);
            w.batches.append(&mut placed);
        }
        self.scratch.pending = pending;
        self.scratch.heap = heap;
        self.scratch.placed = placed;
    }

    fn plan(&mut self, t: f64) -> f64 {
        if !self.changed_pools.is_empty() {
            self.reconcile_pools();
        }
        if self.first_removal <= t {
            self.evict(t);
        }
        if self.nodes_dirty || self.next_node_ready <= t {
            self.refresh_nodes(t);
        }
        if self.sched_dirty {
            self.schedule(t);
        }
        self.current = self.serving_plan(t);
        self.planned_at = t;
        if !self.updates.is_empty() && self.settle_updates(t) {
            return self.plan(t); // a queued update started: plan with its changes
        }
        let mut nxt = self.current.next_pod_event;
        if t < self.first_removal && self.first_removal < nxt {
            nxt = self.first_removal;
        }
        for u in &self.updates {
            if t < u.deadline && u.deadline < nxt {
                nxt = u.deadline;
            }
        }
        if self.next_node_ready < nxt {
            self.next_node_ready
        } else {
            nxt
        }
    }

    /// `Twin._merge_ready`: the Ready batches on each node folded into one, last.
    fn merge_ready(w: &mut Workload, t: f64) {
        let mut rest = Vec::new();
        let mut merged: Vec<Batch> = Vec::new();
        for b in &w.batches {
            if b.node.is_some() && b.ready_at <= t {
                match merged.iter_mut().find(|m| m.node == b.node) {
                    Some(m) => {
                        m.count += b.count;
                        if b.created_at > m.created_at {
                            m.created_at = b.created_at;
                        }
                    }
                    None => merged.push(*b),
                }
            } else {
                rest.push(*b);
            }
        }
        rest.extend(merged);
        w.batches = rest;
    }

    fn serving_plan(&mut self, t: f64) -> Plan {
        // The last plan's lists refilled, and the working lists kept in `scratch`.
        let mut plan = Plan {
            groups: std::mem::take(&mut self.current.groups),
            schedules: std::mem::take(&mut self.current.schedules),
            ..Plan::default()
        };
        plan.groups.clear();
        plan.schedules.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.heater_ready.clear();
        scratch.per_node.clear();
        let Scratch {
            heater_ready,
            per_node,
            ..
        } = &mut scratch;
        let (mut pending, mut desired, mut ready_total) = (0i64, 0i64, 0i64);
        let mut starting = 0i64;
        let (mut requested, mut limit) = (0.0f64, 0.0f64);
        let mut next_event = INF;
        let since = self.planned_at;
        for (wi, w) in self.workloads.iter_mut().enumerate() {
            let done_at = w.rollout_done_at;
            if done_at <= t {
                w.prev_cores = None;
            } else if done_at < next_event {
                next_event = done_at;
            }
            if w.batches.len() > 1
                && w.batches
                    .iter()
                    .any(|b| b.node.is_some() && since < b.ready_at && b.ready_at <= t)
            {
                Self::merge_ready(w, t);
            }
            let heater = w.role == ROLE_HEATER && w.work.is_some();
            let cpu_req = w.cpu_request;
            let mut ready = 0i64;
            for b in &w.batches {
                match b.node {
                    None => pending += b.count,
                    Some(node) if b.ready_at <= t => {
                        let count = b.count;
                        ready += count;
                        if heater {
                            match per_node.iter_mut().find(|e| e.0 == node) {
                                Some(e) => {
                                    e.1 += count;
                                    e.2 += cpu_req * count as f64;
                                }
                                None => per_node.push((node, count, 0.0 + cpu_req * count as f64)),
                            }
                            heater_ready.push((wi, node, count));
                        }
                    }
                    Some(_) => {
                        if b.ready_at < next_event {
                            next_event = b.ready_at;
                        }
                    }
                }
            }
            if heater {
                desired += w.replicas;
                ready_total += ready;
                starting += w.pod_count() - ready;
                requested += cpu_req * ready as f64;
                limit += w.cpu_limit.unwrap_or(f64::NAN) * ready as f64;
            } else if ready != 0 && w.role == ROLE_SIEGE && w.schedule.is_some() {
                plan.schedules.push(wi);
            } else if w.role == ROLE_DATABASE {
                plan.database_ready = ready > 0;
            }
        }
        for &(wi, node, count) in heater_ready.iter() {
            let w = &self.workloads[wi];
            let cores = w.prev_cores.unwrap_or_else(|| w.cores_per_pod());
            let work = w.work.expect("a heater has work");
            let n = &self.nodes[node];
            let (_, on_node, requests) = *per_node
                .iter()
                .find(|e| e.0 == node)
                .expect("counted above");
            let free = n.size.cpu - n.cpu_requested + requests;
            let free = if free > 0.0 { free } else { 0.0 };
            let queries = w.queries;
            let same = |g: &Group| {
                g.workers == w.workers
                    && g.cores == cores
                    && g.work == work
                    && g.queries == queries
                    && g.free == free
                    && g.on_node == on_node
            };
            match plan.groups.iter_mut().find(|g| same(g)) {
                Some(g) => g.count += count,
                None => plan.groups.push(Group {
                    count,
                    workers: w.workers,
                    cores,
                    work,
                    queries,
                    free,
                    on_node,
                }),
            }
        }
        plan.heater_pods = ready_total;
        plan.pods_pending = pending;
        plan.replicas_desired = desired;
        plan.replicas_ready = ready_total;
        plan.replicas_starting = starting;
        plan.requested_cpu = requested;
        plan.limit_cpu = limit;
        plan.nodes_ready = self.ready.len();
        plan.hourly = self.hourly;
        plan.next_pod_event = next_event;
        self.scratch = scratch;
        plan
    }

    fn serve(&mut self, py: Python<'_>, a: f64, b: f64) -> PyResult<()> {
        let plan = &self.current;
        let dt = b - a;
        let mut lam = 0.0;
        for &wi in &plan.schedules {
            let schedule = self.workloads[wi]
                .schedule
                .as_mut()
                .expect("a siege schedule");
            lam += schedule.mean_rate(py, a, b)?;
        }
        let acc = &mut self.acc;
        acc.sent += lam * dt;
        acc.requested_cpu += plan.requested_cpu * dt;
        acc.limit_cpu += plan.limit_cpu * dt;
        if plan.heater_pods == 0 {
            acc.failed += lam * dt; // no endpoints: connections are refused
            return Ok(());
        }
        let lam_pod = round3(lam / plan.heater_pods as f64);
        if lam_pod <= 0.0 {
            return Ok(());
        }
        let mut database_groups: Vec<Group> = Vec::new();
        for g in &plan.groups {
            let Group {
                count,
                workers: c,
                mut cores,
                work,
                queries,
                free,
                on_node,
            } = *g;
            if queries {
                database_groups.push(*g);
                continue;
            }
            let cpu_s = work.cpu_s;
            if on_node as f64 * py_min(lam_pod * cpu_s, cores) > free {
                cores = py_min(cores, free / on_node as f64);
            }
            let mu = py_min(1.0, cores / c as f64) / cpu_s;
            if mu <= 0.0 {
                acc.answered += lam_pod * dt * count as f64;
                acc.failed += lam_pod * dt * count as f64;
                continue;
            }
            let cap = c as f64 * mu;
            let (p50, p95, p99, fail) = if lam_pod >= cap * 0.999 {
                // Saturated: the queue stays full to the timeout; the excess is shed (503).
                let full = work.timeout + 1.0 / mu;
                (full, full, full, 1.0 - cap * 0.999 / lam_pod)
            } else if c == 1 && work.scv == 1.0 {
                // M/M/1, the usual heater pod: Twin._pod_latency's closed form.
                let rate = mu - lam_pod;
                let ceiling = work.timeout + 1.0 / mu;
                let q = &self.exp_quantiles;
                (
                    py_min(q[0] / rate, ceiling),
                    py_min(q[1] / rate, ceiling),
                    py_min(q[2] / rate, ceiling),
                    lam_pod / mu * (-rate * work.timeout).exp(),
                )
            } else {
                let pod_latency = self.pod_latency.as_ref().ok_or_else(|| {
                    PyValueError::new_err("the core was cleared by the garbage collector")
                })?;
                pod_latency
                    .call1(py, (c, mu, lam_pod, work.scv, work.timeout))?
                    .extract::<(f64, f64, f64, f64)>(py)?
            };
            acc.add(lam_pod * dt * count as f64, fail, cpu_s, (p50, p95, p99));
        }
        if !database_groups.is_empty() {
            self.serve_with_database(py, &database_groups, lam_pod, dt)?;
        }
        Ok(())
    }
}

impl Core {
    /// `Twin._serve_with_database`: serve the heater pods whose requests each run one
    /// query on the database.
    ///
    /// A worker waits for its query, so a request holds it for its CPU time plus the
    /// database's response time `R`: the pod is an M/G/c queue with that service time (the
    /// two parts independent, `R` taken as exponential). The database is a queue with `k`
    /// servers (its cores, rounded up) whose sources are the pods' worker processes, each
    /// with at most one query out (`finite_source_response`). When the queries would
    /// overload it, the pods hold them until its throughput and theirs agree: `R` grows
    /// until the pods pass what the database does, and the pods shed the rest (503).
    /// While the database's pod is not Ready, every query fails, and so does its request.
    fn serve_with_database(
        &mut self,
        py: Python<'_>,
        groups: &[Group],
        lam_pod: f64,
        dt: f64,
    ) -> PyResult<()> {
        let db = self.database.expect("querying pods only with a database");
        let acc = &mut self.acc;
        if !self.current.database_ready {
            // no server to connect to: the requests fail
            let pods: i64 = groups.iter().map(|g| g.count).sum();
            let n = lam_pod * dt * pods as f64;
            acc.answered += n;
            acc.failed += n;
            return Ok(());
        }
        let servers = py_max(1.0, db.cores.ceil());
        let query_s = db.query_ms / 1000.0 * servers / db.cores; // CPU shared
                                                                 // (count, workers, CPU seconds a request holds a worker, scv, timeout, CPU s)
        let mut parts: Vec<(i64, i64, f64, f64, f64, f64)> = Vec::new();
        for g in groups {
            let (count, c, cpu_s) = (g.count, g.workers, g.work.cpu_s);
            let mut cores = g.cores;
            if g.on_node as f64 * py_min(lam_pod * cpu_s, cores) > g.free {
                cores = py_min(cores, g.free / g.on_node as f64);
            }
            let speed = py_min(1.0, cores / c as f64);
            if speed <= 0.0 {
                acc.answered += lam_pod * dt * count as f64;
                acc.failed += lam_pod * dt * count as f64;
                continue;
            }
            parts.push((count, c, cpu_s / speed, g.work.scv, g.work.timeout, cpu_s));
        }
        if parts.is_empty() {
            return Ok(());
        }
        let pods_capacity = |response: f64| {
            let mut total = 0.0;
            for &(count, c, hold, ..) in &parts {
                total += (count * c) as f64 / (hold + response);
            }
            total
        };
        let workers: i64 = parts.iter().map(|p| p.0 * p.1).sum();
        let pods: i64 = parts.iter().map(|p| p.0).sum();
        let queries = round3(py_min(lam_pod * pods as f64, pods_capacity(query_s)));
        let mut response = finite_source_response(workers, servers, query_s, queries);
        if response == INF {
            // the database is the bottleneck: the pods pass what it does
            let most = servers / query_s * 0.999;
            response = where_falls_to(&pods_capacity, most, query_s, 1.0);
        }
        let pod_latency = self.pod_latency.as_ref().ok_or_else(|| {
            PyValueError::new_err("the core was cleared by the garbage collector")
        })?;
        for &(count, c, hold, scv, timeout, cpu_s) in &parts {
            let service = hold + response;
            let mu = 1.0 / service;
            let scv_total = (scv * hold * hold + response * response) / (service * service);
            let (p50, p95, p99, fail): (f64, f64, f64, f64) = pod_latency
                .call1(py, (c, mu, lam_pod, scv_total, timeout))?
                .extract(py)?;
            acc.add(lam_pod * dt * count as f64, fail, cpu_s, (p50, p95, p99));
        }
        Ok(())
    }
}

/// `infragym.twin.queueing.finite_source_response`: the mean response time of a queue of
/// `servers` fed by `sources` that each wait for their answer (mean value analysis;
/// Seidmann's approximation for several servers), the think time solved for from
/// `throughput`; infinite when `throughput` is at or above the most the queue passes.
fn finite_source_response(sources: i64, servers: f64, service_s: f64, throughput: f64) -> f64 {
    let queued = service_s / servers;
    let delay = service_s - queued;
    let solve = |think: f64| {
        let (mut waiting, mut response, mut rate) = (0.0, 0.0, 0.0);
        for n in 1..=sources {
            response = queued * (1.0 + waiting);
            rate = n as f64 / (think + delay + response);
            waiting = rate * response;
        }
        (response + delay, rate)
    };
    if throughput <= 0.0 {
        return service_s;
    }
    let most = solve(0.0).1;
    if throughput >= most {
        return INF;
    }
    solve(where_falls_to(
        &|think| solve(think).1,
        throughput,
        0.0,
        service_s,
    ))
    .0
}

/// `infragym.twin.queueing.where_falls_to`: the `x >= low` where a decreasing `f` falls
/// to `target`; brackets by doubling `step`, then bisects 30 times.
fn where_falls_to(f: &dyn Fn(f64) -> f64, target: f64, low: f64, step: f64) -> f64 {
    let (mut low, mut high) = (low, low + step);
    while f(high) > target {
        (low, high) = (high, high + 2.0 * (high - low));
    }
    for _ in 0..30 {
        let mid = (low + high) / 2.0;
        if f(mid) > target {
            low = mid;
        } else {
            high = mid;
        }
    }
    high
}

/// Advance every core by `seconds`, in order, in one call from Python (a vector env's
/// step): the metrics of each, as `Core::advance` returns them.
#[pyfunction]
fn advance_many<'py>(
    py: Python<'py>,
    cores: Vec<Bound<'py, Core>>,
    seconds: f64,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let mut out = Vec::with_capacity(cores.len());
    for core in &cores {
        out.push(core.borrow_mut().advance(py, seconds)?);
    }
    Ok(out)
}

#[pymodule]
fn _twin_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<kernel::EnvBatch>()?;
    m.add_function(wrap_pyfunction!(advance_many, m)?)?;
    Ok(())
}
