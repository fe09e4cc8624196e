//! Events written with another version of their topic's schema: what a producer built from
//! an earlier (or later) `schemas/` writes. The schema evolution tests mix such producers with
//! current ones on one topic; a tool could use it to write for consumers not yet upgraded.

use apache_avro::{
    Schema, reader::datum::GenericDatumReader, types::Value, writer::datum::GenericDatumWriter,
};

use topics::Topic;

use crate::{Codec, EncodeError, Event, Payload, wire};

/// The catalog of the embedded `schemas/` with `topic`'s value schema file replaced by
/// `file_text` (e.g. the file as committed at an earlier version): build a
/// [`Codec::with_schemas`] from it to read as a consumer of that version does, and take the
/// standalone schema to write as its producer does ([`encode_with_writer`]).
pub fn catalog_with(
    topic: Topic,
    file_text: &str,
) -> Result<schemas::Catalog, schemas::CatalogError> {
    let file = &topic.spec().value_schema;
    schemas::Catalog::from_files(schemas::EMBEDDED_FILES.iter().map(|&(path, text)| {
        if path == file.as_str() {
            (path, file_text)
        } else {
            (path, text)
        }
    }))
}

/// `event` in Confluent wire format under schema id `id`, written with `writer_json` (a
/// standalone schema of the same record, e.g. an earlier version): fields the writer schema
/// lacks are left out, fields only it has take their defaults. Slow (through Avro values);
/// the codec's own path is [`Codec::encode`].
pub fn encode_with_writer<P: Payload>(
    codec: &Codec,
    event: &Event<P>,
    id: u32,
    writer_json: &str,
) -> Result<Vec<u8>, EncodeError> {
    let topic = P::TOPIC.name();
    let fail = |reason: String| EncodeError::Schema {
        topic: topic.to_owned(),
        reason,
    };
    let avro = |e: apache_avro::Error| EncodeError::from_avro(topic, &e);
    let current = codec.encode(event)?;
    let own = schemas::embedded()
        .for_major(topic, P::MAJOR)
        .ok_or_else(|| fail("no schema for the topic".to_owned()))?;
    let (_, mut body) = wire::split(&current).map_err(|e| fail(e.to_string()))?;
    let value = GenericDatumReader::builder(&own.schema)
        .build()
        .map_err(avro)?
        .read_value(&mut body)
        .map_err(avro)?;
    let writer = Schema::parse_str(writer_json).map_err(avro)?;
    let value = conform(value, &writer).map_err(fail)?;
    let mut out = Vec::new();
    wire::write_header(&mut out, id);
    GenericDatumWriter::builder(&writer)
        .build()
        .map_err(avro)?
        .write_value(&mut out, value)
        .map_err(avro)?;
    Ok(out)
}

/// `value` reshaped to `schema`: record fields the schema lacks dropped, fields the value
/// lacks filled with the schema's default, recursively through records, unions and arrays.
fn conform(value: Value, schema: &Schema) -> Result<Value, String> {
    Ok(match (value, schema) {
        (Value::Record(fields), Schema::Record(record)) => {
            let mut out = Vec::with_capacity(record.fields.len());
            for f in &record.fields {
                let v = match fields.iter().find(|(name, _)| *name == f.name) {
                    Some((_, v)) => conform(v.clone(), &f.schema)?,
                    None => {
                        let default = f.default.clone().ok_or_else(|| {
                            format!("field {} has no value and no default", f.name)
                        })?;
                        Value::try_from(default)
                            .and_then(|v| v.resolve(&f.schema))
                            .map_err(|e| format!("default of {}: {e}", f.name))?
                    }
                };
                out.push((f.name.clone(), v));
            }
            Value::Record(out)
        }
        (Value::Union(i, inner), Schema::Union(union)) => {
            let branch = union
                .variants()
                .get(i as usize)
                .ok_or_else(|| format!("union branch {i} is not in the writer schema"))?;
            Value::Union(i, Box::new(conform(*inner, branch)?))
        }
        (Value::Array(items), Schema::Array(array)) => Value::Array(
            items
                .into_iter()
                .map(|v| conform(v, &array.items))
                .collect::<Result<_, _>>()?,
        ),
        (other, _) => other,
    })
}
