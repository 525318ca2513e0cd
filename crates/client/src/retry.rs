//! Retry timing: exponential backoff with jitter and `Retry-After`.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use tenax_protocol::parse_u64;

/// A fresh, unbounded sequence of backoff delays between `min` and `max`
/// (factor 2, full jitter on top of each step, clamped to `max`).
pub(crate) fn delays(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    let max = max.max(min);
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_factor(2.0)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |delay| delay.min(max))
}

/// Reads a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110
/// §10.2.3). A date in the past means "now". Returns `None` for anything
/// else.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = parse_u64(value) {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::now();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999999999999999999", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        let got: Vec<_> = delays(min, max).take(20).collect();
        assert_eq!(got.len(), 20);
        assert!(got.iter().all(|d| *d >= min && *d <= max));
        assert!(got[0] < Duration::from_secs(2) + Duration::from_millis(1));
        assert_eq!(got[19], max.min(got[19]));
        assert!(got[10] >= Duration::from_secs(60));
    }
}
