//! A compact binary encoding of spans and their parts, for the WAL and for the Parquet columns that hold
//! nested data (attributes, resources, events, links). Strings and byte strings are length-prefixed,
//! integers are varints, floats are 8 bytes little-endian.

use std::collections::HashMap;
use std::sync::Arc;

use super::model::{AttrValue, Attribute, Resource, Span, SpanEvent, SpanKind, SpanLink, StatusCode};
use crate::varint::{put_uvarint, put_varint, uvarint, varint};

/// Why bytes did not decode.
pub(crate) type DecodeError = &'static str;

const STR: u8 = 0;
const BOOL: u8 = 1;
const INT: u8 = 2;
const FLOAT: u8 = 3;
const BYTES: u8 = 4;

/// Reads from a byte slice, advancing a position.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn uvarint(&mut self) -> Result<u64, DecodeError> {
        uvarint(self.buf, &mut self.pos).ok_or("truncated varint")
    }

    fn varint(&mut self) -> Result<i64, DecodeError> {
        varint(self.buf, &mut self.pos).ok_or("truncated varint")
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let len = self.uvarint()? as usize;
        if len > self.buf.len() - self.pos.min(self.buf.len()) {
            return Err("length beyond the end");
        }
        Ok(len)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.len()?;
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let out = self.buf.get(self.pos..self.pos + N).ok_or("truncated id")?;
        self.pos += N;
        Ok(out.try_into().expect("N bytes"))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        std::str::from_utf8(self.bytes()?).map(str::to_owned).map_err(|_| "invalid utf-8")
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends `attributes` to `out`.
pub(crate) fn put_attributes(out: &mut Vec<u8>, attributes: &[Attribute]) {
    put_uvarint(out, attributes.len() as u64);
    for attribute in attributes {
        put_bytes(out, attribute.key.as_bytes());
        match &attribute.value {
            AttrValue::Str(s) => {
                out.push(STR);
                put_bytes(out, s.as_bytes());
            }
            AttrValue::Bool(b) => {
                out.push(BOOL);
                out.push(u8::from(*b));
            }
            AttrValue::Int(i) => {
                out.push(INT);
                put_varint(out, *i);
            }
            AttrValue::Float(f) => {
                out.push(FLOAT);
                out.extend_from_slice(&f.to_le_bytes());
            }
            AttrValue::Bytes(bytes) => {
                out.push(BYTES);
                put_bytes(out, bytes);
            }
        }
    }
}

pub(crate) fn read_attributes(reader: &mut Reader) -> Result<Vec<Attribute>, DecodeError> {
    let count = reader.uvarint()? as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let key = reader.string()?;
        let value = match reader.byte()? {
            STR => AttrValue::Str(reader.string()?),
            BOOL => AttrValue::Bool(reader.byte()? != 0),
            INT => AttrValue::Int(reader.varint()?),
            FLOAT => AttrValue::Float(f64::from_le_bytes(reader.fixed::<8>()?)),
            BYTES => AttrValue::Bytes(reader.bytes()?.to_vec()),
            _ => return Err("unknown attribute type"),
        };
        out.push(Attribute { key, value });
    }
    Ok(out)
}

/// Encodes attributes alone (a Parquet cell).
pub(crate) fn encode_attributes(attributes: &[Attribute]) -> Vec<u8> {
    let mut out = Vec::new();
    put_attributes(&mut out, attributes);
    out
}

/// Decodes [`encode_attributes`]' output; empty bytes are no attributes.
pub(crate) fn decode_attributes(bytes: &[u8]) -> Result<Vec<Attribute>, DecodeError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    read_attributes(&mut Reader::new(bytes))
}

/// Encodes a resource (a Parquet cell; equal resources give equal bytes, which dictionary encoding folds).
pub(crate) fn encode_resource(resource: &Resource) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, resource.service.as_bytes());
    put_bytes(&mut out, resource.scope_name.as_bytes());
    put_bytes(&mut out, resource.scope_version.as_bytes());
    put_attributes(&mut out, &resource.attributes);
    out
}

fn read_resource(reader: &mut Reader) -> Result<Resource, DecodeError> {
    Ok(Resource {
        service: reader.string()?,
        scope_name: reader.string()?,
        scope_version: reader.string()?,
        attributes: read_attributes(reader)?,
    })
}

