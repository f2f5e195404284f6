//! Crash points for tests. In debug builds, `STEWARD_CRASH_AT=<point>` aborts the process
//! at that point, so a test can pin down what a real crash there leaves behind. Release
//! builds compile this to nothing.

/// Aborts the process here when `STEWARD_CRASH_AT` names `point` (debug builds only).
pub fn crash_point(point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("STEWARD_CRASH_AT").is_some_and(|v| v == point) {
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Whether the test switch `STEWARD_TEST_<NAME>` (debug builds only) is set, e.g. to turn
/// off a defence so a test can prove the next one holds alone.
pub fn enabled(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        let var = format!("STEWARD_TEST_{}", name.to_uppercase().replace('-', "_"));
        std::env::var_os(var).is_some()
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}
