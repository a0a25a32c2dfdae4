//! The kernel matrix: Debian's stock kernels booted under virtme-ng with
//! software emulation (TCG; KVM guests hang on the project's machines), the
//! host's file system shared read-only, so the freshly built agent, plugins
//! and test binaries run inside as they are.
//!
//! A [`Guest`] runs a list of [`Step`]s (shell commands, usually test
//! binaries) through `tests/vm/guest.sh` and returns each step's exit code
//! and output, which the guest writes to a host directory shared writable
//! (`--rwdir`). Nothing here skips: a missing emulator, kernel or virtme-ng
//! is an error that says which script installs it.
//!
//! Kernels come from `scripts/vm-kernel.sh` (downloaded once, cached in
//! `${VNT_CACHE_DIR:-$HOME/.cache/vnt}/kernels`); virtme-ng from
//! `scripts/install-vm-deps.sh` (a venv in the same cache).

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The project's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VNT_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/vnt")
}

/// The `vng` launcher: `$VNT_VNG`, else the venv `scripts/install-vm-deps.sh` makes.
pub fn vng() -> Result<PathBuf> {
    let path = std::env::var_os("VNT_VNG")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("virtme-ng/bin/vng"));
    if !path.is_file() {
        bail!(
            "virtme-ng is not installed ({} is missing): run scripts/install-vm-deps.sh as root",
            path.display()
        );
    }
    Ok(path)
}

/// A Debian kernel package, unpacked (`scripts/vm-kernel.sh`).
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `6.1` or `6.12`.
    pub series: String,
    /// Directory of the unpacked package.
    pub dir: PathBuf,
    /// `uname -r` inside the guest.
    pub release: String,
    /// Debian package name and version.
    pub package: String,
    /// The kernel image (inside the unpacked tree, so virtme-ng finds the modules beside it).
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration.
    pub config: PathBuf,
}

impl Kernel {
    /// The cached kernel of `series`, downloading it the first time.
    pub fn fetch(series: &str) -> Result<Kernel> {
        let script = crate::workspace_root().join("scripts/vm-kernel.sh");
        let out = Command::new(&script)
            .arg(series)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("failed to run {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} {series} failed ({}); it downloads Debian's kernel package with apt-get",
                script.display(),
                out.status
            );
        }
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map(|s| s.trim().to_owned())
                .with_context(|| format!("{} has no {f}", dir.display()))
        };
        let release = read("release")?;
        let package = read("package")?;
        let vmlinuz = dir.join("root/boot").join(format!("vmlinuz-{release}"));
        let config = dir.join("root/boot").join(format!("config-{release}"));
        if !vmlinuz.is_file() {
            bail!("{} is missing", vmlinuz.display());
        }
        Ok(Kernel {
            series: series.to_owned(),
            dir,
            release,
            package,
            vmlinuz,
            config,
        })
    }

    /// Whether the kernel was built with `option=y`.
    pub fn config_is_y(&self, option: &str) -> bool {
        std::fs::read_to_string(&self.config)
            .is_ok_and(|c| c.lines().any(|l| l == format!("{option}=y")))
    }
}

/// A command the guest runs (with `sh -c`), logged under `name`.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub command: String,
}

/// How one step ended.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub name: String,
    /// `None`: the guest never finished it.
    pub code: Option<i32>,
    /// Its stdout and stderr.
    pub log: String,
}

impl StepResult {
    /// The last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    /// Everything on the serial console (kernel messages included).
    pub console: String,
    /// The shared directory: step logs, and reports tests leave in `$VNT_REPORT_DIR`.
    pub out_dir: PathBuf,
    /// Boot to power-off.
    pub duration: Duration,
    pub steps: Vec<StepResult>,
}

