//! OTLP logs requests written straight from borrowed entries: the wire format of an
//! `ExportLogsServiceRequest` (one `ResourceLogs` per container, one `ScopeLogs`, and per record its time,
//! body and two attributes), field by field, in the order and form prost writes it. Building the generated
//! structs first cost a string copy and an allocation per field, and sizing them again at every level of
//! nesting; this is the agent's hottest path when it ships logs. A test checks the bytes equal prost's.

use prost::encoding::{encode_varint, encoded_len_varint};

use super::{Origin, POSITION_ATTRIBUTE, Record};

/// Wire type of length-delimited fields.
const LEN: u8 = 2;
/// Wire type of fixed 64-bit fields.
const I64: u8 = 1;

/// The key byte of field `number` (below 16) of `wire_type`.
const fn key(number: u8, wire_type: u8) -> u8 {
    (number << 3) | wire_type
}

/// Bytes of a length-delimited field whose content takes `len` bytes.
fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Bytes of an `AnyValue` holding a string of `len` bytes.
fn any_string_len(len: usize) -> usize {
    field_len(len)
}

/// Bytes of a `KeyValue` with a string value.
fn key_value_len(key: &str, value_len: usize) -> usize {
    field_len(key.len()) + field_len(any_string_len(value_len))
}

fn put_len_field(out: &mut Vec<u8>, number: u8, len: usize) {
    out.push(key(number, LEN));
    encode_varint(len as u64, out);
}

fn put_string_field(out: &mut Vec<u8>, number: u8, text: &[u8]) {
    put_len_field(out, number, text.len());
    out.extend_from_slice(text);
}

fn put_key_value(out: &mut Vec<u8>, number: u8, key: &str, value: &[u8]) {
    put_len_field(out, number, key_value_len(key, value.len()));
    put_string_field(out, 1, key.as_bytes());
    put_len_field(out, 2, any_string_len(value.len()));
    put_string_field(out, 1, value);
}

/// `<source key, 16 hex digits>:<offset>` in a stack buffer.
pub(super) struct Position {
    bytes: [u8; 40],
    len: usize,
}

impl Position {
    pub(super) fn of(record: &Record<'_>) -> Self {
        use std::io::Write;
        let mut bytes = [0u8; 40];
        let mut cursor = std::io::Cursor::new(&mut bytes[..]);
        write!(cursor, "{:016x}:{}", record.source, record.offset).expect("40 bytes hold a position");
        let len = cursor.position() as usize;
        Position { bytes, len }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Bytes of [`Position::of`] `record`: 16 hex digits, a colon and the offset's decimal digits.
fn position_len(record: &Record<'_>) -> usize {
    17 + record.offset.checked_ilog10().map_or(1, |digits| digits as usize + 1)
}

/// Bytes of one `LogRecord`.
fn record_len(record: &Record<'_>) -> usize {
    let time = if record.ts_ns > 0 { 9 } else { 0 };
    time + field_len(any_string_len(record.text.len()))
        + field_len(key_value_len("log.iostream", record.stream.len()))
        + field_len(key_value_len(POSITION_ATTRIBUTE, position_len(record)))
}

/// The resource attributes of a container's records.
fn resource_attributes<'a>(origin: &'a Origin, node: &'a str) -> [(&'static str, &'a str); 5] {
    [
        ("service.name", &origin.container),
        ("k8s.namespace.name", &origin.namespace),
        ("k8s.pod.name", &origin.pod),
        ("k8s.container.name", &origin.container),
        ("k8s.node.name", node),
    ]
}

/// The encoded request for `groups` (each container's records, in order), as
/// [`super::encode`]'s request would be encoded by prost.
pub fn encode_request(groups: &[(&Origin, &[Record<'_>])], node: &str) -> Vec<u8> {
    let mut sizes: Vec<(usize, usize, usize)> = Vec::with_capacity(groups.len());
    let mut total = 0;
    for (origin, records) in groups {
        let resource: usize =
            resource_attributes(origin, node).iter().map(|(k, v)| field_len(key_value_len(k, v.len()))).sum();
        let scope: usize = records.iter().map(|r| field_len(record_len(r))).sum();
        let resource_logs = field_len(resource) + field_len(scope);
        sizes.push((resource, scope, resource_logs));
        total += field_len(resource_logs);
    }
    let mut out = Vec::with_capacity(total);
    for ((origin, records), (resource, scope, resource_logs)) in groups.iter().zip(sizes) {
        put_len_field(&mut out, 1, resource_logs);
        put_len_field(&mut out, 1, resource);
        for (name, value) in resource_attributes(origin, node) {
            put_key_value(&mut out, 1, name, value.as_bytes());
        }
        put_len_field(&mut out, 2, scope);
        for record in *records {
            let position = Position::of(record);
            debug_assert_eq!(position.len, position_len(record));
            put_len_field(&mut out, 2, record_len(record));
            if record.ts_ns > 0 {
                out.push(key(1, I64));
                out.extend_from_slice(&(record.ts_ns as u64).to_le_bytes());
            }
            put_len_field(&mut out, 5, any_string_len(record.text.len()));
            put_string_field(&mut out, 1, record.text.as_bytes());
            put_key_value(&mut out, 6, "log.iostream", record.stream.as_bytes());
            put_key_value(&mut out, 6, POSITION_ATTRIBUTE, position.as_bytes());
        }
    }
    debug_assert_eq!(out.len(), total);
    out
}
