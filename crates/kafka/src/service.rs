//! Services as values: each is its settings, checked before anything connects, and run with
//! one shared [`Context`]. `bimride up` runs a list of them, a standalone binary runs one,
//! and tests start any of them the same way.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use bimride_codec::Codec;
use bimride_domain::City;
use futures::future::BoxFuture;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::KafkaConfig;

/// What every service is given: the cluster, the codec, the city, and the one token that stops
/// everything.
#[derive(Debug, Clone)]
pub struct Context {
    pub kafka: KafkaConfig,
    pub codec: Arc<Codec>,
    pub city: City,
    pub shutdown: CancellationToken,
}

/// Whatever stopped a service; its chain of sources is the service's own error.
pub type ServiceError = Box<dyn std::error::Error + Send + Sync>;

/// A service is its settings: it checks them, then runs until the context's token is
/// cancelled or it fails.
pub trait Service: Send + Sized + 'static {
    /// Names the service in logs, metrics and errors.
    const NAME: &'static str;
    type Error: std::error::Error + Send + Sync + 'static;

    /// Checks everything that can be checked before connecting; the problem, if any.
    fn check(&self) -> Result<(), &'static str> {
        Ok(())
    }

    fn run(self, cx: Context) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Any [`Service`], so that services of different kinds make one list.
pub trait AnyService: Send {
    fn name(&self) -> &'static str;
    fn validate(&self) -> Result<(), SettingsError>;
    fn start(self: Box<Self>, cx: Context) -> BoxFuture<'static, Result<(), ServiceError>>;
}

impl<S: Service> AnyService for S {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.check()
            .map_err(|problem| SettingsError::new(S::NAME, problem))
    }

    fn start(self: Box<Self>, cx: Context) -> BoxFuture<'static, Result<(), ServiceError>> {
        Box::pin(async move { Ok((*self).run(cx).await?) })
    }
}

/// A setting that cannot work, found before anything started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {scope} settings: {problem}")]
pub struct SettingsError {
    pub scope: &'static str,
    pub problem: Cow<'static, str>,
}

impl SettingsError {
    pub fn new(scope: &'static str, problem: impl Into<Cow<'static, str>>) -> Self {
        Self {
            scope,
            problem: problem.into(),
        }
    }
}

/// A service that stopped with an error, named.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {source}")]
pub struct Failed {
    pub service: &'static str,
    pub source: ServiceError,
}

/// Checks `service`'s settings, then runs it.
pub async fn run(service: Box<dyn AnyService>, cx: Context) -> Result<(), Failed> {
    let name = service.name();
    let failed = |source: ServiceError| Failed {
        service: name,
        source,
    };
    service.validate().map_err(|e| failed(e.into()))?;
    service.start(cx).await.map_err(failed)
}

/// Starts `service` on its own task. If it fails, the context's token is cancelled: nothing
/// carries on with a part of the pipeline missing.
pub fn spawn(service: Box<dyn AnyService>, cx: Context) -> JoinHandle<Result<(), Failed>> {
    let shutdown = cx.shutdown.clone();
    tokio::spawn(async move {
        let result = run(service, cx).await;
        if let Err(e) = &result {
            tracing::error!(service = e.service, error = %e, "service failed; stopping");
            shutdown.cancel();
        }
        result
    })
}
