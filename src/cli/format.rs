//! Output formats of `sluice consume`: value only, key + delimiter + value, or a
//! kcat-style `--format` string with `%t %p %o %k %s %T %S %K %%` and `\n \t \\`.

use std::io::{self, Write};

use anyhow::{bail, Result};
use kafka_protocol::records::Record;

/// One piece of an output format.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    KeyLength,
    Value,
    ValueLength,
    Timestamp,
}

/// A parsed output format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFormat {
    tokens: Vec<Token>,
}

/// What a format may print about one record.
pub struct PrintedRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub record: &'a Record,
}

impl OutputFormat {
    /// The value, then a newline.
    pub fn value_only() -> Self {
        Self {
            tokens: vec![Token::Value, Token::Literal(b"\n".to_vec())],
        }
    }

    /// The key, `delimiter`, the value, then a newline.
    pub fn key_value(delimiter: &str) -> Self {
        Self {
            tokens: vec![
                Token::Key,
                Token::Literal(delimiter.as_bytes().to_vec()),
                Token::Value,
                Token::Literal(b"\n".to_vec()),
            ],
        }
    }

    /// Parses a `--format` string. Like kcat, no newline is added at the end.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut tokens = Vec::new();
        let mut literal = Vec::new();
        let mut chars = spec.chars();
        while let Some(c) = chars.next() {
            let token = match c {
                '%' => match chars.next() {
                    Some('t') => Token::Topic,
                    Some('p') => Token::Partition,
                    Some('o') => Token::Offset,
                    Some('k') => Token::Key,
                    Some('K') => Token::KeyLength,
                    Some('s') => Token::Value,
                    Some('S') => Token::ValueLength,
                    Some('T') => Token::Timestamp,
                    Some('%') => {
                        literal.push(b'%');
                        continue;
                    }
                    Some(other) => bail!("unknown format directive %{other} in {spec:?}"),
                    None => bail!("format {spec:?} ends with a lone %"),
                },
                '\\' => {
                    match chars.next() {
                        Some('n') => literal.push(b'\n'),
                        Some('t') => literal.push(b'\t'),
                        Some('r') => literal.push(b'\r'),
                        Some('\\') => literal.push(b'\\'),
                        Some(other) => bail!("unknown escape \\{other} in format {spec:?}"),
                        None => bail!("format {spec:?} ends with a lone \\"),
                    }
                    continue;
                }
                c => {
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    continue;
                }
            };
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(token);
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(Self { tokens })
    }

    /// Writes one record. A null key or value prints as nothing; its length as -1.
    pub fn write(&self, out: &mut impl Write, r: &PrintedRecord<'_>) -> io::Result<()> {
        let len = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
        for token in &self.tokens {
            match token {
                Token::Literal(bytes) => out.write_all(bytes)?,
                Token::Topic => out.write_all(r.topic.as_bytes())?,
                Token::Partition => write!(out, "{}", r.partition)?,
                Token::Offset => write!(out, "{}", r.record.offset)?,
                Token::Key => out.write_all(r.record.key.as_deref().unwrap_or_default())?,
                Token::KeyLength => write!(out, "{}", len(&r.record.key))?,
                Token::Value => out.write_all(r.record.value.as_deref().unwrap_or_default())?,
                Token::ValueLength => write!(out, "{}", len(&r.record.value))?,
                Token::Timestamp => write!(out, "{}", r.record.timestamp)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::TimestampType;

    fn record(key: Option<&'static str>, value: &'static str) -> Record {
        Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 7,
            sequence: -1,
            timestamp: 1234,
            key: key.map(|k| Bytes::from_static(k.as_bytes())),
            value: Some(Bytes::from_static(value.as_bytes())),
            headers: IndexMap::new(),
        }
    }

    fn render(format: &OutputFormat, r: &Record) -> String {
        let mut out = Vec::new();
        let printed = PrintedRecord {
            topic: "t",
            partition: 3,
            record: r,
        };
        format.write(&mut out, &printed).expect("writes to a Vec");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn default_formats() {
        let r = record(Some("k"), "v");
        assert_eq!(render(&OutputFormat::value_only(), &r), "v\n");
        assert_eq!(render(&OutputFormat::key_value(":"), &r), "k:v\n");
        assert_eq!(
            render(&OutputFormat::key_value(":"), &record(None, "v")),
            ":v\n"
        );
    }

    #[test]
    fn format_string_directives() {
        let f = OutputFormat::parse("%t/%p@%o %k=%s (%K,%S) %T 100%%\\n").expect("parses");
        assert_eq!(
            render(&f, &record(Some("k"), "val")),
            "t/3@7 k=val (1,3) 1234 100%\n"
        );
        assert_eq!(render(&f, &record(None, "")), "t/3@7 = (-1,0) 1234 100%\n");
    }

    #[test]
    fn bad_format_strings_are_rejected() {
        assert!(OutputFormat::parse("%x").is_err());
        assert!(OutputFormat::parse("abc%").is_err());
        assert!(OutputFormat::parse("\\q").is_err());
    }
}
