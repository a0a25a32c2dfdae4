//! Which container a network namespace belongs to, from the container
//! runtime's own metadata: its id and name, and the Kubernetes pod and
//! namespace where the runtime's labels carry them
//! (`io.kubernetes.pod.name`, `io.kubernetes.pod.namespace`).
//!
//! The runtime is asked over its API socket (Docker's, `docker.rs`) by a
//! thread of its own, never by the event path: the main loop takes the
//! latest table once per batch of views ([`Containers::new_batch`], one
//! lock) and looks namespaces up in it. A namespace it does not know wakes
//! the thread (at most once per [`ASK_AGAIN`] per namespace); the thread
//! reads the runtime at most once per [`MIN_REFRESH`] and at least every
//! [`REFRESH`], so a name is at most that stale. Per reading it lists the
//! running containers (one request) and asks each new one for its pid (one
//! request per container, remembered while that pid lives, for at most
//! [`PID_TRUSTED`]); the namespace is `/proc/<pid>/ns/net`.
//!
//! No socket means no names and one line in the log, not an error per
//! batch; a runtime that fails is logged once until it answers again.

pub mod docker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::docker::{Docker, Listed};

/// The most stale a name can be: the runtime is read at least this often.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The runtime is read at most this often.
pub const MIN_REFRESH: Duration = Duration::from_millis(500);
/// A namespace not found is asked about again after this long.
pub const ASK_AGAIN: Duration = Duration::from_secs(5);
/// A container's pid is asked again after this long (a restart changes it).
pub const PID_TRUSTED: Duration = Duration::from_secs(60);
/// At most this many containers are looked at per reading.
pub const MAX_CONTAINERS: usize = 4096;

/// Kubernetes' labels on the containers of a pod.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// A container as its runtime reports it. Serialised in each hop as
/// `container` (docs/output.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerInfo {
    /// The runtime's full id.
    pub id: Arc<str>,
    /// Its name (Docker's, without the leading `/`).
    pub name: Arc<str>,
    /// Kubernetes pod name, when the runtime's labels carry it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Arc<str>>,
    /// Kubernetes namespace of that pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<Arc<str>>,
}

/// Network namespace inode -> its container.
type Table = HashMap<u32, Arc<ContainerInfo>>;

/// The event path's side: the latest table and a way to ask for a reading.
#[derive(Debug)]
pub struct Containers {
    published: Arc<Mutex<Arc<Table>>>,
    table: Arc<Table>,
    wake: Option<SyncSender<()>>,
    /// When each unknown namespace was last asked about.
    asked: HashMap<u32, Instant>,
}

impl Containers {
    /// No runtime: no container is ever named.
    pub fn none() -> Containers {
        Containers {
            published: Arc::default(),
            table: Arc::default(),
            wake: None,
            asked: HashMap::new(),
        }
    }

    /// A fixed table (tests of the outputs).
    #[cfg(test)]
    pub(crate) fn fixed(table: impl IntoIterator<Item = (u32, ContainerInfo)>) -> Containers {
        let table: Arc<Table> =
            Arc::new(table.into_iter().map(|(k, v)| (k, Arc::new(v))).collect());
        Containers {
            published: Arc::new(Mutex::new(table.clone())),
            table,
            wake: None,
            asked: HashMap::new(),
        }
    }

    /// Names from the Docker engine behind `socket`, read by a thread that
    /// lives as long as this value; `/proc` gives the namespaces of pids.
    pub fn docker(socket: impl Into<PathBuf>) -> Containers {
        Containers::start(Docker::new(socket), "/proc".into())
    }

    fn start(docker: Docker, proc_root: PathBuf) -> Containers {
        let published: Arc<Mutex<Arc<Table>>> = Arc::default();
        let (wake, woken) = mpsc::sync_channel(1);
        let mut reader = Reader {
            docker,
            proc_root,
            published: published.clone(),
            pids: HashMap::new(),
            state: ReaderState::Unknown,
        };
        let spawned = std::thread::Builder::new()
            .name("vnt-containers".into())
            .spawn(move || reader.run(woken));
        if let Err(e) = spawned {
            tracing::warn!("cannot start the container-name thread, containers are not named: {e}");
            return Containers::none();
        }
        Containers {
            published,
            table: Arc::default(),
            wake: Some(wake),
            asked: HashMap::new(),
        }
    }

