//! Span blocks: immutable Parquet files of spans sorted by trace id, then start time.
//!
//! Columns are flat (ids, name, service, kind, status, start, duration) so searches can filter on them
//! without decoding the nested parts, which sit in binary columns in [`codec`](super::codec)'s encoding.
//! The trace id column has min/max statistics per row group and a bloom filter, so a trace lookup reads
//! one row group of the blocks that hold the trace and only a bloom filter of the others. The footer's
//! key-value metadata holds the block's [`BlockMeta`]: time range, span count, catalog of names and tags,
//! and the last WAL segment the block covers.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, FixedSizeBinaryBuilder, Int8Builder, Int64Builder, StringBuilder, UInt32Builder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, Int8Array, Int64Array, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use super::Catalog;
use super::codec::{
    ResourceCache, decode_attributes, decode_events, decode_links, encode_attributes, encode_events, encode_links,
    encode_resource,
};
use super::model::{Span, SpanKind, StatusCode, TraceId};
use crate::Error;

/// Rows per row group: small enough that a trace lookup decodes little, large enough for zstd.
const ROW_GROUP_ROWS: usize = 8192;
/// Footer key of the block's metadata.
const META_KEY: &str = "vigil.spans.meta";

/// Column positions, in schema order.
mod col {
    pub const TRACE_ID: usize = 0;
    pub const SPAN_ID: usize = 1;
    pub const PARENT_SPAN_ID: usize = 2;
    pub const NAME: usize = 3;
    pub const SERVICE: usize = 4;
    pub const KIND: usize = 5;
    pub const STATUS: usize = 6;
    pub const STATUS_MESSAGE: usize = 7;
    pub const START_NS: usize = 8;
    pub const DURATION_NS: usize = 9;
    pub const RESOURCE: usize = 10;
    pub const ATTRIBUTES: usize = 11;
    pub const EVENTS: usize = 12;
    pub const LINKS: usize = 13;
    pub const TRACE_STATE: usize = 14;
    pub const FLAGS: usize = 15;
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("trace_id", DataType::FixedSizeBinary(16), false),
        Field::new("span_id", DataType::FixedSizeBinary(8), false),
        Field::new("parent_span_id", DataType::FixedSizeBinary(8), true),
        Field::new("name", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("kind", DataType::Int8, false),
        Field::new("status", DataType::Int8, false),
        Field::new("status_message", DataType::Utf8, false),
        Field::new("start_ns", DataType::Int64, false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("resource", DataType::Binary, false),
        Field::new("attributes", DataType::Binary, false),
        Field::new("events", DataType::Binary, false),
        Field::new("links", DataType::Binary, false),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("flags", DataType::UInt32, false),
    ]))
}

/// What a block holds, kept in its footer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockMeta {
    /// Earliest span start, ns.
    pub min_ns: i64,
    /// Latest span end, ns.
    pub max_ns: i64,
    /// Spans in the block.
    pub spans: u64,
    /// Services, operations and tags of the block's spans.
    pub catalog: Catalog,
    /// The last WAL segment whose spans this block holds (0 for none).
    pub wal_upto: u32,
}

fn parquet_error(path: &Path, error: impl std::fmt::Display) -> Error {
    Error::Corruption { path: path.to_owned(), offset: 0, reason: error.to_string() }
}

