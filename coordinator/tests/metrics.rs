//! `/metrics`, the health port and reflection v1alpha on a real service on 127.0.0.1:0: the
//! token rule of the metrics listener (401 without the right token), its TLS, what it counts
//! as simulated workers register, heartbeat, report and vanish; `--health-listen`'s plaintext
//! `grpc.health.v1` beside a TLS main port; `grpc.reflection.v1alpha` with the token.

use crate::common::{hp, Sandbox};
use crate::security::pki;
use coordinator::metrics::http as metrics_http;
use coordinator::security::{ServerSecurity, Token};
use coordinator::service;
use proto::pb;
use proto::pb::coordinator_client::CoordinatorClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const TOKEN: &str = "metrics-token-0123456789abcdef";

/// A status code, the headers (lowercase, as one string) and the body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

/// One HTTP/1.1 request over `io`; the server closes the connection after its answer.
/// Hand-written (a few lines) rather than a client crate: the tests need a raw request,
/// headers and all, over plain TCP and over TLS alike.
async fn request(
    mut io: impl AsyncRead + AsyncWrite + Unpin,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<Answer> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    io.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: coordinator\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    // A TLS peer that closes without close_notify ends in UnexpectedEof after the data.
    if let Err(e) = io.read_to_end(&mut raw).await {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(e);
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok(Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    request(tcp, "GET", path, token).await.unwrap()
}

/// A GET over TLS, trusting `ca_pem`, with a client certificate when given one.
async fn get_tls(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<(&str, &str)>,
    token: Option<&str>,
) -> std::io::Result<Answer> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    request(tls, "GET", "/metrics", token).await
}

/// `/metrics` of `server`'s sweep on a port of its own, with `security`.
async fn serve_metrics(
    server: &Sandbox,
    security: &ServerSecurity,
) -> (SocketAddr, metrics_http::Running) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = metrics_http::spawn(listener, server.state.metrics().clone(), security);
    (addr, running)
}

fn token() -> Token {
    Token::new(TOKEN.as_bytes()).unwrap()
}

/// The value of the sample `series` (its name and labels, exactly as served).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

#[tokio::test]
async fn metrics_need_the_token_when_there_is_one() {
    let security = ServerSecurity::default().with_token(token());
    let server = Sandbox::secured("metrics", &[hp(1, 1)], |_| {}, security.clone()).await;
    let (addr, metrics) = serve_metrics(&server, &security).await;

    for bad in [None, Some("metrics-token-0123456789abcdeX"), Some("short")] {
        let a = get(addr, "/metrics", bad).await;
        assert_eq!(a.status, 401, "{bad:?}: {}", a.body);
        assert!(
            a.headers.contains("www-authenticate: bearer"),
            "{}",
            a.headers
        );
        assert_eq!(a.body, "missing or invalid token\n");
        // Nothing of the sweep, nor of the metrics, in a refusal.
        assert!(!a.body.contains("hypersweep"), "{}", a.body);
    }
    // Any path: the token is checked first.
    assert_eq!(get(addr, "/", None).await.status, 401);

    let a = get(addr, "/metrics", Some(TOKEN)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.headers
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        a.headers
    );
    assert_eq!(
        sample(&a.body, "hypersweep_trials{state=\"queued\"}"),
        Some(1.0)
    );
    assert!(
        !a.body.contains("metrics\""),
        "no sweep name in the metrics"
    );

    assert_eq!(get(addr, "/other", Some(TOKEN)).await.status, 404);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let post = request(tcp, "POST", "/metrics", Some(TOKEN)).await.unwrap();
    assert_eq!(post.status, 405);
    assert!(
        post.headers.contains("allow: get, head"),
        "{}",
        post.headers
    );
    metrics.stop().await;
    server.stop().await;

    // Without a token (a loopback coordinator), no header is needed.
    let server = Sandbox::start(&[hp(1, 1)], |_| {}).await;
    let (addr, metrics) = serve_metrics(&server, &ServerSecurity::default()).await;
    assert_eq!(get(addr, "/metrics", None).await.status, 200);
    metrics.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn metrics_speak_tls_with_the_grpc_certificate_and_client_rule() {
    let p = pki();
    let security = ServerSecurity::default()
        .with_token(token())
        .with_tls(p.server_cert.as_bytes(), p.server_key.as_bytes(), None)
        .unwrap();
    let server = Sandbox::secured("metrics", &[hp(1, 1)], |_| {}, security.clone()).await;
    let (addr, metrics) = serve_metrics(&server, &security).await;
    let a = get_tls(addr, &p.ca_pem, None, Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.body.contains("hypersweep_trials{state=\"queued\"} 1"),
        "{}",
        a.body
    );
    let a = get_tls(addr, &p.ca_pem, None, None).await.unwrap();
    assert_eq!(a.status, 401);
    // Plain HTTP against the TLS listener gets no answer; a client that does not trust the
    // certificate fails its handshake.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(request(tcp, "GET", "/metrics", Some(TOKEN)).await.is_err());
    assert!(get_tls(addr, &p.other_ca_pem, None, Some(TOKEN))
        .await
        .is_err());
    metrics.stop().await;
    server.stop().await;

    // --tls-client-ca: no certificate or a foreign one is refused, the CA's is served.
    let security = ServerSecurity::default()
        .with_token(token())
        .with_tls(
            p.server_cert.as_bytes(),
            p.server_key.as_bytes(),
            Some(p.ca_pem.as_bytes()),
        )
        .unwrap();
    let server = Sandbox::secured("metrics", &[hp(1, 1)], |_| {}, security.clone()).await;
    let (addr, metrics) = serve_metrics(&server, &security).await;
    assert!(get_tls(addr, &p.ca_pem, None, Some(TOKEN)).await.is_err());
    let foreign = Some((p.other_client_cert.as_str(), p.other_client_key.as_str()));
    assert!(get_tls(addr, &p.ca_pem, foreign, Some(TOKEN))
        .await
        .is_err());
    let own = Some((p.client_cert.as_str(), p.client_key.as_str()));
    let a = get_tls(addr, &p.ca_pem, own, Some(TOKEN)).await.unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    metrics.stop().await;
    server.stop().await;
}

fn ta(trial: &str, attempt: u32) -> Option<pb::TrialAttempt> {
    Some(pb::TrialAttempt {
        trial_id: trial.into(),
        attempt,
    })
}

fn epoch(epoch: u32) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        train_loss: 0.5,
        train_acc: 0.8,
        val_loss: 0.45,
        val_acc: 0.8,
        test_loss: 0.5,
        test_acc: 0.79,
        seconds: 0.1,
    }
}

