//! SPIFFE ids of a client certificate: the `spiffe://` URI names in its subject alternative
//! names (RFC 5280 section 4.2.1.6, `uniformResourceIdentifier [6]`). webpki verifies the chain
//! and exposes DNS names only, so the extension is read here from the verified certificate's DER.

/// One DER element: tag, and the content's bounds.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// The elements of `der`, in order; stops at the first malformed one.
fn elements(mut der: &[u8]) -> impl Iterator<Item = Tlv<'_>> {
    std::iter::from_fn(move || {
        let (&tag, rest) = der.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            (rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (content, next) = rest.split_at(len);
        der = next;
        Some(Tlv { tag, content })
    })
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `uniformResourceIdentifier [6] IA5String`, implicitly tagged.
const URI_NAME: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// The content of the first element of `der`, if it has `tag`.
fn one(der: &[u8], tag: u8) -> Option<&[u8]> {
    elements(der).next().filter(|e| e.tag == tag).map(|e| e.content)
}

/// The `spiffe://` URI names of a DER certificate; empty when it has none or is malformed.
pub(crate) fn spiffe_ids(cert: &[u8]) -> Vec<String> {
    let Some(tbs) = one(cert, SEQUENCE).and_then(|c| one(c, SEQUENCE)) else { return Vec::new() };
    let Some(extensions) = elements(tbs).find(|e| e.tag == EXTENSIONS).and_then(|e| one(e.content, SEQUENCE)) else {
        return Vec::new();
    };
    let san = elements(extensions).filter(|e| e.tag == SEQUENCE).find_map(|ext| {
        let mut parts = elements(ext.content);
        parts.next().filter(|p| p.tag == OID && p.content == SAN_OID)?;
        parts.find(|p| p.tag == OCTET_STRING).map(|p| p.content)
    });
    let Some(names) = san.and_then(|s| one(s, SEQUENCE)) else { return Vec::new() };
    elements(names)
        .filter(|n| n.tag == URI_NAME)
        .filter_map(|n| std::str::from_utf8(n.content).ok())
        .filter(|uri| uri.starts_with("spiffe://"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(path: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        rustls_pki_types::CertificateDer::from_pem_file(file).map(|c| c.to_vec()).unwrap_or_default()
    }

    #[test]
    fn reads_the_spiffe_id_and_nothing_from_dns_only_certificates() {
        assert_eq!(spiffe_ids(&pem("tests/data/certs/spiffe-client.pem")), ["spiffe://example.org/ns/billing/sa/api"]);
        assert!(spiffe_ids(&pem("tests/data/certs/client.pem")).is_empty());
        let der = pem("tests/data/certs/spiffe-client.pem");
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert!(spiffe_ids(&der[..cut]).is_empty(), "a truncated certificate yields nothing at {cut}");
        }
    }
}
