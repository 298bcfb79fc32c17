//! Durations and byte sizes as written on the command line.

use std::time::Duration;

/// Parses a duration: `5s`, `300ms`, `2m`, `1h 30m` (humantime), or a bare
/// number of seconds (`5`, `0.5`), the way `nc -w 5` takes it.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sockit::units::parse_duration("1.5").unwrap(), Duration::from_millis(1500));
/// assert_eq!(sockit::units::parse_duration("5m").unwrap(), Duration::from_secs(300));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration '{s}'"));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e} (examples: 5s, 300ms, 2m, 1h)"))
}

/// Parses a byte size: `65536`, `64k`, `64KiB`, `1M`, `2GiB` (binary units).
///
/// ```
/// assert_eq!(sockit::units::parse_size("64KiB").unwrap(), 65536);
/// assert_eq!(sockit::units::parse_size("1m").unwrap(), 1 << 20);
/// ```
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size '{s}' (examples: 4096, 64KiB, 1M)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit '{other}' in '{s}': use k, M or G")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("size '{s}' is too large"))
}

/// Parses a byte size that must fit in memory (`usize`).
pub fn parse_usize_size(s: &str) -> Result<usize, String> {
    parse_size(s).and_then(|n| usize::try_from(n).map_err(|_| format!("size '{s}' is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999G").is_err());
    }
}
