//! Durations in the transfer reports, serialised as fractional seconds.

use std::time::Duration;

/// Serialises a duration as fractional seconds (`serialize_with`).
pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fractional_seconds() {
        let mut out = Vec::new();
        let mut serializer = serde_json::Serializer::new(&mut out);
        super::serialize(&std::time::Duration::from_millis(1500), &mut serializer)
            .expect("serialise");
        assert_eq!(out, b"1.5");
    }
}
