//! Fault points for crash tests, compiled in only with the `failpoints`
//! feature (the `fail` crate, configured by the `FAILPOINTS` environment
//! variable). A point configured as `return(crash:<marker>)` aborts the
//! process, as `kill -9` would, when the data passing it contains the
//! marker; `return(panic:<marker>)` panics the thread instead. A marker lets
//! a test hit one exact write rather than whatever bootstrapping writes first.

/// Crashes or panics here when configured to, for data containing the
/// configured marker.
#[inline]
pub fn fault_point(name: &str, data: &[&[u8]]) {
    #[cfg(feature = "failpoints")]
    if let Some(Some(config)) = fail::eval(name, |config| config) {
        let (action, marker) = config.split_once(':').unwrap_or((config.as_str(), ""));
        let hit = data.iter().any(|bytes| bytes.windows(marker.len().max(1)).any(|w| w == marker.as_bytes()));
        if hit || (marker.is_empty() && data.is_empty()) {
            match action {
                "panic" => panic!("failpoint {name}: panic"),
                _ => {
                    eprintln!("failpoint {name}: crashing");
                    std::process::abort();
                }
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, data);
}
