//! Who may talk to the coordinator: a real server on 127.0.0.1:0 with a token, TLS and client
//! certificates (generated here with rcgen), and clients that have them or not.

use crate::common::Sandbox;
use coordinator::security::{self, SecurityOptions, ServerSecurity, Token};
use proto::pb;
use proto::pb::coordinator_client::CoordinatorClient;
use proto::{Arch, Hyperparams};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

const TOKEN: &str = "test-token-0123456789abcdef";
const SWEEP: &str = "secret-sweep-name";

/// A coordinator with one trial, protected by `security`.
async fn start(security: ServerSecurity) -> Sandbox {
    let h = Hyperparams {
        arch: Arch::Ffv1,
        hidden: 16,
        epochs: 1,
        ..Hyperparams::default()
    };
    Sandbox::secured(SWEEP, &[h], |_| {}, security).await
}

fn token() -> Token {
    Token::new(TOKEN.as_bytes()).unwrap()
}

type AddToken = Box<dyn FnMut(Request<()>) -> Result<Request<()>, Status> + Send + Sync>;
type Intercepted = tonic::service::interceptor::InterceptedService<Channel, AddToken>;

/// A client that sends `authorization: Bearer <token>` when given one.
fn client(channel: Channel, token: Option<&str>) -> CoordinatorClient<Intercepted> {
    let header: Option<MetadataValue<_>> = token.map(|t| format!("Bearer {t}").parse().unwrap());
    let add: AddToken = Box::new(move |mut req: Request<()>| {
        if let Some(h) = &header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    });
    CoordinatorClient::with_interceptor(channel, add)
}

async fn plain_channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

fn register_request() -> pb::RegisterRequest {
    pb::RegisterRequest {
        name: "w".into(),
        device: "cpu".into(),
        slots: 1,
        threads: 1,
        version: "0.0.0".into(),
        ..Default::default()
    }
}

async fn register(c: &mut CoordinatorClient<Intercepted>) -> Result<pb::RegisterResponse, Status> {
    c.register(register_request()).await.map(|r| r.into_inner())
}

fn assert_refused(st: &Status) {
    assert_eq!(st.code(), Code::Unauthenticated, "{st:?}");
    assert_eq!(st.message(), security::UNAUTHENTICATED_MESSAGE);
    // Nothing of the sweep in what a refused caller sees.
    let everything = format!("{st:?}");
    assert!(!everything.contains(SWEEP), "{everything}");
}

#[tokio::test]
async fn the_right_token_registers_and_a_missing_or_wrong_one_is_unauthenticated() {
    let server = start(ServerSecurity::default().with_token(token())).await;
    let ch = plain_channel(server.addr).await;

    let reg = register(&mut client(ch.clone(), Some(TOKEN)))
        .await
        .unwrap();
    assert_eq!(reg.sweep_name, SWEEP);

    let st = register(&mut client(ch.clone(), None)).await.unwrap_err();
    assert_refused(&st);
    let st = register(&mut client(ch.clone(), Some("test-token-0123456789abcdeX")))
        .await
        .unwrap_err();
    assert_refused(&st);
    let st = register(&mut client(ch.clone(), Some("short")))
        .await
        .unwrap_err();
    assert_refused(&st);
    // Every method, not only Register: a lease without the token reveals nothing either.
    let st = client(ch.clone(), None)
        .lease(pb::LeaseRequest {
            worker_id: reg.worker_id.clone(),
        })
        .await
        .unwrap_err();
    assert_refused(&st);
    // A token in another scheme is not a bearer token.
    let mut basic = CoordinatorClient::with_interceptor(ch.clone(), |mut req: Request<()>| {
        req.metadata_mut()
            .insert("authorization", format!("Basic {TOKEN}").parse().unwrap());
        Ok(req)
    });
    assert_refused(&basic.register(register_request()).await.unwrap_err());
    server.stop().await;
}

