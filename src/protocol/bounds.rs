//! Checks a request's lengths and counts against the bytes it carries, before
//! the `kafka-protocol` crate decodes it.
//!
//! The crate allocates an array as `Vec::with_capacity(count)` with the count
//! read from the wire, before it looks at the bytes behind it: a 14-byte
//! Metadata request whose topic count is 0x7fffffff asks for 150 GB and
//! aborts the whole broker. Apache Kafka refuses such a count ("Tried to
//! allocate a collection of size N, but there are only M bytes remaining");
//! so do we, here.
//!
//! [`check_struct`] walks a body with the table in `schema_gen.rs` (generated
//! from the crate's own decoders by `tools/gen_request_schema.py`), reading
//! exactly what the crate's decoder would read, in the same order, without
//! allocating. It refuses an array count larger than the bytes left after it,
//! a length past the end of the body, a negative length other than -1 (and -1
//! where the field is not nullable), a known tagged field the version does
//! not allow, and a version the struct does not have. Everything it accepts
//! the crate decodes without allocating more than the body's bytes allow (up
//! to the per-element size of the decoded structs); everything the crate
//! decodes with lengths that fit the body, it accepts. Record sets are one
//! length-prefixed blob here: their content is checked by the produce path.

use std::fmt;

use kafka_protocol::messages::ApiKey;

use super::schema_gen;

/// A wire type, as the crate's `types::*` decoders read it.
#[derive(Debug)]
pub enum Ty {
    Int8,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    Float64,
    Bool,
    Uuid,
    UnsignedVarInt,
    VarInt,
    UnsignedVarLong,
    VarLong,
    /// i16 length, -1 for null.
    String {
        nullable: bool,
    },
    /// Unsigned varint length + 1, 0 for null.
    CompactString {
        nullable: bool,
    },
    /// i32 length, -1 for null.
    Bytes {
        nullable: bool,
    },
    /// Unsigned varint length + 1, 0 for null.
    CompactBytes {
        nullable: bool,
    },
    /// i32 count, -1 for null.
    Array {
        nullable: bool,
        elem: &'static Ty,
    },
    /// Unsigned varint count + 1, 0 for null.
    CompactArray {
        nullable: bool,
        elem: &'static Ty,
    },
    Struct(&'static StructSchema),
    /// i8 presence flag (1: present), then the struct.
    OptionStruct(&'static StructSchema),
}

/// One struct's fields, in decode order.
#[derive(Debug)]
pub struct StructSchema {
    pub name: &'static str,
    /// The versions the crate decodes (it refuses any other).
    pub versions: (i16, i16),
    /// The first version with a tagged-field section, if any.
    pub flexible_from: Option<i16>,
    pub fields: &'static [Field],
    /// Tagged fields the crate decodes from the body (others it skips).
    pub tagged: &'static [TaggedField],
}

/// A field and its wire type by version range; absent outside the ranges.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub alts: &'static [(i16, i16, Ty)],
}

/// A tagged field the crate decodes. A version outside `alts` makes the
/// crate refuse the tag.
#[derive(Debug)]
pub struct TaggedField {
    pub tag: u32,
    pub name: &'static str,
    pub alts: &'static [(i16, i16, Ty)],
}

fn type_at(alts: &'static [(i16, i16, Ty)], version: i16) -> Option<&'static Ty> {
    alts.iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&version))
        .map(|(_, _, ty)| ty)
}

/// What was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// An array count larger than the bytes left after it.
    ArrayTooLong { count: u64, remaining: usize },
    /// A string, bytes or fixed-size field that runs past the end.
    Truncated { need: u64, remaining: usize },
    /// A negative length or count other than -1.
    NegativeLength(i64),
    /// Null (-1, or 0 in compact form) where the field is not nullable.
    NullNotAllowed,
    /// A known tagged field that this version does not have.
    TagNotValid { tag: u32 },
    /// A version outside the struct's range.
    BadVersion { min: i16, max: i16 },
    /// An API without a schema (the broker does not decode it).
    UnknownApi,
}

/// Where in the request a [`Problem`] was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Field(&'static str),
    Index(u64),
    Tag(u32),
}

/// A refused request body: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundsError {
    /// The struct where the walk started (e.g. "MetadataRequest").
    pub root: &'static str,
    pub version: i16,
    /// The path from the root to the field, outermost first.
    pub path: Vec<Step>,
    pub problem: Problem,
    /// Offset in the body where the offending length or count starts.
    pub offset: usize,
}

