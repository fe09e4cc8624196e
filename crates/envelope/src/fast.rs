//! The codec's fast path: a schema compiled once into a flat plan, a serde `Serializer` that
//! walks it and writes Avro binary straight into the output buffer, and a `Deserializer` that
//! reads a record written with that same schema straight from the input bytes.
//!
//! apache-avro's schema-aware serializer looks every record field up by name (a `BTreeMap` of
//! strings), hashes each field position into its out-of-order cache and writes each number
//! through a `Write` adapter; its deserializer reads through `Read` and copies every string
//! into a zeroed buffer of its own. That was most of the CPU of a stage's codec work per
//! record. These two handle what the codec's own types (de)serialise — record fields in schema
//! order, nullable unions as `Option`, unions of records as newtype variants, enums as unit
//! variants, arrays and maps — and give up on anything else ([`Unsupported`]), as on any
//! error: the codec then does the same work again with apache-avro, so the bytes, values and
//! errors are always those of apache-avro. For what they accept they write the bytes and read
//! the values apache-avro does, step by step (`crate::tests` checks both on arbitrary events
//! of every topic).

use std::collections::HashMap;

use apache_avro::{
    Schema,
    schema::{InnerDecimalSchema, Name, UuidSchema},
};
use serde::{
    Serialize,
    de::{self, DeserializeSeed, Visitor},
    ser::{self, Impossible},
};

/// The serializer met a value or schema it does not handle: encode with apache-avro instead.
#[derive(Debug)]
pub(crate) struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not handled by the fast encoder")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

/// One schema node; children are indices into [`Plan::nodes`].
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    /// `int`, `date`, `time-millis`.
    Int,
    /// `long` and the `long`-based time logical types.
    Long,
    Float,
    Double,
    /// `bytes`, bytes-backed `decimal`, `big-decimal`, bytes `uuid`.
    Bytes,
    /// `string`, string `uuid`.
    String,
    Enum(Vec<String>),
    Record {
        /// The record's name without namespace (what serde's struct name must be).
        name: String,
        fields: Vec<(String, usize)>,
    },
    Array(usize),
    Map(usize),
    Union(Union),
    /// A schema this encoder leaves to apache-avro (`fixed` and its logical types).
    Other,
}

#[derive(Debug)]
struct Union {
    /// The variants.
    variants: Vec<usize>,
    /// For a two-variant union with `null`: the index of `null` and the other variant's node.
    nullable: Option<(usize, usize)>,
}

/// A schema compiled for [`encode`].
#[derive(Debug)]
pub(crate) struct Plan {
    nodes: Vec<Node>,
    root: usize,
    string: usize,
}

impl Plan {
    /// Compile `schema`; `None` when it has a reference that does not resolve, or records
    /// apache-avro treats specially (Rust tuples and unions of records from its derive).
    pub(crate) fn compile(schema: &Schema) -> Option<Plan> {
        let resolved = apache_avro::schema::ResolvedSchema::try_from(schema).ok()?;
        let mut c = Compiler {
            names: resolved.get_names(),
            nodes: Vec::new(),
            named: HashMap::new(),
        };
        let root = c.node(schema)?;
        let string = c.push(Node::String);
        Some(Plan {
            nodes: c.nodes,
            root,
            string,
        })
    }
}

struct Compiler<'s> {
    names: &'s HashMap<Name, &'s Schema>,
    nodes: Vec<Node>,
    named: HashMap<Name, usize>,
}