fn writer_properties() -> WriterProperties {
    let zstd = Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level"));
    let trace_id = ColumnPath::from("trace_id");
    let mut builder = WriterProperties::builder()
        .set_compression(zstd)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_fpp(trace_id.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(trace_id, (ROW_GROUP_ROWS / 8) as u64)
        .set_column_dictionary_enabled(ColumnPath::from("span_id"), false);
    for column in ["start_ns", "duration_ns"] {
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_encoding(ColumnPath::from(column), Encoding::DELTA_BINARY_PACKED);
    }
    builder.build()
}

/// Spans as one record batch, in the order given.
fn record_batch(spans: &[&Span]) -> Result<RecordBatch, ArrowError> {
    let n = spans.len();
    let mut trace_id = FixedSizeBinaryBuilder::with_capacity(n, 16);
    let mut span_id = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut parent = FixedSizeBinaryBuilder::with_capacity(n, 8);
    let mut name = StringBuilder::new();
    let mut service = StringBuilder::new();
    let mut kind = Int8Builder::with_capacity(n);
    let mut status = Int8Builder::with_capacity(n);
    let mut status_message = StringBuilder::new();
    let mut start = Int64Builder::with_capacity(n);
    let mut duration = Int64Builder::with_capacity(n);
    let mut resource = BinaryBuilder::new();
    let mut attributes = BinaryBuilder::new();
    let mut events = BinaryBuilder::new();
    let mut links = BinaryBuilder::new();
    let mut trace_state = StringBuilder::new();
    let mut flags = UInt32Builder::with_capacity(n);
    let mut resources: HashMap<*const super::model::Resource, Vec<u8>> = HashMap::new();
    for span in spans {
        trace_id.append_value(span.trace_id)?;
        span_id.append_value(span.span_id)?;
        match span.parent_span_id {
            Some(id) => parent.append_value(id)?,
            None => parent.append_null(),
        }
        name.append_value(&span.name);
        service.append_value(span.service());
        kind.append_value(span.kind as i8);
        status.append_value(span.status as i8);
        status_message.append_value(&span.status_message);
        start.append_value(span.start_ns);
        duration.append_value(span.duration_ns());
        let encoded = resources.entry(Arc::as_ptr(&span.resource)).or_insert_with(|| encode_resource(&span.resource));
        resource.append_value(encoded);
        attributes.append_value(encode_attributes(&span.attributes));
        events.append_value(encode_events(&span.events));
        links.append_value(encode_links(&span.links));
        trace_state.append_value(&span.trace_state);
        flags.append_value(span.flags);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(trace_id.finish()),
        Arc::new(span_id.finish()),
        Arc::new(parent.finish()),
        Arc::new(name.finish()),
        Arc::new(service.finish()),
        Arc::new(kind.finish()),
        Arc::new(status.finish()),
        Arc::new(status_message.finish()),
        Arc::new(start.finish()),
        Arc::new(duration.finish()),
        Arc::new(resource.finish()),
        Arc::new(attributes.finish()),
        Arc::new(events.finish()),
        Arc::new(links.finish()),
        Arc::new(trace_state.finish()),
        Arc::new(flags.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// Writes `spans` (whose catalog is `catalog`) as a block at `path` (via `path.tmp`, renamed when complete
/// and synced).
pub(crate) fn write(path: &Path, spans: &[Span], catalog: &Catalog, wal_upto: u32) -> Result<Block, Error> {
    let mut sorted: Vec<&Span> = spans.iter().collect();
    sorted.sort_unstable_by_key(|s| (s.trace_id, s.start_ns, s.span_id));
    let min_ns = sorted.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let max_ns = sorted.iter().map(|s| s.end_ns).max().unwrap_or(0);
    let meta = BlockMeta { min_ns, max_ns, spans: sorted.len() as u64, catalog: catalog.clone(), wal_upto };
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(writer_properties())).map_err(|e| parquet_error(&tmp, e))?;
    for chunk in sorted.chunks(ROW_GROUP_ROWS) {
        let batch = record_batch(chunk).map_err(|e| parquet_error(&tmp, e))?;
        writer.write(&batch).map_err(|e| parquet_error(&tmp, e))?;
    }
    let meta_json = serde_json::to_string(&meta).expect("block meta serializes");
    writer.append_key_value_metadata(KeyValue::new(META_KEY.to_owned(), meta_json));
    let mut file = writer.into_inner().map_err(|e| parquet_error(&tmp, e))?;
    file.flush().map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    Block::open(path)
}

/// An open block: the file mapped, its footer parsed.
pub(crate) struct Block {
    path: PathBuf,
    data: Bytes,
    reader_meta: ArrowReaderMetadata,
    pub(crate) meta: BlockMeta,
}

/// Cheap checks a search pushes down to the flat columns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Prefilter {
    pub start_ns: i64,
    pub end_ns: i64,
    pub service: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
}

impl Block {
    /// Maps and checks the block at `path`.
    pub(crate) fn open(path: &Path) -> Result<Block, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: blocks are immutable once renamed into place; nothing writes to a mapped block.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let data = Bytes::from_owner(map);
        let options = ArrowReaderOptions::new();
        let reader_meta = ArrowReaderMetadata::load(&data, options).map_err(|e| parquet_error(path, e))?;
        let meta_json = reader_meta
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|kv| kv.key == META_KEY))
            .and_then(|kv| kv.value.clone())
            .ok_or_else(|| parquet_error(path, "no span block metadata in the footer"))?;
        let meta: BlockMeta = serde_json::from_str(&meta_json).map_err(|e| parquet_error(path, e))?;
        if reader_meta.schema().fields().len() != schema().fields().len() {
            return Err(parquet_error(path, "unexpected span block schema"));
        }
        Ok(Block { path: path.to_owned(), data, reader_meta, meta })
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk.
    pub(crate) fn size_bytes(&self) -> u64 {
        self.data.len() as u64
    }

    /// Row groups whose trace-id range covers `id` and whose bloom filter may hold it.
    fn row_groups_for(&self, id: &TraceId) -> Result<Vec<usize>, Error> {
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(self.data.clone(), self.reader_meta.clone());
        let mut groups = Vec::new();
        for (index, group) in self.reader_meta.metadata().row_groups().iter().enumerate() {
            let stats = group.column(col::TRACE_ID).statistics();
            let (min, max) = match stats.and_then(|s| Some((s.min_bytes_opt()?, s.max_bytes_opt()?))) {
                Some(range) => range,
                None => (&[0u8; 16][..], &[0xffu8; 16][..]),
            };
            if id.as_slice() < min || id.as_slice() > max {
                continue;
            }
            let bloom = builder
                .get_row_group_column_bloom_filter(index, col::TRACE_ID)
                .map_err(|e| parquet_error(&self.path, e))?;
            if bloom.is_none_or(|bloom| bloom.check(&id[..])) {
                groups.push(index);
            }
        }
        Ok(groups)
    }

    /// The spans of trace `id` in this block.
    pub(crate) fn trace(&self, id: &TraceId) -> Result<Vec<Span>, Error> {
        let groups = self.row_groups_for(id)?;
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = *id;
        let mask = ProjectionMask::roots(self.reader_meta.parquet_schema(), [col::TRACE_ID]);
        let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let ids = fixed(&batch, 0)?;
            Ok((0..ids.len()).map(|i| ids.value(i) == wanted).collect::<BooleanArray>())
        });
        let mut spans = Vec::new();
        self.scan(groups, RowFilter::new(vec![Box::new(predicate)]), |span| {
            spans.push(span);
            ControlFlow::Continue(())
        })?;
        Ok(spans)
    }

    /// Calls `each` with the spans passing `prefilter`, in trace-id order, until it breaks.
    pub(crate) fn search(&self, prefilter: &Prefilter, each: impl FnMut(Span) -> ControlFlow<()>) -> Result<(), Error> {
        if self.meta.max_ns < prefilter.start_ns || self.meta.min_ns > prefilter.end_ns {
            return Ok(());
        }
        if let Some(service) = &prefilter.service
            && !self.meta.catalog.operations.contains_key(service)
        {
            return Ok(());
        }
        let groups = (0..self.reader_meta.metadata().num_row_groups()).collect();
        let filter = prefilter.clone();
        let mask =
            ProjectionMask::roots(self.reader_meta.parquet_schema(), [col::SERVICE, col::START_NS, col::DURATION_NS]);
        let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            let service = strings(&batch, 0)?;
            let start = int64s(&batch, 1)?;
            let duration = int64s(&batch, 2)?;
            Ok((0..batch.num_rows())
                .map(|i| {
                    let (start, duration) = (start.value(i), duration.value(i));
                    start >= filter.start_ns
                        && start <= filter.end_ns
                        && filter.min_duration_ns.is_none_or(|min| duration >= min)
                        && filter.max_duration_ns.is_none_or(|max| duration <= max)
                        && filter.service.as_deref().is_none_or(|s| service.value(i) == s)
                })
                .collect::<BooleanArray>())
        });
        self.scan(groups, RowFilter::new(vec![Box::new(predicate)]), each)
    }

    fn scan(
        &self,
        row_groups: Vec<usize>,
        filter: RowFilter,
        mut each: impl FnMut(Span) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(self.data.clone(), self.reader_meta.clone())
            .with_row_groups(row_groups)
            .with_row_filter(filter)
            .with_batch_size(ROW_GROUP_ROWS)
            .build()
            .map_err(|e| parquet_error(&self.path, e))?;
        let mut resources = ResourceCache::default();
        for batch in reader {
            let batch = batch.map_err(|e| parquet_error(&self.path, e))?;
            let columns = Columns::of(&batch).map_err(|e| parquet_error(&self.path, e))?;
            for row in 0..batch.num_rows() {
                let span = columns.span(row, &mut resources).map_err(|e| parquet_error(&self.path, e))?;
                if each(span).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn column<T: 'static>(batch: &RecordBatch, index: usize) -> Result<&T, ArrowError> {
    batch
        .column(index)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {index} has an unexpected type")))
}

fn fixed(batch: &RecordBatch, index: usize) -> Result<&FixedSizeBinaryArray, ArrowError> {
    column(batch, index)
}

fn strings(batch: &RecordBatch, index: usize) -> Result<&StringArray, ArrowError> {
    column(batch, index)
}

fn int64s(batch: &RecordBatch, index: usize) -> Result<&Int64Array, ArrowError> {
    column(batch, index)
}

fn binaries(batch: &RecordBatch, index: usize) -> Result<&BinaryArray, ArrowError> {
    column(batch, index)
}

/// The typed columns of a full-width batch.
struct Columns<'a> {
    trace_id: &'a FixedSizeBinaryArray,
    span_id: &'a FixedSizeBinaryArray,
    parent: &'a FixedSizeBinaryArray,
    name: &'a StringArray,
    kind: &'a Int8Array,
    status: &'a Int8Array,
    status_message: &'a StringArray,
    start: &'a Int64Array,
    duration: &'a Int64Array,
    resource: &'a BinaryArray,
    attributes: &'a BinaryArray,
    events: &'a BinaryArray,
    links: &'a BinaryArray,
    trace_state: &'a StringArray,
    flags: &'a UInt32Array,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, ArrowError> {
        Ok(Columns {
            trace_id: fixed(batch, col::TRACE_ID)?,
            span_id: fixed(batch, col::SPAN_ID)?,
            parent: fixed(batch, col::PARENT_SPAN_ID)?,
            name: strings(batch, col::NAME)?,
            kind: column(batch, col::KIND)?,
            status: column(batch, col::STATUS)?,
            status_message: strings(batch, col::STATUS_MESSAGE)?,
            start: int64s(batch, col::START_NS)?,
            duration: int64s(batch, col::DURATION_NS)?,
            resource: binaries(batch, col::RESOURCE)?,
            attributes: binaries(batch, col::ATTRIBUTES)?,
            events: binaries(batch, col::EVENTS)?,
            links: binaries(batch, col::LINKS)?,
            trace_state: strings(batch, col::TRACE_STATE)?,
            flags: column(batch, col::FLAGS)?,
        })
    }

    fn span(&self, row: usize, resources: &mut ResourceCache) -> Result<Span, String> {
        let id = |array: &FixedSizeBinaryArray| -> Result<[u8; 8], String> {
            array.value(row).try_into().map_err(|_| "bad span id width".to_owned())
        };
        let start_ns = self.start.value(row);
        Ok(Span {
            trace_id: self.trace_id.value(row).try_into().map_err(|_| "bad trace id width")?,
            span_id: id(self.span_id)?,
            parent_span_id: if self.parent.is_null(row) { None } else { Some(id(self.parent)?) },
            trace_state: self.trace_state.value(row).to_owned(),
            flags: self.flags.value(row),
            name: self.name.value(row).to_owned(),
            kind: SpanKind::from_number(i64::from(self.kind.value(row))),
            status: StatusCode::from_number(i64::from(self.status.value(row))),
            status_message: self.status_message.value(row).to_owned(),
            start_ns,
            end_ns: start_ns.saturating_add(self.duration.value(row)),
            resource: resources.get(self.resource.value(row))?,
            attributes: decode_attributes(self.attributes.value(row))?,
            events: decode_events(self.events.value(row))?,
            links: decode_links(self.links.value(row))?,
        })
    }
}
