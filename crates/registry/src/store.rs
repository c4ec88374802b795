//! The registry's state, rebuilt from and advanced by log entries. No I/O here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::compat::Level;
use crate::error::RegistryError;

/// The key of a log entry; entries with equal keys supersede each other (compaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LogKey {
    Schema { subject: String, version: u32 },
    Config { subject: Option<String> },
    Mode { subject: Option<String> },
}

/// A registered schema version, as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigValue {
    pub compatibility_level: Level,
}

/// Whether the registry takes writes (Confluent's `IMPORT` mode is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RegistryMode {
    #[default]
    #[serde(rename = "READWRITE")]
    ReadWrite,
    #[serde(rename = "READONLY")]
    ReadOnly,
}

impl RegistryMode {
    pub fn parse(s: &str) -> Option<RegistryMode> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: RegistryMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogValue {
    Schema(SchemaValue),
    Config(ConfigValue),
    Mode(ModeValue),
}

/// One entry of the registry's log. A `None` value is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: LogKey,
    pub value: Option<LogValue>,
}

#[derive(Debug)]
struct Stored {
    text: String,
    parsed: Arc<Schema>,
}

#[derive(Debug, Clone, Copy)]
struct VersionEntry {
    version: u32,
    id: u32,
    deleted: bool,
}

/// A schema version as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// A version selector: a number or `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl VersionRef {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        match s {
            "latest" | "-1" => Ok(VersionRef::Latest),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|v| *v > 0)
                .map(VersionRef::Number)
                .ok_or_else(|| RegistryError::InvalidVersion(s.to_owned())),
        }
    }
}

/// What a registration needs: nothing (already there) or one entry appended to the log.
#[derive(Debug)]
pub enum Registration {
    /// Already registered under the subject: its id and version.
    Existing(u32, u32),
    New(Entry),
}

#[derive(Debug)]
pub struct Store {
    schemas: HashMap<u32, Stored>,
    by_form: HashMap<String, u32>,
    subjects: BTreeMap<String, Vec<VersionEntry>>,
    global: Level,
    subject_levels: HashMap<String, Level>,
    mode: RegistryMode,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            schemas: HashMap::new(),
            by_form: HashMap::new(),
            subjects: BTreeMap::new(),
            global: Level::Backward,
            subject_levels: HashMap::new(),
            mode: RegistryMode::default(),
        }
    }
}

/// Parses a schema and gives the form its identity is judged by: the full parsed JSON, so a
/// change of whitespace is the same schema but a change of `doc` is a new one.
pub fn parse_schema(text: &str) -> Result<(Schema, String), RegistryError> {
    let schema =
        Schema::parse_str(text).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    let form =
        serde_json::to_string(&schema).map_err(|e| RegistryError::InvalidSchema(e.to_string()))?;
    Ok((schema, form))
}

impl Store {
    /// Applies one log entry. Entries are applied after they are durable, and on replay.
    pub fn apply(&mut self, entry: &Entry) {
        match (&entry.key, &entry.value) {
            (LogKey::Schema { .. }, Some(LogValue::Schema(v))) => self.apply_schema(v),
            (LogKey::Schema { subject, version }, None) => {
                if let Some(versions) = self.subjects.get_mut(subject) {
                    versions.retain(|e| e.version != *version);
                    if versions.is_empty() {
                        self.subjects.remove(subject);
                    }
                }
            }
            (LogKey::Config { subject }, Some(LogValue::Config(c))) => match subject {
                Some(s) => {
                    self.subject_levels.insert(s.clone(), c.compatibility_level);
                }
                None => self.global = c.compatibility_level,
            },
            (LogKey::Config { subject }, None) => match subject {
                Some(s) => {
                    self.subject_levels.remove(s);
                }
                None => self.global = Level::Backward,
            },
            (LogKey::Mode { subject: None }, Some(LogValue::Mode(m))) => self.mode = m.mode,
            (LogKey::Mode { subject: None }, None) => self.mode = RegistryMode::default(),
            // A key and value of different kinds cannot come from this registry; skip it.
            _ => tracing::warn!(key = ?entry.key, "ignoring malformed registry log entry"),
        }
    }