impl fmt::Display for BoundsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.root, self.version)?;
        for step in &self.path {
            match step {
                Step::Field(name) => write!(f, ".{name}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
                Step::Tag(t) => write!(f, ".<tag {t}>")?,
            }
        }
        write!(f, " at byte {}: ", self.offset)?;
        match &self.problem {
            Problem::ArrayTooLong { count, remaining } => write!(
                f,
                "array of {count} elements, but only {remaining} bytes remain"
            ),
            Problem::Truncated { need, remaining } => {
                write!(f, "needs {need} bytes, but only {remaining} remain")
            }
            Problem::NegativeLength(n) => write!(f, "negative length {n}"),
            Problem::NullNotAllowed => write!(f, "null where the field is not nullable"),
            Problem::TagNotValid { tag } => write!(f, "tagged field {tag} is not valid here"),
            Problem::BadVersion { min, max } => {
                write!(f, "version not in {min}..={max}")
            }
            Problem::UnknownApi => write!(f, "no request schema for this API"),
        }
    }
}

impl std::error::Error for BoundsError {}

/// A refusal found deep in a walk; the path is filled in on the way out, so
/// that an accepted body allocates nothing.
struct Refusal {
    path_rev: Vec<Step>,
    problem: Problem,
    offset: usize,
}

impl Refusal {
    fn at(mut self: Box<Self>, step: Step) -> Box<Refusal> {
        self.path_rev.push(step);
        self
    }
}

/// Boxed: an accepted walk returns a pointer-sized Result at every step.
type Walk<T> = Result<T, Box<Refusal>>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Tests: where each array count starts, and whether it is compact.
    #[cfg(test)]
    arrays: Vec<(usize, bool)>,
}

