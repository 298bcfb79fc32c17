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

/// Writes a byte size the way [`parse_size`] reads it back: `16 MiB`,
/// `64 KiB`, or `1000 bytes` when no binary unit divides it.
pub fn format_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
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
        for n in [0, 1000, 4096, 16 << 20, 3 << 30, (1 << 20) + 1] {
            let text = format_size(n);
            assert_eq!(parse_size(text.trim_end_matches("bytes")).unwrap(), n, "{text}");
        }
        assert_eq!(format_size(16 << 20), "16 MiB");
    }
}
