//! The rules a plugin's declared fields and metrics follow, checked by the
//! host when it loads a plugin and by the conformance kit in the plugin's
//! own tests, with the same words.

use crate::abi;
use crate::{FieldKind, Observation};

/// A declared field, as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredField<'a> {
    /// Name.
    pub name: &'a str,
    /// Semantic-convention key, or "".
    pub otel_key: &'a str,
    /// Low cardinality (may label a metric).
    pub low_cardinality: bool,
}

/// A declared metric, as far as the rules care.
#[derive(Debug, Clone, Copy)]
pub struct DeclaredMetric<'a> {
    /// Name.
    pub name: &'a str,
    /// Label field ids.
    pub labels: &'a [u16],
    /// Histogram bounds.
    pub buckets: &'a [f64],
}

/// A field or metric name, or an attribute key: 1 to 64 bytes of lowercase
/// ASCII letters, digits, `_` and `.`, starting with a letter, no empty
/// segment.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        && !name.split('.').any(str::is_empty);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} `{name}` is not a valid name: use 1 to 64 lowercase letters, digits, `_` \
             and `.`, starting with a letter (`tcp.state`)"
        ))
    }
}

/// Check declarations; the error names the offending field or metric.
pub fn check(fields: &[DeclaredField<'_>], metrics: &[DeclaredMetric<'_>]) -> Result<(), String> {
    if fields.len() > abi::MAX_FIELDS {
        return Err(format!(
            "{} fields declared, at most {} allowed",
            fields.len(),
            abi::MAX_FIELDS
        ));
    }
    if metrics.len() > abi::MAX_METRICS {
        return Err(format!(
            "{} metrics declared, at most {} allowed",
            metrics.len(),
            abi::MAX_METRICS
        ));
    }
    for (i, f) in fields.iter().enumerate() {
        check_name(&format!("fields[{i}].name"), f.name)?;
        if !f.otel_key.is_empty() {
            check_name(&format!("fields[{i}].otel_key"), f.otel_key)?;
        }
        if fields[..i].iter().any(|g| g.name == f.name) {
            return Err(format!("fields[{i}].name `{}` is declared twice", f.name));
        }
    }
    for (i, m) in metrics.iter().enumerate() {
        check_name(&format!("metrics[{i}].name"), m.name)?;
        if metrics[..i].iter().any(|g| g.name == m.name) {
            return Err(format!("metrics[{i}].name `{}` is declared twice", m.name));
        }
        if m.labels.len() > abi::MAX_LABELS {
            return Err(format!(
                "metrics[{i}] `{}` has {} labels, at most {} allowed",
                m.name,
                m.labels.len(),
                abi::MAX_LABELS
            ));
        }
        for (j, &l) in m.labels.iter().enumerate() {
            let Some(f) = fields.get(usize::from(l)) else {
                return Err(format!(
                    "metrics[{i}] `{}` labels[{j}] is field {l}, which is not declared ({} fields)",
                    m.name,
                    fields.len()
                ));
            };
            if !f.low_cardinality {
                return Err(format!(
                    "metrics[{i}] `{}` is labelled by `{}`, a high-cardinality field: \
                     only low-cardinality fields may label a metric",
                    m.name, f.name
                ));
            }
            if m.labels[..j].contains(&l) {
                return Err(format!(
                    "metrics[{i}] `{}` has label `{}` twice",
                    m.name, f.name
                ));
            }
        }
        if m.buckets.len() > abi::MAX_BUCKETS {
            return Err(format!(
                "metrics[{i}] `{}` has {} bucket bounds, at most {} allowed",
                m.name,
                m.buckets.len(),
                abi::MAX_BUCKETS
            ));
        }
        if m.buckets.iter().any(|b| !b.is_finite()) || m.buckets.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "metrics[{i}] `{}` bucket bounds must be finite and strictly increasing",
                m.name
            ));
        }
    }
    Ok(())
}

/// Whether an observation fits its plugin's declarations: every value names
/// a declared field (`field(id)` gives its name and kind) and carries its
/// kind; a metric point names one of the `metrics` declared metrics and its
/// value is finite. The host drops (and counts) what does not fit; the
/// conformance kit fails on it.
pub fn check_observation<'a>(
    o: &Observation,
    field: impl Fn(u16) -> Option<(&'a str, FieldKind)>,
    metrics: usize,
) -> Result<(), String> {
    let values = match o {
        Observation::Packet(p) => &p.values[..],
        Observation::Metric(m) => {
            if usize::from(m.metric) >= metrics {
                return Err(format!(
                    "metric id {} is not declared ({metrics} metrics)",
                    m.metric
                ));
            }
            if !m.value.is_finite() {
                return Err(format!(
                    "metric id {}: value {} is not finite",
                    m.metric, m.value
                ));
            }
            &m.labels
        }
        _ => return Ok(()),
    };
    for v in values {
        let Some((name, kind)) = field(v.field) else {
            return Err(format!("field id {} is not declared", v.field));
        };
        if v.value.kind() != kind {
            return Err(format!(
                "field `{name}` is declared {kind:?} but carries a {:?} value",
                v.value.kind()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &'static str, low: bool) -> DeclaredField<'static> {
        DeclaredField {
            name,
            otel_key: "",
            low_cardinality: low,
        }
    }

    #[test]
    fn names_follow_the_alphabet() {
        assert!(check_name("x", "tcp.state").is_ok());
        assert!(check_name("x", "seq_end").is_ok());
        for bad in ["", "Tcp", "1a", "a..b", "a.", "a-b", &"a".repeat(65)] {
            assert!(check_name("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicates_bad_labels_and_buckets_are_named() {
        let f = [field("state", true), field("seq", false)];
        assert!(check(&f, &[]).is_ok());
        let err = check(&[field("a", true), field("a", true)], &[]).unwrap_err();
        assert!(err.contains("declared twice"), "{err}");
        let m = |labels: &'static [u16], buckets: &'static [f64]| DeclaredMetric {
            name: "retransmits",
            labels,
            buckets,
        };
        assert!(check(&f, &[m(&[0], &[])]).is_ok());
        let err = check(&f, &[m(&[1], &[])]).unwrap_err();
        assert!(err.contains("high-cardinality field"), "{err}");
        let err = check(&f, &[m(&[7], &[])]).unwrap_err();
        assert!(err.contains("not declared"), "{err}");
        let err = check(&f, &[m(&[], &[2.0, 1.0])]).unwrap_err();
        assert!(err.contains("strictly increasing"), "{err}");
    }
}
