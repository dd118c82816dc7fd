//! One trace per command, across the services: the real binaries export their spans
//! over OTLP/gRPC to a receiver in this test, which decodes them with the OTLP protobuf
//! types.
//!
//! A create and a pay, each sent with a `traceparent` of the test's own, must give:
//! - in the create's trace: command-service's `http request` (a child of the test's
//!   span) and its `append`, the relay's `outbox publish` (a child of the request), and
//!   the projector's `projection apply` linked (not parented) to the publish, and the
//!   stats aggregator's `streams commit` linked to the trace;
//! - in the pay's trace, the saga step: the processor's `consume` of `OrderPaid` (a child
//!   of the relay's publish), the publish of its `ShipOrder`, and command-service's
//!   `consume` of that command with the `append` of `OrderShipped`.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
    trace::v1::Span,
};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase, process::ServiceProcess};
use serde_json::json;

/// A span as received, with the service that exported it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OTLP trace receiver: keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.0.lock().expect("receiver lock");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(AnyValue::StringValue(name)) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                received
                    .extend(scope.spans.into_iter().map(|span| Received { service: service.clone(), span }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    /// Listens on a free port; returns the endpoint to export to.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Received> {
        self.0.lock().expect("receiver lock").clone()
    }

    /// Waits until `found` picks what it needs from the spans received so far.
    async fn wait_for<T>(&self, what: &str, found: impl Fn(&[Received]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let spans = self.spans();
            if let Some(result) = found(&spans) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} after 120 s; spans received:\n{}",
                describe(&spans)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn describe(spans: &[Received]) -> String {
    spans
        .iter()
        .map(|r| {
            format!(
                "  {} {:?} trace {} span {} parent {} links {:?}",
                r.service,
                r.span.name,
                r.trace_id(),
                r.span_id(),
                r.parent_id(),
                r.span
                    .links
                    .iter()
                    .map(|l| format!("{}/{}", hex(&l.trace_id), hex(&l.span_id)))
                    .collect::<Vec<_>>()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A service binary beside this test's (cargo builds them for the workspace's tests).
fn binary(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test's path");
    let path: PathBuf = exe.parent().and_then(|deps| deps.parent()).expect("the target directory").join(name);
    assert!(path.exists(), "{} is missing: build it with `cargo build --workspace --bins`", path.display());
    path.to_string_lossy().into_owned()
}

fn in_trace<'a>(spans: &'a [Received], trace: &str, service: &str, name: &str) -> Vec<&'a Received> {
    spans.iter().filter(|r| r.trace_id() == trace && r.service == service && r.span.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_is_one_trace_across_the_services() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let (write, read, own) =
        tokio::join!(TestDatabase::create(), TestDatabase::create(), TestDatabase::create());
    let mut kafka = TestKafka::new().await;
    let orders = kafka.topic("orders", 2).await;
    let commands = kafka.topic("order-commands", 2).await;
    let stats = kafka.topic("order-stats", 1).await;
    let dlq = kafka.topic("dlq", 1).await;
    let application_id = kafka.name("stats-aggregator");
    for suffix in stats_aggregator::INTERNAL_TOPICS {
        kafka.topic_named(&format!("{application_id}-{suffix}"), 2).await;
    }
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        [
            ("KAFKA_BOOTSTRAP_SERVERS", orders_testkit::kafka::bootstrap_servers().as_str()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Export every 100 ms rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("ORDERS_TOPIC", orders.as_str()),
            ("DEAD_LETTER_TOPIC", dlq.as_str()),
            ("SHUTDOWN_TIMEOUT", "10s"),
        ]
        .iter()
        .chain(pairs)
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
    };
    let group = |name: &str| kafka.name(name);
    let (command_group, projector_group, windows_group, processor_group) =
        (group("command-service"), group("projector"), group("projector-windows"), group("processor"));
    let mut services = vec![
        (
            "command-service",
            ServiceProcess::start(
                &binary("command-service"),
                "HTTP_ADDR",
                &env(&[
                    ("DATABASE_URL", write.url()),
                    ("ORDER_COMMANDS_TOPIC", commands.as_str()),
                    ("CONSUMER_GROUP", command_group.as_str()),
                ]),
            ),
        ),
        (
            "outbox-relay",
            ServiceProcess::start(
                &binary("outbox-relay"),
                "ADMIN_ADDR",
                &env(&[("DATABASE_URL", write.url())]),
            ),
        ),
        (
            "projector",
            ServiceProcess::start(
                &binary("projector"),
                "HTTP_ADDR",
                &env(&[
                    ("DATABASE_URL", read.url()),
                    ("ORDER_STATS_TOPIC", stats.as_str()),
                    ("CONSUMER_GROUP", projector_group.as_str()),
                    ("WINDOWS_CONSUMER_GROUP", windows_group.as_str()),
                ]),
            ),
        ),
        (
            "order-processor",
            ServiceProcess::start(
                &binary("order-processor"),
                "ADMIN_ADDR",
                &env(&[
                    ("DATABASE_URL", own.url()),
                    ("ORDER_COMMANDS_TOPIC", commands.as_str()),
                    ("CONSUMER_GROUP", processor_group.as_str()),
                ]),
            ),
        ),
        (
            "stats-aggregator",
            ServiceProcess::start(
                &binary("stats-aggregator"),
                "ADMIN_ADDR",
                &env(&[("ORDER_STATS_TOPIC", stats.as_str()), ("APPLICATION_ID", application_id.as_str())]),
            ),
        ),
    ];
    for (_, service) in &mut services {
        service.wait_for("/readyz", 200, Duration::from_secs(180)).await;
    }
    let url = |service: &str, path: &str| {
        let (_, process) = services.iter().find(|(name, _)| *name == service).expect("a started service");
        format!("http://{}{path}", process.addr())
    };
    let http = reqwest::Client::new();

    // A tracked SKU, so that the saga ships the order once paid.
    let stocked =
        http.put(url("order-processor", "/inventory/book-1")).json(&json!({"available": 10})).send().await;
    assert_eq!(stocked.map(|r| r.status().as_u16()).ok(), Some(200));

    let create_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let created = http
        .post(url("command-service", "/commands/orders"))
        .header("traceparent", format!("00-{create_trace}-00f067aa0ba902b7-01"))
        .json(&json!({"user_id": "ann", "currency": "EUR", "items": [{"sku": "book-1", "quantity": 2, "unit_price_minor": 500}]}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status().as_u16(), 201);
    let order: serde_json::Value = created.json().await.expect("a JSON answer");
    let order_id = order["order_id"].as_str().expect("order_id").to_string();

    // The create's trace: handler, append, publish, and the projector's batch linked to it.
    let (request, publish) = receiver
        .wait_for("create trace through the relay", |spans| {
            let request =
                in_trace(spans, create_trace, "command-service", "http request").into_iter().next()?.clone();
            let publish =
                in_trace(spans, create_trace, "outbox-relay", "outbox publish").into_iter().next()?.clone();
            Some((request, publish))
        })
        .await;
    assert_eq!(request.parent_id(), "00f067aa0ba902b7", "the request continues the caller's span");
    assert_eq!(request.span.kind, 2, "a server span");
    let spans = receiver.spans();
    let append = in_trace(&spans, create_trace, "command-service", "append");
    assert!(!append.is_empty(), "the append is in the trace:\n{}", describe(&spans));
    assert_eq!(
        publish.parent_id(),
        request.span_id(),
        "the publish continues the request (the outbox row's context)"
    );
    assert_eq!(publish.span.kind, 4, "a producer span");
    let apply = receiver
        .wait_for("projector batch linked to the publish", |spans| {
            spans
                .iter()
                .find(|r| {
                    r.service == "projector"
                        && r.span.name == "projection apply"
                        && r.span
                            .links
                            .iter()
                            .any(|l| hex(&l.trace_id) == create_trace && hex(&l.span_id) == publish.span_id())
                })
                .cloned()
        })
        .await;
    assert_ne!(
        apply.trace_id(),
        create_trace,
        "a batch is linked to its records' traces, not a child of one"
    );
    receiver
        .wait_for("aggregator commit linked to the create's trace", |spans| {
            spans
                .iter()
                .find(|r| {
                    r.service == "stats-aggregator"
                        && r.span.name == "streams commit"
                        && r.span.links.iter().any(|l| hex(&l.trace_id) == create_trace)
                })
                .cloned()
        })
        .await;

    // The pay's trace: the saga step through the processor and back to command-service.
    let pay_trace = "5bf92f3577b34da6a3ce929d0e0e4737";
    let paid = http
        .post(url("command-service", &format!("/commands/orders/{order_id}/pay")))
        .header("traceparent", format!("00-{pay_trace}-00f067aa0ba902b8-01"))
        .json(&json!({"payment_id": "pay-1", "amount_minor": 1000}))
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status().as_u16(), 200);
    let (processed, command_consumed) = receiver
        .wait_for("saga step in the pay's trace", |spans| {
            let processed =
                in_trace(spans, pay_trace, "order-processor", "consume").into_iter().next()?.clone();
            let consumed =
                in_trace(spans, pay_trace, "command-service", "consume").into_iter().next()?.clone();
            // Their parents too: each service exports its spans in batches of its own, so a
            // child can arrive before its parent (seen in a fresh-clone CI run).
            let received = |id: String| spans.iter().any(|s| s.span_id() == id);
            (received(processed.parent_id()) && received(consumed.parent_id()))
                .then_some((processed, consumed))
        })
        .await;
    let spans = receiver.spans();
    let by_id: HashMap<String, &Received> = spans.iter().map(|r| (r.span_id(), r)).collect();
    let parent_of =
        |r: &Received| by_id.get(&r.parent_id()).map(|p| (p.service.clone(), p.span.name.clone()));
    assert_eq!(
        parent_of(&processed),
        Some(("outbox-relay".to_string(), "outbox publish".to_string())),
        "the processor's handling continues the relay's publish of OrderPaid:\n{}",
        describe(&spans)
    );
    assert_eq!(
        parent_of(&command_consumed),
        Some(("order-processor".to_string(), "outbox publish".to_string())),
        "command-service's handling of ShipOrder continues the processor's publish of it:\n{}",
        describe(&spans)
    );
    let shipped = receiver
        .wait_for("append of OrderShipped in the pay's trace", |spans| {
            let appends = in_trace(spans, pay_trace, "command-service", "append");
            (appends.len() >= 2).then_some(appends.len())
        })
        .await;
    assert!(shipped >= 2, "the pay's append and the ship's");

    for (_, service) in services {
        drop(service);
    }
}
