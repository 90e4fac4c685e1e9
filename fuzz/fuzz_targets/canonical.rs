//! The signer's canonical forms on any text: `canonical_uri` and `CanonicalQuery` never panic and
//! are fixed points (canonicalising the canonical form again changes nothing).

#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkrtc_gateway::signer::{canonical_uri, CanonicalQuery};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let uri = canonical_uri(&text);
    assert_eq!(canonical_uri(&uri), uri, "canonical_uri is not a fixed point for {text:?}");
    let query = CanonicalQuery::parse(&text);
    let printed = query.to_string();
    let again = CanonicalQuery::parse(&printed);
    assert_eq!(again, query, "the canonical query of {text:?} parses differently");
    assert_eq!(again.to_string(), printed);
});
