//! The names of the engine's metrics (through the `metrics` facade; the
//! binary installs the recorder).

/// Gauge: uploads in progress (every upload, partial uploads of a concatenation included).
pub const ACTIVE: &str = "tenax_uploads_active";
/// Counter: uploads completed.
pub const COMPLETED: &str = "tenax_uploads_completed_total";
/// Counter: uploads found expired.
pub const EXPIRED: &str = "tenax_uploads_expired_total";
/// Counter: uploads cancelled (terminated).
pub const CANCELLED: &str = "tenax_uploads_cancelled_total";
/// Histogram: seconds taken by each data fsync.
pub const FSYNC_SECONDS: &str = "tenax_fsync_seconds";
