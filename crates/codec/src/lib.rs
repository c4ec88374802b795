//! The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro datum.
//!
//! Schemas are registered (or looked up) once per topic and cached by schema_registry_converter;
//! after warm-up no record costs a registry call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use bimride_events::{Topic, TopicValue, Topics};

/// Where the schema registry is, how to reach it, and which topics' subjects to use.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub url: String,
    pub timeout: Duration,
    /// `user:password` for HTTP basic auth, if the registry needs it.
    pub basic_auth: Option<(String, String)>,
    /// Subjects follow the TopicNameStrategy of these topics: `<topic>-value`.
    pub topics: Topics,
}

impl RegistryConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(5),
            basic_auth: None,
            topics: Topics::default(),
        }
    }

    pub fn with_topics(mut self, topics: Topics) -> Self {
        self.topics = topics;
        self
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record is not in the Confluent wire format: {0}")]
    NotWireFormat(&'static str),
    #[error("schema id {0} is unknown to the registry")]
    UnknownSchema(u32),
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
    #[error("registry refused the schema of subject {subject}: {message}")]
    Rejected { subject: String, message: String },
    #[error("avro datum does not match writer schema {id}: {message}")]
    Undecodable { id: u32, message: String },
    #[error("record with schema id {id} does not fit topic {topic}: {message}")]
    Mismatch {
        id: u32,
        topic: Topic,
        message: String,
    },
    #[error("schema id {id} does not resolve into the reader's schema: {message}")]
    Unresolvable { id: u32, message: String },
    #[error("could not encode a {topic} record: {message}")]
    Encode { topic: Topic, message: String },
}

/// The reasons a record that cannot be decoded is dead-lettered with.
pub mod reasons {
    pub const NOT_WIRE_FORMAT: &str = "not_wire_format";
    pub const UNKNOWN_SCHEMA_ID: &str = "unknown_schema_id";
    pub const SCHEMA_REJECTED: &str = "schema_rejected";
    pub const UNDECODABLE: &str = "undecodable";
    pub const SCHEMA_MISMATCH: &str = "schema_mismatch";
}

impl CodecError {
    /// True when trying again later may succeed; such records must not be dead-lettered.
    pub fn is_retriable(&self) -> bool {
        matches!(self, CodecError::RegistryUnavailable(_))
    }

    /// A short, stable reason for dead-letter headers and metric labels.
    pub fn reason(&self) -> &'static str {
        use reasons::*;
        match self {
            CodecError::NotWireFormat(_) => NOT_WIRE_FORMAT,
            CodecError::UnknownSchema(_) => UNKNOWN_SCHEMA_ID,
            CodecError::RegistryUnavailable(_) => "registry_unavailable",
            CodecError::Rejected { .. } => SCHEMA_REJECTED,
            CodecError::Undecodable { .. } => UNDECODABLE,
            CodecError::Mismatch { .. } | CodecError::Unresolvable { .. } => SCHEMA_MISMATCH,
            CodecError::Encode { .. } => "encode_failed",
        }
    }
}

/// The 5-byte prefix of a Confluent-framed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireHeader {
    pub schema_id: u32,
}

impl WireHeader {
    pub const LEN: usize = 5;

    pub fn parse(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes {
            [0, a, b, c, d, ..] => Ok(Self {
                schema_id: u32::from_be_bytes([*a, *b, *c, *d]),
            }),
            [_, _, _, _, _, ..] => Err(CodecError::NotWireFormat("magic byte is not 0")),
            _ => Err(CodecError::NotWireFormat("shorter than the 5-byte header")),
        }
    }
}

/// How a writer schema relates to the reader type's own schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterFit {
    /// Same canonical form: decode straight into the type.
    Same,
    /// Another version: resolve the datum against the reader schema first.
    Resolve,
}

/// One entry per topic, indexed by `Topic as usize`: the hot path looks topics up without
/// hashing.
type PerTopic<T> = [T; Topic::ALL.len()];

