//! Who is exporting: the OpenTelemetry resource (`service.*`, `host.*`,
//! `os.type`, `os.version`: the kernel release, which decides what the
//! agent can see) and the host key that keeps this agent's span ids apart from
//! other agents' in a shared trace.

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use crate::config::OtlpConfig;
use crate::export::ids;

/// Default `service.name`.
pub const SERVICE_NAME: &str = "vnt-agent";

/// The resource and host identity of this agent.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Resource attributes, as exported.
    pub resource: Resource,
    /// `host.name` in effect.
    pub host_name: String,
    /// Key of (`host.name`, `host.id`), mixed into span ids.
    pub host_key: u64,
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `host.arch` as the semantic conventions spell it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm32",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

/// A stable `service.instance.id` for this agent on this host: a UUID
/// (version 8, RFC 9562) made from `host.name` and `host.id`, so a
/// restarted agent keeps it and two hosts never share it.
fn instance_id(host_name: &str, host_id: &str) -> String {
    let hi = ids::host_key(&["vnt-agent instance", host_name, host_id]);
    let lo = ids::host_key(&[host_id, host_name, "vnt-agent instance"]);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&hi.to_be_bytes());
    b[8..].copy_from_slice(&lo.to_be_bytes());
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // variant 10
    let h = ids::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The attributes, in order of precedence (later wins): detected defaults,
/// `otlp.resource` (and `OTEL_RESOURCE_ATTRIBUTES`), `otlp.service_name`
/// (and `OTEL_SERVICE_NAME`). `service.instance.id` is derived from the
/// host's name and id in effect unless set.
pub fn attributes(
    cfg: &OtlpConfig,
    detected_host: Option<String>,
    machine_id: Option<String>,
    os_release: Option<String>,
) -> Vec<(String, String)> {
    let mut attrs: Vec<(String, String)> = vec![
        ("service.name".into(), SERVICE_NAME.into()),
        ("service.version".into(), env!("CARGO_PKG_VERSION").into()),
        ("host.arch".into(), host_arch().into()),
        ("os.type".into(), "linux".into()),
        ("telemetry.sdk.name".into(), "opentelemetry".into()),
        ("telemetry.sdk.language".into(), "rust".into()),
    ];
    if let Some(h) = detected_host {
        attrs.push(("host.name".into(), h));
    }
    if let Some(id) = machine_id {
        attrs.push(("host.id".into(), id));
    }
    if let Some(r) = os_release {
        attrs.push(("os.version".into(), r));
    }
    let mut set = |k: &str, v: &str| match attrs.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => attrs.push((k.to_string(), v.to_string())),
    };
    for (k, v) in &cfg.resource {
        set(k, v);
    }
    if let Some(name) = &cfg.service_name {
        set("service.name", name);
    }
    if !attrs.iter().any(|(k, _)| k == "service.instance.id") {
        let get = |k: &str| {
            attrs
                .iter()
                .find(|(key, _)| key == k)
                .map_or("", |(_, v)| v.as_str())
        };
        let id = instance_id(get("host.name"), get("host.id"));
        attrs.push(("service.instance.id".into(), id));
    }
    attrs
}

/// Detect the host and build the resource.
pub fn identity(cfg: &OtlpConfig) -> Identity {
    let attrs = attributes(
        cfg,
        read_trimmed("/proc/sys/kernel/hostname"),
        read_trimmed("/etc/machine-id"),
        read_trimmed("/proc/sys/kernel/osrelease"),
    );
    let get = |k: &str| {
        attrs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let host_name = get("host.name").to_string();
    let host_key = ids::host_key(&[get("host.name"), get("host.id")]);
    let resource = Resource::builder_empty()
        .with_attributes(
            attrs
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .build();
    Identity {
        resource,
        host_name,
        host_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OtlpProtocol;
    use std::time::Duration;

    fn cfg(resource: &[(&str, &str)], service: Option<&str>) -> OtlpConfig {
        OtlpConfig {
            endpoint: "http://localhost:4317".into(),
            protocol: OtlpProtocol::Grpc,
            headers: vec![],
            timeout: Duration::from_secs(1),
            service_name: service.map(String::from),
            resource: resource
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            traces: true,
            metrics: true,
            metrics_interval: Duration::from_secs(1),
            queue_spans: 10,
            batch_spans: 1,
            batch_delay: Duration::from_secs(1),
            max_interfaces: 1,
            max_series_per_metric: 1,
            exclude_own_traffic: true,
            shutdown_timeout: Duration::from_secs(1),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    fn get<'a>(a: &'a [(String, String)], k: &str) -> Option<&'a str> {
        a.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_then_resource_attributes_then_service_name() {
        let a = attributes(
            &cfg(&[], None),
            Some("box".into()),
            Some("m1".into()),
            Some("6.1.0-57-amd64".into()),
        );
        assert_eq!(get(&a, "service.name"), Some("vnt-agent"));
        assert_eq!(get(&a, "host.name"), Some("box"));
        assert_eq!(get(&a, "host.id"), Some("m1"));
        assert_eq!(get(&a, "os.type"), Some("linux"));
        assert_eq!(get(&a, "os.version"), Some("6.1.0-57-amd64"));
        let id = get(&a, "service.instance.id").unwrap();
        assert_eq!((id.len(), &id[14..15], &id[8..9]), (36, "8", "-"), "{id}");
        let again = attributes(&cfg(&[], None), Some("box".into()), Some("m1".into()), None);
        assert_eq!(get(&again, "service.instance.id"), Some(id), "stable");
        let other = attributes(
            &cfg(&[], None),
            Some("box2".into()),
            Some("m1".into()),
            None,
        );
        assert_ne!(get(&other, "service.instance.id"), Some(id));
        let set = attributes(
            &cfg(&[("service.instance.id", "x")], None),
            None,
            None,
            None,
        );
        assert_eq!(get(&set, "service.instance.id"), Some("x"));

        let a = attributes(
            &cfg(
                &[
                    ("host.name", "node-a"),
                    ("service.name", "from-attrs"),
                    ("k8s.node.name", "n"),
                ],
                None,
            ),
            Some("box".into()),
            None,
            None,
        );
        assert_eq!(
            get(&a, "host.name"),
            Some("node-a"),
            "OTEL_RESOURCE_ATTRIBUTES wins over detection"
        );
        assert_eq!(get(&a, "service.name"), Some("from-attrs"));
        assert_eq!(get(&a, "k8s.node.name"), Some("n"));

        let a = attributes(
            &cfg(&[("service.name", "from-attrs")], Some("svc")),
            None,
            None,
            None,
        );
        assert_eq!(
            get(&a, "service.name"),
            Some("svc"),
            "OTEL_SERVICE_NAME wins"
        );
    }

    #[test]
    fn host_name_changes_the_host_key() {
        let a = identity(&cfg(&[("host.name", "node-a")], None));
        let b = identity(&cfg(&[("host.name", "node-b")], None));
        assert_eq!(a.host_name, "node-a");
        assert_ne!(a.host_key, b.host_key);
    }
}
