//! What the trace APIs share: spans back into OTLP's shapes (grouped by resource and scope), tag
//! matching for Jaeger's and Tempo's tag searches, and time parameters.

use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as OtlpSpan, Status};
use vigil_tsdb::traces::{AttrValue, Attribute, Resource, Span, StatusCode, attribute};

/// An attribute value in OTLP's form.
pub(crate) fn any_value(value: &AttrValue) -> AnyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Float(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Bytes(bytes) => any_value::Value::BytesValue(bytes.clone()),
    };
    AnyValue { value: Some(value) }
}

pub(crate) fn key_values(attributes: &[Attribute]) -> Vec<KeyValue> {
    attributes.iter().map(|a| KeyValue { key: a.key.clone(), value: Some(any_value(&a.value)) }).collect()
}

fn otlp_span(span: &Span) -> OtlpSpan {
    OtlpSpan {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        trace_state: span.trace_state.clone(),
        parent_span_id: span.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: span.flags,
        name: span.name.clone(),
        kind: span.kind as i32,
        start_time_unix_nano: span.start_ns as u64,
        end_time_unix_nano: span.end_ns as u64,
        attributes: key_values(&span.attributes),
        dropped_attributes_count: 0,
        events: span
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_ns as u64,
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: span
            .links
            .iter()
            .map(|l| Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: key_values(&l.attributes),
                dropped_attributes_count: 0,
                flags: 0,
            })
            .collect(),
        dropped_links_count: 0,
        status: Some(Status { message: span.status_message.clone(), code: span.status as i32 }),
    }
}

/// Spans grouped by resource and scope, in first-seen order, as OTLP carries them.
pub(crate) fn resource_spans(spans: &[Span]) -> Vec<ResourceSpans> {
    let mut groups: Vec<(Arc<Resource>, Vec<&Span>)> = Vec::new();
    for span in spans {
        match groups.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &span.resource) || **r == *span.resource) {
            Some((_, members)) => members.push(span),
            None => groups.push((span.resource.clone(), vec![span])),
        }
    }
    let mut out: Vec<ResourceSpans> = Vec::new();
    for (resource, members) in groups {
        let scope_spans = ScopeSpans {
            scope: Some(InstrumentationScope {
                name: resource.scope_name.clone(),
                version: resource.scope_version.clone(),
                ..Default::default()
            }),
            spans: members.into_iter().map(otlp_span).collect(),
            schema_url: String::new(),
        };
        let same_resource = out.iter_mut().find(|r| {
            r.resource.as_ref().is_some_and(|existing| existing.attributes == key_values(&resource.attributes))
        });
        match same_resource {
            Some(existing) => existing.scope_spans.push(scope_spans),
            None => out.push(ResourceSpans {
                resource: Some(OtlpResource { attributes: key_values(&resource.attributes), ..Default::default() }),
                scope_spans: vec![scope_spans],
                schema_url: String::new(),
            }),
        }
    }
    out
}

/// OTLP/JSON of resource spans: the generated serializers give hex ids and string times; enums stay
/// numbers, as OTLP/JSON wants.
pub(crate) fn resource_spans_json(spans: &[Span]) -> serde_json::Value {
    serde_json::to_value(resource_spans(spans)).expect("OTLP messages serialize")
}

/// Jaeger's and Tempo's tag filters: `key=value` against the span's name, status or kind for the special
/// keys, else the text of a span or resource attribute.
pub(crate) fn tag_matches(span: &Span, key: &str, value: &str) -> bool {
    match key {
        "error" => (span.status == StatusCode::Error) == (value == "true"),
        "service.name" => span.service() == value,
        "name" | "span.name" => span.name == value,
        "status.code" | "otel.status_code" => span.status.name().eq_ignore_ascii_case(value),
        "span.kind" => span.kind.name() == value,
        _ => attribute(&span.attributes, key)
            .or_else(|| attribute(&span.resource.attributes, key))
            .is_some_and(|v| v.text() == value),
    }
}

/// Splits Tempo's logfmt `tags` (`service.name=cart http.status_code=500 name="GET /x"`).
pub(crate) fn logfmt_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(|| format!("tag {rest:?} has no '='"))?;
        let key = rest[..eq].trim().to_owned();
        rest = &rest[eq + 1..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or("unterminated quoted tag value")?;
            let value = quoted[..end].to_owned();
            rest = &quoted[end + 1..];
            value
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            let value = rest[..end].to_owned();
            rest = &rest[end..];
            value
        };
        pairs.push((key, value));
        rest = rest.trim_start();
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logfmt_tags_split_with_quotes() {
        let pairs = logfmt_pairs(r#"service.name=cart name="GET /cart" http.status_code=500"#).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("service.name".to_owned(), "cart".to_owned()),
                ("name".to_owned(), "GET /cart".to_owned()),
                ("http.status_code".to_owned(), "500".to_owned())
            ]
        );
        assert!(logfmt_pairs("novalue").is_err());
    }
}
