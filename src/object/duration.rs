//! Durations as Flux writes them (`interval`, `timeout`, `retryInterval`): part of the object
//! model, read by the policy parser, the status and the command line alike.

use std::time::Duration;

/// Whether `s` is a duration as Flux's CRDs accept it: `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`.
pub fn is_flux_duration(s: &str) -> bool {
    parse_duration(s).is_some()
}

/// Parses a Flux/Go-style duration (`90s`, `1h30m`, `1.5m`, `250ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let b = s.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total = 0f64;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let frac = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == frac {
                return None;
            }
        }
        let number: f64 = s[start..i].parse().ok()?;
        let seconds = if s[i..].starts_with("ms") {
            i += 2;
            0.001
        } else {
            let unit = match b.get(i) {
                Some(b's') => 1.0,
                Some(b'm') => 60.0,
                Some(b'h') => 3600.0,
                _ => return None,
            };
            i += 1;
            unit
        };
        total += number * seconds;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_flux_pattern() {
        for ok in ["5m", "1h30m", "90s", "1.5m", "250ms", "1h0m0s"] {
            assert!(is_flux_duration(ok), "{ok}");
        }
        for bad in ["", "5", "m", "5 m", "1.m", "-5m", "5d", "5mm"] {
            assert!(!is_flux_duration(bad), "{bad}");
        }
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    }
}