/// Decodes [`encode_resource`]' output.
pub(crate) fn decode_resource(bytes: &[u8]) -> Result<Resource, DecodeError> {
    read_resource(&mut Reader::new(bytes))
}

/// Encodes events (a Parquet cell; empty when there are none).
pub(crate) fn encode_events(events: &[SpanEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    if events.is_empty() {
        return out;
    }
    put_uvarint(&mut out, events.len() as u64);
    for event in events {
        put_varint(&mut out, event.time_ns);
        put_bytes(&mut out, event.name.as_bytes());
        put_attributes(&mut out, &event.attributes);
    }
    out
}

/// Decodes [`encode_events`]' output.
pub(crate) fn decode_events(bytes: &[u8]) -> Result<Vec<SpanEvent>, DecodeError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = Reader::new(bytes);
    let count = reader.uvarint()? as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        out.push(SpanEvent {
            time_ns: reader.varint()?,
            name: reader.string()?,
            attributes: read_attributes(&mut reader)?,
        });
    }
    Ok(out)
}

/// Encodes links (a Parquet cell; empty when there are none).
pub(crate) fn encode_links(links: &[SpanLink]) -> Vec<u8> {
    let mut out = Vec::new();
    if links.is_empty() {
        return out;
    }
    put_uvarint(&mut out, links.len() as u64);
    for link in links {
        out.extend_from_slice(&link.trace_id);
        out.extend_from_slice(&link.span_id);
        put_bytes(&mut out, link.trace_state.as_bytes());
        put_attributes(&mut out, &link.attributes);
    }
    out
}

/// Decodes [`encode_links`]' output.
pub(crate) fn decode_links(bytes: &[u8]) -> Result<Vec<SpanLink>, DecodeError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = Reader::new(bytes);
    let count = reader.uvarint()? as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        out.push(SpanLink {
            trace_id: reader.fixed()?,
            span_id: reader.fixed()?,
            trace_state: reader.string()?,
            attributes: read_attributes(&mut reader)?,
        });
    }
    Ok(out)
}

/// Encodes a batch of spans as one WAL record: the distinct resources first, then each span naming its
/// resource by index.
pub(crate) fn encode_batch(spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.len() * 128);
    let mut resources: Vec<&Arc<Resource>> = Vec::new();
    let mut resource_index = Vec::with_capacity(spans.len());
    for span in spans {
        // By address only: spans of one export share their resource's Arc, and a repeat is merely encoded twice.
        let index = match resources.iter().rposition(|r| Arc::ptr_eq(r, &span.resource)) {
            Some(index) => index,
            None => {
                resources.push(&span.resource);
                resources.len() - 1
            }
        };
        resource_index.push(index);
    }
    put_uvarint(&mut out, resources.len() as u64);
    for resource in &resources {
        out.extend_from_slice(&encode_resource(resource));
    }
    put_uvarint(&mut out, spans.len() as u64);
    for (span, resource) in spans.iter().zip(resource_index) {
        put_uvarint(&mut out, resource as u64);
        out.extend_from_slice(&span.trace_id);
        out.extend_from_slice(&span.span_id);
        match span.parent_span_id {
            Some(parent) => {
                out.push(1);
                out.extend_from_slice(&parent);
            }
            None => out.push(0),
        }
        put_bytes(&mut out, span.trace_state.as_bytes());
        put_uvarint(&mut out, u64::from(span.flags));
        put_bytes(&mut out, span.name.as_bytes());
        out.push(span.kind as u8);
        out.push(span.status as u8);
        put_bytes(&mut out, span.status_message.as_bytes());
        put_varint(&mut out, span.start_ns);
        put_varint(&mut out, span.end_ns - span.start_ns);
        put_attributes(&mut out, &span.attributes);
        put_bytes(&mut out, &encode_events(&span.events));
        put_bytes(&mut out, &encode_links(&span.links));
    }
    out
}

