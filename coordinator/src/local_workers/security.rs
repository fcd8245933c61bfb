//! What local workers need to pass the coordinator's own security (token, TLS), derived from
//! `coordinator run`'s flags.

use crate::cli::RunArgs;
use crate::security::{self, ServerSecurity};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What local workers (which connect to 127.0.0.1) need to pass the server's security: its
/// token file, and with TLS a CA to trust and a name the certificate is valid for.
///
/// With TLS they trust the `--tls-cert` file itself: that works for a self-signed certificate,
/// and for a CA-issued one when the file holds the chain up to its issuer (a "fullchain").
/// Otherwise give `--worker-arg=--tls-ca=CA.pem`. They verify the certificate for 127.0.0.1,
/// else for `localhost`; a certificate valid for neither needs
/// `--worker-arg=--tls-domain=NAME` (one of its names). Client certificates
/// (`--tls-client-ca`) are the user's to give: `--worker-arg=--tls-cert=PEM
/// --worker-arg=--tls-key=PEM`. Whatever `--worker-arg` already sets is not set again.
#[derive(Debug)]
pub struct LocalWorkerSecurity {
    pub scheme: &'static str,
    pub args: Vec<std::ffi::OsString>,
}

impl LocalWorkerSecurity {
    pub fn new(args: &RunArgs, security: &ServerSecurity, n: usize) -> Result<LocalWorkerSecurity> {
        let given = |flag: &str| {
            args.worker_arg
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        let mut out = LocalWorkerSecurity {
            scheme: if security.has_tls() { "https" } else { "http" },
            args: Vec::new(),
        };
        if n == 0 {
            return Ok(out);
        }
        if let Some(token) = &args.security.token_file {
            if !given("--token-file") {
                out.args.push("--token-file".into());
                out.args.push(absolute(token)?.into());
            }
        }
        if let Some(cert) = args
            .security
            .tls_cert
            .as_ref()
            .filter(|_| security.has_tls())
        {
            if !given("--tls-ca") {
                out.args.push("--tls-ca".into());
                out.args.push(absolute(cert)?.into());
            }
            if !given("--tls-domain") {
                let pem = std::fs::read(cert)
                    .with_context(|| format!("--tls-cert {}", cert.display()))?;
                match security::local_tls_name(&pem) {
                    Some(None) => {}
                    Some(Some(name)) => {
                        out.args.push("--tls-domain".into());
                        out.args.push(name.into());
                    }
                    None => bail!(
                        "--tls-cert {} is valid for neither 127.0.0.1 nor localhost, so local \
                         workers (which connect to 127.0.0.1) cannot verify it: pass \
                         --worker-arg=--tls-domain=NAME with a name of the certificate, add \
                         127.0.0.1 to its subjectAltName, or use --local-workers 0",
                        cert.display()
                    ),
                }
            }
            if security.requires_client_certs() && !(given("--tls-cert") && given("--tls-key")) {
                bail!(
                    "--tls-client-ca requires client certificates, and local workers have none: \
                     pass --worker-arg=--tls-cert=PEM --worker-arg=--tls-key=PEM (a certificate \
                     signed by the client CA), or use --local-workers 0"
                );
            }
        }
        Ok(out)
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}
