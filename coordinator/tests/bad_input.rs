//! Bad input from the wire: a coordinator on 127.0.0.1:0, a raw HTTP/2 client that sends gRPC
//! frames byte for byte (bytes that are not protobuf, frames whose header lies about their
//! length or compression, messages past the size limit), and the generated client for
//! well-formed messages that break the protocol's rules (calls out of order, overlong
//! fields, metrics that are not finite or out of range, artifact names that are paths).
//! After each test's bad calls the server still registers a worker and leases.
//!
//! The raw client is `Channel` used as a plain HTTP/2 service rather than `tonic::client::Grpc`
//! with a custom codec: a codec only chooses the message bytes, while tonic writes the 5-byte
//! frame header (compression flag, length), and the lying headers are the interesting part.
//!
//! Codes, as tonic 0.14 and the service give them (those of the first two items come from
//! tonic, and the token interceptor, before any handler runs):
//! - bytes that are not the method's protobuf message: `INTERNAL` (tonic-prost maps every
//!   decode error to INTERNAL, as gRPC's status-code guide says for parse errors);
//! - a message longer than the server's decoding limit: `OUT_OF_RANGE` (tonic checks the
//!   length in the frame header, so nothing is buffered); a truncated frame, a
//!   compressed-flag without `grpc-encoding`, an unknown flag, no message at all: `INTERNAL`;
//!   a `grpc-encoding` the server does not accept, a method that does not exist:
//!   `UNIMPLEMENTED`; with a token configured, any of these without the token:
//!   `UNAUTHENTICATED`, answered from the headers before the body is read;
//! - well-formed but invalid fields: `INVALID_ARGUMENT`; unknown worker or trial: `NOT_FOUND`;
//!   a trial the caller does not hold (not leased, finished, another attempt or worker):
//!   `FAILED_PRECONDITION`; an artifact past `max_artifact_bytes`: `RESOURCE_EXHAUSTED`.
//!
//! Already covered in `tests/service.rs` (`malformed_requests_are_rejected_with_the_right_code`,
//! `an_expired_lease_is_released_again_and_the_old_attempt_is_stale`,
//! `artifacts_are_stored_under_plain_allowed_names_only`) and not repeated here: missing
//! fields, attempt 0, the trial id `../etc/passwd`, an unknown trial or worker on ReportEpoch
//! and Lease, a NaN train loss, a test accuracy of 2, skipping an epoch, finishing early,
//! slots 0, a malformed id in a heartbeat, a stale attempt after expiry, the artifact names
//! `../x`, `a/b`, `..`, `.hidden`, `x\y`, `notes.txt` and the empty name, an empty artifact
//! stream, an artifact of another attempt, and an artifact past the size limit; and in
//! `tests/security.rs`, well-formed calls with a missing or wrong token.

// The protocol is growing fields (checkpoints); message literals end in `..Default::default()`
// so that they keep compiling, even where they name every field today.
#![allow(clippy::needless_update)]

use crate::common::{hp, Sandbox};
use coordinator::security::{ServerSecurity, Token};
use coordinator::service;
use http_body_util::{BodyExt, Full};
use prost::Message;
use proto::pb::coordinator_client::CoordinatorClient;
use proto::pb::{self, lease_response::Outcome};
use std::path::{Path, PathBuf};
use tonic::codegen::{http, Bytes, Service};
use tonic::transport::Channel;
use tonic::Code;

/// The largest message the server decodes.
const MAX_MESSAGE: usize = service::MAX_MESSAGE_BYTES;

const METHODS: [&str; 7] = [
    "Register",
    "Lease",
    "ReportEpoch",
    "Heartbeat",
    "Finish",
    "Fail",
    "UploadArtifact",
];

fn method(name: &str) -> String {
    format!("/sweep.v1.Coordinator/{name}")
}

