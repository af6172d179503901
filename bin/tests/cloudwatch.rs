//! The CloudWatch push against a real CloudWatch-compatible endpoint:
//! moto's server mode behind the rpc-v2-cbor translator (see
//! `testkit/cloudwatch_cbor_proxy.py`). The server pushes every second;
//! the test reads the values back from moto with GetMetricStatistics.
#![cfg(feature = "cloudwatch")]

mod common;

use std::time::{Duration, Instant};

use common::{Client, Ringhub};
use ringhub_testkit::{MOTO_CREDENTIALS, MotoCloudWatch};
use serde_json::json;

const NAMESPACE: &str = "RinghubTest";

fn joined(server: &Ringhub, query: &str) -> Client {
    let mut c = server.connect(query, &[]);
    assert_eq!(c.recv()["type"], "welcome");
    c
}

/// Every `<tag>` value of every datapoint moto holds for `metric`.
fn statistic(moto: &MotoCloudWatch, metric: &str, stat: &str) -> Vec<f64> {
    let form = format!(
        "Action=GetMetricStatistics&Version=2010-08-01&Namespace={NAMESPACE}\
         &MetricName={metric}&Dimensions.member.1.Name=ServerId\
         &Dimensions.member.1.Value=cw-1&StartTime=2020-01-01T00%3A00%3A00Z\
         &EndTime=2100-01-01T00%3A00%3A00Z&Period=3600&Statistics.member.1={stat}"
    );
    let xml = moto.query(&form);
    let (open, close) = (format!("<{stat}>"), format!("</{stat}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split(&close).next()?.parse().ok())
        .collect()
}

/// Waits (bounded) until the datapoints of `metric` add up to `want`.
fn wait_for_sum(moto: &MotoCloudWatch, metric: &str, stat: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let values = statistic(moto, metric, stat);
        if values.iter().sum::<f64>() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} {stat}: {values:?}, want a total of {want}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn pushed_metrics_read_back_from_a_cloudwatch_endpoint() {
    let moto = MotoCloudWatch::start();
    let endpoint = moto.endpoint();
    let mut env = MOTO_CREDENTIALS.to_vec();
    env.push(("AWS_EC2_METADATA_DISABLED", "true"));
    let server = Ringhub::start_with_env(
        &[
            "--server-id",
            "cw-1",
            "--cloudwatch",
            "true",
            "--cloudwatch-interval-secs",
            "1",
            "--cloudwatch-namespace",
            NAMESPACE,
            "--cloudwatch-endpoint",
            &endpoint,
        ],
        &env,
    );
    let mut bob = joined(&server, "user=bob");
    let mut alice = joined(&server, "user=alice");
    for i in 0..5 {
        alice.send(json!({"type": "send", "to": "bob", "data": i}));
    }
    for ms in [2.0, 3.0, 40.0] {
        alice.send(json!({"type": "latency", "ms": ms}));
    }
    alice.sync();
    for _ in 0..5 {
        bob.recv_type("message");
    }

    // 5 sends, 3 latency reports and the ping of sync().
    wait_for_sum(&moto, "MessagesTotal", "Sum", 9.0);
    wait_for_sum(&moto, "MessagesDelivered", "Sum", 5.0);
    wait_for_sum(&moto, "UnexpectedDisconnects", "Sum", 0.0);
    wait_for_sum(&moto, "LatencyMs", "SampleCount", 3.0);
    let active = statistic(&moto, "ActiveConnections", "Maximum");
    assert!(active.contains(&2.0), "{active:?}");
    // The exact mean of the reports, (2+3+40)/3 ms, unless a push fell
    // between them.
    let average = statistic(&moto, "AverageLatencyMs", "Maximum");
    match average[..] {
        [one] => assert!((one - 15.0).abs() < 1e-9, "{average:?}"),
        _ => assert!(
            average.iter().all(|a| (2.0..=40.0).contains(a)),
            "{average:?}"
        ),
    }
    let delivery = statistic(&moto, "DeliveryLatencyMs", "SampleCount");
    assert_eq!(delivery.iter().sum::<f64>(), 5.0, "one per routed send");

    // An unexpected disconnect shows up in a later push.
    drop(bob);
    wait_for_sum(&moto, "UnexpectedDisconnects", "Sum", 1.0);
    assert!(
        !server.log().contains("CloudWatch push failed"),
        "{}",
        server.log()
    );
}

#[test]
fn an_unreachable_endpoint_is_retried_without_hurting_the_server() {
    let mut env = MOTO_CREDENTIALS.to_vec();
    env.push(("AWS_EC2_METADATA_DISABLED", "true"));
    let server = Ringhub::start_with_env(
        &[
            "--cloudwatch",
            "true",
            "--cloudwatch-interval-secs",
            "1",
            // Nothing listens on port 9 of the loopback.
            "--cloudwatch-endpoint",
            "http://127.0.0.1:9",
        ],
        &env,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.log().contains("CloudWatch push failed") {
        assert!(
            Instant::now() < deadline,
            "no failure logged:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The cores are untouched: clients still talk.
    let mut a = joined(&server, "user=a");
    a.send(json!({"type": "send", "to": "a", "data": 1}));
    assert_eq!(a.recv_type("message")["data"], 1);
}
