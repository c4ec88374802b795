//! Kafka client settings.

use std::path::PathBuf;

use rdkafka::ClientConfig;

use crate::SettingsError;

/// How clients reach the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
#[strum(serialize_all = "kebab-case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// Named as librdkafka and the brokers name them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr,
)]
pub enum SaslMechanism {
    #[strum(serialize = "SCRAM-SHA-256")]
    ScramSha256,
    #[strum(serialize = "SCRAM-SHA-512")]
    ScramSha512,
    #[strum(serialize = "PLAIN")]
    Plain,
}

/// Named as librdkafka names them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::IntoStaticStr,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Compression {
    None,
    Lz4,
    Gzip,
    Snappy,
}

/// Kafka settings shared by every service. Each is a flag of `bimride` with an environment
/// fallback, described by `--help`; the defaults here are the flags' defaults.
#[derive(Clone)]
pub struct KafkaConfig {
    pub brokers: Option<String>,
    pub namespace: String,
    pub client_id: String,
    pub security_protocol: SecurityProtocol,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub linger_ms: u32,
    pub compression: Compression,
    pub partitions: i32,
    pub replication_factor: Option<i32>,
    pub properties: Vec<String>,
    /// How long a broker may hold a fetch waiting for data, for consumers only.
    pub fetch_wait_max_ms: Option<u32>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            namespace: bimride_events::DEFAULT_NAMESPACE.into(),
            client_id: "bimride".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            linger_ms: 5,
            compression: Compression::Lz4,
            partitions: 12,
            replication_factor: None,
            properties: Vec::new(),
            fetch_wait_max_ms: None,
        }
    }
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password and extra properties (which may hold secrets) stay out of logs.
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("namespace", &self.namespace)
            .field("client_id", &self.client_id)
            .field("security_protocol", &self.security_protocol)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("sasl_username", &self.sasl_username)
            .field(
                "sasl_password",
                &self.sasl_password.as_ref().map(|_| "<redacted>"),
            )
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    /// A plaintext configuration for `brokers`, defaults elsewhere; for tests and embedded mode.
    pub fn for_brokers(brokers: impl Into<String>) -> Self {
        Self {
            brokers: Some(brokers.into()),
            ..Self::default()
        }
    }

    /// Checks everything that can be checked before connecting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |problem: String| Err(SettingsError::new("kafka", problem));
        match &self.brokers {
            Some(b) if !b.trim().is_empty() => {}
            _ => {
                return invalid(
                    "no Kafka brokers configured: pass --brokers or set BIMRIDE_BROKERS".into(),
                );
            }
        }
        let sasl_given = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password.is_some();
        if self.security_protocol.uses_sasl() {
            if self.sasl_mechanism.is_none()
                || self.sasl_username.is_none()
                || self.sasl_password.is_none()
            {
                return invalid(format!(
                    "--security-protocol {} needs --sasl-mechanism, --sasl-username and --sasl-password",
                    self.security_protocol.as_str()
                ));
            }
        } else if sasl_given {
            return invalid(format!(
                "SASL settings were given but --security-protocol is {}",
                self.security_protocol.as_str()
            ));
        }
        for (flag, path) in [
            ("--ssl-ca-location", &self.ssl_ca_location),
            ("--ssl-certificate-location", &self.ssl_certificate_location),
            ("--ssl-key-location", &self.ssl_key_location),
        ] {
            if let Some(p) = path
                && !p.exists()
            {
                return invalid(format!(
                    "{flag} points at {}, which does not exist",
                    p.display()
                ));
            }
        }
        for p in &self.properties {
            if !p.contains('=') {
                return invalid(format!(
                    "--kafka-property {p:?} is not of the form key=value"
                ));
            }
        }
        let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.namespace.is_empty() || !self.namespace.chars().all(legal) {
            return invalid(format!(
                "--namespace {:?} must be non-empty ASCII letters, digits, '.', '_' or '-'",
                self.namespace
            ));
        }
        if self.partitions < 1 {
            return invalid(format!(
                "--partitions must be at least 1, got {}",
                self.partitions
            ));
        }
        if let Some(rf) = self.replication_factor
            && rf < 1
        {
            return invalid(format!("--replication-factor must be at least 1, got {rf}"));
        }
        Ok(())
    }

    /// The names of this deployment's topics.
    pub fn topics(&self) -> bimride_events::Topics {
        bimride_events::Topics::new(&self.namespace)
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.brokers.as_deref().unwrap_or_default()
    }

    /// Settings every client shares: where, who, and how securely.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap_servers())
            .set("client.id", &self.client_id)
            .set("security.protocol", self.security_protocol.as_str())
            .set("log_level", "4");
        if let Some(m) = self.sasl_mechanism {
            c.set("sasl.mechanism", <&str>::from(m));
        }
        if let Some(u) = &self.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &self.sasl_password {
            c.set("sasl.password", p);
        }
        for (key, path) in [
            ("ssl.ca.location", &self.ssl_ca_location),
            ("ssl.certificate.location", &self.ssl_certificate_location),
            ("ssl.key.location", &self.ssl_key_location),
        ] {
            if let Some(p) = path {
                c.set(key, p.display().to_string());
            }
        }
        for p in &self.properties {
            if let Some((k, v)) = p.split_once('=') {
                c.set(k.trim(), v.trim());
            }
        }
        c
    }

    /// Producer settings: durable, idempotent, batched, and partitioned as the Java client does.
    pub fn producer(&self) -> ClientConfig {
        let mut c = self.client();
        c.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", self.linger_ms.to_string())
            .set("compression.type", <&str>::from(self.compression))
            // murmur2 of the key bytes, as Java's default partitioner: every client agrees.
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "60000");
        c
    }

    /// Consumer settings: offsets are stored by the application after processing and
    /// committed in the background; only committed transactional data is read.
    pub fn consumer(&self, group: &str) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", "300000")
            .set("enable.partition.eof", "false");
        if let Some(ms) = self.fetch_wait_max_ms {
            c.set("fetch.wait.max.ms", ms.to_string());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(c: &KafkaConfig) -> String {
        c.validate().expect_err("invalid").to_string()
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = KafkaConfig::for_brokers("");
        assert!(problem(&c).contains("no Kafka brokers"));
        c.brokers = Some("localhost:9092".into());
        assert_eq!(c.validate(), Ok(()));
        c.security_protocol = SecurityProtocol::SaslSsl;
        assert!(problem(&c).contains("sasl_ssl needs"));
        c.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        c.sasl_username = Some("dispatch".into());
        c.sasl_password = Some("s3cret".into());
        assert_eq!(c.validate(), Ok(()));
        c.ssl_ca_location = Some("/no/such/ca.pem".into());
        assert!(problem(&c).contains("does not exist"));
        c.ssl_ca_location = None;
        c.properties = vec!["fetch.min.bytes".into()];
        assert!(problem(&c).contains("key=value"));
        c.properties.clear();
        c.namespace = "city/1".into();
        assert!(problem(&c).contains("--namespace"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let mut c = KafkaConfig::for_brokers("localhost:9092");
        c.sasl_password = Some("hunter2".into());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn scram_over_tls_reaches_librdkafka_which_accepts_it() {
        let mut c = KafkaConfig::for_brokers("kafka-1:9093");
        c.security_protocol = SecurityProtocol::SaslSsl;
        c.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        c.sasl_username = Some("bimride".into());
        c.sasl_password = Some("s3cret".into());
        assert_eq!(c.validate(), Ok(()));
        let p = c.producer();
        assert_eq!(p.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(p.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(p.get("sasl.username"), Some("bimride"));
        assert_eq!(p.get("sasl.password"), Some("s3cret"));
        // Creating a client checks the settings against this build of librdkafka (TLS and
        // SCRAM compiled in) without connecting anywhere.
        let created: Result<rdkafka::producer::BaseProducer, _> = p.create();
        assert!(created.is_ok(), "{:?}", created.err());
        assert!(
            !format!("{p:?}").contains("s3cret"),
            "librdkafka's config prints no password"
        );
    }

    #[test]
    fn every_consumer_reads_committed_data_only() {
        // Payments are written in transactions: a reader of money must never see an aborted
        // charge, and every reader here is built from this one place.
        let mut c = KafkaConfig::for_brokers("b:9092");
        assert_eq!(
            c.consumer("g").get("isolation.level"),
            Some("read_committed")
        );
        // Extra properties are for tuning, not for weakening what money readers see.
        c.properties = vec!["fetch.wait.max.ms=10".into()];
        assert_eq!(
            c.consumer("g").get("isolation.level"),
            Some("read_committed")
        );
    }

    #[test]
    fn producer_is_idempotent_and_java_partitioned() {
        let p = KafkaConfig::for_brokers("b:9092").producer();
        assert_eq!(p.get("acks"), Some("all"));
        assert_eq!(p.get("enable.idempotence"), Some("true"));
        assert_eq!(p.get("partitioner"), Some("murmur2_random"));
    }
}