/// Decodes [`encode_batch`]' output.
pub(crate) fn decode_batch(bytes: &[u8]) -> Result<Vec<Span>, DecodeError> {
    let mut reader = Reader::new(bytes);
    let resource_count = reader.uvarint()? as usize;
    let mut resources = Vec::with_capacity(resource_count.min(1024));
    for _ in 0..resource_count {
        resources.push(Arc::new(read_resource(&mut reader)?));
    }
    let count = reader.uvarint()? as usize;
    let mut spans = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let resource = resources.get(reader.uvarint()? as usize).ok_or("resource index out of range")?.clone();
        let trace_id = reader.fixed()?;
        let span_id = reader.fixed()?;
        let parent_span_id = match reader.byte()? {
            0 => None,
            _ => Some(reader.fixed()?),
        };
        let trace_state = reader.string()?;
        let flags = reader.uvarint()? as u32;
        let name = reader.string()?;
        let kind = SpanKind::from_number(i64::from(reader.byte()?));
        let status = StatusCode::from_number(i64::from(reader.byte()?));
        let status_message = reader.string()?;
        let start_ns = reader.varint()?;
        let end_ns = start_ns.saturating_add(reader.varint()?);
        let attributes = read_attributes(&mut reader)?;
        let events = decode_events(reader.bytes()?)?;
        let links = decode_links(reader.bytes()?)?;
        spans.push(Span {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            flags,
            name,
            kind,
            status,
            status_message,
            start_ns,
            end_ns,
            resource,
            attributes,
            events,
            links,
        });
    }
    if !reader.is_empty() {
        return Err("trailing bytes after the spans");
    }
    Ok(spans)
}

/// Shares equal resources decoded from equal bytes.
#[derive(Default)]
pub(crate) struct ResourceCache {
    by_bytes: HashMap<Vec<u8>, Arc<Resource>>,
}

impl ResourceCache {
    pub(crate) fn get(&mut self, bytes: &[u8]) -> Result<Arc<Resource>, DecodeError> {
        if let Some(resource) = self.by_bytes.get(bytes) {
            return Ok(resource.clone());
        }
        let resource = Arc::new(decode_resource(bytes)?);
        self.by_bytes.insert(bytes.to_vec(), resource.clone());
        Ok(resource)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn attribute() -> impl Strategy<Value = Attribute> {
        let value = prop_oneof![
            ".{0,12}".prop_map(AttrValue::Str),
            any::<bool>().prop_map(AttrValue::Bool),
            any::<i64>().prop_map(AttrValue::Int),
            any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()).prop_map(AttrValue::Float),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(AttrValue::Bytes),
        ];
        ("[a-z.]{1,10}", value).prop_map(|(key, value)| Attribute { key, value })
    }

    prop_compose! {
        /// Any span, with one of two resources.
        pub(crate) fn span()(
            trace_id in any::<[u8; 16]>(), span_id in any::<[u8; 8]>(), parent in any::<Option<[u8; 8]>>(),
            name in ".{0,16}", kind in 0i64..6, status in 0i64..3, start in any::<i32>(), duration in 0i64..1 << 40,
            attributes in proptest::collection::vec(attribute(), 0..5),
            event_attributes in proptest::collection::vec(attribute(), 0..3), events in 0usize..3,
            links in 0usize..2, service in prop_oneof![Just("cart"), Just("frontend")],
        ) -> Span {
            let resource = Arc::new(Resource {
                service: service.to_owned(),
                attributes: vec![Attribute::str("service.name", service)],
                scope_name: "lib".into(),
                scope_version: "1".into(),
            });
            Span {
                trace_id, span_id, parent_span_id: parent, trace_state: String::new(), flags: 1, name,
                kind: SpanKind::from_number(kind), status: StatusCode::from_number(status),
                status_message: if status == 2 { "boom".into() } else { String::new() },
                start_ns: i64::from(start) * 1000, end_ns: i64::from(start) * 1000 + duration, resource, attributes,
                events: (0..events).map(|i| SpanEvent {
                    time_ns: i64::from(start) + i as i64, name: format!("e{i}"), attributes: event_attributes.clone(),
                }).collect(),
                links: (0..links).map(|_| SpanLink {
                    trace_id, span_id, trace_state: "k=v".into(), attributes: event_attributes.clone(),
                }).collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn batches_round_trip(spans in proptest::collection::vec(span(), 0..20)) {
            let decoded = decode_batch(&encode_batch(&spans)).unwrap();
            prop_assert_eq!(decoded, spans);
        }

        #[test]
        fn truncated_batches_are_errors_not_panics(spans in proptest::collection::vec(span(), 1..4), cut in 1usize..64) {
            let bytes = encode_batch(&spans);
            let cut = cut.min(bytes.len());
            prop_assert!(decode_batch(&bytes[..bytes.len() - cut]).is_err());
        }
    }
}
