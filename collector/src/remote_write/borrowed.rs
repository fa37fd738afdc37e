//! Remote write 1.0 decoded without copying, and without reading labels: each series' label fields stay
//! a slice of the decompressed body, laid out as a [`RefBatch`]. Those bytes are the store's series key
//! when the sender wrote them as Prometheus does (sorted, name then value), so the store finds known
//! series without decoding or validating them; [`read_labels`] reads the others. The reader follows
//! protobuf's wire format for `WriteRequest` (fields: 1 timeseries, 3 metadata), `TimeSeries` (1 labels,
//! 2 samples, 3 exemplars, 4 histograms), `Label` (1 name, 2 value) and `Sample` (1 value as a double, 2
//! timestamp as an int64); unknown fields are skipped, as protobuf requires. Hand-written because the
//! generated decoder owns every string: on the hot path that was a third of the server's CPU.

use vigil_tsdb::{MetricMetadata, RefBatch, Sample};

use super::{WireMetadata, metadata_type};
use crate::IngestError;

/// A decoded request.
#[derive(Debug, Default)]
pub struct Borrowed<'a> {
    /// The series and samples.
    pub batch: RefBatch<'a>,
    /// Metric families' metadata.
    pub metadata: Vec<(String, MetricMetadata)>,
    /// Native histogram samples (not stored).
    pub histograms: usize,
    /// Exemplars (not stored).
    pub exemplars: usize,
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over protobuf bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.rest.is_empty()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for (i, byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err("truncated or overlong varint".into())
    }

    /// The next field number and wire type.
    fn key(&mut self) -> Result<(u64, u8), String> {
        let key = self.varint()?;
        Ok((key >> 3, (key & 7) as u8))
    }

    fn fixed64(&mut self) -> Result<u64, String> {
        let (bytes, rest) = self.rest.split_first_chunk::<8>().ok_or("truncated fixed64")?;
        self.rest = rest;
        Ok(u64::from_le_bytes(*bytes))
    }

    fn length_delimited(&mut self) -> Result<&'a [u8], String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
        if len > self.rest.len() {
            return Err(format!("length {len} beyond the {} bytes left", self.rest.len()));
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.length_delimited()?).map_err(|_| "invalid string value: data is not UTF-8".into())
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LENGTH => self.length_delimited().map(drop),
            FIXED32 => {
                let (_, rest) = self.rest.split_first_chunk::<4>().ok_or("truncated fixed32")?;
                self.rest = rest;
                Ok(())
            }
            other => Err(format!("unsupported wire type {other}")),
        }
    }
}

fn expect(wire: u8, want: u8, what: &str) -> Result<(), String> {
    if wire == want { Ok(()) } else { Err(format!("{what} has wire type {wire}")) }
}

/// The label pairs of a series' label fields (`TimeSeries` field 1, as [`RefBatch`] holds them).
pub fn read_labels(bytes: &[u8]) -> Result<Vec<(&str, &str)>, String> {
    let mut reader = Reader { rest: bytes };
    let mut pairs = Vec::new();
    let malformed = |e: String| format!("invalid WriteRequest protobuf: {e}");
    while !reader.done() {
        match reader.key().map_err(malformed)? {
            (1, LENGTH) => pairs.push(label(reader.length_delimited().map_err(malformed)?).map_err(malformed)?),
            (_, wire) => reader.skip(wire).map_err(malformed)?,
        }
    }
    Ok(pairs)
}