async fn scrape(addr: SocketAddr) -> String {
    let a = get(addr, "/metrics", None).await;
    assert_eq!(a.status, 200);
    a.body
}

#[tokio::test]
async fn metrics_count_what_workers_do_and_forget_a_lost_worker() {
    // Lease timeout 2 s: a silent worker is lost within about 2.5 s.
    let server = Sandbox::start(&[hp(2, 1), hp(1, 2)], |c| {
        c.lease_timeout = Duration::from_secs(2);
    })
    .await;
    let (addr, metrics) = serve_metrics(&server, &ServerSecurity::default()).await;
    let mut c = server.client().await;
    // A worker that says its build, and one that says nothing (protocol 1).
    let register = |version: &str| pb::RegisterRequest {
        name: "w".into(),
        device: "cpu".into(),
        slots: 1,
        threads: 1,
        version: version.into(),
        build_variant: if version.is_empty() { "" } else { "cpu" }.into(),
        libtorch_version: if version.is_empty() { "" } else { "2.11.0" }.into(),
        ..Default::default()
    };
    let w1 = c
        .register(register("0.0.0"))
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let w2 = c
        .register(register(""))
        .await
        .unwrap()
        .into_inner()
        .worker_id;
    let text = scrape(addr).await;
    assert_eq!(
        sample(
            &text,
            "hypersweep_workers_connected{device=\"cpu\",build=\"0.0.0 (cpu build, libtorch 2.11.0, CUDA none)\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "hypersweep_workers_connected{device=\"cpu\",build=\"unknown\"}"
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("hypersweep_worker_samples_per_second{"),
        "{text}"
    );

    // w1 trains the 2-epoch trial and reports its throughput.
    let lease = c
        .lease(pb::LeaseRequest {
            worker_id: w1.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::lease_response::Outcome::Lease(l)) = lease.outcome else {
        panic!("{lease:?}")
    };
    let beat = |sps: f64| pb::HeartbeatRequest {
        worker_id: w1.clone(),
        running: vec![ta(&l.trial_id, 1).unwrap()],
        samples_per_second: sps,
        gpu_memory_bytes: 0,
    };
    c.heartbeat(beat(1234.5)).await.unwrap();
    let st = c.heartbeat(beat(f64::NAN)).await.unwrap_err();
    assert_eq!(st.code(), Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("samples_per_second"), "{st:?}");
    assert_eq!(
        c.heartbeat(beat(-1.0)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    for e in 1..=2 {
        c.report_epoch(pb::ReportEpochRequest {
            worker_id: w1.clone(),
            trial: ta(&l.trial_id, 1),
            metrics: Some(epoch(e)),
            checkpoint: vec![1, 2, 3],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    // A repeated report is answered (and timed) but not recorded twice.
    let again = c
        .report_epoch(pb::ReportEpochRequest {
            worker_id: w1.clone(),
            trial: ta(&l.trial_id, 1),
            metrics: Some(epoch(2)),
            checkpoint: vec![],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    c.upload_artifact(tokio_stream::iter(vec![pb::ArtifactChunk {
        worker_id: w1.clone(),
        trial: ta(&l.trial_id, 1),
        name: "config.json".into(),
        data: b"{}\n".to_vec(),
    }]))
    .await
    .unwrap();
    c.finish(pb::FinishRequest {
        worker_id: w1.clone(),
        trial: ta(&l.trial_id, 1),
    })
    .await
    .unwrap();
    let text = scrape(addr).await;
    for (series, value) in [
        ("hypersweep_trials{state=\"finished\"}", 1.0),
        ("hypersweep_trials{state=\"queued\"}", 1.0),
        ("hypersweep_trials{state=\"running\"}", 0.0),
        ("hypersweep_epochs_recorded_total", 2.0),
        ("hypersweep_leases_granted_total", 1.0),
        ("hypersweep_report_latency_seconds_count", 3.0),
        ("hypersweep_artifact_bytes_received_total", 3.0),
        (
            &format!("hypersweep_worker_samples_per_second{{worker=\"{w1}\"}}"),
            1234.5,
        ),
        (
            &format!("hypersweep_worker_gpu_memory_bytes{{worker=\"{w1}\"}}"),
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }

    // w2 leases the other trial, fails it once (retryable), then falls silent: its lease
    // expires and it is lost, and its series go with it.
    let lease = c
        .lease(pb::LeaseRequest {
            worker_id: w2.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::lease_response::Outcome::Lease(l2)) = lease.outcome else {
        panic!("{lease:?}")
    };
    c.fail(pb::FailRequest {
        worker_id: w2.clone(),
        trial: ta(&l2.trial_id, 1),
        reason: "out of memory".into(),
        retryable: true,
    })
    .await
    .unwrap();
    c.lease(pb::LeaseRequest {
        worker_id: w2.clone(),
    })
    .await
    .unwrap();
    c.heartbeat(pb::HeartbeatRequest {
        worker_id: w2.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(scrape(addr).await.contains(&format!("worker=\"{w2}\"")));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(addr).await;
        if !text.contains("hypersweep_workers_connected{") {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers never lost:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!text.contains("{worker="), "{text}");
    assert_eq!(sample(&text, "hypersweep_attempts_failed_total"), Some(1.0));
    assert_eq!(sample(&text, "hypersweep_leases_granted_total"), Some(3.0));
    assert_eq!(sample(&text, "hypersweep_leases_expired_total"), Some(1.0));
    assert_eq!(
        sample(&text, "hypersweep_trials{state=\"queued\"}"),
        Some(1.0)
    );
    metrics.stop().await;
    server.stop().await;
}

async fn plain_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_health_port_answers_in_plaintext_beside_a_tls_port_and_serves_nothing_else() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let p = pki();
    let security = ServerSecurity::default()
        .with_token(token())
        .with_tls(p.server_cert.as_bytes(), p.server_key.as_bytes(), None)
        .unwrap();
    let server = Sandbox::secured("metrics", &[hp(1, 1)], |_| {}, security).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = service::health::spawn(listener, server.state.health());
    let ch = plain_channel(addr).await;
    let check = |service: &str| {
        let mut client = HealthClient::new(ch.clone());
        let service = service.to_owned();
        async move {
            client
                .check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    // The main server marks itself SERVING as it starts (on its own task).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while check("").await.unwrap() != ServingStatus::Serving as i32 {
        assert!(tokio::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        check("sweep.v1.Coordinator").await.unwrap(),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        check("no.such.Service").await.unwrap_err().code(),
        Code::NotFound
    );
    // Nothing but health: not the coordinator, not reflection, token or not.
    let mut c = CoordinatorClient::with_interceptor(ch.clone(), |mut r: Request<()>| {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        Ok(r)
    });
    let st = c
        .lease(pb::LeaseRequest {
            worker_id: "w1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unimplemented, "{st:?}");
    let st = reflection_services(ch.clone(), Some(TOKEN))
        .await
        .unwrap_err();
    assert_eq!(st.code(), Code::Unimplemented, "{st:?}");

    // The main server stops: the health port says so.
    server.stop().await;
    assert_eq!(check("").await.unwrap(), ServingStatus::NotServing as i32);
    assert_eq!(
        check("sweep.v1.Coordinator").await.unwrap(),
        ServingStatus::NotServing as i32
    );
    health.stop().await.unwrap();
}

/// The service names `grpc.reflection.v1alpha` lists on `ch`.
async fn reflection_services(
    ch: Channel,
    token: Option<&str>,
) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let header: Option<tonic::metadata::MetadataValue<_>> =
        token.map(|t| format!("Bearer {t}").parse().unwrap());
    let mut client = ServerReflectionClient::with_interceptor(ch, move |mut r: Request<()>| {
        if let Some(h) = &header {
            r.metadata_mut().insert("authorization", h.clone());
        }
        Ok(r)
    });
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let answer = answers.message().await?.expect("an answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            Ok(l.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a service list: {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services_with_the_token() {
    let server = Sandbox::secured(
        "metrics",
        &[hp(1, 1)],
        |_| {},
        ServerSecurity::default().with_token(token()),
    )
    .await;
    let ch = server.channel().await;
    let st = reflection_services(ch.clone(), None).await.unwrap_err();
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    let mut services = reflection_services(ch, Some(TOKEN)).await.unwrap();
    services.sort();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "sweep.v1.Coordinator"
        ]
    );
    server.stop().await;
}