    /// Take the latest reading (once per batch of views).
    pub fn new_batch(&mut self) {
        if self.wake.is_none() {
            return;
        }
        if let Ok(t) = self.published.lock() {
            if !Arc::ptr_eq(&t, &self.table) {
                self.table = t.clone();
            }
        }
    }

    /// The container whose network namespace is `netns`, if known. An
    /// unknown namespace asks the reader for a new reading (without
    /// waiting for it).
    pub fn lookup(&mut self, netns: u32) -> Option<Arc<ContainerInfo>> {
        if let Some(c) = self.table.get(&netns) {
            return Some(c.clone());
        }
        let wake = self.wake.as_ref()?;
        if netns == 0 {
            return None;
        }
        let now = Instant::now();
        if self
            .asked
            .get(&netns)
            .is_none_or(|t| now.duration_since(*t) >= ASK_AGAIN)
        {
            if self.asked.len() >= MAX_CONTAINERS {
                self.asked.clear();
            }
            self.asked.insert(netns, now);
            // Full: a reading is already due.
            let _ = wake.try_send(());
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    Unknown,
    NoSocket,
    Failing,
    Answering,
}

/// The thread that reads the runtime.
struct Reader {
    docker: Docker,
    proc_root: PathBuf,
    published: Arc<Mutex<Arc<Table>>>,
    /// Container id -> (pid, when asked).
    pids: HashMap<String, (u32, Instant)>,
    state: ReaderState,
}

impl Reader {
    fn run(&mut self, woken: Receiver<()>) {
        let mut last: Option<Instant> = None;
        loop {
            if let Some(t) = last {
                let since = t.elapsed();
                if since < MIN_REFRESH {
                    std::thread::sleep(MIN_REFRESH - since);
                }
            }
            let _ = woken.try_recv();
            self.read();
            last = Some(Instant::now());
            match woken.recv_timeout(REFRESH) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn set_state(&mut self, state: ReaderState, why: impl FnOnce() -> String) {
        if state == self.state {
            return;
        }
        let socket = self.docker.socket().display();
        match state {
            ReaderState::NoSocket => {
                tracing::info!("no container runtime socket at {socket}: containers are not named")
            }
            ReaderState::Failing => tracing::warn!("container names unavailable: {}", why()),
            ReaderState::Answering => {
                tracing::info!("naming containers from the Docker engine at {socket}")
            }
            ReaderState::Unknown => {}
        }
        self.state = state;
    }

    /// One reading of the runtime, published.
    fn read(&mut self) {
        if !self.docker.socket().exists() {
            self.set_state(ReaderState::NoSocket, String::new);
            self.pids.clear();
            self.publish(Table::new());
            return;
        }
        let listed = match self.docker.running() {
            Ok(l) => l,
            Err(e) => {
                // The last table stays: names stale by a failure, not lost.
                self.set_state(ReaderState::Failing, || e.to_string());
                return;
            }
        };
        self.set_state(ReaderState::Answering, String::new);
        let table = self.table(&listed);
        self.publish(table);
    }

    fn publish(&self, table: Table) {
        if let Ok(mut t) = self.published.lock() {
            if **t != table {
                *t = Arc::new(table);
            }
        }
    }

    fn netns_of(&self, pid: u32) -> Option<u32> {
        let link = std::fs::read_link(self.proc_root.join(pid.to_string()).join("ns/net")).ok()?;
        link.to_str()?
            .strip_prefix("net:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    }

    /// The table of the containers `listed`: each one's namespace by its
    /// pid. Containers that share a namespace (a pod's) give it the one
    /// with the lowest pid: the namespace's creator, usually.
    fn table(&mut self, listed: &[Listed]) -> Table {
        let mut by_netns: HashMap<u32, (u32, Arc<ContainerInfo>)> = HashMap::new();
        let mut pids = HashMap::with_capacity(listed.len().min(MAX_CONTAINERS));
        for c in listed.iter().take(MAX_CONTAINERS) {
            let known = self
                .pids
                .get(&c.id)
                .filter(|(pid, at)| at.elapsed() < PID_TRUSTED && self.netns_of(*pid).is_some())
                .copied();
            let (pid, at) = match known {
                Some(k) => k,
                None => match self.docker.pid(&c.id) {
                    Ok(Some(pid)) => (pid, Instant::now()),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!(container = %c.id, "no pid: {e}");
                        continue;
                    }
                },
            };
            pids.insert(c.id.clone(), (pid, at));
            let Some(netns) = self.netns_of(pid) else {
                continue;
            };
            let info = Arc::new(ContainerInfo {
                id: c.id.as_str().into(),
                name: c.name().unwrap_or(&c.id).into(),
                pod: c.label(POD_NAME_LABEL).map(Arc::from),
                pod_namespace: c.label(POD_NAMESPACE_LABEL).map(Arc::from),
            });
            match by_netns.get(&netns) {
                Some((p, _)) if *p <= pid => {}
                _ => {
                    by_netns.insert(netns, (pid, info));
                }
            }
        }
        self.pids = pids;
        by_netns.into_iter().map(|(k, (_, v))| (k, v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn fake_process(proc_root: &std::path::Path, pid: u32, netns: u32) {
        let p = proc_root.join(pid.to_string());
        std::fs::create_dir_all(p.join("ns")).unwrap();
        std::os::unix::fs::symlink(format!("net:[{netns}]"), p.join("ns/net")).unwrap();
    }

    /// A fake engine on `socket` answering the list and inspect requests;
    /// counts the requests it served.
    fn fake_engine(socket: PathBuf, served: Arc<AtomicUsize>) {
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                served.fetch_add(1, Ordering::SeqCst);
                let body = if req.starts_with("GET /containers/json ") {
                    concat!(
                        r#"[{"Id":"aaaa","Names":["/web"],"Labels":{}},"#,
                        r#"{"Id":"pause1","Names":["/k8s_POD_api-7f_shop_uid_0"],"Labels":{"io.kubernetes.pod.name":"api-7f","io.kubernetes.pod.namespace":"shop"}},"#,
                        r#"{"Id":"app1","Names":["/k8s_app_api-7f_shop_uid_0"],"Labels":{"io.kubernetes.pod.name":"api-7f","io.kubernetes.pod.namespace":"shop"}},"#,
                        r#"{"Id":"gone","Names":["/gone"],"Labels":null}]"#
                    )
                    .to_string()
                } else if req.starts_with("GET /containers/aaaa/json ") {
                    r#"{"State":{"Pid":40}}"#.into()
                } else if req.starts_with("GET /containers/pause1/json ") {
                    r#"{"State":{"Pid":50}}"#.into()
                } else if req.starts_with("GET /containers/app1/json ") {
                    r#"{"State":{"Pid":51}}"#.into()
                } else {
                    r#"{"State":{"Pid":0}}"#.into()
                };
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}"
                );
            }
        });
    }

    #[test]
    fn namespaces_are_named_by_the_runtime_off_the_event_path() {
        let dir = crate::testing::TempDir::new();
        let proc_root = dir.path().join("proc");
        fake_process(&proc_root, 40, 700);
        fake_process(&proc_root, 50, 800);
        fake_process(&proc_root, 51, 800);
        let socket = dir.path().join("docker.sock");
        let served = Arc::new(AtomicUsize::new(0));
        fake_engine(socket.clone(), served.clone());
        let mut c = Containers::start(Docker::new(&socket), proc_root);
        // The reader starts with a reading; the event path never waits.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            c.new_batch();
            if c.lookup(700).is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let web = c.lookup(700).expect("the container in netns 700 is named");
        assert_eq!((&*web.id, &*web.name), ("aaaa", "web"));
        assert_eq!(web.pod, None);
        // A pod's namespace: its first container (the lowest pid).
        let pod = c.lookup(800).unwrap();
        assert_eq!(&*pod.name, "k8s_POD_api-7f_shop_uid_0");
        assert_eq!(pod.pod.as_deref(), Some("api-7f"));
        assert_eq!(pod.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(c.lookup(900), None);
        assert_eq!(c.lookup(0), None);
        // One list and four inspects; asking again is bounded by
        // MIN_REFRESH and the pids are remembered.
        let after_first = served.load(Ordering::SeqCst);
        assert_eq!(after_first, 5);
        for _ in 0..100 {
            c.lookup(901);
        }
        std::thread::sleep(MIN_REFRESH * 3);
        let more = served.load(Ordering::SeqCst) - after_first;
        assert!(
            (1..=6).contains(&more),
            "unknown namespaces cost a reading or a few ({more} requests), not one per lookup"
        );
    }

    #[test]
    fn no_socket_no_names() {
        let dir = crate::testing::TempDir::new();
        let mut c = Containers::start(Docker::new(dir.path().join("none.sock")), "/proc".into());
        std::thread::sleep(Duration::from_millis(50));
        c.new_batch();
        assert_eq!(c.lookup(1234), None);
        let mut off = Containers::none();
        off.new_batch();
        assert_eq!(off.lookup(1234), None);
    }
}
