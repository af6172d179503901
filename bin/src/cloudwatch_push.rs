//! The CloudWatch pusher: a thread of its own with a single-threaded tokio
//! runtime for the AWS SDK. It reads the cores' atomics through
//! [`Snapshot::read`] and nothing else, so a slow or failing push never
//! blocks a core; failures are logged and retried with backoff.
//!
//! Credentials and region come from the standard AWS chain (environment,
//! profile, web identity, ECS, IMDS). TLS is rustls with ring, the only
//! TLS stack in the binary.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cloudwatch::{Datum, Unit, Value, metric_data, retry_delay};
use crate::node::Node;
use crate::snapshot::Snapshot;

/// The pusher's settings.
#[derive(Debug, Clone)]
pub struct PushConfig {
    pub namespace: String,
    pub interval: Duration,
    /// Another endpoint than AWS's (a test double, a VPC endpoint).
    pub endpoint: Option<String>,
}

/// The running pusher; [`Pusher::stop`] makes a last push and joins it.
#[derive(Debug)]
pub struct Pusher {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Pusher {
    /// Starts the pusher thread.
    pub fn start(node: Arc<Node>, config: PushConfig) -> std::io::Result<Pusher> {
        let (stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("ringhub-cloudwatch".into())
            .spawn(move || runtime.block_on(run(node, config, stopped)))?;
        Ok(Pusher { stop, thread })
    }

    /// Pushes what is left and waits for the thread (bounded by the SDK's
    /// own timeouts).
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
    }
}

async fn run(node: Arc<Node>, config: PushConfig, mut stopped: watch::Receiver<bool>) {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(endpoint) = &config.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let client = Client::new(&loader.load().await);
    info!(
        namespace = %config.namespace,
        interval_secs = config.interval.as_secs(),
        "pushing metrics to CloudWatch"
    );
    let server_id = node.settings.server_id.clone();
    // Counted from the start of the process: the first push carries what
    // happened while the SDK was loading.
    let mut last = Snapshot::default();
    let mut failures = 0u32;
    loop {
        let wait = match failures {
            0 => config.interval,
            n => retry_delay(n, config.interval),
        };
        let stopping = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = stopped.changed() => true,
        };
        let now = Snapshot::read(&node);
        let data = metric_data(&last, &now);
        match push(&client, &config.namespace, &server_id, &data).await {
            Ok(()) => {
                debug!(metrics = data.len(), "pushed to CloudWatch");
                last = now;
                failures = 0;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let retry = retry_delay(failures, config.interval);
                warn!(
                    "CloudWatch push failed ({e}); retrying in {}s, nothing is lost",
                    retry.as_secs()
                );
            }
        }
        if stopping {
            return;
        }
    }
}

async fn push(
    client: &Client,
    namespace: &str,
    server_id: &str,
    data: &[Datum],
) -> Result<(), String> {
    let dimension = Dimension::builder()
        .name("ServerId")
        .value(server_id)
        .build();
    let timestamp = DateTime::from(SystemTime::now());
    let data = data
        .iter()
        .map(|d| {
            let datum = MetricDatum::builder()
                .metric_name(d.name)
                .dimensions(dimension.clone())
                .timestamp(timestamp)
                .unit(match d.unit {
                    Unit::Count => StandardUnit::Count,
                    Unit::Milliseconds => StandardUnit::Milliseconds,
                });
            match &d.value {
                Value::Single(v) => datum.value(*v),
                Value::Distribution { values, counts } => datum
                    .set_values(Some(values.clone()))
                    .set_counts(Some(counts.clone())),
            }
            .build()
        })
        .collect();
    client
        .put_metric_data()
        .namespace(namespace)
        .set_metric_data(Some(data))
        .send()
        .await
        .map(drop)
        .map_err(|e| aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string())
}
