//! Read models: one consumer over every topic a model shows, each value handed, with the
//! model, to the function registered for its type.
//!
//! ```ignore
//! // The API's surge book (`bimride_api::SurgeFeed`).
//! Projection::new(book)
//!     .on(|book, u: &SurgeUpdated| book.apply(u))
//!     .run(&cx.kafka, cx.codec, options, cx.shutdown)
//!     .await
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
use crate::partitioned::{
    self, At, Inputs, Nothing, Options, PartitionedError, Processor, Rejected,
};

/// A decoded value bound to its function, ready to apply to the model.
pub struct Applied<M> {
    apply: Box<dyn FnOnce(&M) + Send>,
    occurred_at: Millis,
}

impl<M> std::fmt::Debug for Applied<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("occurred_at", &self.occurred_at)
            .finish_non_exhaustive()
    }
}

impl<M: 'static> Inputs for Applied<M> {
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

type Decoding<'a, M> = Pin<Box<dyn Future<Output = Result<Applied<M>, CodecError>> + Send + 'a>>;

trait Decoder<M>: Send + Sync {
    fn decode<'a>(&'a self, codec: &'a Codec, bytes: &'a [u8]) -> Decoding<'a, M>;
}

struct On<T, F> {
    apply: Arc<F>,
    value: PhantomData<fn() -> T>,
}

impl<M, T, F> Decoder<M> for On<T, F>
where
    T: TopicValue,
    F: Fn(&M, &T) + Send + Sync + 'static,
{
    fn decode<'a>(&'a self, codec: &'a Codec, bytes: &'a [u8]) -> Decoding<'a, M> {
        Box::pin(async move {
            let value: T = codec.decode(bytes).await?;
            let apply = Arc::clone(&self.apply);
            Ok(Applied {
                occurred_at: value.occurred_at(),
                apply: Box::new(move |model| apply(model, &value)),
            })
        })
    }
}

/// A read model and its functions, by topic.
pub struct Projection<M> {
    model: M,
    decoders: BTreeMap<Topic, Box<dyn Decoder<M>>>,
}

impl<M> std::fmt::Debug for Projection<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projection")
            .field("topics", &self.decoders.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<M: Send + Sync + 'static> Projection<M> {
    pub fn new(model: M) -> Self {
        Self {
            model,
            decoders: BTreeMap::new(),
        }
    }

    /// Applies `apply` to the model and every value of `T`'s topic; one function per topic.
    pub fn on<T: TopicValue>(mut self, apply: impl Fn(&M, &T) + Send + Sync + 'static) -> Self {
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

impl<M: Send + Sync + 'static> Processor for Projection<M> {
    type Input = Applied<M>;
    type Output = Nothing;

    fn topics(&self) -> Vec<Topic> {
        self.decoders.keys().copied().collect()
    }

    async fn decode(
        &self,
        codec: &Codec,
        topic: Topic,
        bytes: &[u8],
    ) -> Result<Applied<M>, CodecError> {
        match self.decoders.get(&topic) {
            Some(d) => d.decode(codec, bytes).await,
            None => Applied::decode(codec, topic, bytes).await,
        }
    }

    async fn record(&mut self, _: At, input: Applied<M>) -> Result<Vec<Nothing>, Rejected> {
        (input.apply)(&self.model);
        Ok(Vec::new())
    }
}
