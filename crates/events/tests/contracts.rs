//! The `.avsc` files are the contract; these tests hold the Rust types, the docs and the
//! compatibility rules to them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use apache_avro::Schema;
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use bimride_events::Topic;
use bimride_events::contract::{self, Contract};
use serde_json::Value;

fn repo_schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// The schema as JSON with every `doc` removed: docs are checked apart, structure here.
fn structure(schema: &Schema) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("doc");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json = serde_json::to_value(schema).expect("schema serializes");
    strip(&mut json);
    json
}

#[test]
fn every_rust_type_matches_its_avsc_file() {
    for c in contract::ALL {
        let file = contract::parse(c.source).unwrap_or_else(|e| panic!("{}: {e}", c.file));
        let derived = (c.derived)();
        assert_eq!(
            structure(&derived),
            structure(&file),
            "the Rust type of {} has diverged from its .avsc",
            c.file
        );
    }
}

#[test]
fn the_binding_check_catches_a_divergence() {
    // A contract whose file says one thing and whose type another must not compare equal.
    let other = Contract {
        file: "ride_requested.avsc",
        source: contract::RIDE_REQUESTED.source,
        derived: <bimride_events::OfferSent as apache_avro::AvroSchema>::get_schema,
    };
    let file = contract::parse(other.source).expect("parses");
    assert_ne!(structure(&(other.derived)()), structure(&file));
}

#[test]
fn every_avsc_file_is_a_bound_contract() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo_schemas())
        .expect("schemas/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".avsc"))
        .collect();
    let bound: BTreeSet<String> = contract::ALL.iter().map(|c| c.file.to_owned()).collect();
    assert_eq!(on_disk, bound);
    assert_eq!(bound.len(), 15);
}

fn assert_documented(v: &Value, path: &str) {
    let Value::Object(map) = v else { return };
    let is_named = matches!(
        map.get("type").and_then(Value::as_str),
        Some("record" | "enum")
    );
    let is_field = map.contains_key("name") && !is_named;
    if is_named || is_field {
        let doc = map.get("doc").and_then(Value::as_str).unwrap_or_default();
        assert!(!doc.trim().is_empty(), "{path} has no doc");
    }
    for (key, child) in map {
        match child {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, item)| assert_documented(item, &format!("{path}.{key}[{i}]"))),
            other => assert_documented(other, &format!("{path}.{key}")),
        }
    }
}

#[test]
fn every_record_and_field_has_a_doc() {
    for c in contract::ALL {
        assert_documented(&c.json(), c.file);
    }
}

#[test]
fn every_event_has_an_id_and_an_event_time_and_no_float_money() {
    for c in contract::ALL {
        let json = c.json();
        let fields = json["fields"].as_array().expect("record fields");
        let field = |name: &str| fields.iter().find(|f| f["name"] == name);
        assert_eq!(
            field("event_id").map(|f| &f["type"]),
            Some(&Value::from("string")),
            "{}",
            c.file
        );
        let time = field("occurred_at").expect("occurred_at");
        assert_eq!(
            time["type"]["logicalType"], "timestamp-millis",
            "{}",
            c.file
        );
        // Money is integer minor units: no float or double anywhere near it.
        let text = c.source;
        for (i, _) in text
            .match_indices("\"double\"")
            .chain(text.match_indices("\"float\""))
        {
            let context = &text[i.saturating_sub(200)..i];
            assert!(
                !context.contains("minor")
                    && !context.contains("Money")
                    && !context.contains("fare"),
                "{} uses a float near money",
                c.file
            );
        }
    }
}

#[test]
fn topic_value_schemas_parse_with_members_in_order() {
    for topic in Topic::ALL {
        let schema = Schema::parse_str(&topic.value_schema_json()).expect("parses");
        let members = topic.members();
        match &schema {
            Schema::Union(u) => {
                assert!(members.len() > 1);
                let names: Vec<String> = u
                    .variants()
                    .iter()
                    .map(|s| match s {
                        Schema::Record(r) => r.name.name().to_owned(),
                        other => panic!("{topic}: non-record branch {other:?}"),
                    })
                    .collect();
                let expected: Vec<String> = members
                    .iter()
                    .map(|c| c.json()["name"].as_str().unwrap_or_default().to_owned())
                    .collect();
                assert_eq!(names, expected, "{topic}");
            }
            Schema::Record(_) => assert_eq!(members.len(), 1, "{topic}"),
            other => panic!("{topic}: unexpected {other:?}"),
        }
    }
}

/// BACKWARD: the current schema must read everything written with the last released one.
fn backward_problem(released: &str, current: &str) -> Option<String> {
    let old = Schema::parse_str(released).expect("released schema parses");
    let new = Schema::parse_str(current).expect("current schema parses");
    match SchemaCompatibility::can_read(&old, &new) {
        Ok(Compatibility::Full) => None,
        Ok(Compatibility::Partial) => Some("partially compatible".into()),
        Err(e) => Some(e.to_string()),
    }
}

fn latest_release(file: &str) -> Option<String> {
    let released = repo_schemas().join("released");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&released)
        .expect("schemas/released exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(file).exists())
        .collect();
    versions.sort();
    versions
        .last()
        .map(|dir| std::fs::read_to_string(dir.join(file)).expect("released file reads"))
}

#[test]
fn every_schema_is_backward_compatible_with_its_last_release() {
    for c in contract::ALL {
        let released = latest_release(c.file)
            .unwrap_or_else(|| panic!("{} has no release under schemas/released", c.file));
        if let Some(problem) = backward_problem(&released, c.source) {
            panic!("{} breaks BACKWARD compatibility: {problem}", c.file);
        }
    }
}

#[test]
fn the_gate_rejects_a_deliberately_breaking_schema() {
    let breaking = include_str!("fixtures/breaking_ride_requested.avsc");
    let released = latest_release("ride_requested.avsc").expect("released");
    let problem = backward_problem(&released, breaking);
    assert!(
        problem.is_some(),
        "a new field without a default must fail the gate"
    );
}
