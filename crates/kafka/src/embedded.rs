//! The embedded cluster: librdkafka's mock cluster, serving several brokers on loopback TCP.
//!
//! The mock cluster is not `Send`, so it lives on its own thread and is driven through a
//! channel; this handle can go anywhere.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

type Reply = mpsc::Sender<Result<(), KafkaError>>;

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        replication: i32,
        reply: Reply,
    },
    BrokerDown(i32, Reply),
    BrokerUp(i32, Reply),
    RoundTripTime(i32, Duration, Reply),
    PartitionLeader(String, i32, Option<i32>, Reply),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, Reply),
    Stop,
}

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
    commands: mpsc::Sender<Command>,
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
                    match command {
                        Command::CreateTopic {
                            name,
                            partitions,
                            replication,
                            reply,
                        } => {
                            let _ =
                                reply.send(cluster.create_topic(&name, partitions, replication));
                        }
                        Command::BrokerDown(id, reply) => {
                            let _ = reply.send(cluster.broker_down(id));
                        }
                        Command::BrokerUp(id, reply) => {
                            let _ = reply.send(cluster.broker_up(id));
                        }
                        Command::RoundTripTime(id, delay, reply) => {
                            let _ = reply.send(cluster.broker_round_trip_time(id, delay));
                        }
                        Command::PartitionLeader(topic, partition, leader, reply) => {
                            let _ = reply.send(cluster.partition_leader(&topic, partition, leader));
                        }
                        Command::RequestErrors(api, errors, reply) => {
                            cluster.request_errors(api, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|_| EmbeddedError::Stopped)?;
        let bootstrap = ready_rx.recv().map_err(|_| EmbeddedError::Stopped)??;
        tracing::info!(bootstrap = %bootstrap, brokers, "embedded kafka cluster started");
        Ok(Self {
            bootstrap,
            brokers,
            commands,
            thread: Some(thread),
        })
    }

    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    fn call(&self, make: impl FnOnce(Reply) -> Command) -> Result<(), EmbeddedError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| EmbeddedError::Stopped)?;
        Ok(rx.recv().map_err(|_| EmbeddedError::Stopped)??)
    }

    /// Creates a topic; the mock cluster does not answer the Admin API's CreateTopics.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<(), EmbeddedError> {
        self.call(|reply| Command::CreateTopic {
            name: name.to_owned(),
            partitions,
            replication,
            reply,
        })
    }

    pub fn broker_down(&self, id: i32) -> Result<(), EmbeddedError> {
        self.call(|reply| Command::BrokerDown(id, reply))
    }

    pub fn broker_up(&self, id: i32) -> Result<(), EmbeddedError> {
        self.call(|reply| Command::BrokerUp(id, reply))
    }

    pub fn round_trip_time(&self, id: i32, delay: Duration) -> Result<(), EmbeddedError> {
        self.call(|reply| Command::RoundTripTime(id, delay, reply))
    }

    /// Moves a partition's leadership to `leader`, or leaves it leaderless with `None`.
    pub fn set_leader(
        &self,
        topic: &str,
        partition: i32,
        leader: Option<i32>,
    ) -> Result<(), EmbeddedError> {
        self.call(|reply| Command::PartitionLeader(topic.to_owned(), partition, leader, reply))
    }
}

impl EmbeddedCluster {
    /// Makes the next requests of kind `api` fail with `errors`, one each, in order.
    pub fn fail_requests(
        &self,
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
    ) -> Result<(), EmbeddedError> {
        self.call(|reply| Command::RequestErrors(api, errors, reply))
    }
}

impl Drop for EmbeddedCluster {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
