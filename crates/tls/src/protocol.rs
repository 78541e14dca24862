//! TLS versions and cipher suites as etcd names them (`--tls-min-version`,
//! `--tls-max-version`, `--cipher-suites` with Go's suite names), turned
//! into a rustls crypto provider and version list.

use std::sync::Arc;

use rustls::crypto::ring::cipher_suite as ring_suites;
use rustls::crypto::CryptoProvider;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use crate::TlsError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// etcd's `tlsutil.GetTLSVersion`: "" means Go's default (`None`).
    pub fn parse(text: &str) -> Result<Option<TlsVersion>, TlsError> {
        match text {
            "" => Ok(None),
            "TLS1.2" => Ok(Some(TlsVersion::Tls12)),
            "TLS1.3" => Ok(Some(TlsVersion::Tls13)),
            other => Err(TlsError::UnknownVersion(other.to_owned())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS1.2",
            TlsVersion::Tls13 => "TLS1.3",
        }
    }
}

/// What versions and suites a configuration allows. `Default`: TLS 1.2 and
/// 1.3 with rustls's suites, as etcd's defaults (min TLS1.2, max Go's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtocolOptions {
    /// `None`: TLS 1.2.
    pub min_version: Option<TlsVersion>,
    /// `None`: TLS 1.3.
    pub max_version: Option<TlsVersion>,
    /// Go's names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`); empty: all of
    /// rustls's. They restrict TLS 1.2 only: as in Go, TLS 1.3's suites are
    /// not configurable, and naming one is accepted and changes nothing.
    pub cipher_suites: Vec<String>,
}

impl ProtocolOptions {
    /// etcd's checks (`embed.Config.Validate`) and the suite names.
    pub fn check(&self) -> Result<(), TlsError> {
        let (min, max) = (self.min(), self.max());
        if min > max {
            return Err(TlsError::VersionRange { min: min.as_str().into(), max: max.as_str().into() });
        }
        // Go cannot restrict TLS 1.3's suites, so etcd refuses the attempt.
        if min == TlsVersion::Tls13 && !self.cipher_suites.is_empty() {
            return Err(TlsError::SuitesWithOnlyTls13);
        }
        for name in &self.cipher_suites {
            go_suite(name)?;
        }
        Ok(())
    }

    fn min(&self) -> TlsVersion {
        self.min_version.unwrap_or(TlsVersion::Tls12)
    }

    fn max(&self) -> TlsVersion {
        self.max_version.unwrap_or(TlsVersion::Tls13)
    }

    pub(crate) fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let mut versions = Vec::new();
        if self.min() <= TlsVersion::Tls13 && self.max() >= TlsVersion::Tls13 {
            versions.push(&rustls::version::TLS13);
        }
        if self.min() <= TlsVersion::Tls12 && self.max() >= TlsVersion::Tls12 {
            versions.push(&rustls::version::TLS12);
        }
        versions
    }

    /// ring's provider with the chosen TLS 1.2 suites, in the order given,
    /// and every TLS 1.3 suite.
    pub(crate) fn provider(&self) -> Result<Arc<CryptoProvider>, TlsError> {
        self.check()?;
        // ring only, as the project requires (no aws-lc); rustls 0.23.48
        // deprecates this for lacking post-quantum key exchange.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
            for name in &self.cipher_suites {
                if let Some(suite) = go_suite(name)? {
                    if !chosen.iter().any(|known| known.suite() == suite.suite()) {
                        chosen.push(suite);
                    }
                }
            }
            chosen
                .extend(provider.cipher_suites.iter().copied().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))));
            provider.cipher_suites = chosen;
        }
        Ok(Arc::new(provider))
    }
}

/// A suite by Go's name (`crypto/tls.CipherSuites()` and
/// `InsecureCipherSuites()`, which etcd's `tlsutil` accepts). `None` for a
/// TLS 1.3 suite, which is always on.
fn go_suite(name: &str) -> Result<Option<SupportedCipherSuite>, TlsError> {
    let suite = match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => ring_suites::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => ring_suites::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            ring_suites::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => ring_suites::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => ring_suites::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            ring_suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256" => return Ok(None),
        "TLS_RSA_WITH_RC4_128_SHA"
        | "TLS_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_RSA_WITH_AES_128_CBC_SHA256"
        | "TLS_RSA_WITH_AES_128_GCM_SHA256"
        | "TLS_RSA_WITH_AES_256_GCM_SHA384"
        | "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_RC4_128_SHA"
        | "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"
        | "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"
        | "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"
        | "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256" => {
            return Err(TlsError::UnsupportedCipherSuite(name.to_owned()));
        }
        other => return Err(TlsError::UnknownCipherSuite(other.to_owned())),
    };
    Ok(Some(suite))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(min: &str, max: &str, suites: &[&str]) -> Result<ProtocolOptions, TlsError> {
        let options = ProtocolOptions {
            min_version: TlsVersion::parse(min)?,
            max_version: TlsVersion::parse(max)?,
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
        };
        options.check()?;
        Ok(options)
    }

    #[test]
    fn etcds_rules_and_messages() {
        let cases: &[(&str, &str, &[&str], Option<&str>)] = &[
            ("", "", &[], None),
            ("TLS1.2", "TLS1.3", &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"], None),
            ("TLS1.3", "", &[], None),
            ("TLS1.3", "TLS1.2", &[], Some("min version (TLS1.3) is greater than max version (TLS1.2)")),
            (
                "TLS1.3",
                "",
                &["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
                Some("cipher suites cannot be configured when only TLS1.3 is enabled"),
            ),
            ("TLS1.1", "", &[], Some("unexpected TLS version \"TLS1.1\" (must be one of: TLS1.2, TLS1.3)")),
            ("", "", &["TLS_NOPE"], Some("unexpected TLS cipher suite \"TLS_NOPE\"")),
            ("", "", &["TLS_RSA_WITH_AES_128_CBC_SHA"], Some("TLS cipher suite \"TLS_RSA_WITH_AES_128_CBC_SHA\" is not supported by Keel (rustls offers ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 only)")),
        ];
        for (min, max, suites, want) in cases {
            let got = options(min, max, suites).err().map(|e| e.to_string());
            assert_eq!(got.as_deref(), *want, "min {min:?} max {max:?} suites {suites:?}");
        }
    }

    #[test]
    fn chosen_suites_restrict_tls12_only() {
        let options = ProtocolOptions {
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(), "TLS_AES_128_GCM_SHA256".into()],
            ..ProtocolOptions::default()
        };
        let provider = options.provider().unwrap();
        let tls12: Vec<_> =
            provider.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls12(_))).collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(tls12[0].suite(), ring_suites::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256.suite());
        assert_eq!(provider.cipher_suites.iter().filter(|s| matches!(s, SupportedCipherSuite::Tls13(_))).count(), 3);
        assert_eq!(options.versions().len(), 2);
        let only13 = ProtocolOptions { min_version: Some(TlsVersion::Tls13), ..ProtocolOptions::default() };
        assert_eq!(only13.versions(), vec![&rustls::version::TLS13]);
    }
}