#[tokio::test]
async fn health_answers_without_a_token_and_reflection_needs_one() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let server = start(ServerSecurity::default().with_token(token())).await;
    let ch = plain_channel(server.addr).await;
    let resp = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "sweep.v1.Coordinator".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status, ServingStatus::Serving as i32);

    // Reflection is behind the token too.
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        server_reflection_request::MessageRequest, ServerReflectionRequest,
    };
    let req = || {
        tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }])
    };
    let st = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(req())
        .await
        .unwrap_err();
    assert_refused(&st);
    let mut with_token =
        ServerReflectionClient::with_interceptor(ch.clone(), |mut r: Request<()>| {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            Ok(r)
        });
    let mut stream = with_token
        .server_reflection_info(req())
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    server.stop().await;
}

#[tokio::test]
async fn without_security_nothing_changes() {
    let server = start(ServerSecurity::default()).await;
    let ch = plain_channel(server.addr).await;
    assert_eq!(
        register(&mut client(ch, None)).await.unwrap().sweep_name,
        SWEEP
    );
    server.stop().await;
}

/// A CA, a server certificate it signed for 127.0.0.1 and localhost, and a client certificate
/// it signed; plus a second, unrelated CA.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) server_cert: String,
    pub(crate) server_key: String,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
    pub(crate) other_ca_pem: String,
    pub(crate) other_client_cert: String,
    pub(crate) other_client_key: String,
}

fn make_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    names: &[&str],
    usage: rcgen::ExtendedKeyUsagePurpose,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (String, String) {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.extended_key_usages = vec![usage];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub(crate) fn pki() -> Pki {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let ca = make_ca("test ca");
    let other = make_ca("other ca");
    let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], ServerAuth, &ca);
    let (client_cert, client_key) = leaf(&["worker"], ClientAuth, &ca);
    let (other_client_cert, other_client_key) = leaf(&["intruder"], ClientAuth, &other);
    Pki {
        ca_pem: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        other_ca_pem: other.pem(),
        other_client_cert,
        other_client_key,
    }
}

