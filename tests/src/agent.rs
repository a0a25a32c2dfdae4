//! The agent as a child process: started with the veth plugin and JSON
//! output, stopped with SIGTERM, its stdout parsed into journeys and a
//! summary.

use crate::journey::{Journey, Summary};
use crate::netns::describe;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the agent may take to load and attach before it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The same inside a VM tier guest (`VNT_VM_GUEST`, tests/vm/guest.sh): under
/// software emulation the verifier alone takes seconds per program (4.3 s for
/// one of flannel's on Debian's 6.1), and a run of two plugins loads a dozen.
pub const READY_TIMEOUT_IN_GUEST: Duration = Duration::from_secs(120);

fn ready_timeout() -> Duration {
    if std::env::var_os("VNT_VM_GUEST").is_some() {
        READY_TIMEOUT_IN_GUEST
    } else {
        READY_TIMEOUT
    }
}
/// How long the agent may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Options for one agent run; [`AgentBuilder::start`] starts it.
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    bin: Option<PathBuf>,
    plugins: String,
    sample: (u32, u32),
    filter: Option<String>,
    probes: Option<String>,
    extra: Vec<OsString>,
    output: String,
    capabilities: Option<Vec<&'static str>>,
}

impl AgentBuilder {
    /// `--output FORMAT` (`json` unless set; only [`Agent::stop_lines`]
    /// reads other formats).
    pub fn output(mut self, format: &str) -> Self {
        self.output = format.to_owned();
        self
    }

