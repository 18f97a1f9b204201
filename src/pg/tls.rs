//! TLS to PostgreSQL with rustls, as the store's URL asks (libpq's words):
//!
//! * no `sslmode`, or `disable`: plain TCP, as capstan always connected;
//! * `prefer`, `require`: encrypted; the server's certificate is not checked (libpq does the
//!   same) unless `sslrootcert=FILE` names the CA, when it is checked as by `verify-ca`;
//! * `verify-ca`: the certificate must chain to a CA of `sslrootcert` (required);
//! * `verify-full`: that, and it must name the host the URL connects to.
//!
//! `sslmode` and `sslrootcert` are taken out of the URL here (the client's own parser knows
//! neither `verify-*` nor `sslrootcert`), and the client is told to require TLS for
//! `verify-*`. The client's `MakeTlsConnect` is implemented here over `tokio-rustls`: a few
//! lines, not another crate.

use crate::base::percent_decode;
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How a store's connections are made: plain, or TLS with this rustls configuration.
#[derive(Clone)]
pub enum Tls {
    Plain,
    Rustls(Arc<ClientConfig>),
}

/// What `sslmode` asks of the server's certificate.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    /// Not checked (`prefer`, `require` without a CA).
    None,
    /// It chains to the CA (`verify-ca`, `require` with `sslrootcert`).
    Chain,
    /// It chains to the CA and names the host (`verify-full`).
    Full,
}

impl Tls {
    /// The URL without `sslmode`/`sslrootcert` (with `sslmode=require` for `verify-*`), and
    /// the TLS they ask for. `shown` is the URL redacted, for errors.
    pub fn from_url(url: &str, shown: &str) -> anyhow::Result<(String, Tls)> {
        let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), Tls::Plain)) };
        let (mut mode, mut root, mut kept) = (None, None, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match percent_decode(k).as_str() {
                "sslmode" => mode = Some(percent_decode(v)),
                "sslrootcert" => root = Some(percent_decode(v)),
                _ => kept.push(pair),
            }
        }
        let check = match (mode.as_deref(), &root) {
            (None | Some("disable"), _) => None,
            (Some("prefer" | "require"), None) => Some(Check::None),
            (Some("prefer" | "require" | "verify-ca"), Some(_)) => Some(Check::Chain),
            (Some("verify-full"), Some(_)) => Some(Check::Full),
            (Some(m @ ("verify-ca" | "verify-full")), None) => anyhow::bail!(
                "--store {shown}: sslmode={m} needs sslrootcert=FILE, the CA certificate(s) that signed the server's certificate (PEM)"
            ),
            (Some(other), _) => anyhow::bail!(
                "--store {shown}: sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ),
        };
        if mode.as_deref().is_some_and(|m| m.starts_with("verify-")) {
            kept.push("sslmode=require");
        } else if let Some(m) = &mode {
            // Kept for the client, which knows these three.
            kept.push(match m.as_str() {
                "disable" => "sslmode=disable",
                "prefer" => "sslmode=prefer",
                _ => "sslmode=require",
            });
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        let Some(check) = check else { return Ok((rest, Tls::Plain)) };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS to the store {shown}: {e}"))?;
        let config = match (check, root) {
            (Check::None, _) | (_, None) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth(),
            (check, Some(file)) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(&file)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| anyhow::anyhow!("--store {shown}: cannot read sslrootcert {file}: {e}"))?;
                if certs.is_empty() {
                    anyhow::bail!("--store {shown}: sslrootcert {file} holds no PEM certificate");
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| anyhow::anyhow!("--store {shown}: sslrootcert {file}: {e}"))?;
                }
                let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| anyhow::anyhow!("--store {shown}: sslrootcert {file}: {e}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Verified { webpki, names: check == Check::Full }))
                    .with_no_client_auth()
            }
        };
        Ok((rest, Tls::Rustls(Arc::new(config))))
    }

    /// A connection made by `config` with this TLS.
    pub(super) fn connect(&self, config: &postgres::Config) -> Result<postgres::Client, postgres::Error> {
        match self {
            Tls::Plain => config.connect(postgres::NoTls),
            Tls::Rustls(c) => config.connect(MakeRustls(c.clone())),
        }
    }

    /// An asynchronous connection made by `config` with this TLS (the event relay's): its
    /// client, and its messages, which drive it as they are polled.
    pub async fn connect_async(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(tokio_postgres::Client, Messages), tokio_postgres::Error> {
        match self {
            Tls::Plain => config.connect(tokio_postgres::NoTls).await.map(|(c, m)| (c, messages(m))),
            Tls::Rustls(r) => config.connect(MakeRustls(r.clone())).await.map(|(c, m)| (c, messages(m))),
        }
    }
}

/// What an asynchronous connection says of its own accord (notifications, notices), or how it ended.
pub type Messages =
    Pin<Box<dyn futures::Stream<Item = Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>> + Send>>;

fn messages<S, T>(mut connection: tokio_postgres::Connection<S, T>) -> Messages
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(futures::stream::poll_fn(move |cx| connection.poll_message(cx)))
}

/// The server's certificate checked against the CA; its names only for `verify-full`.
#[derive(Debug)]
struct Verified {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    names: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
            | Err(Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }))
                if !self.names =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// `sslmode=require` without a CA: encrypted, the certificate taken as it is (the handshake's
/// signatures are still checked).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client's TLS: one rustls configuration, a connector per host.
struct MakeRustls(Arc<ClientConfig>);

struct ConnectRustls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// An encrypted connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = ConnectRustls;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<ConnectRustls, Self::Error> {
        Ok(ConnectRustls { config: self.0.clone(), name: ServerName::try_from(domain.to_string())? })
    }
}

impl<S> TlsConnect<S> for ConnectRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { connector.connect(self.name, stream).await.map(RustlsStream) })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rest(url: &str) -> String {
        Tls::from_url(url, "shown").unwrap().0
    }

    #[test]
    fn sslmode_and_sslrootcert_are_read_and_taken_out_of_the_url() {
        assert_eq!(rest("postgres://u:p@h/db"), "postgres://u:p@h/db");
        assert!(matches!(Tls::from_url("postgres://u:p@h/db", "s").unwrap().1, Tls::Plain));
        assert!(matches!(Tls::from_url("postgres://h/db?sslmode=disable", "s").unwrap().1, Tls::Plain));
        assert_eq!(
            rest("postgres://h/db?sslmode=disable&application_name=x"),
            "postgres://h/db?application_name=x&sslmode=disable"
        );
        assert!(matches!(Tls::from_url("postgres://h/db?sslmode=require", "s").unwrap().1, Tls::Rustls(_)));
        assert_eq!(rest("postgres://h/db?sslmode=require"), "postgres://h/db?sslmode=require");
        let e = Tls::from_url("postgres://u:p@h/db?sslmode=verify-full", "postgres://u:***@h/db").err().unwrap();
        assert!(format!("{e:#}").contains("needs sslrootcert=FILE"), "{e:#}");
        let e = Tls::from_url("postgres://h/db?sslmode=verify-full&sslrootcert=%2Fno%2Fsuch.pem", "s").err().unwrap();
        assert!(format!("{e:#}").contains("cannot read sslrootcert /no/such.pem"), "{e:#}");
        let e = Tls::from_url("postgres://h/db?sslmode=allow-anything", "s").err().unwrap();
        assert!(format!("{e:#}").contains("is not one of"), "{e:#}");
    }
}