async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn tls_with_the_ca_and_token_works_and_a_plaintext_client_is_refused() {
    let p = pki();
    let security = ServerSecurity::default()
        .with_token(token())
        .with_tls(p.server_cert.as_bytes(), p.server_key.as_bytes(), None)
        .unwrap();
    let server = start(security).await;

    let ch = tls_channel(server.addr, &p.ca_pem, None).await.unwrap();
    assert_eq!(
        register(&mut client(ch.clone(), Some(TOKEN)))
            .await
            .unwrap()
            .sweep_name,
        SWEEP
    );
    // TLS does not replace the token.
    assert_refused(&register(&mut client(ch, None)).await.unwrap_err());

    // Plaintext HTTP/2 against the TLS listener: never a success, whatever the token.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    match plain.connect().await {
        Err(_) => {}
        Ok(ch) => {
            let r = register(&mut client(ch, Some(TOKEN))).await;
            assert!(r.is_err(), "a plaintext client got through: {r:?}");
        }
    }
    // A client that does not trust the server's CA fails the handshake.
    let untrusted = tls_channel(server.addr, &p.other_ca_pem, None).await;
    match untrusted {
        Err(_) => {}
        Ok(ch) => assert!(register(&mut client(ch, Some(TOKEN))).await.is_err()),
    }
    // The server still serves after those failed handshakes.
    let ch = tls_channel(server.addr, &p.ca_pem, None).await.unwrap();
    assert!(register(&mut client(ch, Some(TOKEN))).await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn client_certificates_required_refuse_clients_without_one() {
    let p = pki();
    let security = ServerSecurity::default()
        .with_token(token())
        .with_tls(
            p.server_cert.as_bytes(),
            p.server_key.as_bytes(),
            Some(p.ca_pem.as_bytes()),
        )
        .unwrap();
    assert!(security.requires_client_certs());
    let server = start(security).await;

    // No client certificate: the handshake or the first call fails.
    match tls_channel(server.addr, &p.ca_pem, None).await {
        Err(_) => {}
        Ok(ch) => {
            let r = register(&mut client(ch, Some(TOKEN))).await;
            assert!(
                r.is_err(),
                "a client without a certificate got through: {r:?}"
            );
        }
    }
    // A certificate from another CA: refused as well.
    match tls_channel(
        server.addr,
        &p.ca_pem,
        Some((&p.other_client_cert, &p.other_client_key)),
    )
    .await
    {
        Err(_) => {}
        Ok(ch) => {
            let r = register(&mut client(ch, Some(TOKEN))).await;
            assert!(
                r.is_err(),
                "a foreign client certificate got through: {r:?}"
            );
        }
    }
    // The client CA's certificate: served.
    let ch = tls_channel(
        server.addr,
        &p.ca_pem,
        Some((&p.client_cert, &p.client_key)),
    )
    .await
    .unwrap();
    assert_eq!(
        register(&mut client(ch, Some(TOKEN)))
            .await
            .unwrap()
            .sweep_name,
        SWEEP
    );
    server.stop().await;
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn options_read_and_check_every_file_up_front() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let any: SocketAddr = "0.0.0.0:50051".parse().unwrap();
    let opts = SecurityOptions {
        token_file: Some(write(dir.path(), "token", &format!("{TOKEN}\n"))),
        tls_cert: Some(write(dir.path(), "cert.pem", &p.server_cert)),
        tls_key: Some(write(dir.path(), "key.pem", &p.server_key)),
        tls_client_ca: Some(write(dir.path(), "ca.pem", &p.ca_pem)),
    };
    let s = ServerSecurity::from_options(&opts, any).unwrap();
    assert!(s.has_token() && s.has_tls() && s.requires_client_certs());

    // A key that is not the certificate's: refused before anything starts.
    let wrong_key = SecurityOptions {
        tls_key: Some(write(dir.path(), "other.key", &p.client_key)),
        ..opts.clone()
    };
    assert!(ServerSecurity::from_options(&wrong_key, any).is_err());
    // Not a certificate.
    let garbage = SecurityOptions {
        tls_cert: Some(write(dir.path(), "garbage.pem", "hello\n")),
        ..opts.clone()
    };
    let e = ServerSecurity::from_options(&garbage, any)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tls-cert") && e.contains("garbage.pem"), "{e}");
    // No token on a non-loopback address, even with TLS.
    let no_token = SecurityOptions {
        token_file: None,
        ..opts
    };
    let e = ServerSecurity::from_options(&no_token, any)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a loopback address"), "{e}");
}

#[test]
fn local_workers_verify_the_certificate_by_ip_or_localhost() {
    let ca = make_ca("ca");
    let by_ip = leaf(
        &["127.0.0.1"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    )
    .0;
    let by_name = leaf(
        &["localhost"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    )
    .0;
    let neither = leaf(
        &["coordinator.example"],
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    )
    .0;
    assert_eq!(security::local_tls_name(by_ip.as_bytes()), Some(None));
    assert_eq!(
        security::local_tls_name(by_name.as_bytes()),
        Some(Some("localhost"))
    );
    assert_eq!(security::local_tls_name(neither.as_bytes()), None);
}

#[test]
fn sweep_token_file_is_not_a_sweep_setting() {
    let text = "name = \"s\"\n[[experiment]]\nname = \"a\"\narch = \"ffv0\"\nlr = 0.1\n";
    let env = vec![
        (
            "SWEEP_TOKEN_FILE".to_string(),
            "/etc/hypersweep/token".to_string(),
        ),
        ("SWEEP_SEED".to_string(), "3".to_string()),
    ];
    let s = coordinator::sweep::load_str(
        Path::new("s.toml"),
        text,
        &coordinator::sweep::Overrides::default(),
        env,
    )
    .unwrap();
    assert_eq!(s.trials[0].hparams.seed, 3);
}