/// The server still answers a well-formed Register and Lease, and health says SERVING.
async fn assert_alive(sb: &Sandbox) {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let mut c = sb.client().await;
    let w = register(&mut c, "after").await;
    let r = c
        .lease(pb::LeaseRequest {
            worker_id: w,
            ..Default::default()
        })
        .await;
    assert!(r.is_ok(), "a good Lease after bad input: {r:?}");
    let health = HealthClient::new(sb.channel().await)
        .check(HealthCheckRequest {
            service: "sweep.v1.Coordinator".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
}

async fn register(c: &mut CoordinatorClient<Channel>, name: &str) -> String {
    c.register(pb::RegisterRequest {
        name: name.into(),
        device: "cpu".into(),
        slots: 1,
        threads: 1,
        version: "0.0.0".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .worker_id
}

async fn lease(c: &mut CoordinatorClient<Channel>, worker: &str) -> pb::Lease {
    let outcome = c
        .lease(pb::LeaseRequest {
            worker_id: worker.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .outcome;
    match outcome {
        Some(Outcome::Lease(l)) => l,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn ta(trial: &str, attempt: u32) -> Option<pb::TrialAttempt> {
    Some(pb::TrialAttempt {
        trial_id: trial.into(),
        attempt,
        ..Default::default()
    })
}

fn metrics(epoch: u32) -> pb::EpochMetrics {
    pb::EpochMetrics {
        epoch,
        train_loss: 0.5,
        train_acc: 0.8,
        val_loss: 0.45,
        val_acc: 0.81,
        test_loss: 0.5,
        test_acc: 0.79,
        seconds: 0.1,
        ..Default::default()
    }
}

fn report(worker: &str, trial: &str, attempt: u32, m: pb::EpochMetrics) -> pb::ReportEpochRequest {
    pb::ReportEpochRequest {
        worker_id: worker.into(),
        trial: ta(trial, attempt),
        metrics: Some(m),
        ..Default::default()
    }
}

fn finish(worker: &str, trial: &str, attempt: u32) -> pb::FinishRequest {
    pb::FinishRequest {
        worker_id: worker.into(),
        trial: ta(trial, attempt),
        ..Default::default()
    }
}

fn fail(worker: &str, trial: &str, attempt: u32) -> pb::FailRequest {
    pb::FailRequest {
        worker_id: worker.into(),
        trial: ta(trial, attempt),
        reason: "test".into(),
        retryable: true,
        ..Default::default()
    }
}

fn chunk(worker: &str, trial: &str, attempt: u32, name: &str, data: Vec<u8>) -> pb::ArtifactChunk {
    pb::ArtifactChunk {
        worker_id: worker.into(),
        trial: ta(trial, attempt),
        name: name.into(),
        data,
        ..Default::default()
    }
}

fn data(data: Vec<u8>) -> pb::ArtifactChunk {
    pb::ArtifactChunk {
        data,
        ..Default::default()
    }
}

/// The code of a failed call (panics on success).
/// The codes of the four calls a lease holder makes for (`worker`, `trial`, `attempt`), in
/// this order: ReportEpoch (epoch 1), Finish, Fail and an UploadArtifact of `config.json`.
async fn holder_calls(
    c: &mut CoordinatorClient<Channel>,
    worker: &str,
    trial: &str,
    attempt: u32,
) -> [Code; 4] {
    let upload = vec![chunk(worker, trial, attempt, "config.json", b"{}".to_vec())];
    [
        code(
            c.report_epoch(report(worker, trial, attempt, metrics(1)))
                .await,
        ),
        code(c.finish(finish(worker, trial, attempt)).await),
        code(c.fail(fail(worker, trial, attempt)).await),
        code(c.upload_artifact(tokio_stream::iter(upload)).await),
    ]
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(ok) => panic!("expected an error, got {ok:?}"),
        Err(status) => status.code(),
    }
}

// ---- the raw client ----

/// A gRPC frame: compression flag, the length it claims, then `payload` (which may be shorter
/// or longer than claimed).
fn frame(flag: u8, claimed: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flag);
    out.extend_from_slice(&claimed.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An honest frame around `payload`.
fn msg(payload: &[u8]) -> Vec<u8> {
    frame(0, u32::try_from(payload.len()).unwrap(), payload)
}

/// What a raw call got back.
#[derive(Debug)]
struct Reply {
    http: http::StatusCode,
    /// `grpc-status` from the trailers or, for a trailers-only answer, the headers.
    code: Option<Code>,
    message: String,
    /// The response's gRPC frames.
    body: Bytes,
}

/// POSTs `body` (gRPC frames, or anything) to `path` over HTTP/2 as a gRPC client would.
async fn raw(channel: &Channel, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let mut channel = channel.clone();
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://127.0.0.1{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(tonic::body::Body::new(Full::new(Bytes::from(body))))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let response = channel.call(request).await.expect("an HTTP answer");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("a whole response body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let collected = collected.to_bytes();
    let find = |name: &str| {
        trailers
            .get(name)
            .or_else(|| parts.headers.get(name))
            .map(|v| v.to_str().unwrap_or("?").to_string())
    };
    Reply {
        http: parts.status,
        code: find("grpc-status").map(|s| Code::from_bytes(s.as_bytes())),
        message: find("grpc-message").unwrap_or_default(),
        body: collected,
    }
}

/// A raw call that must fail with `want`.
async fn expect_raw(channel: &Channel, path: &str, body: Vec<u8>, want: Code) {
    let reply = raw(channel, path, &[], body).await;
    assert_eq!(reply.http, http::StatusCode::OK, "{path}: {reply:?}");
    assert_eq!(reply.code, Some(want), "{path}: {reply:?}");
    if want == Code::OutOfRange {
        assert!(reply.message.contains("too%20large"), "{path}: {reply:?}");
    }
}

#[tokio::test]
async fn bytes_that_are_not_protobuf_are_internal_on_every_method() {
    let sb = Sandbox::start(&[hp(2, 1)], |_| {}).await;
    let ch = sb.channel().await;
    // Field 1 is a string in every request message of the service.
    let mut deep = vec![0x7b_u8; 200]; // 200 nested starts of group 15 ...
    deep.extend(std::iter::repeat_n(0x7c_u8, 200)); // ... and their ends
    let payloads: Vec<(&str, Vec<u8>)> = vec![
        ("field 1 longer than the message", vec![0x0a, 0x05, b'a']),
        ("field 1 not UTF-8", vec![0x0a, 0x02, 0xc3, 0x28]),
        ("field 1 as a varint", vec![0x08, 0x01]),
        (
            "a varint of eleven bytes",
            [vec![0xff; 10], vec![0x01]].concat(),
        ),
        ("wire type 7", vec![0x0f]),
        ("field number 0", vec![0x00, 0x00]),
        ("an end-group without a start", vec![0x0c]),
        ("groups nested past the recursion limit", deep),
        ("text", b"{\"worker_id\": \"w1\"}".to_vec()),
    ];
    for m in METHODS {
        for (what, p) in &payloads {
            let reply = raw(&ch, &method(m), &[], msg(p)).await;
            assert_eq!(reply.code, Some(Code::Internal), "{m}, {what}: {reply:?}");
        }
    }
    assert_alive(&sb).await;
    sb.stop().await;
}

/// A small deterministic generator (xorshift), so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % (max as u64 + 1)) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test]
async fn random_bytes_get_a_status_and_never_take_the_server_down() {
    let sb = Sandbox::start(&[hp(2, 2), hp(2, 3)], |_| {}).await;
    let ch = sb.channel().await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let expected = [
        Code::Ok,
        Code::Internal,
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
    ];
    for round in 0..30 {
        for m in METHODS {
            // Random payloads in honest frames, and one frame of random bytes in random order.
            let payload = rng.bytes(64);
            let reply = raw(&ch, &method(m), &[], msg(&payload)).await;
            assert_eq!(
                reply.http,
                http::StatusCode::OK,
                "{m} {payload:?}: {reply:?}"
            );
            let code = reply
                .code
                .unwrap_or_else(|| panic!("{m}: no grpc-status: {reply:?}"));
            assert!(
                expected.contains(&code),
                "{m} {payload:?}: {reply:?} (round {round})"
            );
        }
    }
    assert_alive(&sb).await;
    sb.stop().await;
}

#[tokio::test]
async fn frames_that_lie_get_the_decoders_codes() {
    let sb = Sandbox::start(&[hp(2, 4)], |_| {}).await;
    let ch = sb.channel().await;
    let valid = pb::LeaseRequest {
        worker_id: "no-such-worker".into(),
        ..Default::default()
    }
    .encode_to_vec();
    for m in METHODS {
        let path = method(m);
        // A header that claims more than the limit is refused before anything is buffered:
        // no 4 GiB is ever sent or allocated.
        expect_raw(&ch, &path, frame(0, u32::MAX, &[]), Code::OutOfRange).await;
        let over = u32::try_from(MAX_MESSAGE + 1).unwrap();
        expect_raw(&ch, &path, frame(0, over, b"abc"), Code::OutOfRange).await;
        // A frame cut short by the end of the stream.
        expect_raw(&ch, &path, frame(0, 100, b"0123456789"), Code::Internal).await;
        expect_raw(&ch, &path, vec![0, 0, 0], Code::Internal).await;
        // Compression flags the request did not announce, or that do not exist.
        expect_raw(&ch, &path, frame(1, 2, &[0x08, 0x01]), Code::Internal).await;
        expect_raw(&ch, &path, frame(7, 0, &[]), Code::Internal).await;
        // No message at all (a unary call needs one; the artifact stream needs a first chunk).
        let want = if m == "UploadArtifact" {
            Code::InvalidArgument
        } else {
            Code::Internal
        };
        expect_raw(&ch, &path, Vec::new(), want).await;
        // A valid message followed by garbage: a unary call is refused whole (tonic reads
        // to the end of the request first); the artifact stream refuses this first chunk,
        // which names no trial, before it reads on (garbage after a good first chunk is in
        // `artifact_names_are_never_paths`).
        let want = if m == "UploadArtifact" {
            Code::InvalidArgument
        } else {
            Code::Internal
        };
        let body = [msg(&valid), msg(&[0x0a, 0x05])].concat();
        expect_raw(&ch, &path, body, want).await;
        // An encoding the server does not accept.
        let reply = raw(
            &ch,
            &path,
            &[("grpc-encoding", "gzip")],
            frame(1, 2, &[0x08, 0x01]),
        )
        .await;
        assert_eq!(reply.code, Some(Code::Unimplemented), "{m}: {reply:?}");
    }
    // Methods and services that do not exist.
    for path in [
        "/sweep.v1.Coordinator/Nope",
        "/sweep.v1.Nope/Register",
        "/sweep.v0.Coordinator/Register",
        "/",
    ] {
        let reply = raw(&ch, path, &[], msg(&valid)).await;
        assert_eq!(reply.code, Some(Code::Unimplemented), "{path}: {reply:?}");
    }
    assert_alive(&sb).await;
    sb.stop().await;
}

#[tokio::test]
async fn without_the_token_nothing_is_decoded() {
    const TOKEN: &str = "bad-input-test-token-0123456789abcdef";
    let security = ServerSecurity::default().with_token(Token::new(TOKEN.as_bytes()).unwrap());
    let sb = Sandbox::secured("test", &[hp(2, 10)], |_| {}, security).await;
    let ch = sb.channel().await;
    let bearer = format!("Bearer {TOKEN}");
    let good = [("authorization", bearer.as_str())];
    let wrong_token = format!("Bearer {}", TOKEN.replace('0', "1"));
    let refused: [&[(&str, &str)]; 4] = [
        &[],
        &[("authorization", wrong_token.as_str())],
        &[("authorization", TOKEN)],
        &[("authorization", "Bearer ")],
    ];
    for m in METHODS {
        let path = method(m);
        // The interceptor answers from the headers: garbage, a lying length or no message
        // at all are never read.
        for headers in refused {
            for body in [msg(&[0x0a, 0x05]), frame(0, u32::MAX, &[]), Vec::new()] {
                let reply = raw(&ch, &path, headers, body).await;
                assert_eq!(
                    reply.code,
                    Some(Code::Unauthenticated),
                    "{m} {headers:?}: {reply:?}"
                );
            }
        }
        // With the token the decoder's codes are those of an open server.
        let reply = raw(&ch, &path, &good, msg(&[0x0a, 0x05])).await;
        assert_eq!(reply.code, Some(Code::Internal), "{m}: {reply:?}");
        let reply = raw(&ch, &path, &good, frame(0, u32::MAX, &[])).await;
        assert_eq!(reply.code, Some(Code::OutOfRange), "{m}: {reply:?}");
    }
    // And a good Register and Lease still work.
    let register = pb::RegisterRequest {
        name: "after".into(),
        device: "cpu".into(),
        slots: 1,
        ..Default::default()
    };
    let reply = raw(
        &ch,
        &method("Register"),
        &good,
        msg(&register.encode_to_vec()),
    )
    .await;
    assert_eq!(reply.code, Some(Code::Ok), "{reply:?}");
    let worker = pb::RegisterResponse::decode(&reply.body[5..])
        .unwrap()
        .worker_id;
    let lease = pb::LeaseRequest {
        worker_id: worker,
        ..Default::default()
    };
    let reply = raw(&ch, &method("Lease"), &good, msg(&lease.encode_to_vec())).await;
    assert_eq!(reply.code, Some(Code::Ok), "{reply:?}");
    let outcome = pb::LeaseResponse::decode(&reply.body[5..]).unwrap().outcome;
    assert!(matches!(outcome, Some(Outcome::Lease(_))), "{outcome:?}");
    sb.stop().await;
}

#[tokio::test]
async fn a_message_past_the_size_limit_is_out_of_range() {
    let sb = Sandbox::start(&[hp(2, 5)], |_| {}).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "big").await;
    let l = lease(&mut c, &w).await;

    // The generated client sends anything (its encoding limit is unbounded); the server
    // refuses it from the frame header.
    let mut big = fail(&w, &l.trial_id, l.attempt);
    big.reason = "x".repeat(MAX_MESSAGE + 1);
    assert_eq!(code(c.fail(big).await), Code::OutOfRange);
    let mut big = report(&w, &l.trial_id, l.attempt, metrics(1));
    big.worker_id = "w".repeat(MAX_MESSAGE + 1);
    assert_eq!(code(c.report_epoch(big).await), Code::OutOfRange);
    // An artifact chunk is a message too: uploads must be cut into chunks below the limit.
    let upload = vec![chunk(
        &w,
        &l.trial_id,
        l.attempt,
        "model.safetensors",
        vec![0; MAX_MESSAGE + 1],
    )];
    assert_eq!(
        code(c.upload_artifact(tokio_stream::iter(upload)).await),
        Code::OutOfRange
    );
    // The second chunk too: nothing is stored.
    let upload = vec![
        chunk(&w, &l.trial_id, l.attempt, "config.json", b"{}".to_vec()),
        data(vec![0; MAX_MESSAGE + 1]),
    ];
    assert_eq!(
        code(c.upload_artifact(tokio_stream::iter(upload)).await),
        Code::OutOfRange
    );
    assert_no_files(&sb.results().join("artifacts"));

    // Just below the limit a message is read, and a reason that long is cut, not kept whole.
    let mut long = fail(&w, &l.trial_id, l.attempt);
    long.reason = "y".repeat(MAX_MESSAGE - 1024);
    c.fail(long).await.unwrap();
    let kept = sb.state.records()[0].last_error.clone().unwrap_or_default();
    assert!(
        kept.len() <= 8192,
        "a failure reason of {} bytes was kept",
        kept.len()
    );
    assert_alive(&sb).await;
    sb.stop().await;
}

#[tokio::test]
async fn calls_out_of_order_are_failed_precondition() {
    let h = hp(2, 6);
    let sb = Sandbox::start(std::slice::from_ref(&h), |_| {}).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let other = register(&mut c, "two").await;
    let id = h.trial_id().0;

    // Before any lease: the trial exists but nobody holds it.
    assert_eq!(
        holder_calls(&mut c, &w, &id, 1).await,
        [Code::FailedPrecondition; 4]
    );

    let l = lease(&mut c, &w).await;
    assert_eq!((l.trial_id.as_str(), l.attempt), (id.as_str(), 1));
    // Epochs: 0 (refused by the metrics check), beyond `epochs`, skipping one.
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, metrics(0))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, metrics(3))).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, metrics(u32::MAX))).await),
        Code::InvalidArgument
    );
    // Another worker, or an attempt that was never leased, does not hold the trial.
    assert_eq!(
        code(c.report_epoch(report(&other, &id, 1, metrics(1))).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 2, metrics(1))).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(c.finish(finish(&other, &id, 1)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(c.fail(fail(&w, &id, 9)).await),
        Code::FailedPrecondition
    );
    // Unknown workers, on every worker call.
    let ghost = "no-such-worker";
    assert_eq!(
        code(
            c.heartbeat(pb::HeartbeatRequest {
                worker_id: ghost.into(),
                running: vec![],
                ..Default::default()
            })
            .await
        ),
        Code::NotFound
    );
    assert_eq!(code(c.finish(finish(ghost, &id, 1)).await), Code::NotFound);
    assert_eq!(code(c.fail(fail(ghost, &id, 1)).await), Code::NotFound);
    let upload = vec![chunk(ghost, &id, 1, "config.json", b"{}".to_vec())];
    assert_eq!(
        code(c.upload_artifact(tokio_stream::iter(upload)).await),
        Code::NotFound
    );

    for epoch in 1..=2 {
        c.report_epoch(report(&w, &id, 1, metrics(epoch)))
            .await
            .unwrap();
    }
    c.finish(finish(&w, &id, 1)).await.unwrap();
    // After the finish the trial is nobody's: reports, a second finish and a failure are refused.
    assert_eq!(
        code(c.report_epoch(report(&w, &id, 1, metrics(2))).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(c.finish(finish(&w, &id, 1)).await),
        Code::FailedPrecondition
    );
    assert_eq!(
        code(c.fail(fail(&w, &id, 1)).await),
        Code::FailedPrecondition
    );
    let p = sb.state.progress();
    assert_eq!((p.finished, p.failed), (1, 0));
    assert_alive(&sb).await;
    sb.stop().await;
}

#[tokio::test]
async fn overlong_and_malformed_fields_are_invalid_argument() {
    let h = hp(2, 7);
    let sb = Sandbox::start(std::slice::from_ref(&h), |_| {}).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let l = lease(&mut c, &w).await;
    let id = l.trial_id.clone();

    // Labels longer than 256 bytes.
    let long = "w".repeat(257);
    let reg = |name: &str, device: &str| pb::RegisterRequest {
        name: name.into(),
        device: device.into(),
        slots: 1,
        ..Default::default()
    };
    assert_eq!(
        code(c.register(reg(&long, "cpu")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.register(reg("x", &long)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(
            c.lease(pb::LeaseRequest {
                worker_id: long.clone(),
                ..Default::default()
            })
            .await
        ),
        Code::InvalidArgument
    );
    assert_eq!(
        holder_calls(&mut c, &long, &id, 1).await,
        [Code::InvalidArgument; 4]
    );

    // Trial ids that are not `<arch>-<12 lowercase hex digits>`.
    let hash = &id[id.len() - 12..];
    let bad_ids = [
        format!("ffv1-{}", hash.to_uppercase()),
        format!("ffv1-{hash}0"),
        format!("ffv1-{}", &hash[1..]),
        format!("mlp-{hash}"),
        format!("ffv1_{hash}"),
        format!("{id}\0"),
        format!("{id}/../x"),
        format!("ffv1-{}", "é".repeat(6)),
        "x".repeat(1 << 20),
    ];
    for bad in &bad_ids {
        let shown = &bad[..bad.len().min(40)];
        assert_eq!(
            code(c.report_epoch(report(&w, bad, 1, metrics(1))).await),
            Code::InvalidArgument,
            "{shown:?}"
        );
        assert_eq!(
            code(c.finish(finish(&w, bad, 1)).await),
            Code::InvalidArgument,
            "{shown:?}"
        );
        let upload = vec![chunk(&w, bad, 1, "config.json", b"{}".to_vec())];
        assert_eq!(
            code(c.upload_artifact(tokio_stream::iter(upload)).await),
            Code::InvalidArgument,
            "{shown:?}"
        );
    }

    // A heartbeat may list at most 4096 trials, well-formed or not.
    let running = |n: usize| pb::HeartbeatRequest {
        worker_id: w.clone(),
        running: vec![ta(&id, 1).unwrap(); n],
        ..Default::default()
    };
    c.heartbeat(running(4096)).await.unwrap();
    assert_eq!(
        code(c.heartbeat(running(4097)).await),
        Code::InvalidArgument
    );
    assert_eq!(
        code(c.heartbeat(running(100_000)).await),
        Code::InvalidArgument
    );
    assert_alive(&sb).await;
    sb.stop().await;
}

#[tokio::test]
async fn metrics_must_be_finite_and_in_range() {
    let h = hp(3, 8);
    let sb = Sandbox::start(std::slice::from_ref(&h), |_| {}).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let l = lease(&mut c, &w).await;
    let id = l.trial_id.clone();

    type Set = fn(&mut pb::EpochMetrics, f64);
    let fields: [(&str, Set); 7] = [
        ("train_loss", |m, v| m.train_loss = v),
        ("train_acc", |m, v| m.train_acc = v),
        ("val_loss", |m, v| m.val_loss = v),
        ("val_acc", |m, v| m.val_acc = v),
        ("test_loss", |m, v| m.test_loss = v),
        ("test_acc", |m, v| m.test_acc = v),
        ("seconds", |m, v| m.seconds = v),
    ];
    for (name, set) in fields {
        let is_acc = name.ends_with("_acc");
        let is_val = name.starts_with("val_");
        let mut bad = vec![f64::INFINITY, f64::NEG_INFINITY, -1.0, -f64::MIN_POSITIVE];
        if !is_val {
            bad.push(f64::NAN);
        }
        if is_acc {
            bad.extend([1.0 + f64::EPSILON, 2.0, f64::MAX]);
        }
        for v in bad {
            let mut m = metrics(1);
            set(&mut m, v);
            let e = c.report_epoch(report(&w, &id, 1, m)).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{name} = {v}: {e:?}");
            assert!(e.message().contains(name), "{name} = {v}: {e:?}");
        }
    }
    // Nothing was recorded by the refused reports.
    assert_eq!(sb.state.records()[0].epochs_done, 0);

    // The edges that are valid: a trial without a validation split reports NaN for both
    // validation metrics; accuracies of exactly 0 and 1; huge finite losses; -0.
    let mut no_val = metrics(1);
    no_val.val_loss = f64::NAN;
    no_val.val_acc = f64::NAN;
    c.report_epoch(report(&w, &id, 1, no_val)).await.unwrap();
    let mut edges = metrics(2);
    edges.train_acc = 0.0;
    edges.test_acc = 1.0;
    edges.train_loss = f64::MAX;
    edges.seconds = -0.0;
    c.report_epoch(report(&w, &id, 1, edges)).await.unwrap();
    assert_alive(&sb).await;
    sb.stop().await;
}

/// Every regular file under `dir` (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn assert_no_files(dir: &Path) {
    let files = files_under(dir);
    assert!(files.is_empty(), "files under {}: {files:?}", dir.display());
}

#[tokio::test]
async fn artifact_names_are_never_paths() {
    let sb = Sandbox::start(&[hp(1, 9)], |c| c.max_artifact_bytes = 1000).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let l = lease(&mut c, &w).await;
    let (id, attempt) = (l.trial_id.clone(), l.attempt);

    let names = [
        "/etc/passwd".to_string(),
        "x\0".into(),
        "model.safetensors\0".into(),
        "model.safetensors\0/../../x".into(),
        "model.safetensors/".into(),
        "./model.safetensors".into(),
        "artifacts/model.safetensors".into(),
        "../../../x".into(),
        "..\\..\\x".into(),
        "C:\\x".into(),
        "/".into(),
        ".".into(),
        "...".into(),
        " model.safetensors".into(),
        "model.safetensors ".into(),
        "MODEL.SAFETENSORS".into(),
        "model.safetensors\n".into(),
        "\u{202e}model.safetensors".into(),
        "model\u{2215}safetensors".into(),
        "model%2Fsafetensors".into(),
        "m".repeat(300),
        "m".repeat(1 << 20),
    ];
    for name in &names {
        let shown = &name[..name.len().min(40)];
        let upload = vec![chunk(&w, &id, attempt, name, b"evil".to_vec())];
        let e = c
            .upload_artifact(tokio_stream::iter(upload))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{shown:?}: {e:?}");
    }
    assert_no_files(&sb.results().join("artifacts"));

    // Only the first chunk names the artifact; names in later chunks are ignored.
    let upload = vec![
        chunk(&w, &id, attempt, "config.json", b"{".to_vec()),
        chunk(&w, &id, attempt, "../../../x", b"}".to_vec()),
        chunk("no-such-worker", "nope", 7, "/etc/passwd", Vec::new()),
    ];
    let r = c
        .upload_artifact(tokio_stream::iter(upload))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.bytes, 2);
    let dir = sb.results().join("artifacts").join(&id);
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{}");
    assert_eq!(
        files_under(&sb.results().join("artifacts")),
        vec![dir.join("config.json")]
    );

    // The size limit is inclusive, counted over all chunks.
    let upload = vec![
        chunk(&w, &id, attempt, "model.safetensors", vec![1; 600]),
        data(vec![2; 400]),
    ];
    let r = c
        .upload_artifact(tokio_stream::iter(upload))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.bytes, 1000);
    let upload = vec![
        chunk(&w, &id, attempt, "predictions.safetensors", vec![1; 600]),
        data(vec![2; 400]),
        data(vec![3]),
    ];
    assert_eq!(
        code(c.upload_artifact(tokio_stream::iter(upload)).await),
        Code::ResourceExhausted
    );

    // A stream that breaks after its first chunk leaves no file behind.
    let ch = sb.channel().await;
    let first = chunk(&w, &id, attempt, "predictions.safetensors", vec![1; 10]).encode_to_vec();
    let body = [msg(&first), msg(&[0x22, 0x09, 0])].concat();
    expect_raw(&ch, &method("UploadArtifact"), body, Code::Internal).await;
    let body = [msg(&first), frame(0, u32::MAX, &[])].concat();
    expect_raw(&ch, &method("UploadArtifact"), body, Code::OutOfRange).await;

    // Nothing outside the results folder, and nothing in it but known artifacts and results.
    let top: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("results")]);
    assert_eq!(
        files_under(&sb.results().join("artifacts")),
        vec![dir.join("config.json"), dir.join("model.safetensors")],
        "no temporary or partial file"
    );
    assert_alive(&sb).await;
    sb.stop().await;
}

