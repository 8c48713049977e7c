//! Network namespaces for the fault and load tests, and child processes
//! that run one role of a test inside one of them.
//!
//! A test makes its namespaces itself (unique names: a tag and the pid),
//! joins two with a veth pair, and deletes them when its guard drops (also
//! when the test fails: the veth pair and every socket inside go with the
//! namespaces). The addresses (10.200.0.1 and 10.200.0.2) exist only
//! inside those namespaces.
//!
//! The test process itself stays in the host's namespace. What runs inside
//! a namespace is a child: `ip netns exec NS <this test binary> --exact
//! <child test> --nocapture` with an environment variable naming its role.
//! A child prints `READY ...` when it is ready for its peer, `FIGURE ...`
//! lines for the report, and `ROLE-DONE <role>` when it finished: a child
//! whose test filter matched nothing would exit 0 without that line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::process::{Child as ProcChild, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that names a child's role.
pub const ROLE_VAR: &str = "HOSTSOCK_TEST_ROLE";

/// The address of namespace A's end of the veth pair.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The address of namespace B's end.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

/// Is the effective uid 0? Read from `/proc/self/status` (no libc call).
pub fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .is_some_and(|euid| euid == "0")
}

fn tool_works(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Why a namespace test cannot run here, if it cannot: not root, or a tool
/// missing. `tools` lists what the test needs besides `ip`.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    if !tool_works("ip", "-V") {
        return Some("`ip` (iproute2) is not installed".into());
    }
    for t in tools {
        let arg = if *t == "strace" { "-V" } else { "--version" };
        if !tool_works(t, arg) {
            return Some(format!(
                "`{t}` is not installed (apt-get install -y nftables iptables strace)"
            ));
        }
    }
    None
}

/// Runs a command and panics with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command with `input` on its stdin and panics if it fails.
pub fn run_with_input(program: &str, args: &[&str], input: &str) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}\ninput:\n{input}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file path in the temp dir, removed on drop (also when a test fails).
#[derive(Debug)]
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// `<tmp>/hostsock-<tag>-<pid>.<ext>`.
    pub fn new(tag: &str, ext: &str) -> TempPath {
        TempPath(std::env::temp_dir().join(format!("hostsock-{tag}-{}.{ext}", std::process::id())))
    }

    pub fn as_str(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Makes namespace `hs<tag><pid><suffix>` with loopback up.
    pub fn new(tag: &str, suffix: &str) -> Netns {
        let name = format!("hs{tag}{}{suffix}", std::process::id());
        // A namespace left over by an earlier run with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args` inside this namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Sets `/proc/sys/<key>` (a per-namespace sysctl, e.g.
    /// `net/ipv4/icmp_ratelimit`) inside this namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sh", &["-c", &format!("echo {value} > /proc/sys/{key}")]);
    }

    /// No ICMP rate limit inside this namespace: a fault test that sends
    /// many rejections in a row must get an answer for each (Linux allows
    /// a burst of 6 ICMP errors per peer, then one per second).
    pub fn no_icmp_ratelimit(&self) {
        self.sysctl("net/ipv4/icmp_ratelimit", "0");
        self.sysctl("net/ipv4/icmp_msgs_per_sec", "100000");
        self.sysctl("net/ipv4/icmp_msgs_burst", "100000");
    }

    /// Loads an nftables script inside this namespace.
    pub fn nft(&self, script: &str) {
        run_with_input(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            script,
        );
    }

    /// The namespace's whole nftables ruleset, with counters.
    pub fn nft_list(&self) -> String {
        self.exec("nft", &["list", "ruleset"])
    }

    /// One line of `/proc/net/snmp` as name → value, read by a process
    /// inside this namespace (`/proc/net` follows the reader's namespace).
    pub fn snmp(&self, proto: &str) -> Vec<(String, u64)> {
        parse_snmp(&self.exec("cat", &["/proc/net/snmp"]), proto)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The `proto` rows of a `/proc/net/snmp` text (a header line, then a
/// value line) as name → value pairs.
pub fn parse_snmp(text: &str, proto: &str) -> Vec<(String, u64)> {
    let prefix = format!("{proto}:");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert!(rows.len() >= 2, "no {proto} rows in /proc/net/snmp");
    let names = rows[0].split_whitespace().skip(1);
    let values = rows[1].split_whitespace().skip(1);
    names
        .zip(values)
        .map(|(n, v)| (n.to_string(), v.parse().expect("snmp value")))
        .collect()
}

/// The value of `name` in parsed snmp rows.
pub fn snmp_get(rows: &[(String, u64)], name: &str) -> u64 {
    rows.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} in snmp"))
        .1
}

/// Two namespaces joined by a veth pair: A has 10.200.0.1/24, B has
/// 10.200.0.2/24. Both are deleted on drop (the veth pair with them).
#[derive(Debug)]
pub struct NsPair {
    pub a: Netns,
    pub b: Netns,
}

impl NsPair {
    pub fn new(tag: &str) -> NsPair {
        let started = Instant::now();
        let a = Netns::new(tag, "a");
        let b = Netns::new(tag, "b");
        let va = format!("{}v", a.name);
        let vb = format!("{}v", b.name);
        run(
            "ip",
            &[
                "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
                &b.name,
            ],
        );
        a.ip(&["addr", "add", "10.200.0.1/24", "dev", &va]);
        b.ip(&["addr", "add", "10.200.0.2/24", "dev", &vb]);
        a.ip(&["link", "set", &va, "up"]);
        b.ip(&["link", "set", &vb, "up"]);
        println!(
            "namespaces {} and {} joined by a veth pair in {:?}",
            a.name,
            b.name,
            started.elapsed()
        );
        NsPair { a, b }
    }
}

/// A child process running one role inside a namespace. Killed on drop.
#[derive(Debug)]
pub struct Child {
    pub role: String,
    child: ProcChild,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    all: Arc<Mutex<Vec<String>>>,
    /// One message per output reader that reached end of file.
    readers_done: Receiver<()>,
}

/// Starts `role` in namespace `ns` (or in the host's namespace when `ns`
/// is `None`): this test binary, filtered to `test`, with `env` set.
/// `wrapper` goes before the binary (e.g. `strace` and its options).
pub fn spawn_role(
    ns: Option<&Netns>,
    test: &str,
    role: &str,
    env: &[(&str, String)],
    wrapper: &[&str],
) -> Child {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name]);
            c.args(wrapper);
            c.arg(&exe);
            c
        }
        None if wrapper.is_empty() => Command::new(&exe),
        None => {
            let mut c = Command::new(wrapper[0]);
            c.args(&wrapper[1..]);
            c.arg(&exe);
            c
        }
    };
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {role}: {e}"));
    let (tx, lines) = channel();
    let (done_tx, readers_done) = channel();
    let all = Arc::new(Mutex::new(Vec::new()));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    {
        let all = all.clone();
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                all.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
            let _ = done_tx.send(());
        });
    }
    {
        let all = all.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                all.lock().unwrap().push(format!("stderr: {line}"));
            }
            let _ = done_tx.send(());
        });
    }
    Child {
        role: role.to_string(),
        stdin: child.stdin.take(),
        child,
        lines,
        all,
        readers_done,
    }
}

