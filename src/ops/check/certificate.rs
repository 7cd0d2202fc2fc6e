//! The dates of the certificate a broker presents, read when its TLS handshake failed.
//!
//! librdkafka reports every broker certificate OpenSSL could not verify alike ("certificate verify
//! failed: broker certificate could not be verified, verify that ssl.ca.location is correctly
//! configured..."), an expired one included, which sends an operator to the CA file when it is
//! the broker's certificate that needs renewing, or a clock that is wrong. After such a failure
//! `check` makes a handshake of its own (rustls, as for Postgres) only to read those dates.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, Error as RustlsError,
    RootCertStore, SignatureScheme,
};

/// The most the connection and the handshake may take: the broker answered librdkafka already.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What is wrong with the dates of the certificate the broker at `address` (`host:port`)
/// presents ("expired on ..." or "is not valid before ...", with this host's time); `None` when
/// they are right, or when the handshake did not get as far as the certificate.
pub(super) fn out_of_date(address: &str) -> Option<String> {
    let (host, _) = address.rsplit_once(':')?;
    let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).ok()?;
    let mut tcp = address
        .to_socket_addrs()
        .ok()?
        .find_map(|socket| TcpStream::connect_timeout(&socket, TIMEOUT).ok())?;
    tcp.set_read_timeout(Some(TIMEOUT)).ok()?;
    tcp.set_write_timeout(Some(TIMEOUT)).ok()?;
    let provider = Arc::new(ring::default_provider());
    let dates = Arc::new(DatesOnly {
        provider: provider.clone(),
        found: Mutex::default(),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(dates.clone())
        .with_no_client_auth();
    let mut tls = ClientConnection::new(Arc::new(config), name).ok()?;
    // The verifier ends the handshake, with an error, once it has read the dates.
    while tls.is_handshaking() && tls.complete_io(&mut tcp).is_ok() {}
    let found = dates
        .found
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    found
}

/// What an out-of-date certificate's verification `error` says of its dates, as
/// [`out_of_date`] words it; `None` for any other error.
fn dated(error: &CertificateError) -> Option<String> {
    let clock = |now: &UnixTime| format!("this host's clock reads {}", date(now));
    match error {
        CertificateError::ExpiredContext { time, not_after } => {
            Some(format!("expired on {} ({})", date(not_after), clock(time)))
        }
        CertificateError::Expired => Some("expired".into()),
        CertificateError::NotValidYetContext { time, not_before } => Some(format!(
            "is not valid before {} ({})",
            date(not_before),
            clock(time)
        )),
        CertificateError::NotValidYet => Some("is not valid yet".into()),
        _ => None,
    }
}

fn date(time: &UnixTime) -> String {
    i64::try_from(time.as_secs())
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map_or_else(
            || format!("{} s after the epoch", time.as_secs()),
            |date| date.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// The error that ends the handshake once the dates are read.
fn ended() -> RustlsError {
    RustlsError::General("only the certificate's dates were wanted".into())
}

/// A verifier that notes what is wrong with the certificate's dates and ends the handshake.
#[derive(Debug)]
struct DatesOnly {
    provider: Arc<CryptoProvider>,
    found: Mutex<Option<String>>,
}

impl ServerCertVerifier for DatesOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        // The certificate is its own trust anchor: webpki checks a certificate's dates before it
        // looks for its issuer, so an error about dates is about this certificate's, and no
        // other error matters here.
        let mut roots = RootCertStore::empty();
        roots.add(end_entity.clone().into_owned())?;
        let verdict =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| RustlsError::General(error.to_string()))?
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if let Err(RustlsError::InvalidCertificate(error)) = verdict {
            *self.found.lock().unwrap_or_else(PoisonError::into_inner) = dated(&error);
        }
        Err(ended())
    }

    // The handshake ends at the certificate, before any signature is checked.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        Err(ended())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        Err(ended())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_date_certificates_are_named_with_their_dates_and_others_not() {
        let at = |secs| UnixTime::since_unix_epoch(Duration::from_secs(secs));
        let expired = CertificateError::ExpiredContext {
            time: at(1_796_000_000),
            not_after: at(1_735_689_600),
        };
        assert_eq!(
            dated(&expired).as_deref(),
            Some(
                "expired on 2025-01-01 00:00:00 UTC (this host's clock reads \
                 2026-11-30 00:53:20 UTC)"
            )
        );
        let early = CertificateError::NotValidYetContext {
            time: at(0),
            not_before: at(86_400),
        };
        assert_eq!(
            dated(&early).as_deref(),
            Some(
                "is not valid before 1970-01-02 00:00:00 UTC (this host's clock reads \
                 1970-01-01 00:00:00 UTC)"
            )
        );
        assert_eq!(dated(&CertificateError::UnknownIssuer), None);
        assert_eq!(dated(&CertificateError::NotValidForName), None);
    }
}