/// An id slot not filled yet; registry ids are 32-bit, so it never collides with one.
const NO_ID: u64 = u64::MAX;

/// Room for the largest of this build's records, so that encoding never grows the buffer.
const ENCODE_CAPACITY: usize = 256;

/// Encodes and decodes topic values against a Confluent-compatible registry.
pub struct Codec {
    subjects: PerTopic<String>,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    strategies: PerTopic<SubjectNameStrategy>,
    /// How other schema versions met on each topic relate to this build's.
    fits: RwLock<HashMap<(Topic, u32), WriterFit>>,
    /// Registered ids of this build's schemas (`NO_ID` until registered); a known id skips
    /// the converter entirely, and a record carrying it is read straight into the type.
    ids: PerTopic<AtomicU64>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").finish_non_exhaustive()
    }
}

/// A topic's own schema, parsed once for serde_avro_fast, which writes and reads this build's
/// records straight between Rust types and the Avro binary encoding.
struct Compiled {
    schema: serde_avro_fast::Schema,
    /// Writes a record resolved from another schema version back in this build's schema.
    rewriter: apache_avro::writer::datum::GenericDatumWriter<'static>,
}

fn compiled(topic: Topic) -> &'static Compiled {
    static COMPILED: OnceLock<PerTopic<Compiled>> = OnceLock::new();
    let all = COMPILED.get_or_init(|| {
        Topic::ALL.map(|topic| {
            let schema = topic
                .value_schema_json()
                .parse()
                .unwrap_or_else(|e| panic!("value schema of {topic} does not compile: {e}"));
            let rewriter =
                apache_avro::writer::datum::GenericDatumWriter::builder(reader_schema(topic))
                    .build()
                    .unwrap_or_else(|e| panic!("writer for {topic}: {e}"));
            Compiled { schema, rewriter }
        })
    });
    &all[topic as usize]
}

fn reader_schemas() -> &'static PerTopic<Arc<Schema>> {
    static READERS: OnceLock<PerTopic<Arc<Schema>>> = OnceLock::new();
    READERS.get_or_init(|| {
        Topic::ALL.map(|t| {
            let schema = Schema::parse_str(&t.value_schema_json())
                .unwrap_or_else(|e| panic!("value schema of {t} does not parse: {e}"));
            Arc::new(schema)
        })
    })
}

fn reader_schema(topic: Topic) -> &'static Schema {
    &reader_schemas()[topic as usize]
}

