//! Real Docker containers for scenarios: an [`Engine`] (the running daemon, or
//! one this process starts), an [`Image`] built locally from the static
//! busybox (no registry is reachable from the test machines), and
//! [`Container`]s on Docker's default bridge `docker0`, whose network
//! namespaces are joined from outside with `nsenter`.
//!
//! Everything is created under a name unique to this process and removed on
//! drop, even when the test fails; nothing else of Docker's is touched.

use crate::agent::{signal, wait_timeout};
use crate::journey::{HopContainer, Journey};
use crate::netns::{describe, run};
use anyhow::{bail, ensure, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon this process starts may take to answer `docker info`.
const ENGINE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long that daemon may take to exit after SIGTERM.
const ENGINE_STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The static busybox the image is built from (Debian's `busybox-static`).
const BUSYBOX: &str = "/usr/bin/busybox";
/// Applets linked in the image's `/bin`.
const APPLETS: &[&str] = &[
    "sh", "ping", "nc", "sleep", "cat", "head", "wc", "ls", "ps", "echo", "true", "mkfifo",
];

/// `docker <args>`, run to completion; its stdout.
pub fn docker<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("docker").args(args))
}

/// Whether a daemon answers (`docker info` succeeds).
fn engine_answers() -> bool {
    Command::new("docker")
        .arg("info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The root namespace's iptables FORWARD policy line (`-P FORWARD ACCEPT`),
/// if iptables can tell.
fn forward_policy() -> Option<String> {
    let out = run(Command::new("iptables").args(["-S", "FORWARD"])).ok()?;
    out.lines()
        .find(|l| l.starts_with("-P FORWARD "))
        .map(str::to_owned)
}

/// A Docker engine that answers. If one already ran it is left alone;
/// if this process started `dockerd`, dropping the `Engine` stops it and
/// puts back the iptables FORWARD policy dockerd changes to DROP.
#[derive(Debug)]
pub struct Engine {
    started: Option<Started>,
}

#[derive(Debug)]
struct Started {
    dockerd: Child,
    log: PathBuf,
    forward_policy: Option<String>,
}

impl Engine {
    /// Uses the running daemon, or starts `dockerd` (logging to a temporary
    /// file) and waits until `docker info` works.
    ///
    /// Fails, naming the command that installs it, when the `docker` CLI or
    /// `dockerd` is missing; fails with the daemon's log when it does not
    /// come up.
    pub fn ensure() -> Result<Engine> {
        if !on_path("docker") {
            bail!(
                "the `docker` CLI is not installed: install Docker with `scripts/install-deps.sh` \
                 (or `apt-get install -y docker.io`)"
            );
        }
        if engine_answers() {
            return Ok(Engine { started: None });
        }
        if !on_path("dockerd") {
            bail!(
                "no Docker daemon answers `docker info` and `dockerd` is not installed: install it \
                 with `scripts/install-deps.sh` (or `apt-get install -y docker.io`)"
            );
        }
        let forward_policy = forward_policy();
        let log = crate::temp_path("dockerd.log");
        let file =
            File::create(&log).with_context(|| format!("failed to create {}", log.display()))?;
        let dockerd = Command::new("dockerd")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("failed to start `dockerd`")?;
        let mut engine = Engine {
            started: Some(Started {
                dockerd,
                log,
                forward_policy,
            }),
        };
        let deadline = Instant::now() + ENGINE_READY_TIMEOUT;
        let started = engine.started.as_mut().expect("just set");
        loop {
            if engine_answers() {
                return Ok(engine);
            }
            if let Some(status) = started.dockerd.try_wait()? {
                bail!(
                    "`dockerd` exited ({status}) before it answered `docker info`; its log ({}):\n{}",
                    started.log.display(),
                    log_tail(&started.log)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "`dockerd` did not answer `docker info` within {ENGINE_READY_TIMEOUT:?}; its log ({}):\n{}",
                    started.log.display(),
                    log_tail(&started.log)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether this process started the daemon (and will stop it).
    pub fn started_here(&self) -> bool {
        self.started.is_some()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let Some(started) = self.started.as_mut() else {
            return;
        };
        signal(&started.dockerd, libc::SIGTERM);
        if !matches!(
            wait_timeout(&mut started.dockerd, ENGINE_STOP_TIMEOUT),
            Ok(Some(_))
        ) {
            eprintln!(
                "dockerd did not exit after SIGTERM; killing it (log: {})",
                started.log.display()
            );
            let _ = started.dockerd.kill();
            let _ = started.dockerd.wait();
        }
        if let Some(policy) = &started.forward_policy {
            if forward_policy().as_ref() != Some(policy) {
                let args: Vec<&str> = policy.split_whitespace().collect();
                let _ = run(Command::new("iptables").args(args));
            }
        }
        let _ = std::fs::remove_file(&started.log);
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A local image: the static busybox with its applets in `/bin`, plus any
/// extra binaries with the shared libraries they need. Removed on drop.
#[derive(Debug)]
pub struct Image {
    pub tag: String,
}

impl Image {
    /// Builds `tag` from a fresh root file system (`docker import`, no
    /// registry). `extra` binaries go to `/bin/<file name>`, their shared
    /// libraries (as `ldd` lists them) to the same paths as on this host.
    pub fn busybox(tag: &str, extra: &[&Path]) -> Result<Image> {
        let root = crate::temp_path("rootfs");
        let result = Self::build(tag, &root, extra);
        let _ = std::fs::remove_dir_all(&root);
        result
    }

    fn build(tag: &str, root: &Path, extra: &[&Path]) -> Result<Image> {
        let bin = root.join("bin");
        for dir in [&bin, &root.join("tmp"), &root.join("etc")] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        if !Path::new(BUSYBOX).is_file() {
            bail!(
                "{BUSYBOX} is missing: install it with `scripts/install-deps.sh` \
                 (or `apt-get install -y busybox-static`)"
            );
        }
        copy(Path::new(BUSYBOX), &bin.join("busybox"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .with_context(|| format!("failed to link {applet}"))?;
        }
        for binary in extra {
            let name = binary
                .file_name()
                .with_context(|| format!("{} has no file name", binary.display()))?;
            copy(binary, &bin.join(name))?;
            for lib in shared_libraries(binary)? {
                let to = root.join(lib.strip_prefix("/").unwrap_or(&lib));
                if !to.exists() {
                    std::fs::create_dir_all(to.parent().expect("a library path has a parent"))?;
                    copy(&lib, &to)?;
                }
            }
        }
        let tar = crate::temp_path("rootfs.tar");
        let result = run(Command::new("tar")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg("."))
        .and_then(|_| {
            docker([
                OsStr::new("import"),
                OsStr::new("-c"),
                OsStr::new("ENV PATH=/bin"),
                tar.as_os_str(),
                OsStr::new(tag),
            ])
        });
        let _ = std::fs::remove_file(&tar);
        result.with_context(|| format!("failed to build the image {tag}"))?;
        Ok(Image {
            tag: tag.to_owned(),
        })
    }
}

/// A file of the host to put into an image at `to` (absolute).
#[derive(Debug, Clone, Copy)]
pub struct ImageFile<'a> {
    pub from: &'a Path,
    pub to: &'a str,
}

impl Image {
    /// Builds `tag` from a fresh root file system holding `files` (each with
    /// the shared libraries `ldd` lists, at their host paths), the static
    /// busybox with its applets in `/bin`, `/tmp`, `/etc`, and the empty
    /// directories `dirs`; `changes` are `docker import -c` lines
    /// (`ENTRYPOINT ["/jaeger"]`, `WORKDIR /prometheus`). Removed on drop.
    pub fn from_files(
        tag: &str,
        files: &[ImageFile<'_>],
        dirs: &[&str],
        changes: &[&str],
    ) -> Result<Image> {
        let root = crate::temp_path("rootfs");
        let result = Self::build_files(tag, &root, files, dirs, changes);
        let _ = std::fs::remove_dir_all(&root);
        result
    }

    fn build_files(
        tag: &str,
        root: &Path,
        files: &[ImageFile<'_>],
        dirs: &[&str],
        changes: &[&str],
    ) -> Result<Image> {
        let bin = root.join("bin");
        for dir in [&bin, &root.join("tmp"), &root.join("etc")] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
        }
        for dir in dirs {
            std::fs::create_dir_all(root.join(dir.trim_start_matches('/')))?;
        }
        copy(Path::new(BUSYBOX), &bin.join("busybox"))?;
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", bin.join(applet))
                .with_context(|| format!("failed to link {applet}"))?;
        }
        for f in files {
            let to = root.join(f.to.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().context("a file path has a parent")?)?;
            copy(f.from, &to)?;
            for lib in shared_libraries(f.from)? {
                let to = root.join(lib.strip_prefix("/").unwrap_or(&lib));
                if !to.exists() {
                    std::fs::create_dir_all(to.parent().expect("a library path has a parent"))?;
                    copy(&lib, &to)?;
                }
            }
        }
        let tar = crate::temp_path("rootfs.tar");
        let result = run(Command::new("tar")
            .arg("-C")
            .arg(root)
            .arg("-cf")
            .arg(&tar)
            .arg("."))
        .and_then(|_| {
            let mut args: Vec<&OsStr> = vec![OsStr::new("import")];
            for c in changes {
                args.push(OsStr::new("-c"));
                args.push(OsStr::new(c));
            }
            args.push(tar.as_os_str());
            args.push(OsStr::new(tag));
            docker(args)
        });
        let _ = std::fs::remove_file(&tar);
        result.with_context(|| format!("failed to build the image {tag}"))?;
        Ok(Image {
            tag: tag.to_owned(),
        })
    }

    /// Whether an image `tag` exists in the engine.
    pub fn exists(tag: &str) -> bool {
        docker(["image", "inspect", "-f", "{{.Id}}", tag]).is_ok()
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if let Err(e) = docker(["image", "rm", "-f", &self.tag]) {
            eprintln!("failed to remove the test image {}: {e:#}", self.tag);
        }
    }
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("failed to copy {} to {}", from.display(), to.display()))
}

/// The shared libraries `binary` loads, the dynamic loader included, as
/// absolute paths from `ldd`; none for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("failed to run `ldd {}`", binary.display()))?;
    // "not a dynamic executable" comes with a failure status: nothing to copy.
    if !out.status.success() {
        return Ok(vec![]);
    }
    // Lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)",
    // "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)".
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A container on Docker's default bridge; `docker rm -f` on drop.
#[derive(Debug)]
pub struct Container {
    pub name: String,
    /// Docker's full id.
    pub id: String,
    /// Its address on `docker0`.
    pub ip: IpAddr,
    /// The host pid of its first process (for `nsenter`).
    pub pid: u32,
}

impl Container {
    /// `docker run -d --name <name> <image> <cmd...>` on the default bridge.
    pub fn run(image: &Image, name: &str, cmd: &[&str]) -> Result<Container> {
        Container::run_labelled(image, name, &[], cmd)
    }

    /// [`Container::run`] with labels (`key=value`), e.g. the ones
    /// Kubernetes puts on a pod's containers.
    pub fn run_labelled(
        image: &Image,
        name: &str,
        labels: &[&str],
        cmd: &[&str],
    ) -> Result<Container> {
        // The guard exists before the container does: a `docker run` that
        // created it and then failed to start it leaves nothing behind.
        let mut container = Container {
            name: name.to_owned(),
            id: String::new(),
            ip: IpAddr::from([0, 0, 0, 0]),
            pid: 0,
        };
        let mut args: Vec<&str> = vec!["run", "-d", "--network", "bridge", "--name", name];
        for l in labels {
            args.extend(["--label", l]);
        }
        args.push(&image.tag);
        args.extend(cmd);
        docker(args)?;
        let out = docker([
            "inspect",
            "-f",
            "{{.State.Pid}} {{.NetworkSettings.IPAddress}} {{.Id}}",
            name,
        ])?;
        let mut fields = out.split_whitespace();
        container.pid = fields
            .next()
            .and_then(|p| p.parse().ok())
            .filter(|&p| p != 0)
            .with_context(|| format!("container {name} has no pid: {out:?}"))?;
        container.ip = fields
            .next()
            .and_then(|a| a.parse().ok())
            .with_context(|| format!("container {name} has no address on docker0: {out:?}"))?;
        container.id = fields
            .next()
            .filter(|id| id.len() == 64)
            .with_context(|| format!("container {name} has no id: {out:?}"))?
            .to_owned();
        Ok(container)
    }

    /// `docker exec <name> <args...>` as a command, not yet run.
    pub fn exec<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("docker");
        cmd.arg("exec").arg(&self.name).args(args);
        cmd
    }

    /// `sh -c <script>` in the container, run to completion; its stdout.
    pub fn sh(&self, script: &str) -> Result<String> {
        run(&mut self.exec(["sh", "-c", script]))
    }

    /// `sh -c <script>` in the container, started with stdout and stderr
    /// piped; the caller waits for it.
    pub fn spawn_sh(&self, script: &str) -> Result<Child> {
        let mut cmd = self.exec(["sh", "-c", script]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn()
            .with_context(|| format!("failed to start `{}`", describe(&cmd)))
    }

    /// A host program run in the container's network namespace only
    /// (`nsenter -t <pid> -n program args...`), as a command not yet run.
    pub fn in_netns<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.pid.to_string())
            .arg("-n")
            .arg(program)
            .args(args);
        cmd
    }

    /// The inode of its network namespace (as hops report it).
    pub fn netns(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/proc/{}/ns/net", self.pid);
        Ok(std::fs::metadata(&path)
            .with_context(|| format!("cannot read {path} of container {}", self.name))?
            .ino())
    }

    /// Waits until a TCP socket listens on `port` in the container.
    pub fn wait_tcp_listen(&self, port: u16, timeout: Duration) -> Result<()> {
        // /proc/net/tcp{,6}: "sl local_address rem_address st ...", port in
        // hex, state 0A = LISTEN.
        let local = format!(":{port:04X}");
        let deadline = Instant::now() + timeout;
        loop {
            // busybox nc listens on `::` where IPv6 is up: tcp6 too.
            let table = self.sh("cat /proc/net/tcp /proc/net/tcp6 2>/dev/null || true")?;
            let listening = table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
            });
            if listening {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nothing listens on TCP port {port} in {} after {timeout:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Err(e) = docker(["rm", "-f", &self.name]) {
            eprintln!("failed to remove the test container {}: {e:#}", self.name);
        }
    }
}

/// An nftables table in a container's network namespace; deleted on drop
/// (if the container is still there).
#[derive(Debug)]
pub struct NetnsNft<'a> {
    container: &'a Container,
    family: String,
    table: String,
}

impl<'a> NetnsNft<'a> {
    /// Loads `ruleset` (which must define exactly `table <family> <table>`)
    /// with `nft -f` in the container's network namespace.
    pub fn load(
        container: &'a Container,
        family: &str,
        table: &str,
        ruleset: &str,
    ) -> Result<NetnsNft<'a>> {
        let file = crate::temp_path("nft");
        std::fs::write(&file, ruleset)
            .with_context(|| format!("failed to write {}", file.display()))?;
        let result = run(&mut container.in_netns("nft", [OsStr::new("-f"), file.as_os_str()]));
        let _ = std::fs::remove_file(&file);
        result.with_context(|| {
            format!(
                "failed to load an nft ruleset in {}'s namespace:\n{ruleset}",
                container.name
            )
        })?;
        Ok(NetnsNft {
            container,
            family: family.to_owned(),
            table: table.to_owned(),
        })
    }

    /// An inet table with an input chain that drops UDP datagrams to `dport`.
    pub fn drop_udp_input(container: &'a Container, table: &str, dport: u16) -> Result<Self> {
        let ruleset = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0;\n    udp dport {dport} drop;\n  }}\n}}\n"
        );
        Self::load(container, "inet", table, &ruleset)
    }
}

