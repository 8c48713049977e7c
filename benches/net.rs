//! `cargo bench --bench net`: hostsock against tokio::net (or tokio's
//! `AsyncFd` plus libc where tokio has no API) and raw blocking syscalls, on
//! loopback, in one process and one run. Prints a markdown table: each
//! figure is the median of interleaved repetitions (each repetition runs
//! every scenario once per implementation, the implementations' order
//! rotating; the noisiest scenarios run two to five times per
//! repetition; the unpinned reuseport scenarios show their best run), with
//! its ratio to tokio and to raw, the heap allocations
//! per message, the loss, and the targets with PASS/MISS marks.
//!
//! Environment:
//! - `HOSTSOCK_BENCH_QUICK=1`: a short run (2 repetitions of 50 ms runs),
//!   also what a run without `--bench` does (`cargo test --all-targets`);
//! - `HOSTSOCK_BENCH_REPS=n`, `HOSTSOCK_BENCH_TIME_MS=n`: repetitions and
//!   the time limit of each run (default 7 and 400);
//! - `HOSTSOCK_BENCH_FILTER=text`: only the scenarios whose name contains
//!   `text` (`=text`: whose name is `text`);
//! - `HOSTSOCK_BENCH_ONLY=hostsock|tokio|raw`, `HOSTSOCK_BENCH_MSGS=n`,
//!   `HOSTSOCK_BENCH_WARMUP=0`: one implementation, at most `n` messages a
//!   run, no warm-up (for counting instructions under callgrind).

mod common;

use std::io;
use std::time::{Duration, Instant};

use common::cost::{Cost, cost};
use common::flood::{Flood, flood};
use common::pingpong::pingpong;
use common::reuseport::reuseport;
use common::tcp;
use common::{Imp, Outcome, Params};

// ------------------------------------------------------------ scenarios

/// How a figure reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Per second, higher is better; the name of the thing counted.
    Rate(&'static str),
    /// Bytes per second, higher is better.
    Bytes,
    /// Nanoseconds, lower is better.
    Nanos,
}

impl Unit {
    fn higher_is_better(self) -> bool {
        !matches!(self, Unit::Nanos)
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::Rate(what) if v >= 1e6 => format!("{:.2}M {what}/s", v / 1e6),
            Unit::Rate(what) if v >= 1e3 => format!("{:.1}k {what}/s", v / 1e3),
            Unit::Rate(what) => format!("{v:.0} {what}/s"),
            Unit::Bytes => format!("{:.2} GB/s", v / 1e9),
            Unit::Nanos if v >= 10_000.0 => format!("{:.1} µs", v / 1e3),
            Unit::Nanos => format!("{v:.0} ns"),
        }
    }
}

