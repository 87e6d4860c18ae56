//! A throwaway PKI for the TLS tests, generated with rcgen: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, and a client certificate,
//! as PEM files in a temporary directory.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// PEM files: `ca.pem`, `server.pem`/`server.key`, `client.pem`/`client.key`,
/// and a second, unrelated CA (`other-ca.pem`) with a client signed by it.
#[derive(Debug)]
pub struct Pki {
    dir: tempfile::TempDir,
}

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let ca = new_ca("BanGUI test CA");
        write("ca.pem", ca.pem());

        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "geo-service");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        write("server.pem", params.signed_by(&key, &ca).unwrap().pem());
        write("server.key", key.serialize_pem());

        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "control-service");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write("client.pem", params.signed_by(&key, &ca).unwrap().pem());
        write("client.key", key.serialize_pem());

        let other = new_ca("Someone else's CA");
        write("other-ca.pem", other.pem());
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "intruder");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        write("other-client.pem", params.signed_by(&key, &other).unwrap().pem());
        write("other-client.key", key.serialize_pem());
        Self { dir }
    }

    /// The path of one of the PEM files.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// [`Pki::path`] as a string, for flags.
    pub fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