fn label(bytes: &[u8]) -> Result<(&str, &str), String> {
    let mut reader = Reader { rest: bytes };
    let (mut name, mut value) = ("", "");
    while !reader.done() {
        match reader.key()? {
            (1, wire) => {
                expect(wire, LENGTH, "Label.name")?;
                name = reader.string()?;
            }
            (2, wire) => {
                expect(wire, LENGTH, "Label.value")?;
                value = reader.string()?;
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    Ok((name, value))
}

fn sample(bytes: &[u8]) -> Result<Sample, String> {
    let mut reader = Reader { rest: bytes };
    let mut sample = Sample { t: 0, v: 0.0 };
    while !reader.done() {
        match reader.key()? {
            (1, wire) => {
                expect(wire, FIXED64, "Sample.value")?;
                sample.v = f64::from_bits(reader.fixed64()?);
            }
            (2, wire) => {
                expect(wire, VARINT, "Sample.timestamp")?;
                // int64 on the wire: the two's complement bits of the value.
                sample.t = reader.varint()? as i64;
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    Ok(sample)
}

fn series<'a>(bytes: &'a [u8], out: &mut Borrowed<'a>) -> Result<(), String> {
    let samples_start = out.batch.samples.len();
    // Where each run of label fields starts and ends; one run (the usual case) is borrowed as it is.
    let mut label_runs: Vec<(usize, usize)> = Vec::new();
    let mut reader = Reader { rest: bytes };
    while !reader.done() {
        let at = bytes.len() - reader.rest.len();
        match reader.key()? {
            (1, wire) => {
                expect(wire, LENGTH, "TimeSeries.labels")?;
                reader.length_delimited()?;
                let end = bytes.len() - reader.rest.len();
                match label_runs.last_mut() {
                    Some(run) if run.1 == at => run.1 = end,
                    _ => label_runs.push((at, end)),
                }
            }
            (2, wire) => {
                expect(wire, LENGTH, "TimeSeries.samples")?;
                out.batch.samples.push(sample(reader.length_delimited()?)?);
            }
            (3, LENGTH) => {
                reader.length_delimited()?;
                out.exemplars += 1;
            }
            (4, LENGTH) => {
                reader.length_delimited()?;
                out.histograms += 1;
            }
            (_, wire) => reader.skip(wire)?,
        }
    }
    let labels: std::borrow::Cow<'a, [u8]> = match label_runs.as_slice() {
        [] => std::borrow::Cow::Borrowed(&[]),
        [(start, end)] => std::borrow::Cow::Borrowed(&bytes[*start..*end]),
        runs => std::borrow::Cow::Owned(runs.iter().flat_map(|(start, end)| &bytes[*start..*end]).copied().collect()),
    };
    out.batch.series.push((labels, samples_start..out.batch.samples.len()));
    Ok(())
}

fn metadata(bytes: &[u8]) -> Result<(String, MetricMetadata), String> {
    let wire = <WireMetadata as prost::Message>::decode(bytes).map_err(|e| e.to_string())?;
    let entry = MetricMetadata { metric_type: metadata_type(wire.r#type).into(), help: wire.help, unit: wire.unit };
    Ok((wire.metric_family_name, entry))
}

/// Decodes an uncompressed remote write 1.0 `WriteRequest`, borrowing its strings.
pub fn decode(raw: &[u8]) -> Result<Borrowed<'_>, IngestError> {
    let malformed = |e: String| IngestError::Malformed(format!("invalid WriteRequest protobuf: {e}"));
    let mut out = Borrowed::default();
    let mut reader = Reader { rest: raw };
    while !reader.done() {
        match reader.key().map_err(malformed)? {
            (1, LENGTH) => {
                let bytes = reader.length_delimited().map_err(malformed)?;
                series(bytes, &mut out).map_err(malformed)?;
            }
            (3, LENGTH) => {
                let bytes = reader.length_delimited().map_err(malformed)?;
                out.metadata.push(metadata(bytes).map_err(malformed)?);
            }
            (field @ (1 | 3), wire) => return Err(malformed(format!("field {field} has wire type {wire}"))),
            (_, wire) => reader.skip(wire).map_err(malformed)?,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;

    use super::super::{Label, TimeSeries, WireSample, WriteRequest};
    use super::*;

    fn request() -> impl Strategy<Value = WriteRequest> {
        let name = prop_oneof![Just("__name__".to_owned()), "[a-z_]{1,6}"];
        let label = (name, "[a-zé0-9 ]{0,5}").prop_map(|(name, value)| Label { name, value });
        let sample = (any::<i64>(), any::<f64>()).prop_map(|(timestamp, value)| WireSample { timestamp, value });
        let series = (proptest::collection::vec(label, 0..6), proptest::collection::vec(sample, 0..4))
            .prop_map(|(labels, samples)| TimeSeries { labels, samples });
        proptest::collection::vec(series, 0..8).prop_map(|timeseries| WriteRequest { timeseries, metadata: Vec::new() })
    }

    proptest! {
        /// The borrowing decoder reads what the generated one reads: the same series, labels (empty values
        /// dropped) and samples.
        #[test]
        fn agrees_with_the_generated_decoder(request in request()) {
            let raw = request.encode_to_vec();
            let borrowed = decode(&raw).unwrap();
            let generated = WriteRequest::decode(raw.as_slice()).unwrap();
            prop_assert_eq!(borrowed.batch.series.len(), generated.timeseries.len());
            for ((labels, samples), series) in borrowed.batch.iter().zip(&generated.timeseries) {
                let expected: Vec<(&str, &str)> = series.labels.iter().map(|l| (&*l.name, &*l.value)).collect();
                prop_assert_eq!(&read_labels(labels).unwrap(), &expected);
                // Labels written as Prometheus writes them (sorted, no empty values) are the store's series key.
                let mut key = Vec::new();
                vigil_tsdb::series_key(expected.iter().copied(), &mut key);
                if expected.iter().all(|(_, value)| !value.is_empty()) && expected.is_sorted_by(|a, b| a.0 < b.0) {
                    prop_assert_eq!(labels, key.as_slice());
                }
                let wanted: Vec<(i64, u64)> = series.samples.iter().map(|s| (s.timestamp, s.value.to_bits())).collect();
                let read: Vec<(i64, u64)> = samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
                prop_assert_eq!(read, wanted);
            }
        }

        /// Truncated or corrupted bodies are refused or read, never a panic.
        #[test]
        fn mangled_bodies_never_panic(
            request in request(), cut in any::<prop::sample::Index>(), flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut raw = request.encode_to_vec();
            if !raw.is_empty() {
                let at = flip.0.index(raw.len());
                raw[at] ^= flip.1;
            }
            if let Ok(request) = decode(&raw[..cut.index(raw.len() + 1)]) {
                for (labels, _) in request.batch.iter() {
                    let _ = read_labels(labels);
                }
            }
        }
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let error = decode(&[0x0a, 0x05, 0x0a]).unwrap_err().to_string();
        assert!(error.contains("invalid WriteRequest protobuf: length 5 beyond"), "{error}");
        // Labels are read only when the store does not know the series.
        let non_utf8 = [0x0a, 0x08, 0x0a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, 0xff];
        let request = decode(&non_utf8).unwrap();
        assert!(read_labels(&request.batch.series[0].0).unwrap_err().contains("not UTF-8"));
        let group = [0x0b];
        assert!(decode(&group).unwrap_err().to_string().contains("wire type 3"));
    }
}