/// A target on the hostsock row of a scenario.
#[derive(Clone)]
enum Target {
    /// At least this fast as the tokio row of the same scenario (for a
    /// nanosecond figure: at most 1/x of its cost).
    VsTokio(f64),
    /// At most this multiple of the raw row's cost (nanosecond figures).
    CostVsRaw(f64),
    /// At least `x` times the tokio row of another scenario (by name);
    /// `None`: the ratio is shown, not marked.
    VsOther(&'static str, String, Option<f64>),
    /// Shown, not marked: the ratio to the hostsock row of another scenario.
    Info(&'static str, String),
}

type Run = Box<dyn Fn(Imp, &Params) -> io::Result<Outcome>>;

struct Scenario {
    section: &'static str,
    name: String,
    unit: Unit,
    run: Run,
    targets: Vec<Target>,
    /// A second figure of the same runs (`Outcome::value2`): its name and
    /// unit. Shown, not marked.
    second: Option<(String, Unit)>,
    /// Runs per implementation in each repetition (more for the noisiest
    /// scenarios).
    runs: usize,
    /// Allocations are per connection, not per message: shown next to
    /// tokio::net's (each new socket is registered with tokio's reactor,
    /// which allocates), not marked against 0.
    allocs_like_tokio: bool,
    /// The figure is the best run, not the median (see [`Scenario::best`]).
    best: bool,
}

impl Scenario {
    fn new(
        section: &'static str,
        name: impl Into<String>,
        unit: Unit,
        run: Run,
        targets: Vec<Target>,
    ) -> Scenario {
        Scenario {
            section,
            name: name.into(),
            unit,
            run,
            targets,
            second: None,
            runs: 1,
            allocs_like_tokio: false,
            best: false,
        }
    }

    fn second(mut self, name: &str, unit: Unit) -> Scenario {
        self.second = Some((name.into(), unit));
        self
    }

    fn runs(mut self, runs: usize) -> Scenario {
        self.runs = runs;
        self
    }

    /// The figure of each implementation is its best run: for scenarios
    /// whose threads are not pinned, where the runs fall into two modes by
    /// where the scheduler puts the threads, and a median compares whichever
    /// mode each implementation happened to get more often.
    fn best(mut self) -> Scenario {
        self.best = true;
        self
    }

    /// The figure of a list of runs: the median, or the best run.
    fn figure(&self, unit: Unit, v: &[f64]) -> Option<f64> {
        if !self.best {
            return median(v);
        }
        let pick = if unit.higher_is_better() {
            f64::max
        } else {
            f64::min
        };
        v.iter().copied().reduce(pick)
    }

    fn allocs_like_tokio(mut self) -> Scenario {
        self.allocs_like_tokio = true;
        self
    }
}

fn scenarios() -> Vec<Scenario> {
    let mut v = Vec::new();
    let dgram = Unit::Rate("dgram");
    let single_path = Target::VsTokio(0.97);
    for size in [64usize, 1200] {
        let sec = if size == 64 {
            "UDP one-way flood, 64 B (sender on CPU 0, receiver on CPU 1)"
        } else {
            "UDP one-way flood, 1200 B (sender on CPU 0, receiver on CPU 1)"
        };
        let single = format!("flood {size} B: send/recv");
        let many = if size == 64 { 15.0 } else { 10.0 };
        let vs_single = |x| Target::VsOther("tokio::net send/recv", single.clone(), x);
        let run = |kind| -> Run { Box::new(move |i, p| flood(i, kind, size, p)) };
        // The single-message floods sit near parity with tokio, with a
        // run-to-run spread of a few percent: two runs a repetition.
        v.push(
            Scenario::new(
                sec,
                &single,
                dgram,
                run(Flood::Single),
                vec![single_path.clone()],
            )
            .runs(2),
        );
        v.push(
            Scenario::new(
                sec,
                format!("flood {size} B: send_msg/recv_msg PKTINFO+TOS"),
                dgram,
                run(Flood::Msg),
                vec![single_path.clone()],
            )
            .runs(2),
        );
        v.push(Scenario::new(
            sec,
            format!("flood {size} B: batch x32 sendmmsg/recvmmsg"),
            dgram,
            run(Flood::Batch),
            // The "batched + GSO/GRO" target is the GSO+GRO row
            // (GSO sends, GRO into recvmmsg); plain mmsg batches show their
            // ratio (the kernel's per-datagram work bounds them: raw mmsg
            // is no faster).
            vec![Target::VsTokio(0.97), vs_single(None)],
        ));
        v.push(Scenario::new(
            sec,
            format!("flood {size} B: GSO x32 + GRO"),
            dgram,
            run(Flood::Gso),
            vec![vs_single(Some(many))],
        ));
    }
    v.push(
        Scenario::new(
            "UDP ping-pong, 64 B, all on CPU 0 (async: one current_thread runtime; raw: two threads)",
            "ping-pong 64 B: round trip p50",
            Unit::Nanos,
            Box::new(pingpong),
            vec![single_path.clone()],
        )
        .second("ping-pong 64 B: round trip p99", Unit::Nanos),
    );
    let cpu = "CPU per datagram, one thread on CPU 0, pre-filled queue (64 B)";
    for (name, kind, targets) in [
        ("cpu: recv", Cost::Recv, vec![single_path.clone()]),
        (
            "cpu: recv_msg PKTINFO+TOS",
            Cost::RecvMsg,
            vec![single_path.clone(), Target::CostVsRaw(1.05)],
        ),
        ("cpu: send", Cost::Send, vec![single_path.clone()]),
        (
            "cpu: send_msg PKTINFO+TOS",
            Cost::SendMsg,
            vec![single_path.clone()],
        ),
    ] {
        v.push(Scenario::new(
            cpu,
            name,
            Unit::Nanos,
            Box::new(move |i, p| cost(i, kind, p)),
            targets,
        ));
    }
    let t = "TCP (bulk: writer CPU 0, reader CPU 1; accept: server CPU 1, client CPU 0; echo: all on CPU 0)";
    v.push(
        Scenario::new(
            t,
            "tcp: bulk, 64 KiB writes",
            Unit::Bytes,
            Box::new(tcp::bulk),
            vec![Target::VsTokio(0.97)],
        )
        .second("tcp: bulk, CPU per 64 KiB (writer+reader)", Unit::Nanos)
        .runs(5),
    );
    v.push(
        Scenario::new(
            t,
            "tcp: accept+close",
            Unit::Rate("conn"),
            Box::new(tcp::accept),
            vec![Target::VsTokio(0.97)],
        )
        .allocs_like_tokio(),
    );
    for conns in [1usize, 64] {
        v.push(Scenario::new(
            t,
            format!("tcp: echo 64 B, {conns} conn"),
            Unit::Rate("txn"),
            Box::new(move |i, p| tcp::echo(i, conns, p)),
            vec![Target::VsTokio(0.97)],
        ));
    }
    let r =
        "One socket per core: UDP 64 B, SO_REUSEPORT, two-worker runtime, one GSO sender thread";
    let one = "reuseport: 1 socket";
    v.push(
        Scenario::new(
            r,
            one,
            dgram,
            Box::new(|i, p| reuseport(i, 1, p)),
            vec![single_path.clone()],
        )
        .runs(3)
        .best(),
    );
    v.push(
        Scenario::new(
            r,
            "reuseport: 2 sockets, one per worker",
            dgram,
            Box::new(|i, p| reuseport(i, 2, p)),
            vec![single_path, Target::Info("vs 1 socket", one.into())],
        )
        .runs(3)
        .best(),
    );
    v
}

// ------------------------------------------------------------ measuring

/// What the environment asks for.
struct Config {
    quick: bool,
    reps: usize,
    params: Params,
    warmup: Option<Params>,
    filter: String,
    only: String,
}

impl Config {
    fn from_env() -> Config {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        // `cargo bench` passes `--bench`; without it (`cargo test
        // --all-targets` runs this binary too) only the quick run is done.
        let benching = std::env::args().any(|a| a == "--bench");
        let quick = !benching
            || std::env::var("HOSTSOCK_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let time_ms = num("HOSTSOCK_BENCH_TIME_MS").unwrap_or(if quick { 50 } else { 400 });
        let warm = num("HOSTSOCK_BENCH_WARMUP").unwrap_or(1) != 0;
        Config {
            quick,
            reps: num("HOSTSOCK_BENCH_REPS").unwrap_or(if quick { 2 } else { 7 }) as usize,
            params: Params {
                msgs: num("HOSTSOCK_BENCH_MSGS").unwrap_or(u64::MAX),
                time: Duration::from_millis(time_ms),
            },
            warmup: warm.then(|| Params {
                msgs: 2000,
                time: Duration::from_millis(time_ms / 5),
            }),
            filter: std::env::var("HOSTSOCK_BENCH_FILTER").unwrap_or_default(),
            only: std::env::var("HOSTSOCK_BENCH_ONLY").unwrap_or_default(),
        }
    }

    fn wants(&self, s: &Scenario) -> bool {
        match self.filter.strip_prefix('=') {
            Some(exact) => s.name == exact,
            None => s.name.contains(&self.filter),
        }
    }

    fn runs(&self, imp: Imp) -> bool {
        self.only.is_empty() || imp.name() == self.only
    }
}

/// Every run of one implementation in one scenario.
#[derive(Default)]
struct Samples {
    values: Vec<f64>,
    values2: Vec<f64>,
    allocs_per_msg: Vec<f64>,
    loss: Vec<f64>,
    /// Notes, each with its run's figure.
    notes: Vec<(f64, String)>,
    errors: Vec<String>,
}

impl Samples {
    fn record(&mut self, imp: Imp, r: io::Result<Outcome>) {
        match r {
            Ok(o) => {
                self.values.push(o.value);
                self.values2.push(o.value2);
                self.allocs_per_msg.push(o.allocs_per_msg());
                self.loss.push(o.loss());
                if !o.note.is_empty() {
                    self.notes.push((o.value, o.note));
                }
            }
            Err(e) => self.errors.push(format!("{}: {e}", imp.name())),
        }
    }

    /// The most allocations per message of any run.
    fn max_allocs(&self) -> f64 {
        self.allocs_per_msg.iter().copied().fold(0.0, f64::max)
    }
}

/// Runs every chosen scenario: a warm-up pass, then the repetitions, each
/// scenario's implementations in an order that rotates.
fn measure(chosen: &[&Scenario], cfg: &Config) -> Vec<[Samples; 3]> {
    let started = Instant::now();
    if let Some(w) = &cfg.warmup {
        for sc in chosen {
            for imp in Imp::ALL.into_iter().filter(|&i| cfg.runs(i)) {
                let _ = (sc.run)(imp, w);
            }
        }
    }
    let mut samples: Vec<[Samples; 3]> = chosen.iter().map(|_| Default::default()).collect();
    for rep in 0..cfg.reps {
        for (k, sc) in chosen.iter().enumerate() {
            for j in (0..3).cycle().take(3 * sc.runs) {
                let i = (j + rep + k) % 3;
                let imp = Imp::ALL[i];
                if cfg.runs(imp) {
                    samples[k][i].record(imp, (sc.run)(imp, &cfg.params));
                }
            }
        }
        eprintln!(
            "repetition {}/{} done at {:.0} s",
            rep + 1,
            cfg.reps,
            started.elapsed().as_secs_f64()
        );
    }
    samples
}

// ------------------------------------------------------------ reporting

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// One target's cell: the text and whether it passed (`None`: not marked).
fn judge(
    t: &Target,
    unit: Unit,
    mine: f64,
    tokio: Option<f64>,
    raw: Option<f64>,
    other: Option<f64>,
) -> (String, Option<bool>) {
    let speedup = |theirs: f64| {
        if unit.higher_is_better() {
            mine / theirs
        } else {
            theirs / mine
        }
    };
    match (t, tokio, raw, other) {
        (Target::VsTokio(x), Some(tk), _, _) if unit.higher_is_better() => {
            let r = mine / tk;
            (format!("≥{x}x tokio: {r:.3}x"), Some(r >= *x))
        }
        (Target::VsTokio(x), Some(tk), _, _) => {
            let (r, max) = (mine / tk, 1.0 / x);
            (format!("≤{max:.3}x tokio cost: {r:.3}x"), Some(r <= max))
        }
        (Target::CostVsRaw(x), _, Some(rw), _) => {
            let r = mine / rw;
            (format!("≤{x}x raw cost: {r:.3}x"), Some(r <= *x))
        }
        (Target::VsOther(label, _, Some(x)), _, _, Some(o)) => {
            let r = speedup(o);
            (format!("≥{x}x {label}: {r:.1}x"), Some(r >= *x))
        }
        (Target::VsOther(label, _, None), _, _, Some(o)) => {
            (format!("{label}: {:.1}x", speedup(o)), None)
        }
        (Target::Info(label, _), _, _, Some(o)) => (format!("{label}: {:.2}x", speedup(o)), None),
        (Target::Info(label, _), ..) => (format!("{label}: no figure"), None),
        _ => ("no figure to compare with".into(), None),
    }
}

/// Prints the tables; returns the misses.
fn report(chosen: &[&Scenario], samples: &[[Samples; 3]]) -> Vec<String> {
    let by_name = |name: &str, i: usize| {
        let k = chosen.iter().position(|s| s.name == name)?;
        chosen[k].figure(chosen[k].unit, &samples[k][i].values)
    };
    let mut misses = Vec::new();
    let mut section = "";
    for (k, sc) in chosen.iter().enumerate() {
        if sc.section != section {
            section = sc.section;
            println!("\n### {section}\n");
            let figure = if sc.best { "best run" } else { "median" };
            println!(
                "| scenario | impl | {figure} | min–max | x tokio | x raw | allocs/msg | loss | targets |"
            );
            println!("|---|---|---|---|---|---|---|---|---|");
        }
        type Pick = fn(&Samples) -> &Vec<f64>;
        let mut rows: Vec<(&str, Unit, Pick, bool)> =
            vec![(&sc.name, sc.unit, |s| &s.values, true)];
        if let Some((name, unit)) = &sc.second {
            rows.push((name, *unit, |s| &s.values2, false));
        }
        for (name, unit, pick, marked) in rows {
            let m: Vec<Option<f64>> = samples[k]
                .iter()
                .map(|s| sc.figure(unit, pick(s)))
                .collect();
            for (i, imp) in Imp::ALL.into_iter().enumerate() {
                let s = &samples[k][i];
                let Some(val) = m[i] else {
                    if !s.errors.is_empty() {
                        println!(
                            "| {name} | {} | ERROR | | | | | | {} |",
                            imp.name(),
                            s.errors.join("; ")
                        );
                        misses.push(format!("{name} / {}: no figure", imp.name()));
                    }
                    continue;
                };
                let vals = pick(s);
                let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = vals.iter().copied().fold(0.0, f64::max);
                let ratio = |j: usize| match m[j] {
                    _ if i == j => "1".to_string(),
                    Some(o) if o > 0.0 => format!("{:.2}x", val / o),
                    _ => "–".into(),
                };
                let apm = s.max_allocs();
                let allocs = if apm == 0.0 {
                    "0".into()
                } else {
                    format!("{apm:.4}")
                };
                let loss = match median(&s.loss) {
                    Some(l) if l >= 0.001 => format!("{:.1}%", l * 100.0),
                    Some(l) if l > 0.0 => format!("{:.3}%", l * 100.0),
                    Some(_) => "0".into(),
                    None => String::new(),
                };
                let mut cells = Vec::new();
                if imp == Imp::Hostsock && marked {
                    for t in &sc.targets {
                        let other = match t {
                            Target::VsOther(_, n, _) => by_name(n, 1),
                            Target::Info(_, n) => by_name(n, 0),
                            _ => None,
                        };
                        let (text, pass) = judge(t, unit, val, m[1], m[2], other);
                        cells.push(mark(&mut misses, name, text, pass));
                    }
                    let tokio = &samples[k][1];
                    let (text, ok) = if !sc.allocs_like_tokio {
                        ("0 allocs".to_string(), Some(apm == 0.0))
                    } else if tokio.values.is_empty() {
                        ("allocs/conn: no tokio figure".to_string(), None)
                    } else {
                        // Shown, not marked: the allocation target
                        // is per message, and these are tokio's reactor's
                        // (one registration per socket, released in
                        // batches), whose count swaps from run to run.
                        let tk = tokio.max_allocs();
                        let text = format!("allocs/conn: {apm:.2} (tokio {tk:.2})");
                        (text, None)
                    };
                    cells.push(mark(&mut misses, name, text, ok));
                }
                // The note of the run nearest the figure.
                let near = |n: &&(f64, String)| (n.0 - val).abs();
                cells.extend(
                    s.notes
                        .iter()
                        .min_by(|a, b| near(a).total_cmp(&near(b)))
                        .map(|n| n.1.clone()),
                );
                if !s.errors.is_empty() {
                    cells.push(format!("errors: {}", s.errors.join("; ")));
                }
                println!(
                    "| {name} | {} | {} | {}–{} | {} | {} | {allocs} | {loss} | {} |",
                    imp.name(),
                    unit.format(val),
                    unit.format(lo),
                    unit.format(hi),
                    ratio(1),
                    ratio(2),
                    cells.join("; ")
                );
            }
        }
    }
    misses
}

/// A target cell with its mark; a miss is remembered.
fn mark(misses: &mut Vec<String>, name: &str, text: String, pass: Option<bool>) -> String {
    match pass {
        Some(true) => format!("{text} PASS"),
        Some(false) => {
            misses.push(format!("{name}: {text}"));
            format!("{text} **MISS**")
        }
        None => text,
    }
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "?".into());
    format!("nproc {nproc}, kernel {kernel}, {rustc}")
}

fn main() {
    let cfg = Config::from_env();
    let all = scenarios();
    let chosen: Vec<&Scenario> = all.iter().filter(|s| cfg.wants(s)).collect();
    let started = Instant::now();
    println!("# hostsock benchmarks (benches/net.rs)\n");
    println!(
        "{}; {} interleaved repetitions of runs limited to {} ms{}",
        machine(),
        cfg.reps,
        cfg.params.time.as_millis(),
        if cfg.quick { " (quick)" } else { "" }
    );
    let samples = measure(&chosen, &cfg);
    let misses = report(&chosen, &samples);
    println!();
    if misses.is_empty() {
        println!("All targets met.");
    } else {
        println!("Targets missed ({}):", misses.len());
        for m in &misses {
            println!("- {m}");
        }
    }
    println!(
        "\nWhole run: {:.0} s. x tokio / x raw: this row's figure (median; best run for reuseport) over that row's \
         (for ns figures lower is better); allocs/msg: the most of any run \
         (per connection for accept, per 64 KiB write for bulk, per transaction for echo).",
        started.elapsed().as_secs_f64()
    );
}