impl Codec {
    pub fn new(config: &RegistryConfig) -> Result<Self, CodecError> {
        let settings = sr_settings(config)?;
        let strategies = Topic::ALL.map(|t| {
            let supplied = SuppliedSchema::new(None, SchemaType::Avro, t.value_schema_json());
            SubjectNameStrategy::TopicNameStrategyWithSchema(
                config.topics.name(t).to_owned(),
                false,
                supplied,
            )
        });
        Ok(Self {
            subjects: Topic::ALL.map(|t| config.topics.value_subject(t)),
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings),
            strategies,
            fits: RwLock::new(HashMap::new()),
            ids: Topic::ALL.map(|_| AtomicU64::new(NO_ID)),
        })
    }

    /// The reader (and writer) schema of a topic's values, as this build knows it.
    pub fn value_schema(topic: Topic) -> Arc<Schema> {
        Arc::clone(&reader_schemas()[topic as usize])
    }

    /// Registers every topic's value schema, so that start-up fails fast on an incompatible
    /// registry and no record pays for the first lookup.
    pub async fn register_all(&self) -> Result<HashMap<Topic, u32>, CodecError> {
        let mut ids = HashMap::new();
        for topic in Topic::ALL {
            ids.insert(topic, self.register(topic).await?);
        }
        Ok(ids)
    }

    /// Registers (or finds) this build's value schema of `topic` and returns its id.
    pub async fn register(&self, topic: Topic) -> Result<u32, CodecError> {
        let subject = &self.subjects[topic as usize];
        let strategy = self.strategies[topic as usize].clone();
        let schema = self
            .encoder
            .get_schema_and_id(subject, strategy)
            .await
            .map_err(|e| registry_error(e, subject))?;
        self.ids[topic as usize].store(u64::from(schema.id), Ordering::Relaxed);
        Ok(schema.id)
    }

    fn known_id(&self, topic: Topic) -> Option<u32> {
        u32::try_from(self.ids[topic as usize].load(Ordering::Relaxed)).ok()
    }

    pub async fn encode<T: TopicValue>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let id = match self.known_id(T::TOPIC) {
            Some(id) => id,
            // Boxed, as every cold path here: the registry client's futures are large, and
            // the hot path's future would carry (and move) their size on every record.
            None => Box::pin(self.register(T::TOPIC)).await?,
        };
        encode_with(id, value)
    }

    pub async fn decode<T: TopicValue>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let id = WireHeader::parse(bytes)?.schema_id;
        // The common case, settled without awaiting: written with this build's schema.
        if self.known_id(T::TOPIC) == Some(id) {
            return decode_own(id, bytes);
        }
        Box::pin(self.decode_other(id, bytes)).await
    }

    /// Reads a record whose schema id is not this build's registered one: another version,
    /// or this build's schema before it was registered here.
    async fn decode_other<T: TopicValue>(&self, id: u32, bytes: &[u8]) -> Result<T, CodecError> {
        match self.fit::<T>(id).await? {
            WriterFit::Same => decode_own(id, bytes),
            // Another version: decode with the writer's schema, resolve, then read.
            WriterFit::Resolve => {
                let value = self
                    .decode_value(bytes, reader_schema(T::TOPIC))
                    .await
                    .map_err(|e| match e {
                        CodecError::Unresolvable { id, message } => mismatch::<T>(id, message),
                        other => other,
                    })?;
                // Written again in this build's schema, it takes the common path: apache-avro's
                // own `from_value` would pick a union's variant by position among serde's
                // names, aliases included.
                let compiled = compiled(T::TOPIC);
                let datum = compiled
                    .rewriter
                    .write_value_to_vec(value)
                    .map_err(|e| mismatch::<T>(id, e))?;
                serde_avro_fast::from_datum_slice::<T>(&datum, &compiled.schema)
                    .map_err(|e| mismatch::<T>(id, e))
            }
        }
    }

    /// Decodes a record written with any registered schema into `reader`, as a consumer built
    /// on that schema version reads it: fields it lacks take their defaults, fields it does
    /// not know are dropped, union branches are matched by name.
    pub async fn decode_value(
        &self,
        bytes: &[u8],
        reader: &Schema,
    ) -> Result<apache_avro::types::Value, CodecError> {
        let id = WireHeader::parse(bytes)?.schema_id;
        let writer = self.writer_schema(id).await?;
        let decoded =
            self.decoder
                .decode(Some(bytes))
                .await
                .map_err(|e| CodecError::Undecodable {
                    id,
                    message: e.to_string(),
                })?;
        resolve_union_by_name(decoded.value, &writer.parsed, reader)
            .map_err(|message| CodecError::Unresolvable { id, message })
    }

    /// The schema a record was written with, from the registry (cached after the first ask).
    async fn writer_schema(
        &self,
        id: u32,
    ) -> Result<Arc<schema_registry_converter::avro_common::AvroSchema>, CodecError> {
        self.decoder.get_schema(id).await.map_err(|e| {
            if e.retriable {
                CodecError::RegistryUnavailable(e.to_string())
            } else {
                // Asked again next time: the schema may be registered later, and a dead
                // letter replayed then must decode.
                self.decoder.remove_errors_from_cache();
                CodecError::UnknownSchema(id)
            }
        })
    }

    async fn fit<T: TopicValue>(&self, id: u32) -> Result<WriterFit, CodecError> {
        let key = (T::TOPIC, id);
        if let Some(fit) = self.fits.read().ok().and_then(|m| m.get(&key).copied()) {
            return Ok(fit);
        }
        let writer = self.writer_schema(id).await?;
        let reader = reader_schema(T::TOPIC);
        let fit = if writer.parsed.canonical_form() == reader.canonical_form() {
            WriterFit::Same
        } else {
            apache_avro::schema_compatibility::SchemaCompatibility::can_read(
                &writer.parsed,
                reader,
            )
            .map_err(|e| mismatch::<T>(id, e))?;
            WriterFit::Resolve
        };
        if let Ok(mut fits) = self.fits.write() {
            fits.insert(key, fit);
        }
        Ok(fit)
    }
}

