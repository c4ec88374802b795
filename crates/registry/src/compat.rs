//! Compatibility levels and the checks behind them.

use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use serde::{Deserialize, Serialize};

/// The compatibility levels of the Confluent Schema Registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    /// Checks `candidate` against `existing` (oldest first). Returns why it fails, if it does.
    pub fn check(self, candidate: &Schema, existing: &[&Schema]) -> Vec<String> {
        let against: &[&Schema] = if self.transitive() {
            existing
        } else {
            existing
                .last()
                .map(std::slice::from_ref)
                .unwrap_or_default()
        };
        let mut problems = Vec::new();
        for old in against {
            if self.backward()
                && let Some(p) = can_read(old, candidate)
            {
                problems.push(format!(
                    "new schema cannot read data written with an older one: {p}"
                ));
            }
            if self.forward()
                && let Some(p) = can_read(candidate, old)
            {
                problems.push(format!(
                    "older schema cannot read data written with the new one: {p}"
                ));
            }
        }
        problems
    }
}

/// `None` when data written with `writer` can always be read with `reader`.
pub fn can_read(writer: &Schema, reader: &Schema) -> Option<String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => {
            Some("reading may fail for some values (enum symbols or union branches)".into())
        }
        Err(e) => Some(describe(&e)),
    }
}

/// The library names mismatched types by their whole `Debug` dump; a client needs the kinds.
fn describe(e: &CompatibilityError) -> String {
    match e {
        CompatibilityError::WrongType {
            writer_schema_type,
            reader_schema_type,
        } => format!(
            "a {} cannot be read as a {}",
            kind(writer_schema_type),
            kind(reader_schema_type)
        ),
        CompatibilityError::FieldTypeMismatch(field, inner) => {
            format!("field '{field}' changed type: {}", describe(inner))
        }
        other => other.to_string(),
    }
}

fn kind(debug: &str) -> &str {
    debug
        .split(|c: char| !c.is_ascii_alphanumeric())
        .next()
        .unwrap_or(debug)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .expect("test schema parses")
    }

    #[test]
    fn added_field_with_default_is_backward_but_without_default_is_not() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let ok = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#);
        let bad = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        assert!(Level::Backward.check(&ok, &[&v1]).is_empty());
        assert!(!Level::Backward.check(&bad, &[&v1]).is_empty());
        // Old readers ignore a new field, so both are forward compatible.
        assert!(Level::Forward.check(&bad, &[&v1]).is_empty());
        assert!(Level::None.check(&bad, &[&v1]).is_empty());
    }

    #[test]
    fn transitive_levels_check_every_version() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(
            r#"{"name":"a","type":"string","default":"x"},{"name":"b","type":"int","default":0}"#,
        );
        let v3 = schema(r#"{"name":"b","type":"int","default":0},{"name":"c","type":"long"}"#);
        // v3 cannot read v1 or v2 data: c has no default.
        assert!(!Level::Backward.check(&v3, &[&v1, &v2]).is_empty());
        let v3b = schema(r#"{"name":"b","type":"int"}"#);
        // v3b reads v2 (which has b) but not v1 (which lacks b and b has no default).
        assert!(Level::Backward.check(&v3b, &[&v1, &v2]).is_empty());
        assert!(
            !Level::BackwardTransitive
                .check(&v3b, &[&v1, &v2])
                .is_empty()
        );
    }

    #[test]
    fn a_changed_type_is_named_by_kind_not_dumped() {
        let v1 = schema(r#"{"name":"a","type":{"type":"record","name":"In","fields":[]}}"#);
        let v2 = schema(r#"{"name":"a","type":"long"}"#);
        let problems = Level::Backward.check(&v2, &[&v1]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("field 'a' changed type: a Record cannot be read as a Long"),
            "{}",
            problems[0]
        );
        assert!(!problems[0].contains("RecordSchema"), "{}", problems[0]);
    }

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(Level::parse("full_transitive"), Some(Level::FullTransitive));
        assert_eq!(Level::parse("NONE"), Some(Level::None));
        assert_eq!(Level::parse("sideways"), None);
    }
}
