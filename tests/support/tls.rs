//! A throwaway CA and a server certificate for the PBX's TLS listener.

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls::pki_types::CertificateDer;

/// A CA generated for one test run, and a server certificate it signed for
/// 127.0.0.1, localhost and the PBX's host name. Clients trust the CA, not
/// the server certificate, as they would with a real PBX.
pub struct TestCa {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TestCa {
    pub fn generate() -> Result<TestCa> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "cidguard test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;

        let mut server = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            super::org::PBX_HOST.to_string(),
        ])?;
        server
            .distinguished_name
            .push(DnType::CommonName, super::org::PBX_HOST);
        let server_key = KeyPair::generate()?;
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

        Ok(TestCa {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    /// The CA certificate, PEM: what a TLS client must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }
}
