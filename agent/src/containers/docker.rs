//! The Docker Engine API over its unix socket (`/var/run/docker.sock`):
//! the two requests container names need, `GET /containers/json` (running
//! containers: id, names, labels) and `GET /containers/{id}/json` (the host
//! pid of a container's first process). HTTP/1.0 with `Connection: close`,
//! one request per connection, bounded by a timeout and a response size:
//! the daemon answers a 1.0 request with the whole body and closes; a
//! chunked body (a proxy speaking 1.1 anyway) is decoded too.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// How long one request may take, connecting and reading included.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest response read (a list of thousands of containers fits).
const MAX_RESPONSE: u64 = 32 << 20;

/// A request to the engine that failed.
#[derive(Debug, Error)]
pub enum DockerError {
    /// The socket could not be reached.
    #[error("cannot connect to the Docker socket {socket}: {source}")]
    Connect {
        /// Socket path.
        socket: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("request `GET {path}` to the Docker socket failed: {source}")]
    Io {
        /// Request path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The engine answered with an error status.
    #[error("the Docker engine answered `GET {path}` with status {status}")]
    Status {
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
    },
    /// The answer was not HTTP or not the JSON expected.
    #[error("malformed answer to `GET {path}` from the Docker engine: {what}")]
    Malformed {
        /// Request path.
        path: String,
        /// What was wrong.
        what: String,
    },
}

/// A running container as `GET /containers/json` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Listed {
    /// Full id (64 hex digits).
    #[serde(rename = "Id")]
    pub id: String,
    /// Names, each with a leading `/`.
    #[serde(rename = "Names", default)]
    pub names: Vec<String>,
    /// Labels (Kubernetes puts the pod's name and namespace here).
    #[serde(rename = "Labels", default)]
    pub labels: Option<HashMap<String, String>>,
}

impl Listed {
    /// The container's name without Docker's leading `/`.
    pub fn name(&self) -> Option<&str> {
        self.names.first().map(|n| n.trim_start_matches('/'))
    }

    /// A label's value.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Deserialize)]
struct Inspected {
    #[serde(rename = "State")]
    state: State,
}

#[derive(Deserialize)]
struct State {
    #[serde(rename = "Pid", default)]
    pid: u32,
}

/// A client of one engine socket.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
}

impl Docker {
    /// The engine behind `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Docker {
        Docker {
            socket: socket.into(),
        }
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Running containers.
    pub fn running(&self) -> Result<Vec<Listed>, DockerError> {
        let path = "/containers/json";
        let body = self.get(path)?;
        serde_json::from_slice(&body).map_err(|e| DockerError::Malformed {
            path: path.into(),
            what: e.to_string(),
        })
    }

    /// The host pid of `id`'s first process; `None` when it has none (not
    /// running).
    pub fn pid(&self, id: &str) -> Result<Option<u32>, DockerError> {
        let path = format!("/containers/{id}/json");
        let body = self.get(&path)?;
        let i: Inspected = serde_json::from_slice(&body).map_err(|e| DockerError::Malformed {
            path: path.clone(),
            what: e.to_string(),
        })?;
        Ok((i.state.pid != 0).then_some(i.state.pid))
    }

    /// `GET path`: the body of a 2xx answer.
    fn get(&self, path: &str) -> Result<Vec<u8>, DockerError> {
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|source| DockerError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let io = |source| DockerError::Io {
            path: path.into(),
            source,
        };
        stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: vnt-agent\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(io)?;
        parse_response(path, &raw)
    }
}

/// The body of a complete HTTP response in `raw`, if its status is 2xx.
fn parse_response(path: &str, raw: &[u8]) -> Result<Vec<u8>, DockerError> {
    let malformed = |what: String| DockerError::Malformed {
        path: path.into(),
        what,
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err(malformed("truncated headers".into())),
        Err(e) => return Err(malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if !(200..300).contains(&status) {
        return Err(DockerError::Status {
            path: path.into(),
            status,
        });
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let body = &raw[head_len..];
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        return dechunk(body).ok_or_else(|| malformed("bad chunked body".into()));
    }
    match header("content-length").map(|l| l.parse::<usize>()) {
        Some(Ok(n)) if n <= body.len() => Ok(body[..n].to_vec()),
        Some(Ok(n)) => Err(malformed(format!(
            "body of {} bytes, {n} announced",
            body.len()
        ))),
        Some(Err(_)) => Err(malformed("bad content-length".into())),
        None => Ok(body.to_vec()),
    }
}

/// A chunked body decoded; `None` if it is cut short or malformed.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next()?.trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if body.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_by_chunks_and_to_the_end() {
        let p = "/x";
        assert_eq!(
            parse_response(p, b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n[]").unwrap(),
            b"[]"
        );
        assert_eq!(
            parse_response(
                p,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n1;x=y\r\n]\r\n0\r\n\r\n"
            )
            .unwrap(),
            b"[]"
        );
        assert_eq!(
            parse_response(p, b"HTTP/1.0 200 OK\r\n\r\n[1]").unwrap(),
            b"[1]"
        );
        assert!(matches!(
            parse_response(p, b"HTTP/1.0 404 Not Found\r\n\r\n{}"),
            Err(DockerError::Status { status: 404, .. })
        ));
        assert!(matches!(
            parse_response(p, b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\n[]"),
            Err(DockerError::Malformed { .. })
        ));
        assert!(parse_response(
            p,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"
        )
        .is_err());
        assert!(parse_response(p, b"garbage").is_err());
    }

    #[test]
    fn listed_containers_read_as_the_engine_writes_them() {
        let body = r#"[{"Id":"abc","Names":["/web"],"Labels":{"io.kubernetes.pod.name":"p"},"State":"running"},{"Id":"def","Names":[],"Labels":null}]"#;
        let l: Vec<Listed> = serde_json::from_str(body).unwrap();
        assert_eq!(l[0].name(), Some("web"));
        assert_eq!(l[0].label("io.kubernetes.pod.name"), Some("p"));
        assert_eq!(l[1].name(), None);
        assert_eq!(l[1].label("x"), None);
    }
}