    /// Runs the agent with exactly these capabilities (`CAP_BPF`, ...)
    /// through `capsh` (crate::privileges), instead of all of root's.
    pub fn capabilities(mut self, caps: &[&'static str]) -> Self {
        self.capabilities = Some(caps.to_vec());
        self
    }

    /// Only the plugins' default probes (no `--probes`). Without this the
    /// tests attach every probe, opt-in ones included, to check every hook.
    pub fn default_probes(mut self) -> Self {
        self.probes = None;
        self
    }

    /// Runs this binary instead of the located one.
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// `--plugins` (default `veth`).
    pub fn plugins(mut self, plugins: impl Into<String>) -> Self {
        self.plugins = plugins.into();
        self
    }

    /// `--sample <n>/<d>` (default `1/1`).
    pub fn sample(mut self, n: u32, d: u32) -> Self {
        self.sample = (n, d);
        self
    }

    /// `--filter <expr>`, e.g. `port 7777`.
    pub fn filter(mut self, expr: impl Into<String>) -> Self {
        self.filter = Some(expr.into());
        self
    }

    /// One more argument, appended after the others.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts the agent and waits until it has written its ready file (up to
    /// [`READY_TIMEOUT`]). Fails with the agent's stderr if it exits first.
    pub fn start(self) -> Result<Agent> {
        let bin = self
            .bin
            .unwrap_or_else(|| crate::locate_binary("vnt-agent", "VNT_AGENT_BIN"));
        let ready_file = crate::temp_path("agent-ready");
        let _ = std::fs::remove_file(&ready_file);

        let mut cmd = match &self.capabilities {
            Some(caps) => crate::privileges::with_only(caps, &bin, std::iter::empty::<&str>())?,
            None => Command::new(&bin),
        };
        cmd.args(["--plugins", &self.plugins, "--output", &self.output])
            .arg("--sample")
            .arg(format!("{}/{}", self.sample.0, self.sample.1));
        if let Some(filter) = &self.filter {
            cmd.arg("--filter").arg(filter);
        }
        if let Some(probes) = &self.probes {
            cmd.arg("--probes").arg(probes);
        }
        cmd.arg("--ready-file").arg(&ready_file).args(&self.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command_line = describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to start `{command_line}`"))?;

        let stdout = child.stdout.take().expect("stdout is piped");
        let stdout_thread = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(std::io::Result::ok)
                .collect::<Vec<_>>()
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_thread = collect_text(
            child.stderr.take().expect("stderr is piped"),
            stderr.clone(),
        );

        let mut agent = Agent {
            child: Some(child),
            command_line,
            ready_file,
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
            stderr,
        };
        agent.wait_ready()?;
        Ok(agent)
    }
}

/// A running agent. Dropping it without [`Agent::stop`] kills it.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    command_line: String,
    ready_file: PathBuf,
    stdout_thread: Option<JoinHandle<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
}

/// What an agent run produced.
#[derive(Debug, Clone)]
pub struct AgentOutput {
    pub journeys: Vec<Journey>,
    pub summary: Summary,
    /// JSON lines of other types, kept verbatim.
    pub other_lines: Vec<String>,
    /// Everything the agent wrote to stderr.
    pub stderr: String,
    pub status: ExitStatus,
}

impl Agent {
    /// Options for a run of the veth plugin, JSON output, every packet
    /// sampled, every probe attached (`--probes all`).
    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            bin: None,
            plugins: "veth".to_owned(),
            sample: (1, 1),
            filter: None,
            probes: Some("all".to_owned()),
            extra: Vec::new(),
            output: "json".to_owned(),
            capabilities: None,
        }
    }

    /// Shorthand: starts the veth plugin with `--filter <filter>` and
    /// `--sample 1/<one_in>`. Use [`Agent::builder`] for more options.
    pub fn start(filter: impl Into<String>, one_in: u32) -> Result<Agent> {
        Agent::builder().filter(filter).sample(1, one_in).start()
    }

    /// The command line it was started with.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the agent has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends SIGTERM, waits for the agent to exit (up to [`STOP_TIMEOUT`],
    /// then SIGKILL and an error) and parses what it printed. A non-zero exit
    /// or a missing summary line is an error.
    pub fn stop(self) -> Result<AgentOutput> {
        let (lines, stderr, status, context) = self.stop_lines()?;
        parse_output(&lines, stderr, status)
            .with_context(|| format!("agent output unusable\n{context}"))
    }

    /// Like [`Agent::stop`], for output that is not JSON (`--output
    /// pretty`): stdout's lines as they are, stderr, the exit status, and
    /// the command line with stderr for messages.
    pub fn stop_lines(mut self) -> Result<(Vec<String>, String, ExitStatus, String)> {
        let mut child = self.child.take().expect("agent is running");
        signal(&child, libc::SIGTERM);
        let status = match wait_timeout(&mut child, STOP_TIMEOUT)? {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.join_threads();
                bail!(
                    "agent did not exit within {STOP_TIMEOUT:?} after SIGTERM (killed)\n{}",
                    self.context()
                );
            }
        };
        let lines = self.join_threads();
        if !status.success() {
            bail!(
                "agent exited with {status} after SIGTERM\n{}",
                self.context()
            );
        }
        Ok((lines, self.stderr(), status, self.context()))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let timeout = ready_timeout();
        let deadline = Instant::now() + timeout;
        loop {
            if self.ready_file.exists() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("agent is running");
            if let Some(status) = child.try_wait()? {
                self.child = None;
                self.join_threads();
                bail!(
                    "agent exited with {status} before it was ready (did it fail to load eBPF?)\n{}",
                    self.context()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "agent not ready after {timeout:?}: no ready file {}\n{}",
                    self.ready_file.display(),
                    self.context()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the output threads (the pipes close when the agent exits);
    /// returns stdout's lines.
    fn join_threads(&mut self) -> Vec<String> {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
        self.stdout_thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("command: {}\nstderr:\n{}", self.command_line, self.stderr())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.ready_file);
    }
}

fn parse_output(lines: &[String], stderr: String, status: ExitStatus) -> Result<AgentOutput> {
    let mut journeys = Vec::new();
    let mut summary = None;
    let mut other_lines = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("stdout line {} is not JSON: {line}", i + 1))?;
        match value.get("type").and_then(|t| t.as_str()) {
            Some("journey") => journeys.push(
                serde_json::from_value(value)
                    .with_context(|| format!("stdout line {} is not a journey: {line}", i + 1))?,
            ),
            Some("summary") => {
                summary =
                    Some(serde_json::from_value(value).with_context(|| {
                        format!("stdout line {} is not a summary: {line}", i + 1)
                    })?)
            }
            _ => other_lines.push(line.to_owned()),
        }
    }
    let Some(summary) = summary else {
        bail!(
            "no summary line among {} stdout lines ({} journeys)",
            lines.len(),
            journeys.len()
        );
    };
    Ok(AgentOutput {
        journeys,
        summary,
        other_lines,
        stderr,
        status,
    })
}

/// Appends everything `from` produces to `into`, on a thread.
pub(crate) fn collect_text(
    from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_str(&line);
            line.clear();
        }
    })
}

/// Sends `sig` to the child if it has not been reaped.
pub(crate) fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
    // SAFETY: kill has no memory-safety preconditions; the child is not yet
    // reaped, so the pid still names it.
    unsafe { libc::kill(pid, sig) };
}

/// `Child::wait` with a deadline: `None` if it is still running after `timeout`.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