impl Compiler<'_> {
    fn push(&mut self, node: Node) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn node(&mut self, schema: &Schema) -> Option<usize> {
        Some(match schema {
            Schema::Ref { name } => match self.named.get(name) {
                Some(i) => *i,
                None => {
                    let target: &Schema = self.names.get(name)?;
                    self.node(target)?
                }
            },
            Schema::Null => self.push(Node::Null),
            Schema::Boolean => self.push(Node::Boolean),
            Schema::Int | Schema::Date | Schema::TimeMillis => self.push(Node::Int),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.push(Node::Long),
            Schema::Float => self.push(Node::Float),
            Schema::Double => self.push(Node::Double),
            Schema::Bytes | Schema::BigDecimal | Schema::Uuid(UuidSchema::Bytes) => {
                self.push(Node::Bytes)
            }
            Schema::Decimal(d) => match d.inner {
                InnerDecimalSchema::Bytes => self.push(Node::Bytes),
                InnerDecimalSchema::Fixed(_) => self.push(Node::Other),
            },
            Schema::String | Schema::Uuid(UuidSchema::String) => self.push(Node::String),
            Schema::Uuid(UuidSchema::Fixed(_)) | Schema::Fixed(_) | Schema::Duration(_) => {
                self.push(Node::Other)
            }
            Schema::Enum(e) => {
                let i = self.push(Node::Enum(e.symbols.clone()));
                self.named.insert(e.name.clone(), i);
                i
            }
            Schema::Record(r) => {
                if r.attributes
                    .keys()
                    .any(|k| k.starts_with("org.apache.avro.rust."))
                {
                    return None;
                }
                let name = r.name.name().to_owned();
                // Registered before its fields, so a recursive reference finds it.
                let i = self.push(Node::Record {
                    name: name.clone(),
                    fields: Vec::new(),
                });
                self.named.insert(r.name.clone(), i);
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    fields.push((f.name.clone(), self.node(&f.schema)?));
                }
                self.nodes[i] = Node::Record { name, fields };
                i
            }
            Schema::Array(a) => {
                let items = self.node(&a.items)?;
                self.push(Node::Array(items))
            }
            Schema::Map(m) => {
                let values = self.node(&m.types)?;
                self.push(Node::Map(values))
            }
            Schema::Union(u) => {
                let mut variants = Vec::with_capacity(u.variants().len());
                let mut null = None;
                for (k, v) in u.variants().iter().enumerate() {
                    if matches!(v, Schema::Null) {
                        null.get_or_insert(k);
                    }
                    variants.push(self.node(v)?);
                }
                let nullable = match (null, variants.as_slice()) {
                    (Some(n), [_, _]) => Some((n, variants[1 - n])),
                    _ => None,
                };
                self.push(Node::Union(Union { variants, nullable }))
            }
        })
    }
}

/// Append `value` encoded with `plan` to `out`. On an error `out` holds a partial record: the
/// caller truncates it and encodes with apache-avro.
pub(crate) fn encode<T: Serialize + ?Sized>(
    plan: &Plan,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), Unsupported> {
    value.serialize(Ser {
        plan,
        node: plan.root,
        out,
    })
}

/// Zigzag varint, as apache-avro writes `int` and `long`.
#[inline]
fn long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z > 0x7f {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[inline]
fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    long(out, b.len() as i64);
    out.extend_from_slice(b);
}

struct Ser<'p, 'o> {
    plan: &'p Plan,
    node: usize,
    out: &'o mut Vec<u8>,
}

