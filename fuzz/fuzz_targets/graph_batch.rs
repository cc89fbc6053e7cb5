//! The `$batch` response decoder (`filetrail_m365::wire::batch_response`) and the error body
//! parser (`filetrail_m365::ErrorBody::parse`) on arbitrary bytes: inner `Retry-After` and
//! `RateLimit-Reset` headers (integer, decimal or HTTP date), inner error bodies, and bodies that
//! are not a `$batch` response at all, which the client reads as an error body.
//!
//! Beyond "never panics" (and no quadratic blow-up in the lenient error parser): an inner retry
//! hint is never longer than the longest wait the client honours, so a hostile or broken header
//! cannot park a client for ever (or overflow a deadline), and error codes are never empty.
#![no_main]

use std::time::SystemTime;

use filetrail_m365::ErrorBody;
use filetrail_m365::retry::MAX_HONOURED_RETRY_AFTER;
use libfuzzer_sys::fuzz_target;

fn check_error_body(body: &[u8]) {
    let parsed = ErrorBody::parse(body);
    assert!(parsed.codes.iter().all(|c| !c.is_empty()), "{:?}", parsed.codes);
}

fuzz_target!(|data: &[u8]| {
    let Ok(answers) = filetrail_m365::wire::batch_response(data, SystemTime::now()) else {
        check_error_body(data);
        return;
    };
    for answer in answers {
        if let Some(after) = answer.retry_after {
            assert!(after <= MAX_HONOURED_RETRY_AFTER, "inner retry hint of {after:?}");
        }
        if !(200..300).contains(&answer.status) {
            check_error_body(answer.body.to_string().as_bytes());
        }
    }
});
