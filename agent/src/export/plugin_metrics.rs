//! Metrics plugins declare (ABI 1.3): recorded by the host whatever the
//! plugin, summed for the exit summary, and exported over OTLP as
//! `vnt.<plugin>.<metric>` when metrics export is on (docs/otel.md).
//!
//! Cardinality is bounded twice: labels can only be low-cardinality fields
//! (checked when the plugin loads), and each metric admits at most
//! `max_series` distinct label sets. Points of further label sets are
//! recorded once without labels but with `otel.metric.overflow = true` (the
//! OpenTelemetry SDK's convention) and counted in the summary's
//! `metric_overflow` and the `vnt.plugin.metric.overflow` counter.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use opentelemetry::KeyValue;
use serde::Serialize;
use vnt_plugin_api::{MetricKind, MetricPoint, Value};

use crate::plugin_host::PluginMeta;

/// Distinct label sets one plugin metric admits unless configured.
pub const DEFAULT_MAX_SERIES: usize = 1000;

/// One series in the summary: a metric's value for one label set.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct SeriesSummary {
    /// `vnt.<plugin>.<metric>`.
    pub metric: String,
    /// Label key -> value; `otel.metric.overflow` for the overflow series.
    pub labels: BTreeMap<String, String>,
    /// Counter: the sum; gauge: the last reading; histogram: the sum of samples.
    pub value: f64,
    /// Points recorded.
    pub points: u64,
}

#[derive(Debug, Default)]
struct Series {
    value: f64,
    points: u64,
    /// Label values, in the metric's key order.
    labels: Vec<String>,
    /// The same as OpenTelemetry attributes, built once per series.
    attrs: Vec<KeyValue>,
}

enum Instrument {
    Counter(Counter<f64>),
    Gauge(Gauge<f64>),
    Histogram(Histogram<f64>),
}

struct Metric {
    name: String,
    kind: MetricKind,
    /// Label keys (the label fields' attribute keys), in declaration order.
    keys: Vec<String>,
    label_fields: Vec<u16>,
    /// By [`series_key`] of the label values.
    series: BTreeMap<String, Series>,
    overflow: Series,
    overflowed: u64,
    instrument: Option<Instrument>,
}

/// The declared metrics of every loaded plugin.
pub struct PluginMetrics {
    /// Reused for every point's series key and label text.
    key: String,
    text: String,
    /// By plugin index, then metric id.
    plugins: Vec<Vec<Metric>>,
    max_series: usize,
    overflow_counter: Option<Counter<u64>>,
}

impl PluginMetrics {
    /// Metrics of `metas` (in plugin-index order), at most `max_series`
    /// label sets each.
    pub fn new(metas: &[PluginMeta], max_series: usize) -> PluginMetrics {
        let plugins = metas
            .iter()
            .map(|m| {
                let plugin = m.name.replace('-', "_");
                m.metrics
                    .iter()
                    .map(|d| Metric {
                        name: format!("vnt.{plugin}.{}", d.name),
                        kind: d.kind,
                        keys: d
                            .labels
                            .iter()
                            .map(|&l| m.fields[usize::from(l)].key.to_string())
                            .collect(),
                        label_fields: d.labels.clone(),
                        series: BTreeMap::new(),
                        overflow: Series::default(),
                        overflowed: 0,
                        instrument: None,
                    })
                    .collect()
            })
            .collect();
        PluginMetrics {
            key: String::new(),
            text: String::new(),
            plugins,
            max_series: max_series.max(1),
            overflow_counter: None,
        }
    }

    /// Export through `meter` from now on.
    pub fn export_to(&mut self, meter: &Meter, metas: &[PluginMeta]) {
        for (metrics, meta) in self.plugins.iter_mut().zip(metas) {
            for (m, d) in metrics.iter_mut().zip(&meta.metrics) {
                let (name, unit, desc) = (m.name.clone(), d.unit.clone(), d.description.clone());
                m.instrument = Some(match d.kind {
                    MetricKind::Counter => Instrument::Counter(
                        meter
                            .f64_counter(name)
                            .with_unit(unit)
                            .with_description(desc)
                            .build(),
                    ),
                    MetricKind::Gauge => Instrument::Gauge(
                        meter
                            .f64_gauge(name)
                            .with_unit(unit)
                            .with_description(desc)
                            .build(),
                    ),
                    MetricKind::Histogram => {
                        let b = meter
                            .f64_histogram(name)
                            .with_unit(unit)
                            .with_description(desc);
                        Instrument::Histogram(if d.buckets.is_empty() {
                            b.build()
                        } else {
                            b.with_boundaries(d.buckets.clone()).build()
                        })
                    }
                });
            }
        }
        self.overflow_counter = Some(
            meter
                .u64_counter("vnt.plugin.metric.overflow")
                .with_unit("{point}")
                .with_description(
                    "Points of plugin metrics recorded without labels because the metric \
                     reached its limit of distinct label sets",
                )
                .build(),
        );
    }

