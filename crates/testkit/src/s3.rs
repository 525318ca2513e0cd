//! The S3 server of the test run: `scripts/test` starts one (moto, on
//! 127.0.0.1 and a free port) and exports its coordinates.

/// Set by `scripts/test` to `s3://BUCKET` (with `AWS_ENDPOINT_URL`,
/// `AWS_REGION`, the credentials and `AWS_ALLOW_HTTP` for the client).
pub const URL_VAR: &str = "TENAX_TEST_S3_URL";

/// Set to `1` by `scripts/test`: the S3 tests must run, never skip.
pub const REQUIRED_VAR: &str = "TENAX_TEST_S3";

/// A fresh `s3://BUCKET/PREFIX` URL of the test S3 server, unique to the
/// caller (`name` plus random digits), or `None` (after a loud message on
/// stderr) when no server was started and none is required. Panics when
/// `scripts/test` required one and it is missing.
pub fn s3_url(name: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(base) if !base.is_empty() => {
            let mut suffix = [0u8; 8];
            getrandom::fill(&mut suffix).expect("the OS random source");
            let suffix: String = suffix.iter().map(|byte| format!("{byte:02x}")).collect();
            Some(format!("{}/{name}-{suffix}", base.trim_end_matches('/')))
        }
        _ if std::env::var(REQUIRED_VAR).as_deref() == Ok("1") => {
            panic!(
                "{REQUIRED_VAR}=1 but {URL_VAR} is not set: scripts/test did not start the S3 server"
            )
        }
        _ => {
            eprintln!(
                "\n*** SKIPPED: {name} needs an S3 server; run it through scripts/test \
                 (which starts moto and sets {URL_VAR}) ***\n"
            );
            None
        }
    }
}