impl Child {
    /// Waits (at most `within`) for a line starting with `prefix`, and
    /// returns the rest of it.
    pub fn wait_line(&mut self, prefix: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // libtest may print `test NAME ... ` in front of the
                    // first line a test prints.
                    if let Some((_, rest)) = line.split_once(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no `{prefix}` line within {within:?}; output so far:\n{}",
                        self.role,
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.wait();
                    self.wait_readers();
                    panic!(
                        "{}: exited before a `{prefix}` line; output:\n{}",
                        self.role,
                        self.output()
                    )
                }
            }
        }
    }

    /// Waits (at most 5 s) until both output readers reached end of file.
    fn wait_readers(&self) {
        let until = Instant::now() + Duration::from_secs(5);
        for _ in 0..2 {
            let left = until.saturating_duration_since(Instant::now());
            if self.readers_done.recv_timeout(left).is_err() {
                break;
            }
        }
    }

    /// Everything the child printed so far.
    pub fn output(&self) -> String {
        self.all.lock().unwrap().join("\n")
    }

    /// Closes the child's stdin (a role that waits for its end stops).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("flush");
    }

    /// Waits (at most `within`) for the child to exit; panics unless it
    /// exited 0 after printing `ROLE-DONE <role>`. Returns its output,
    /// which is also printed (indented) for the report.
    pub fn finish(mut self, within: Duration) -> String {
        self.close_stdin();
        let until = Instant::now() + within;
        let status = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(s) => break s,
                None if Instant::now() >= until => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!(
                        "{}: still running after {within:?}; output:\n{}",
                        self.role,
                        self.output()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        // The readers end at EOF, right after the exit.
        self.wait_readers();
        let text = self.output();
        for line in text.lines() {
            if !line.is_empty() && !line.starts_with("running ") && !line.starts_with("test result")
            {
                println!("  [{}] {line}", self.role);
            }
        }
        assert!(status.success(), "{}: exited with {status}", self.role);
        assert!(
            text.contains(&format!("ROLE-DONE {}", self.role)),
            "{}: no ROLE-DONE line (did the test filter match?)",
            self.role
        );
        text
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The value after `FIGURE <key>` (up to the end of the line) in a
/// child's output.
pub fn figure<'a>(output: &'a str, key: &str) -> &'a str {
    let prefix = format!("FIGURE {key} ");
    output
        .lines()
        .find_map(|l| l.split_once(&prefix).map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("no `FIGURE {key}` in:\n{output}"))
}
