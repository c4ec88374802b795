//! The embedded cluster: librdkafka's mock cluster, serving several brokers on loopback TCP.
//!
//! The mock cluster is not `Send`, so it lives on its own thread and is driven through a
//! channel; this handle can go anywhere.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

type Mock = MockCluster<'static, DefaultProducerContext>;
/// A call on the cluster, run on its thread.
type Command = Box<dyn FnOnce(&Mock) + Send>;

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("mock cluster: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the embedded cluster thread has stopped")]
    Stopped,
}

/// A running in-process cluster.
#[derive(Debug)]
pub struct EmbeddedCluster {
    bootstrap: String,
    brokers: i32,
    /// Closed on drop, which ends the thread.
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedCluster {
    /// Starts `brokers` brokers (ids 1..=brokers) on loopback ports.
    pub fn start(brokers: i32) -> Result<Self, EmbeddedError> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(command) = inbox.recv() {
                    command(&cluster);
                }
            })
            .map_err(|_| EmbeddedError::Stopped)?;
        let bootstrap = ready_rx.recv().map_err(|_| EmbeddedError::Stopped)??;
        tracing::info!(bootstrap = %bootstrap, brokers, "embedded kafka cluster started");
        Ok(Self {
            bootstrap,
            brokers,
            commands: Some(commands),
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    fn call(
        &self,
        f: impl FnOnce(&Mock) -> Result<(), KafkaError> + Send + 'static,
    ) -> Result<(), EmbeddedError> {
        let (reply, answer) = mpsc::channel();
        let command: Command = Box::new(move |cluster| {
            let _ = reply.send(f(cluster));
        });
        self.commands
            .as_ref()
            .and_then(|c| c.send(command).ok())
            .ok_or(EmbeddedError::Stopped)?;
        Ok(answer.recv().map_err(|_| EmbeddedError::Stopped)??)
    }

    /// Creates a topic; the mock cluster does not answer the Admin API's CreateTopics.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<(), EmbeddedError> {
        let name = name.to_owned();
        self.call(move |c| c.create_topic(&name, partitions, replication))
    }

    pub fn broker_down(&self, id: i32) -> Result<(), EmbeddedError> {
        self.call(move |c| c.broker_down(id))
    }

    pub fn broker_up(&self, id: i32) -> Result<(), EmbeddedError> {
        self.call(move |c| c.broker_up(id))
    }

    pub fn round_trip_time(&self, id: i32, delay: Duration) -> Result<(), EmbeddedError> {
        self.call(move |c| c.broker_round_trip_time(id, delay))
    }

    /// Moves a partition's leadership to `leader`, or leaves it leaderless with `None`.
    pub fn set_leader(
        &self,
        topic: &str,
        partition: i32,
        leader: Option<i32>,
    ) -> Result<(), EmbeddedError> {
        let topic = topic.to_owned();
        self.call(move |c| c.partition_leader(&topic, partition, leader))
    }

    /// Makes the next requests of kind `api` fail with `errors`, one each, in order.
    pub fn fail_requests(
        &self,
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
    ) -> Result<(), EmbeddedError> {
        self.call(move |c| {
            c.request_errors(api, &errors);
            Ok(())
        })
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