/// `ReportEpoch` carrying `diverged` (issue 12) instead of metrics.
fn diverged(
    worker: &str,
    trial: &str,
    epoch: u32,
    loss: &str,
    value: f64,
) -> pb::ReportEpochRequest {
    pb::ReportEpochRequest {
        worker_id: worker.into(),
        trial: ta(trial, 1),
        diverged: Some(pb::Diverged {
            epoch,
            loss: loss.into(),
            value,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_divergence_report_is_checked_and_without_the_rule_fails_the_trial() {
    let h = hp(2, 8);
    let sb = Sandbox::start(std::slice::from_ref(&h), |_| {}).await;
    let mut c = sb.client().await;
    let w = register(&mut c, "one").await;
    let id = h.trial_id().0;
    lease(&mut c, &w).await;
    let nan = f64::NAN;
    for bad in [
        diverged(&w, &id, 1, "train_loss", 2.5),
        diverged(&w, &id, 1, "accuracy", nan),
        diverged(&w, &id, 0, "train_loss", nan),
        diverged(&w, &id, 2, "train_loss", nan),
        pb::ReportEpochRequest {
            metrics: Some(metrics(1)),
            ..diverged(&w, &id, 1, "train_loss", nan)
        },
    ] {
        assert_eq!(
            code(c.report_epoch(bad.clone()).await),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }
    // The sweep has no divergence rule: a non-finite loss fails the trial, as it always did,
    // and the answer tells the worker to stop.
    let answer = c
        .report_epoch(diverged(&w, &id, 1, "val_loss", f64::INFINITY))
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.stop && answer.stop_reason.contains("val_loss is inf"),
        "{answer:?}"
    );
    let p = sb.state.progress();
    assert_eq!((p.failed, p.stopped), (1, 0));
    assert_alive(&sb).await;
    sb.stop().await;
}