    /// Record one point of plugin `plugin` (its values were checked against
    /// the declarations when decoded).
    pub fn record(&mut self, plugin: usize, p: &MetricPoint) {
        let Some(m) = self
            .plugins
            .get_mut(plugin)
            .and_then(|ms| ms.get_mut(usize::from(p.metric)))
        else {
            return;
        };
        // The series key without allocating: each label value as
        // `<length>:<text>`, so no value can run into the next.
        self.key.clear();
        for f in &m.label_fields {
            self.text.clear();
            if let Some(v) = p.labels.iter().find(|v| v.field == *f) {
                match &v.value {
                    Value::Str(s) => self.text.push_str(s),
                    other => {
                        let _ = write!(self.text, "{other}");
                    }
                }
            }
            let _ = write!(self.key, "{}:", self.text.len());
            self.key.push_str(&self.text);
        }
        let admitted = m.series.contains_key(self.key.as_str()) || m.series.len() < self.max_series;
        let series = if admitted {
            if !m.series.contains_key(self.key.as_str()) {
                let labels: Vec<String> = m
                    .label_fields
                    .iter()
                    .map(|f| {
                        p.labels
                            .iter()
                            .find(|v| v.field == *f)
                            .map_or_else(String::new, |v| match &v.value {
                                Value::Str(s) => s.to_string(),
                                other => other.to_string(),
                            })
                    })
                    .collect();
                let attrs = m
                    .keys
                    .iter()
                    .zip(&labels)
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect();
                m.series.insert(
                    self.key.clone(),
                    Series {
                        labels,
                        attrs,
                        ..Series::default()
                    },
                );
            }
            m.series.get_mut(self.key.as_str()).expect("inserted above")
        } else {
            m.overflowed += 1;
            if let Some(c) = &self.overflow_counter {
                c.add(1, &[KeyValue::new("vnt.metric", m.name.clone())]);
            }
            if m.overflow.attrs.is_empty() {
                m.overflow.attrs = vec![KeyValue::new("otel.metric.overflow", true)];
            }
            &mut m.overflow
        };
        let attrs = &series.attrs;
        match &m.instrument {
            Some(Instrument::Counter(c)) => c.add(p.value.max(0.0), attrs),
            Some(Instrument::Gauge(g)) => g.record(p.value, attrs),
            Some(Instrument::Histogram(h)) => h.record(p.value, attrs),
            None => {}
        }
        series.points += 1;
        match m.kind {
            MetricKind::Gauge => series.value = p.value,
            MetricKind::Counter | MetricKind::Histogram => series.value += p.value,
        }
    }

    /// Plugin `plugin`'s series, for the summary, and how many points
    /// overflowed.
    pub fn summary(&self, plugin: usize) -> (Vec<SeriesSummary>, u64) {
        let Some(ms) = self.plugins.get(plugin) else {
            return (Vec::new(), 0);
        };
        let mut out = Vec::new();
        let mut overflowed = 0;
        for m in ms {
            for s in m.series.values() {
                out.push(SeriesSummary {
                    metric: m.name.clone(),
                    labels: m
                        .keys
                        .iter()
                        .cloned()
                        .zip(s.labels.iter().cloned())
                        .collect(),
                    value: s.value,
                    points: s.points,
                });
            }
            if m.overflow.points > 0 {
                out.push(SeriesSummary {
                    metric: m.name.clone(),
                    labels: BTreeMap::from([("otel.metric.overflow".into(), "true".into())]),
                    value: m.overflow.value,
                    points: m.overflow.points,
                });
            }
            overflowed += m.overflowed;
        }
        (out, overflowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_host::{FieldInfo, MetricInfo};
    use vnt_plugin_api::{FieldKind, FieldValue};

    fn meta() -> PluginMeta {
        PluginMeta {
            abi_major: 1,
            abi_minor: 3,
            name: "tcpretrans".into(),
            version: "0.1.0".into(),
            description: String::new(),
            test_fixture: false,
            bpf_object: vec![],
            probes: vec![],
            hooks: vec![],
            fields: vec![FieldInfo {
                name: "state".into(),
                kind: FieldKind::Str,
                unit: String::new(),
                otel_key: String::new(),
                description: String::new(),
                low_cardinality: true,
                key: "vnt.tcpretrans.state".into(),
            }],
            metrics: vec![MetricInfo {
                name: "retransmits".into(),
                kind: MetricKind::Counter,
                unit: "{segment}".into(),
                description: String::new(),
                labels: vec![0],
                buckets: vec![],
            }],
            tick_interval_ms: 0,
            joins_by_tcp_seq: false,
        }
    }

    fn point(state: &str) -> MetricPoint {
        MetricPoint {
            metric: 0,
            value: 1.0,
            labels: vec![FieldValue::new(0, Value::Str(state.to_owned().into()))],
        }
    }

    #[test]
    fn counters_sum_per_label_set() {
        let mut m = PluginMetrics::new(&[meta()], 10);
        m.record(0, &point("ESTABLISHED"));
        m.record(0, &point("ESTABLISHED"));
        m.record(0, &point("SYN_SENT"));
        let (s, overflow) = m.summary(0);
        assert_eq!(overflow, 0);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].metric, "vnt.tcpretrans.retransmits");
        assert_eq!(s[0].labels["vnt.tcpretrans.state"], "ESTABLISHED");
        assert_eq!((s[0].value, s[0].points), (2.0, 2));
    }

    #[test]
    fn label_sets_beyond_the_cap_fold_into_overflow_and_are_counted() {
        let mut m = PluginMetrics::new(&[meta()], 2);
        for st in ["A", "B", "C", "D", "A"] {
            m.record(0, &point(st));
        }
        let (s, overflow) = m.summary(0);
        assert_eq!(overflow, 2);
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].labels["otel.metric.overflow"], "true");
        assert_eq!(s[2].value, 2.0);
        assert_eq!(s[0].value, 2.0, "a known label set is still admitted");
    }
}
