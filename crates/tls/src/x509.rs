//! The two things Keel reads inside a certificate itself: its subject's
//! common name (etcd's user name from a client certificate, and
//! `--peer-cert-allowed-cn`), and its subject alternative names (etcd's
//! check of a peer's certificate against its address). A few lines of DER
//! walking instead of a whole X.509 parser; the certificate was already
//! verified by webpki.

use std::net::IpAddr;

/// The subject CN of a DER certificate; with several, the last, as Go's
/// `pkix.Name` keeps it. `None` if it has none or is not a certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (_, certificate, _) = element(der, SEQUENCE)?;
    let (_, tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature, issuer, validity, then subject.
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.2;
    }
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = element(rest, tag)?.2;
    }
    let (_, mut subject, _) = element(rest, SEQUENCE)?;
    let mut found = None;
    while !subject.is_empty() {
        let (_, mut set, after) = element(subject, SET)?;
        subject = after;
        while !set.is_empty() {
            let (_, attribute, after) = element(set, SEQUENCE)?;
            set = after;
            let (_, oid, value) = element(attribute, OID)?;
            if oid == CN {
                let (tag, text, _) = any_element(value)?;
                found = Some(decode_string(tag, text)?);
            }
        }
    }
    found
}

/// A certificate's subject alternative names of the two kinds etcd looks
/// at (Go's `Certificate.IPAddresses` and `Certificate.DNSNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct AltNames {
    pub(crate) ips: Vec<IpAddr>,
    pub(crate) dns: Vec<String>,
}

/// The subject alternative names of a DER certificate (none without the
/// extension); `None` if it is not a certificate.
pub(crate) fn alt_names(der: &[u8]) -> Option<AltNames> {
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    const DNS_NAME: u8 = 0x82;
    const IP_ADDRESS: u8 = 0x87;
    let (_, certificate, _) = element(der, SEQUENCE)?;
    let (_, tbs, _) = element(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.2;
    }
    // serial, signature, issuer, validity, subject, subject public key info.
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = element(rest, tag)?.2;
    }
    let mut names = AltNames::default();
    // [1] issuerUniqueID, [2] subjectUniqueID, then [3] extensions.
    while !rest.is_empty() {
        let (tag, contents, after) = any_element(rest)?;
        rest = after;
        if tag != 0xa3 {
            continue;
        }
        let (_, mut extensions, _) = element(contents, SEQUENCE)?;
        while !extensions.is_empty() {
            let (_, extension, after) = element(extensions, SEQUENCE)?;
            extensions = after;
            let (_, oid, mut value) = element(extension, OID)?;
            if oid != SUBJECT_ALT_NAME {
                continue;
            }
            if value.first() == Some(&BOOLEAN) {
                value = element(value, BOOLEAN)?.2;
            }
            let (_, octets, _) = element(value, OCTET_STRING)?;
            let (_, mut general_names, _) = element(octets, SEQUENCE)?;
            while !general_names.is_empty() {
                let (tag, name, after) = any_element(general_names)?;
                general_names = after;
                match tag {
                    DNS_NAME => names.dns.push(String::from_utf8(name.to_vec()).ok()?),
                    IP_ADDRESS => match name.len() {
                        4 => names.ips.push(IpAddr::from(<[u8; 4]>::try_from(name).ok()?)),
                        16 => names.ips.push(IpAddr::from(<[u8; 16]>::try_from(name).ok()?)),
                        // Go skips none: a malformed address fails its parse.
                        _ => return None,
                    },
                    _ => {}
                }
            }
        }
    }
    Some(names)
}

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

/// The element at the start of `input` if its tag is `tag`: (tag, contents, rest).
fn element(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    let found = any_element(input)?;
    (found.0 == tag).then_some(found)
}

fn any_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

fn decode_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        // BMPString: UTF-16 big-endian.
        0x1e => {
            let units: Vec<u16> = bytes.chunks_exact(2).map(|pair| u16::from_be_bytes([pair[0], pair[1]])).collect();
            String::from_utf16(&units).ok()
        }
        // UTF8String, PrintableString, IA5String, T61String (taken as Latin-1 subset), and others.
        _ => String::from_utf8(bytes.to_vec()).ok(),
    }
}