impl Drop for NetnsNft<'_> {
    fn drop(&mut self) {
        if let Err(e) = run(&mut self
            .container
            .in_netns("nft", ["delete", "table", &self.family, &self.table]))
        {
            eprintln!(
                "failed to delete nft table {} {} in {}: {e:#}",
                self.family, self.table, self.container.name
            );
        }
    }
}

/// Checks that each hop in the namespace of one of `containers` names that
/// container: its id and name, and the pod and namespace of its Kubernetes
/// labels where it has them (as `docker inspect` reports them); the number
/// of named hops.
pub fn check_container_names(journeys: &[&Journey], containers: &[&Container]) -> Result<usize> {
    let mut named = 0;
    for c in containers {
        let netns = c.netns()?;
        let label = |key: &str| {
            docker([
                "inspect",
                "-f",
                &format!("{{{{index .Config.Labels \"{key}\"}}}}"),
                &c.id,
            ])
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
        };
        let expected = HopContainer {
            id: c.id.clone(),
            name: c.name.clone(),
            pod: label("io.kubernetes.pod.name"),
            pod_namespace: label("io.kubernetes.pod.namespace"),
        };
        let hops: Vec<_> = journeys
            .iter()
            .flat_map(|j| &j.hops)
            .filter(|h| h.netns == netns)
            .collect();
        ensure!(
            !hops.is_empty(),
            "no hop in {}'s namespace (inode {netns}):\n{}",
            c.name,
            crate::verdicts::describe_all(journeys)
        );
        ensure!(
            hops.iter().all(|h| h.container.as_ref() == Some(&expected)),
            "hops in {}'s namespace must carry {expected:?}, they carry {:?}",
            c.name,
            hops.iter().map(|h| &h.container).collect::<Vec<_>>()
        );
        named += hops.len();
    }
    Ok(named)
}
