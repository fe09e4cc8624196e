//! Typed errors of decoding, encoding and the registry, each with a stable code (used in DLQ
//! headers) and a hint whether retrying can help.

/// Why a record could not be decoded. None of these is a panic; each names the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than the 5 header bytes.
    #[error("record of {len} bytes is shorter than the 5-byte Confluent wire-format header")]
    ShortBuffer {
        /// Record length.
        len: usize,
    },
    /// First byte is not 0.
    #[error("wrong magic byte {found:#04x}: not Confluent wire format (expected 0x00)")]
    WrongMagicByte {
        /// The byte found.
        found: u8,
    },
    /// The registry does not know the schema id.
    #[error("schema id {id} is unknown to the schema registry")]
    UnknownSchemaId {
        /// The id in the header.
        id: u32,
    },
    /// The registry could not be asked (retryable).
    #[error("schema registry unavailable while resolving schema id {id}: {message}")]
    RegistryUnavailable {
        /// The id in the header.
        id: u32,
        /// What went wrong.
        message: String,
    },
    /// The writer schema is not one this reader can resolve (e.g. another topic's record).
    #[error("schema id {id} ({writer}) cannot be read as {reader}: {reason}")]
    IncompatibleSchema {
        /// The id in the header.
        id: u32,
        /// Writer record name.
        writer: String,
        /// Reader record name.
        reader: String,
        /// Why resolution fails.
        reason: String,
    },
    /// The body is not valid Avro for the writer schema (truncated, bad length, bad index).
    #[error("Avro body does not match schema id {id}: {reason}")]
    MalformedBody {
        /// The id in the header.
        id: u32,
        /// The decoder's message.
        reason: String,
    },
    /// Bytes remain after one complete record.
    #[error("{count} bytes left over after the record of schema id {id}")]
    TrailingBytes {
        /// The id in the header.
        id: u32,
        /// Bytes left.
        count: usize,
    },
    /// A required field is absent.
    #[error("missing required field {field} (schema id {id})")]
    MissingField {
        /// The id in the header.
        id: u32,
        /// Field name.
        field: String,
    },
    /// A field holds a value outside its type (bad uuid, date or decimal out of range).
    #[error("invalid value (schema id {id}): {reason}")]
    InvalidValue {
        /// The id in the header.
        id: u32,
        /// What is wrong.
        reason: String,
    },
}

impl DecodeError {
    /// Stable code for DLQ headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::ShortBuffer { .. } => "DECODE_SHORT_BUFFER",
            DecodeError::WrongMagicByte { .. } => "DECODE_WRONG_MAGIC_BYTE",
            DecodeError::UnknownSchemaId { .. } => "DECODE_UNKNOWN_SCHEMA_ID",
            DecodeError::RegistryUnavailable { .. } => "DECODE_REGISTRY_UNAVAILABLE",
            DecodeError::IncompatibleSchema { .. } => "DECODE_INCOMPATIBLE_SCHEMA",
            DecodeError::MalformedBody { .. } => "DECODE_MALFORMED_BODY",
            DecodeError::TrailingBytes { .. } => "DECODE_TRAILING_BYTES",
            DecodeError::MissingField { .. } => "DECODE_MISSING_FIELD",
            DecodeError::InvalidValue { .. } => "DECODE_INVALID_VALUE",
        }
    }

    /// Whether retrying the same bytes later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, DecodeError::RegistryUnavailable { .. })
    }

    /// Classify an Avro library error raised while reading the body of schema `id`.
    pub(crate) fn from_avro(id: u32, err: &apache_avro::Error) -> DecodeError {
        let reason = error_chain(err);
        if let Some(field) = reason
            .split("missing field `")
            .nth(1)
            .and_then(|rest| rest.split('`').next())
        {
            return DecodeError::MissingField {
                id,
                field: field.to_owned(),
            };
        }
        const VALUE_PROBLEMS: &[&str] = &[
            "invalid uuid",
            "out of range",
            "invalid date",
            "invalid timestamp",
            "decimal",
        ];
        if VALUE_PROBLEMS.iter().any(|p| reason.contains(p)) {
            DecodeError::InvalidValue { id, reason }
        } else {
            DecodeError::MalformedBody { id, reason }
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Why an event could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The topic's schema was not registered with this codec yet.
    #[error("schema of {topic} is not registered; call Codec::register first")]
    NotRegistered {
        /// Topic.
        topic: String,
    },
    /// The value does not fit the schema.
    #[error("event does not fit the schema of {topic}: {reason}")]
    Schema {
        /// Topic.
        topic: String,
        /// The encoder's message.
        reason: String,
    },
}

impl EncodeError {
    /// Stable code for DLQ headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            EncodeError::NotRegistered { .. } => "ENCODE_NOT_REGISTERED",
            EncodeError::Schema { .. } => "ENCODE_SCHEMA_MISMATCH",
        }
    }

    /// Encoding is deterministic: retrying cannot help.
    pub fn retryable(&self) -> bool {
        false
    }

    pub(crate) fn from_avro(topic: &str, err: &apache_avro::Error) -> EncodeError {
        EncodeError::Schema {
            topic: topic.to_owned(),
            reason: error_chain(err),
        }
    }
}

/// A schema registry call that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Subject, version or id not found (Confluent 404xx codes).
    #[error("not found in the schema registry (error {code}): {message}")]
    NotFound {
        /// Confluent error code, e.g. 40403.
        code: u32,
        /// Registry message.
        message: String,
    },
    /// The registry refused the request: incompatible (409) or invalid (422xx) schema.
    #[error("schema registry refused the request (error {code}): {message}")]
    Rejected {
        /// Confluent error code.
        code: u32,
        /// Registry message.
        message: String,
    },
    /// The registry could not be reached or failed (retryable).
    #[error("schema registry unavailable: {message}")]
    Unavailable {
        /// What went wrong.
        message: String,
    },
}

impl RegistryError {
    /// Stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NotFound { .. } => "REGISTRY_NOT_FOUND",
            RegistryError::Rejected { .. } => "REGISTRY_REJECTED",
            RegistryError::Unavailable { .. } => "REGISTRY_UNAVAILABLE",
        }
    }

    /// Whether retrying later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}