    fn apply_schema(&mut self, v: &SchemaValue) {
        if !self.schemas.contains_key(&v.id) {
            match parse_schema(&v.schema) {
                Ok((parsed, form)) => {
                    self.by_form.insert(form, v.id);
                    self.schemas.insert(
                        v.id,
                        Stored {
                            text: v.schema.clone(),
                            parsed: Arc::new(parsed),
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(id = v.id, error = %e, "registry log holds an unparsable schema");
                    return;
                }
            }
        }
        let versions = self.subjects.entry(v.subject.clone()).or_default();
        let entry = VersionEntry {
            version: v.version,
            id: v.id,
            deleted: v.deleted,
        };
        match versions.iter_mut().find(|e| e.version == v.version) {
            Some(existing) => *existing = entry,
            None => {
                versions.push(entry);
                versions.sort_by_key(|e| e.version);
            }
        }
    }

    fn live(&self, subject: &str) -> Result<Vec<VersionEntry>, RegistryError> {
        let versions: Vec<_> = self
            .subjects
            .get(subject)
            .map(|v| v.iter().filter(|e| !e.deleted).copied().collect())
            .unwrap_or_default();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    fn text_of(&self, id: u32) -> String {
        self.schemas
            .get(&id)
            .map(|s| s.text.clone())
            .unwrap_or_default()
    }

    fn registered(&self, subject: &str, e: VersionEntry) -> Registered {
        Registered {
            subject: subject.to_owned(),
            version: e.version,
            id: e.id,
            schema: self.text_of(e.id),
        }
    }

    pub fn mode(&self) -> RegistryMode {
        self.mode
    }

    pub fn subjects(&self, include_deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, v)| include_deleted || v.iter().any(|e| !e.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn versions(
        &self,
        subject: &str,
        include_deleted: bool,
    ) -> Result<Vec<u32>, RegistryError> {
        let all = self
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let versions: Vec<u32> = all
            .iter()
            .filter(|e| include_deleted || !e.deleted)
            .map(|e| e.version)
            .collect();
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_owned()));
        }
        Ok(versions)
    }

    pub fn version(&self, subject: &str, v: VersionRef) -> Result<Registered, RegistryError> {
        let live = self.live(subject)?;
        let found = match v {
            VersionRef::Latest => live.last().copied(),
            VersionRef::Number(n) => live.iter().find(|e| e.version == n).copied(),
        };
        found
            .map(|e| self.registered(subject, e))
            .ok_or(RegistryError::VersionNotFound)
    }

    pub fn schema_by_id(&self, id: u32) -> Result<&str, RegistryError> {
        self.schemas
            .get(&id)
            .map(|s| s.text.as_str())
            .ok_or(RegistryError::SchemaNotFound)
    }

    pub fn subject_versions_of(&self, id: u32) -> Result<Vec<(String, u32)>, RegistryError> {
        self.schema_by_id(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(s, versions)| {
                versions
                    .iter()
                    .filter(|e| e.id == id && !e.deleted)
                    .map(|e| (s.clone(), e.version))
            })
            .collect())
    }

    /// `POST /subjects/{s}`: is this schema registered under the subject?
    pub fn lookup(&self, subject: &str, text: &str) -> Result<Registered, RegistryError> {
        let live = self.live(subject)?;
        let (_, form) = parse_schema(text)?;
        let id = self
            .by_form
            .get(&form)
            .ok_or(RegistryError::SchemaNotFound)?;
        live.iter()
            .find(|e| e.id == *id)
            .map(|e| self.registered(subject, *e))
            .ok_or(RegistryError::SchemaNotFound)
    }