impl GuestRun {
    /// A step by name.
    pub fn step(&self, name: &str) -> Option<&StepResult> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Writes straight to the test process's stderr: progress shows up live even
/// while the test harness captures `eprintln!`.
pub fn progress(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
    let _ = e.flush();
}

/// A guest to boot.
#[derive(Debug, Clone)]
pub struct Guest {
    kernel: Kernel,
    memory: String,
    cpus: u32,
    timeout: Duration,
}

impl Guest {
    /// 2 GiB, 2 vCPUs, at most 20 minutes.
    pub fn new(kernel: &Kernel) -> Guest {
        Guest {
            kernel: kernel.clone(),
            memory: "2G".into(),
            cpus: 2,
            timeout: Duration::from_secs(20 * 60),
        }
    }

    /// Longest the guest may run before it is killed (and the run fails).
    pub fn timeout(mut self, t: Duration) -> Guest {
        self.timeout = t;
        self
    }

    /// Boots the kernel, runs `steps` in order with `env` exported, powers off.
    /// Fails when the guest does not boot or does not finish in time; a step
    /// that fails is reported in its [`StepResult`], not as an error.
    pub fn run(&self, steps: &[Step], env: &[(&str, String)]) -> Result<GuestRun> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let out_dir = crate::workspace_root().join("target/vm").join(format!(
            "{}-{}-{}",
            self.kernel.series,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&out_dir);
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("failed to create {}", out_dir.display()))?;
        let out_dir = out_dir.canonicalize()?;
        let mut plan = String::new();
        for s in steps {
            if s.name.contains(['\t', '\n', '/']) || s.command.contains(['\t', '\n']) {
                bail!("step {:?} has a tab, newline or slash in it", s.name);
            }
            plan += &format!("{}\t{}\n", s.name, s.command);
        }
        std::fs::write(out_dir.join("plan"), plan)?;
        let mut exports = String::new();
        for (k, v) in env {
            exports += &format!("export {k}='{}'\n", v.replace('\'', r"'\''"));
        }
        std::fs::write(out_dir.join("env"), exports)?;

        let vng = vng()?;
        let guest_sh = crate::workspace_root()
            .join("tests/vm/guest.sh")
            .canonicalize()
            .context("tests/vm/guest.sh is missing")?;
        let venv_bin = vng.parent().expect("vng has a directory").to_path_buf();
        let path = format!(
            "{}:{}",
            venv_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(&vng);
        cmd.arg("--run")
            .arg(&self.kernel.vmlinuz)
            .args([
                "--disable-kvm",
                "--disable-microvm",
                "--force-9p",
                "--verbose",
            ])
            .args(["--memory", &self.memory])
            .args(["--cpus", &self.cpus.to_string()])
            .arg("--rwdir")
            .arg(&out_dir)
            .arg("--exec")
            .arg(format!("sh {} {}", guest_sh.display(), out_dir.display()))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        progress(&format!(
            "vm {}: booting {} ({}) under TCG, {} steps",
            self.kernel.series,
            self.kernel.release,
            self.kernel.package,
            steps.len()
        ));
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("failed to start {}", vng.display()))?;
        let console = Arc::new(Mutex::new(String::new()));
        // The console comes back on vng's stdout or stderr, depending on its
        // version: read both, forward the guest script's progress lines.
        let reader = |pipe: Box<dyn std::io::Read + Send>| {
            let console = console.clone();
            let series = self.kernel.series.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe)
                    .lines()
                    .map_while(std::io::Result::ok)
                {
                    if let Some(msg) = line.trim().strip_prefix("vnt-guest: ") {
                        progress(&format!("vm {series}: {msg}"));
                    }
                    let mut c = console.lock().unwrap_or_else(|p| p.into_inner());
                    c.push_str(&line);
                    c.push('\n');
                }
            })
        };
        let out_thread = reader(Box::new(child.stdout.take().expect("piped")));
        let err_thread = reader(Box::new(child.stderr.take().expect("piped")));
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if start.elapsed() > self.timeout {
                // SAFETY: kill(2) on the process group vng leads (process_group(0)).
                unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = out_thread.join();
        let _ = err_thread.join();
        let duration = start.elapsed();
        let console = console.lock().unwrap_or_else(|p| p.into_inner()).clone();
        std::fs::write(out_dir.join("console.log"), &console)?;
        let mut run = GuestRun {
            console,
            out_dir: out_dir.clone(),
            duration,
            steps: Vec::new(),
        };
        for s in steps {
            let code = std::fs::read_to_string(out_dir.join(format!("{}.rc", s.name)))
                .ok()
                .and_then(|c| c.trim().parse().ok());
            let log = std::fs::read_to_string(out_dir.join(format!("{}.log", s.name)))
                .unwrap_or_default();
            run.steps.push(StepResult {
                name: s.name.clone(),
                code,
                log,
            });
        }
        let Some(status) = status else {
            bail!(
                "the {} guest did not finish within {:?} (killed); console tail:\n{}",
                self.kernel.release,
                self.timeout,
                run.console_tail(40)
            );
        };
        if !out_dir.join("booted").exists() {
            bail!(
                "the {} guest did not boot (vng exited with {status}); console tail:\n{}",
                self.kernel.release,
                run.console_tail(60)
            );
        }
        if !out_dir.join("done").exists() {
            bail!(
                "the {} guest stopped before its last step (vng exited with {status}); console tail:\n{}",
                self.kernel.release,
                run.console_tail(60)
            );
        }
        Ok(run)
    }
}

