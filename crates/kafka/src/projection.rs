//! Read models: one consumer over every topic a model shows, each value handed to the
//! function registered for its type.
//!
//! ```ignore
//! Projection::new()
//!     .on(move |e: &RideEvent| book.apply_event(e))
//!     .on(move |c: &FareCharged| book.apply_charge(c))
//!     .run(&kafka, codec, Options::new(group, "api"), shutdown)
//!     .await?;
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use bimride_codec::{Codec, CodecError};
use bimride_events::{Millis, Topic, TopicValue};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::partitioned::{self, Inputs, Nothing, Options, PartitionedError, Processor, Rejected};

/// A decoded value bound to its function, ready to apply.
pub struct Applied {
    apply: Box<dyn FnOnce() + Send>,
    occurred_at: Millis,
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("occurred_at", &self.occurred_at)
            .finish_non_exhaustive()
    }
}

impl Inputs for Applied {
    /// A projection names its topics at run time, through [`Processor::topics`].
    fn topics() -> Vec<Topic> {
        Vec::new()
    }

    /// Never called: a projection decodes through the function registered for the topic.
    async fn decode(_: &Codec, topic: Topic, _: &[u8]) -> Result<Self, CodecError> {
        Err(CodecError::Mismatch {
            id: 0,
            topic,
            message: "no function registered for this topic".into(),
        })
    }

    fn occurred_at(&self) -> Option<Millis> {
        Some(self.occurred_at)
    }
}

type Decoding<'a> = Pin<Box<dyn Future<Output = Result<Applied, CodecError>> + Send + 'a>>;

trait Decoder: Send + Sync {
    fn decode<'a>(&'a self, codec: &'a Codec, bytes: &'a [u8]) -> Decoding<'a>;
}

struct On<T, F> {
    apply: Arc<F>,
    value: PhantomData<fn() -> T>,
}

impl<T: TopicValue, F: Fn(&T) + Send + Sync + 'static> Decoder for On<T, F> {
    fn decode<'a>(&'a self, codec: &'a Codec, bytes: &'a [u8]) -> Decoding<'a> {
        Box::pin(async move {
            let value: T = codec.decode(bytes).await?;
            let apply = Arc::clone(&self.apply);
            Ok(Applied {
                occurred_at: value.occurred_at(),
                apply: Box::new(move || apply(&value)),
            })
        })
    }
}

/// A read model's functions, by topic.
#[derive(Default)]
pub struct Projection {
    decoders: BTreeMap<Topic, Box<dyn Decoder>>,
}

impl std::fmt::Debug for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("topics", &self.decoders.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Projection {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `apply` to every value of `T`'s topic; one function per topic.
    pub fn on<T: TopicValue>(mut self, apply: impl Fn(&T) + Send + Sync + 'static) -> Self {
        let on = On {
            apply: Arc::new(apply),
            value: PhantomData,
        };
        self.decoders.insert(T::TOPIC, Box::new(on));
        self
    }

    /// Feeds the model until `shutdown`, at least once.
    pub async fn run(
        self,
        kafka: &KafkaConfig,
        codec: Arc<Codec>,
        options: Options,
        shutdown: CancellationToken,
    ) -> Result<(), PartitionedError> {
        partitioned::run(kafka, codec, self, options, shutdown)
            .await
            .map(drop)
    }
}

impl Processor for Projection {
    type Input = Applied;
    type Output = Nothing;

    fn topics(&self) -> Vec<Topic> {
        self.decoders.keys().copied().collect()
    }

    async fn decode(
        &self,
        codec: &Codec,
        topic: Topic,
        bytes: &[u8],
    ) -> Result<Applied, CodecError> {
        match self.decoders.get(&topic) {
            Some(d) => d.decode(codec, bytes).await,
            None => Applied::decode(codec, topic, bytes).await,
        }
    }

    async fn record(&mut self, _: i32, input: Applied) -> Result<Vec<Nothing>, Rejected> {
        (input.apply)();
        Ok(Vec::new())
    }
}
