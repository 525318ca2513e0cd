//! The completion hook's answer in the final response (opt-in): the
//! request that completes an upload delivers its `completed` event itself
//! and passes the receiver's answer on, as a `Tenax-Hook-Response` header
//! (compact JSON, non-ASCII escaped) in every dialect, and in seed's final
//! JSON as `hookResponse` too.
//!
//! The answer has a place of its own: [`carry_answer`] gives every request
//! an empty [`HookAnswer`] (a request extension), the finalisation
//! (`finalize` in `append.rs`) fills it in, and [`carry_answer`] moves it
//! into the response's header.

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

/// The header that carries the answer.
pub(crate) const HEADER: &str = "tenax-hook-response";

/// Larger answers are left out of the header (proxies limit header sizes);
/// seed's JSON body still has them.
const HEADER_LIMIT: usize = 8 << 10;

/// The completion hook's answer, filled in by the request's finalisation.
#[derive(Debug, Clone, Default)]
pub(crate) struct HookAnswer(Arc<Mutex<Option<Value>>>);

impl HookAnswer {
    pub(crate) fn set(&self, value: Value) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }

    pub(crate) fn get(&self) -> Option<Value> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds the header to `response`, if there is an answer.
    pub(crate) fn attach(&self, response: &mut Response) {
        let Some(value) = self.get() else { return };
        let text = ascii_json(&value);
        if text.len() > HEADER_LIMIT {
            tracing::warn!(
                len = text.len(),
                "the completion hook's answer is too large for a header"
            );
            return;
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().insert(HEADER, value);
        }
    }
}

/// The middleware: a fresh [`HookAnswer`] for the request, and its answer,
/// if the request completed an upload, in the response's header.
pub(crate) async fn carry_answer(mut request: Request, next: Next) -> Response {
    let answer = HookAnswer::default();
    request.extensions_mut().insert(answer.clone());
    let mut response = next.run(request).await;
    answer.attach(&mut response);
    response
}

/// Compact JSON with every non-ASCII character escaped (`\uXXXX`), so that
/// it is a valid header value. serde_json escapes control characters
/// itself; non-ASCII can only occur inside strings, where escapes are valid.
fn ascii_json(value: &Value) -> String {
    let text = value.to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped_and_round_trips() {
        let value = serde_json::json!({"ok": "héllo 🎉", "n": [1, "\n"]});
        let text = ascii_json(&value);
        assert!(text.is_ascii(), "{text}");
        assert!(HeaderValue::from_str(&text).is_ok());
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back, value);
    }
}