    pub fn level(&self, subject: Option<&str>) -> Level {
        subject
            .and_then(|s| self.subject_levels.get(s).copied())
            .unwrap_or(self.global)
    }

    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.subject_levels.get(subject).copied()
    }

    /// Problems that make `text` incompatible with the subject's versions under its level;
    /// with `version`, only against that one version.
    pub fn compatibility(
        &self,
        subject: &str,
        text: &str,
        version: Option<VersionRef>,
    ) -> Result<Vec<String>, RegistryError> {
        let (candidate, _) = parse_schema(text)?;
        let level = self.level(Some(subject));
        let live = match self.live(subject) {
            Ok(live) => live,
            // A subject with no versions accepts anything.
            Err(_) if version.is_none() => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let chosen: Vec<VersionEntry> = match version {
            None => live,
            Some(v) => vec![self.version(subject, v).map(|r| VersionEntry {
                version: r.version,
                id: r.id,
                deleted: false,
            })?],
        };
        let existing: Vec<&Schema> = chosen
            .iter()
            .filter_map(|e| self.schemas.get(&e.id).map(|s| s.parsed.as_ref()))
            .collect();
        Ok(level.check(&candidate, &existing))
    }

    /// Decides what registering `text` under `subject` takes.
    pub fn plan_register(&self, subject: &str, text: &str) -> Result<Registration, RegistryError> {
        let (_, form) = parse_schema(text)?;
        let known_id = self.by_form.get(&form).copied();
        let versions = self.subjects.get(subject);
        if let (Some(id), Some(versions)) = (known_id, versions)
            && let Some(e) = versions.iter().find(|e| e.id == id && !e.deleted)
        {
            return Ok(Registration::Existing(id, e.version));
        }
        let problems = self.compatibility(subject, text, None)?;
        if !problems.is_empty() {
            return Err(RegistryError::Incompatible(problems));
        }
        let id = known_id.unwrap_or_else(|| self.schemas.keys().max().map_or(1, |m| m + 1));
        let version = versions
            .and_then(|v| v.iter().map(|e| e.version).max())
            .map_or(1, |m| m + 1);
        Ok(Registration::New(Entry {
            key: LogKey::Schema {
                subject: subject.to_owned(),
                version,
            },
            value: Some(LogValue::Schema(SchemaValue {
                subject: subject.to_owned(),
                version,
                id,
                schema: text.to_owned(),
                deleted: false,
            })),
        }))
    }

    /// The entries that delete `subject` (soft) or purge it (`permanent`).
    pub fn plan_delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<(Vec<u32>, Vec<Entry>), RegistryError> {
        let all = self
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let live: Vec<_> = all.iter().filter(|e| !e.deleted).copied().collect();
        if permanent {
            if !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_owned()));
            }
            let versions = all.iter().map(|e| e.version).collect();
            let entries = all
                .iter()
                .map(|e| Entry {
                    key: LogKey::Schema {
                        subject: subject.to_owned(),
                        version: e.version,
                    },
                    value: None,
                })
                .collect();
            return Ok((versions, entries));
        }
        if live.is_empty() {
            return Err(RegistryError::SubjectSoftDeleted(subject.to_owned()));
        }
        let versions = live.iter().map(|e| e.version).collect();
        let entries = live.iter().map(|e| self.soft_delete(subject, *e)).collect();
        Ok((versions, entries))
    }

    pub fn plan_delete_version(
        &self,
        subject: &str,
        v: VersionRef,
        permanent: bool,
    ) -> Result<(u32, Entry), RegistryError> {
        let all = self
            .subjects
            .get(subject)
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_owned()))?;
        let found = match v {
            VersionRef::Latest => all.iter().rev().find(|e| permanent || !e.deleted),
            VersionRef::Number(n) => all.iter().find(|e| e.version == n),
        }
        .copied()
        .ok_or(RegistryError::VersionNotFound)?;
        if permanent {
            if !found.deleted {
                return Err(RegistryError::VersionNotSoftDeleted);
            }
            let key = LogKey::Schema {
                subject: subject.to_owned(),
                version: found.version,
            };
            return Ok((found.version, Entry { key, value: None }));
        }
        if found.deleted {
            return Err(RegistryError::VersionNotFound);
        }
        Ok((found.version, self.soft_delete(subject, found)))
    }

    fn soft_delete(&self, subject: &str, e: VersionEntry) -> Entry {
        Entry {
            key: LogKey::Schema {
                subject: subject.to_owned(),
                version: e.version,
            },
            value: Some(LogValue::Schema(SchemaValue {
                subject: subject.to_owned(),
                version: e.version,
                id: e.id,
                schema: self.text_of(e.id),
                deleted: true,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"int","default":0}]}"#;
    const BAD: &str = r#"{"type":"record","name":"R","fields":[{"name":"c","type":"int"}]}"#;

    fn register(store: &mut Store, subject: &str, text: &str) -> Result<u32, RegistryError> {
        match store.plan_register(subject, text)? {
            Registration::Existing(id, _) => Ok(id),
            Registration::New(entry) => {
                store.apply(&entry);
                match entry.value {
                    Some(LogValue::Schema(v)) => Ok(v.id),
                    _ => unreachable!("registration writes a schema"),
                }
            }
        }
    }

    #[test]
    fn the_mode_is_kept_in_the_log_as_confluent_keys_it() {
        let mut store = Store::default();
        assert_eq!(store.mode(), RegistryMode::ReadWrite);
        let key = LogKey::Mode { subject: None };
        assert_eq!(
            serde_json::to_value(&key).expect("key"),
            serde_json::json!({"keytype": "MODE", "subject": null})
        );
        let value = LogValue::Mode(ModeValue {
            mode: RegistryMode::ReadOnly,
        });
        let text = serde_json::to_string(&value).expect("value");
        assert_eq!(text, r#"{"mode":"READONLY"}"#);
        let replayed: LogValue = serde_json::from_str(&text).expect("replays");
        store.apply(&Entry {
            key: key.clone(),
            value: Some(replayed),
        });
        assert_eq!(store.mode(), RegistryMode::ReadOnly);
        store.apply(&Entry { key, value: None });
        assert_eq!(store.mode(), RegistryMode::ReadWrite);
    }

    #[test]
    fn same_schema_same_id_across_subjects_and_retries() {
        let mut store = Store::default();
        let a = register(&mut store, "a-value", V1).expect("registers");
        assert_eq!(register(&mut store, "a-value", V1).expect("again"), a);
        assert_eq!(
            register(&mut store, "b-value", V1).expect("other subject"),
            a
        );
        let two = register(&mut store, "a-value", V2).expect("compatible v2");
        assert_ne!(two, a);
        assert_eq!(
            store.versions("a-value", false).expect("versions"),
            vec![1, 2]
        );
        assert_eq!(
            store
                .version("a-value", VersionRef::Latest)
                .expect("latest")
                .id,
            two
        );
    }

    #[test]
    fn incompatible_schema_is_refused_and_changes_nothing() {
        let mut store = Store::default();
        register(&mut store, "s", V1).expect("registers");
        let err = register(&mut store, "s", BAD).expect_err("c has no default");
        assert!(matches!(err, RegistryError::Incompatible(_)));
        assert_eq!(store.versions("s", false).expect("versions"), vec![1]);
    }

    #[test]
    fn soft_then_hard_delete() {
        let mut store = Store::default();
        register(&mut store, "s", V1).expect("registers");
        assert!(matches!(
            store.plan_delete_subject("s", true),
            Err(RegistryError::SubjectNotSoftDeleted(_))
        ));
        let (versions, entries) = store.plan_delete_subject("s", false).expect("soft");
        assert_eq!(versions, vec![1]);
        entries.iter().for_each(|e| store.apply(e));
        assert!(store.subjects(false).is_empty());
        assert_eq!(store.subjects(true), vec!["s".to_owned()]);
        let (_, entries) = store.plan_delete_subject("s", true).expect("hard");
        entries.iter().for_each(|e| store.apply(e));
        assert!(store.subjects(true).is_empty());
    }
}