impl Cursor<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[cold]
    fn refuse<T>(&self, problem: Problem, offset: usize) -> Walk<T> {
        Err(Box::new(Refusal {
            path_rev: Vec::new(),
            problem,
            offset,
        }))
    }

    #[inline]
    fn take(&mut self, n: u64, offset: usize) -> Walk<&[u8]> {
        if n > self.remaining() as u64 {
            return self.refuse(
                Problem::Truncated {
                    need: n,
                    remaining: self.remaining(),
                },
                offset,
            );
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.buf[start..self.pos])
    }

    #[inline]
    fn fixed<const N: usize>(&mut self) -> Walk<[u8; N]> {
        let at = self.pos;
        let b = self.take(N as u64, at)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// The crate's unsigned varint: at most 5 bytes, high bits dropped.
    #[inline]
    fn uvarint(&mut self) -> Walk<u32> {
        let mut value = 0u32;
        for i in 0..5 {
            let [b] = self.fixed::<1>()?;
            value |= u32::from(b & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// The crate's unsigned varlong: at most 10 bytes.
    fn uvarlong(&mut self) -> Walk<()> {
        for _ in 0..10 {
            let [b] = self.fixed::<1>()?;
            if b < 0x80 {
                break;
            }
        }
        Ok(())
    }
}

/// Checks a request body of `api` at `version`. Returns the bytes the crate's
/// decoder will consume (the rest are trailing bytes, which are ignored).
pub fn check(api: ApiKey, version: i16, body: &[u8]) -> Result<usize, BoundsError> {
    let Some(schema) = schema_gen::request(api) else {
        return Err(BoundsError {
            root: "request",
            version,
            path: Vec::new(),
            problem: Problem::UnknownApi,
            offset: 0,
        });
    };
    check_struct(schema, version, body)
}

/// Checks `body` against one struct schema (a request body, the request
/// header, or the consumer protocol subscription of a JoinGroup member).
pub fn check_struct(
    schema: &'static StructSchema,
    version: i16,
    body: &[u8],
) -> Result<usize, BoundsError> {
    let mut c = Cursor {
        buf: body,
        pos: 0,
        #[cfg(test)]
        arrays: Vec::new(),
    };
    match walk_struct(schema, version, &mut c) {
        Ok(()) => Ok(c.pos),
        Err(r) => {
            let Refusal {
                path_rev: mut path,
                problem,
                offset,
            } = *r;
            path.reverse();
            Err(BoundsError {
                root: schema.name,
                version,
                path,
                problem,
                offset,
            })
        }
    }
}

fn walk_struct(s: &'static StructSchema, version: i16, c: &mut Cursor) -> Walk<()> {
    let (min, max) = s.versions;
    if version < min || version > max {
        return c.refuse(Problem::BadVersion { min, max }, c.pos);
    }
    for field in s.fields {
        if let Some(ty) = type_at(field.alts, version) {
            walk_ty(ty, version, c).map_err(|r| r.at(Step::Field(field.name)))?;
        }
    }
    if s.flexible_from.is_some_and(|from| version >= from) {
        let count = c.uvarint()?;
        for _ in 0..count {
            let tag = c.uvarint()?;
            let size_at = c.pos;
            let size = c.uvarint()?;
            match s.tagged.iter().find(|t| t.tag == tag) {
                // The crate decodes a known tag from the body itself and
                // ignores its size; so does this walk.
                Some(known) => match type_at(known.alts, version) {
                    Some(ty) => {
                        walk_ty(ty, version, c).map_err(|r| r.at(Step::Field(known.name)))?
                    }
                    None => {
                        return c
                            .refuse(Problem::TagNotValid { tag }, size_at)
                            .map_err(|r| r.at(Step::Tag(tag)))
                    }
                },
                None => {
                    c.take(u64::from(size), size_at)
                        .map_err(|r| r.at(Step::Tag(tag)))?;
                }
            }
        }
    }
    Ok(())
}

fn walk_ty(ty: &'static Ty, version: i16, c: &mut Cursor) -> Walk<()> {
    let at = c.pos;
    match ty {
        Ty::Int8 | Ty::Bool => c.take(1, at).map(drop),
        Ty::Int16 | Ty::UInt16 => c.take(2, at).map(drop),
        Ty::Int32 | Ty::UInt32 => c.take(4, at).map(drop),
        Ty::Int64 | Ty::Float64 => c.take(8, at).map(drop),
        Ty::Uuid => c.take(16, at).map(drop),
        Ty::UnsignedVarInt | Ty::VarInt => c.uvarint().map(drop),
        Ty::UnsignedVarLong | Ty::VarLong => c.uvarlong(),
        Ty::String { nullable } => {
            let n = i16::from_be_bytes(c.fixed()?);
            signed_len(c, i64::from(n), *nullable, at).map(drop)
        }
        Ty::Bytes { nullable } => {
            let n = i32::from_be_bytes(c.fixed()?);
            signed_len(c, i64::from(n), *nullable, at).map(drop)
        }
        Ty::CompactString { nullable } | Ty::CompactBytes { nullable } => {
            let n = c.uvarint()?;
            if let Some(len) = compact_len(c, n, *nullable, at)? {
                c.take(len, at)?;
            }
            Ok(())
        }
        Ty::Array { nullable, elem } => {
            #[cfg(test)]
            c.arrays.push((at, false));
            let n = i32::from_be_bytes(c.fixed()?);
            let count = match n {
                -1 if *nullable => return Ok(()),
                -1 => return c.refuse(Problem::NullNotAllowed, at),
                n if n < 0 => return c.refuse(Problem::NegativeLength(i64::from(n)), at),
                n => n as u64,
            };
            walk_elems(elem, count, version, c, at)
        }
        Ty::CompactArray { nullable, elem } => {
            #[cfg(test)]
            c.arrays.push((at, true));
            let n = c.uvarint()?;
            match compact_len(c, n, *nullable, at)? {
                Some(count) => walk_elems(elem, count, version, c, at),
                None => Ok(()),
            }
        }
        Ty::Struct(s) => walk_struct(s, version, c),
        Ty::OptionStruct(s) => {
            let [present] = c.fixed::<1>()?;
            if present == 1 {
                walk_struct(s, version, c)?;
            }
            Ok(())
        }
    }
}

/// An i16/i32 length: -1 is null, other negatives are refused, the rest must
/// fit in the body (the bytes are skipped).
fn signed_len(c: &mut Cursor, n: i64, nullable: bool, at: usize) -> Walk<()> {
    match n {
        -1 if nullable => Ok(()),
        -1 => c.refuse(Problem::NullNotAllowed, at),
        n if n < 0 => c.refuse(Problem::NegativeLength(n), at),
        n => c.take(n as u64, at).map(drop),
    }
}

/// A compact length (n + 1, 0 for null); None for null.
fn compact_len(c: &Cursor, n: u32, nullable: bool, at: usize) -> Walk<Option<u64>> {
    match n {
        0 if nullable => Ok(None),
        0 => c.refuse(Problem::NullNotAllowed, at),
        n => Ok(Some(u64::from(n) - 1)),
    }
}

fn walk_elems(elem: &'static Ty, count: u64, version: i16, c: &mut Cursor, at: usize) -> Walk<()> {
    if count > c.remaining() as u64 {
        return c.refuse(
            Problem::ArrayTooLong {
                count,
                remaining: c.remaining(),
            },
            at,
        );
    }
    for i in 0..count {
        walk_ty(elem, version, c).map_err(|r| r.at(Step::Index(i)))?;
    }
    Ok(())
}

/// Tests: the offsets of every array count the walk of an accepted body
/// reads, with whether each is compact.
#[cfg(test)]
fn array_counts(schema: &'static StructSchema, version: i16, body: &[u8]) -> Vec<(usize, bool)> {
    let mut c = Cursor {
        buf: body,
        pos: 0,
        arrays: Vec::new(),
    };
    assert!(walk_struct(schema, version, &mut c).is_ok());
    c.arrays
}

#[cfg(test)]
#[path = "bounds_tests.rs"]
mod tests;
