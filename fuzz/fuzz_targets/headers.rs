//! Header hygiene on any caller headers: `relay::base_headers` never panics and passes on only
//! `Content-Type`, whatever credentials or hop-by-hop headers came with it, in any case.
//!
//! Input: one byte choosing the operation, then header lines `name: value` separated by `\n`.

#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sparkrtc_gateway::catalog::Catalog;
use sparkrtc_gateway::relay;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, lines)) = data.split_first() else { return };
    let ops = Catalog.operations();
    let op = &ops[usize::from(choice) % ops.len()];
    let mut caller = HeaderMap::new();
    for line in lines.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value.trim_ascii())) {
            caller.append(name, value);
        }
    }
    if let Ok(headers) = relay::base_headers(&caller, op) {
        let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Content-Type"], "base_headers passed on more than Content-Type");
    }
});
