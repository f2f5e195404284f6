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

/// An injected failure for tests: `STEWARD_FAIL_AT=point[@N][,point...]` (debug builds
/// only) makes the `N`th time (every time without `@N`) this process reaches `point`
/// fail with an I/O error, so a test can fail each step of a job on purpose.
pub fn fail_point(point: &str) -> std::io::Result<()> {
    #[cfg(debug_assertions)]
    if let Ok(spec) = std::env::var("STEWARD_FAIL_AT") {
        use std::collections::HashMap;
        use std::sync::Mutex;
        static HITS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
        let mut hits = HITS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = {
            let map = hits.get_or_insert_with(HashMap::new);
            let n = map.entry(point.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        for want in spec.split(',') {
            let (name, at) = match want.split_once('@') {
                Some((name, at)) => (name, at.parse::<u32>().ok()),
                None => (want, None),
            };
            if name == point && at.is_none_or(|a| a == n) {
                return Err(std::io::Error::other(format!(
                    "injected failure at {point} (STEWARD_FAIL_AT)"
                )));
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
    Ok(())
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