/// Resolves a value written with another version of a topic's schema. A union branch is
/// matched by its record's name: matching by shape alone would read a record into the first
/// branch whose fields it happens to cover (a v2 `TripCompleted` as a `DriverArrived`).
fn resolve_union_by_name(
    value: apache_avro::types::Value,
    writer: &Schema,
    reader: &Schema,
) -> Result<apache_avro::types::Value, String> {
    use apache_avro::types::Value;
    let names = apache_avro::schema::ResolvedSchema::new(reader).map_err(|e| e.to_string())?;
    match (value, writer, reader) {
        (Value::Union(i, inner), Schema::Union(w), Schema::Union(r)) => {
            let name = w
                .variants()
                .get(i as usize)
                .and_then(Schema::name)
                .ok_or_else(|| format!("writer branch {i} has no name"))?;
            let (j, branch) = r
                .variants()
                .iter()
                .enumerate()
                .find(|(_, b)| b.name() == Some(name))
                .ok_or_else(|| format!("this build has no {name} to read"))?;
            let inner = inner
                .resolve_with_names(branch, names.get_names())
                .map_err(|e| e.to_string())?;
            Ok(Value::Union(j as u32, Box::new(inner)))
        }
        (value, _, reader) => value.resolve(reader).map_err(|e| e.to_string()),
    }
}

/// Writes `value` in this build's schema, framed with its registered `id`.
fn encode_with<T: TopicValue>(id: u32, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = Vec::with_capacity(ENCODE_CAPACITY);
    bytes.push(0);
    bytes.extend_from_slice(&id.to_be_bytes());
    let mut config = serde_avro_fast::ser::SerializerConfig::new(&compiled(T::TOPIC).schema);
    serde_avro_fast::to_datum(value, bytes, &mut config).map_err(|e| CodecError::Encode {
        topic: T::TOPIC,
        message: e.to_string(),
    })
}

/// Reads a record written with this build's schema straight into the type.
fn decode_own<T: TopicValue>(id: u32, bytes: &[u8]) -> Result<T, CodecError> {
    serde_avro_fast::from_datum_slice::<T>(&bytes[WireHeader::LEN..], &compiled(T::TOPIC).schema)
        .map_err(|e| CodecError::Undecodable {
            id,
            message: e.to_string(),
        })
}

fn mismatch<T: TopicValue>(id: u32, e: impl std::fmt::Display) -> CodecError {
    CodecError::Mismatch {
        id,
        topic: T::TOPIC,
        message: e.to_string(),
    }
}

fn registry_error(e: SRCError, subject: &str) -> CodecError {
    if e.retriable {
        CodecError::RegistryUnavailable(e.to_string())
    } else {
        CodecError::Rejected {
            subject: subject.to_owned(),
            message: e.to_string(),
        }
    }
}

fn sr_settings(config: &RegistryConfig) -> Result<SrSettings, CodecError> {
    let mut builder = SrSettings::new_builder(config.url.clone());
    builder.no_proxy().set_timeout(config.timeout);
    if let Some((user, password)) = &config.basic_auth {
        builder.set_basic_authorization(user, Some(password));
    }
    builder
        .build()
        .map_err(|e| CodecError::RegistryUnavailable(e.to_string()))
}