/// Paths of this package's test binaries by target name, as cargo built them
/// for the profile the calling test runs in: from `$VNT_VM_TEST_BINS`
/// (`name=path,...`, set by scripts/vm-test.sh), else from
/// `cargo test --no-run --message-format=json` (a no-op build when fresh).
pub fn test_binaries(names: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    if let Ok(list) = std::env::var("VNT_VM_TEST_BINS") {
        for item in list.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .with_context(|| format!("VNT_VM_TEST_BINS item `{item}` is not name=path"))?;
            found.insert(k.to_owned(), PathBuf::from(v));
        }
    } else {
        let release = std::env::current_exe()?
            .components()
            .any(|c| c.as_os_str() == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(crate::workspace_root()).args([
            "test",
            "-p",
            "vnt-tests",
            "--no-run",
            "--message-format=json",
        ]);
        if release {
            cmd.arg("--release");
        }
        let out = cmd
            .stderr(Stdio::inherit())
            .output()
            .context("failed to run cargo to find the test binaries")?;
        if !out.status.success() {
            bail!("`cargo test --no-run` failed ({})", out.status);
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["reason"] == "compiler-artifact"
                && v["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "test"))
            {
                if let (Some(name), Some(exe)) =
                    (v["target"]["name"].as_str(), v["executable"].as_str())
                {
                    found.insert(name.to_owned(), PathBuf::from(exe));
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for n in names {
        let p = found
            .get(*n)
            .with_context(|| format!("no test binary `{n}` among {:?}", found.keys()))?;
        if !p.is_file() {
            bail!("test binary {} does not exist", p.display());
        }
        out.insert((*n).to_owned(), p.clone());
    }
    Ok(out)
}

/// Where a guest test leaves reports for the host (`$VNT_REPORT_DIR`), if anywhere.
pub fn report_dir() -> Option<PathBuf> {
    std::env::var_os("VNT_REPORT_DIR").map(PathBuf::from)
}

/// Writes `value` as `<name>.json` into [`report_dir`], when there is one.
pub fn write_report(name: &str, value: &serde_json::Value) -> Result<()> {
    if let Some(dir) = report_dir() {
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(value)?)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Reads a report a guest test left in the run's directory.
pub fn read_report(run: &GuestRun, name: &str) -> Result<serde_json::Value> {
    let path: &Path = &run.out_dir.join(format!("{name}.json"));
    let bytes = std::fs::read(path).with_context(|| format!("no report {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}