impl<'p, 'o> Ser<'p, 'o> {
    fn node(&self) -> &'p Node {
        &self.plan.nodes[self.node]
    }

    fn at(self, node: usize) -> Ser<'p, 'o> {
        Ser { node, ..self }
    }

    fn int(self, v: i32) -> Result<(), Unsupported> {
        match self.node() {
            Node::Int => {
                long(self.out, i64::from(v));
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn long(self, v: i64) -> Result<(), Unsupported> {
        match self.node() {
            Node::Long => {
                long(self.out, v);
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    /// The block of an array or map of `len` items: the count (none when empty).
    fn block(self, len: Option<usize>, items: usize) -> Result<Block<'p, 'o>, Unsupported> {
        let len = len.ok_or(Unsupported)?;
        if len != 0 {
            long(self.out, len as i64);
        }
        Ok(Block {
            plan: self.plan,
            items,
            out: self.out,
        })
    }
}

impl<'p, 'o> ser::Serializer for Ser<'p, 'o> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Block<'p, 'o>;
    type SerializeTuple = Impossible<(), Unsupported>;
    type SerializeTupleStruct = Impossible<(), Unsupported>;
    type SerializeTupleVariant = Impossible<(), Unsupported>;
    type SerializeMap = Block<'p, 'o>;
    type SerializeStruct = Record<'p, 'o>;
    type SerializeStructVariant = Impossible<(), Unsupported>;

    fn serialize_bool(self, v: bool) -> Result<(), Unsupported> {
        match self.node() {
            Node::Boolean => {
                self.out.push(u8::from(v));
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_i8(self, v: i8) -> Result<(), Unsupported> {
        self.int(i32::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<(), Unsupported> {
        self.int(i32::from(v))
    }

    fn serialize_i32(self, v: i32) -> Result<(), Unsupported> {
        self.int(v)
    }

    fn serialize_i64(self, v: i64) -> Result<(), Unsupported> {
        self.long(v)
    }

    fn serialize_u8(self, v: u8) -> Result<(), Unsupported> {
        self.int(i32::from(v))
    }

    fn serialize_u16(self, v: u16) -> Result<(), Unsupported> {
        self.int(i32::from(v))
    }

    fn serialize_u32(self, v: u32) -> Result<(), Unsupported> {
        // apache-avro writes a u32 as a long.
        self.long(i64::from(v))
    }

    fn serialize_u64(self, _: u64) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_f32(self, v: f32) -> Result<(), Unsupported> {
        match self.node() {
            Node::Float => {
                self.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_f64(self, v: f64) -> Result<(), Unsupported> {
        match self.node() {
            Node::Double => {
                self.out.extend_from_slice(&v.to_le_bytes());
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_char(self, _: char) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_str(self, v: &str) -> Result<(), Unsupported> {
        match self.node() {
            Node::String => {
                bytes(self.out, v.as_bytes());
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unsupported> {
        match self.node() {
            Node::Bytes => {
                bytes(self.out, v);
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_none(self) -> Result<(), Unsupported> {
        match self.node() {
            Node::Union(Union {
                nullable: Some((null, _)),
                ..
            }) => {
                long(self.out, *null as i64);
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        match self.node() {
            Node::Union(Union {
                nullable: Some((null, some)),
                ..
            }) => {
                long(self.out, (1 - *null) as i64);
                value.serialize(self.at(*some))
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_unit(self) -> Result<(), Unsupported> {
        match self.node() {
            Node::Null => Ok(()),
            _ => Err(Unsupported),
        }
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        variant_index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        match self.node() {
            Node::Enum(symbols) => {
                let index =
                    if symbols.get(variant_index as usize).map(String::as_str) == Some(variant) {
                        variant_index as usize
                    } else {
                        symbols
                            .iter()
                            .position(|s| s == variant)
                            .ok_or(Unsupported)?
                    };
                long(self.out, index as i64);
                Ok(())
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        variant_index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        match self.node() {
            Node::Union(u) => {
                let node = *u.variants.get(variant_index as usize).ok_or(Unsupported)?;
                long(self.out, i64::from(variant_index));
                value.serialize(self.at(node))
            }
            _ => Err(Unsupported),
        }
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Block<'p, 'o>, Unsupported> {
        match *self.node() {
            Node::Array(items) => self.block(len, items),
            _ => Err(Unsupported),
        }
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Block<'p, 'o>, Unsupported> {
        match *self.node() {
            Node::Map(values) => self.block(len, values),
            _ => Err(Unsupported),
        }
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Record<'p, 'o>, Unsupported> {
        match self.node() {
            Node::Record { fields, .. } => Ok(Record {
                plan: self.plan,
                fields,
                next: 0,
                out: self.out,
            }),
            _ => Err(Unsupported),
        }
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }

    fn is_human_readable(&self) -> bool {
        // The codec's apache-avro writers are built with `human_readable(false)`.
        false
    }
}

/// The items of an array, or the entries of a map, in one block of known length.
struct Block<'p, 'o> {
    plan: &'p Plan,
    items: usize,
    out: &'o mut Vec<u8>,
}

impl Block<'_, '_> {
    fn item<T: Serialize + ?Sized>(&mut self, node: usize, value: &T) -> Result<(), Unsupported> {
        value.serialize(Ser {
            plan: self.plan,
            node,
            out: self.out,
        })
    }

    fn end(self) -> Result<(), Unsupported> {
        self.out.push(0);
        Ok(())
    }
}

impl ser::SerializeSeq for Block<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(self.items, value)
    }

    fn end(self) -> Result<(), Unsupported> {
        Block::end(self)
    }
}

impl ser::SerializeMap for Block<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        self.item(self.plan.string, key)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(self.items, value)
    }

    fn end(self) -> Result<(), Unsupported> {
        Block::end(self)
    }
}

/// A record's fields, accepted in schema order only.
struct Record<'p, 'o> {
    plan: &'p Plan,
    fields: &'p [(String, usize)],
    next: usize,
    out: &'o mut Vec<u8>,
}

impl ser::SerializeStruct for Record<'_, '_> {
    type Ok = ();
    type Error = Unsupported;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        match self.fields.get(self.next) {
            Some((name, node)) if name == key => {
                self.next += 1;
                value.serialize(Ser {
                    plan: self.plan,
                    node: *node,
                    out: self.out,
                })
            }
            _ => Err(Unsupported),
        }
    }

    fn skip_field(&mut self, _: &'static str) -> Result<(), Unsupported> {
        Err(Unsupported)
    }

    fn end(self) -> Result<(), Unsupported> {
        if self.next == self.fields.len() {
            Ok(())
        } else {
            Err(Unsupported)
        }
    }
}

/// Decode a value of `T` written with `plan`'s schema from the front of `input`, advancing it
/// past what was read. On an error the caller decodes with apache-avro, which reports it.
pub(crate) fn decode<'de, T: serde::Deserialize<'de>>(
    plan: &Plan,
    input: &mut &'de [u8],
) -> Result<T, Unsupported> {
    T::deserialize(De {
        plan,
        node: plan.root,
        input,
    })
}

impl de::Error for Unsupported {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

/// Read a zigzag varint `long`, as apache-avro does (at most 10 bytes).
fn read_long(input: &mut &[u8]) -> Result<i64, Unsupported> {
    let mut z = 0u64;
    for j in 0..10 {
        let (&b, rest) = input.split_first().ok_or(Unsupported)?;
        *input = rest;
        z |= u64::from(b & 0x7f) << (j * 7);
        if b & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err(Unsupported)
}

fn read_int(input: &mut &[u8]) -> Result<i32, Unsupported> {
    i32::try_from(read_long(input)?).map_err(|_| Unsupported)
}

/// A `long` that indexes something of `len` entries.
fn read_index(input: &mut &[u8], len: usize) -> Result<usize, Unsupported> {
    usize::try_from(read_int(input)?)
        .ok()
        .filter(|i| *i < len)
        .ok_or(Unsupported)
}

/// A length-prefixed byte string, borrowed from the input.
fn read_bytes<'de>(input: &mut &'de [u8]) -> Result<&'de [u8], Unsupported> {
    let len = usize::try_from(read_long(input)?).map_err(|_| Unsupported)?;
    // apache-avro refuses lengths above its allocation limit, whatever the input holds.
    if len > input.len() || len > crate::codec::MAX_ALLOCATION_BYTES {
        return Err(Unsupported);
    }
    let (bytes, rest) = input.split_at(len);
    *input = rest;
    Ok(bytes)
}

fn read_fixed<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], Unsupported> {
    let (bytes, rest) = input.split_first_chunk::<N>().ok_or(Unsupported)?;
    *input = rest;
    Ok(*bytes)
}

struct De<'p, 'de, 'i> {
    plan: &'p Plan,
    node: usize,
    input: &'i mut &'de [u8],
}

impl<'p, 'de, 'i> De<'p, 'de, 'i> {
    fn node(&self) -> &'p Node {
        &self.plan.nodes[self.node]
    }

    fn int(&mut self) -> Result<i32, Unsupported> {
        match self.node() {
            Node::Int => read_int(self.input),
            _ => Err(Unsupported),
        }
    }

    fn long(&mut self) -> Result<i64, Unsupported> {
        match self.node() {
            Node::Long => read_long(self.input),
            _ => Err(Unsupported),
        }
    }
}

/// Deserializer methods apache-avro's schema-aware deserializer either rejects or that the
/// codec's types never call: left to apache-avro.
macro_rules! unsupported {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, $(_: $arg,)* _: V) -> Result<V::Value, Unsupported> {
                Err(Unsupported)
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for De<'_, 'de, '_> {
    type Error = Unsupported;

    unsupported!(
        deserialize_any(),
        deserialize_i128(),
        deserialize_u64(),
        deserialize_u128(),
        deserialize_char(),
        deserialize_unit_struct(&'static str),
        deserialize_newtype_struct(&'static str),
        deserialize_tuple(usize),
        deserialize_tuple_struct(&'static str, usize),
        deserialize_identifier(),
        deserialize_ignored_any(),
    );

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Boolean => match read_fixed::<1>(self.input)? {
                [0] => visitor.visit_bool(false),
                [1] => visitor.visit_bool(true),
                _ => Err(Unsupported),
            },
            _ => Err(Unsupported),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_i8(i8::try_from(self.int()?).map_err(|_| Unsupported)?)
    }

    fn deserialize_i16<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_i16(i16::try_from(self.int()?).map_err(|_| Unsupported)?)
    }

    fn deserialize_i32<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_i32(self.int()?)
    }

    fn deserialize_i64<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_i64(self.long()?)
    }

    fn deserialize_u8<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_u8(u8::try_from(self.int()?).map_err(|_| Unsupported)?)
    }

    fn deserialize_u16<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        visitor.visit_u16(u16::try_from(self.int()?).map_err(|_| Unsupported)?)
    }

    fn deserialize_u32<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, Unsupported> {
        // apache-avro reads a u32 from a long.
        visitor.visit_u32(u32::try_from(self.long()?).map_err(|_| Unsupported)?)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Float => visitor.visit_f32(f32::from_le_bytes(read_fixed(self.input)?)),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Double => visitor.visit_f64(f64::from_le_bytes(read_fixed(self.input)?)),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::String => {
                let s = std::str::from_utf8(read_bytes(self.input)?).map_err(|_| Unsupported)?;
                visitor.visit_borrowed_str(s)
            }
            _ => Err(Unsupported),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Bytes => visitor.visit_borrowed_bytes(read_bytes(self.input)?),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Union(Union {
                nullable: Some((null, some)),
                ..
            }) => {
                if read_index(self.input, 2)? == *null {
                    visitor.visit_none()
                } else {
                    visitor.visit_some(De {
                        node: *some,
                        ..self
                    })
                }
            }
            _ => Err(Unsupported),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Null => visitor.visit_unit(),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match *self.node() {
            Node::Array(items) => visitor.visit_seq(Blocks::start(self.plan, items, self.input)?),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match *self.node() {
            Node::Map(values) => visitor.visit_map(Blocks::start(self.plan, values, self.input)?),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Record {
                name: record,
                fields,
            } if record == name => visitor.visit_map(Fields {
                plan: self.plan,
                fields,
                next: 0,
                input: self.input,
            }),
            _ => Err(Unsupported),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unsupported> {
        match self.node() {
            Node::Enum(symbols) => {
                let symbol = &symbols[read_index(self.input, symbols.len())?];
                visitor.visit_enum(Variant {
                    plan: self.plan,
                    ident: Ident::Symbol(symbol),
                    node: None,
                    input: self.input,
                })
            }
            Node::Union(u) => {
                let index = read_index(self.input, u.variants.len())?;
                visitor.visit_enum(Variant {
                    plan: self.plan,
                    ident: Ident::Index(index as u32),
                    node: Some(u.variants[index]),
                    input: self.input,
                })
            }
            _ => Err(Unsupported),
        }
    }

    fn is_human_readable(&self) -> bool {
        // The codec's apache-avro readers are built with `human_readable(false)`.
        false
    }
}

/// A record's fields, in schema order, keyed by name.
struct Fields<'p, 'de, 'i> {
    plan: &'p Plan,
    fields: &'p [(String, usize)],
    next: usize,
    input: &'i mut &'de [u8],
}

impl<'de> de::MapAccess<'de> for Fields<'_, 'de, '_> {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unsupported> {
        match self.fields.get(self.next) {
            Some((name, _)) => seed.deserialize(Ident::Symbol(name)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Unsupported> {
        let (_, node) = self.fields.get(self.next).ok_or(Unsupported)?;
        let value = seed.deserialize(De {
            plan: self.plan,
            node: *node,
            input: self.input,
        })?;
        self.next += 1;
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

/// The blocks of an array or map: a count (negative: followed by the block's byte size), the
/// items, and so on until a zero count.
struct Blocks<'p, 'de, 'i> {
    plan: &'p Plan,
    items: usize,
    remaining: Option<u64>,
    input: &'i mut &'de [u8],
}

impl<'p, 'de, 'i> Blocks<'p, 'de, 'i> {
    fn start(plan: &'p Plan, items: usize, input: &'i mut &'de [u8]) -> Result<Self, Unsupported> {
        let remaining = Self::header(input)?;
        Ok(Blocks {
            plan,
            items,
            remaining,
            input,
        })
    }

    fn header(input: &mut &[u8]) -> Result<Option<u64>, Unsupported> {
        let count = read_long(input)?;
        if count < 0 {
            read_long(input)?;
        }
        Ok((count != 0).then_some(count.unsigned_abs()))
    }

    fn item<T: DeserializeSeed<'de>>(
        &mut self,
        node: usize,
        seed: T,
    ) -> Result<T::Value, Unsupported> {
        seed.deserialize(De {
            plan: self.plan,
            node,
            input: self.input,
        })
    }

    /// One item of the block read: the next header when it was the last.
    fn advance(&mut self) -> Result<(), Unsupported> {
        match self.remaining {
            Some(1) => self.remaining = Self::header(self.input)?,
            Some(n) => self.remaining = Some(n - 1),
            None => return Err(Unsupported),
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for Blocks<'_, 'de, '_> {
    type Error = Unsupported;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Unsupported> {
        if self.remaining.is_none() {
            return Ok(None);
        }
        let value = self.item(self.items, seed)?;
        self.advance()?;
        Ok(Some(value))
    }

    fn size_hint(&self) -> Option<usize> {
        self.remaining
            .map(|x| usize::try_from(x).unwrap_or(usize::MAX))
    }
}

impl<'de> de::MapAccess<'de> for Blocks<'_, 'de, '_> {
    type Error = Unsupported;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unsupported> {
        if self.remaining.is_none() {
            return Ok(None);
        }
        self.item(self.plan.string, seed).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Unsupported> {
        let value = self.item(self.items, seed)?;
        self.advance()?;
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.remaining
            .map(|x| usize::try_from(x).unwrap_or(usize::MAX))
    }
}

/// A field name or enum symbol (visited as a string), or a union's branch (as its index).
enum Ident<'p> {
    Symbol(&'p str),
    Index(u32),
}

impl<'de> de::Deserializer<'de> for Ident<'_> {
    type Error = Unsupported;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        self.deserialize_identifier(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self {
            Ident::Symbol(s) => visitor.visit_str(s),
            Ident::Index(i) => visitor.visit_u32(i),
        }
    }

    unsupported!(
        deserialize_bool(),
        deserialize_i8(),
        deserialize_i16(),
        deserialize_i32(),
        deserialize_i64(),
        deserialize_u8(),
        deserialize_u16(),
        deserialize_u32(),
        deserialize_u64(),
        deserialize_f32(),
        deserialize_f64(),
        deserialize_char(),
        deserialize_str(),
        deserialize_string(),
        deserialize_bytes(),
        deserialize_byte_buf(),
        deserialize_option(),
        deserialize_unit(),
        deserialize_unit_struct(&'static str),
        deserialize_newtype_struct(&'static str),
        deserialize_seq(),
        deserialize_tuple(usize),
        deserialize_tuple_struct(&'static str, usize),
        deserialize_map(),
        deserialize_struct(&'static str, &'static [&'static str]),
        deserialize_enum(&'static str, &'static [&'static str]),
        deserialize_ignored_any(),
    );
}

/// The variant of an enum (`node: None`) or of a union (the branch's node).
struct Variant<'p, 'de, 'i> {
    plan: &'p Plan,
    ident: Ident<'p>,
    node: Option<usize>,
    input: &'i mut &'de [u8],
}

impl<'p, 'de, 'i> de::EnumAccess<'de> for Variant<'p, 'de, 'i> {
    type Error = Unsupported;
    type Variant = Variant<'p, 'de, 'i>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        mut self,
        seed: V,
    ) -> Result<(V::Value, Self), Unsupported> {
        let ident = std::mem::replace(&mut self.ident, Ident::Index(0));
        Ok((seed.deserialize(ident)?, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de, '_> {
    type Error = Unsupported;

    fn unit_variant(self) -> Result<(), Unsupported> {
        match self.node.map(|n| &self.plan.nodes[n]) {
            None | Some(Node::Null) => Ok(()),
            Some(Node::Record { fields, .. }) if fields.is_empty() => Ok(()),
            Some(_) => Err(Unsupported),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, Unsupported> {
        let node = self.node.ok_or(Unsupported)?;
        seed.deserialize(De {
            plan: self.plan,
            node,
            input: self.input,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Unsupported> {
        Err(Unsupported)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Unsupported> {
        Err(Unsupported)
    }
}
