//! Durations, byte sizes and counts as written on the command line, each
//! checked against the range its flag allows: a value outside it is a usage
//! error that names the range, never a panic or a huge allocation later.

use std::ops::RangeInclusive;
use std::time::Duration;

/// The longest duration any flag takes: past it, deadlines computed as
/// `now + duration` could overflow the clock, and no timeout or grace
/// period of sockit's makes sense beyond a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A value parser for clap: `value_parser = number_in::<usize>(1..=10)`.
pub trait FlagParser<T>: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {}
impl<T, F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static> FlagParser<T> for F {}

/// A whole number within `range`, for a count flag (`--max-conns`,
/// `-c`, ...). The range is checked before the value is converted to `T`,
/// so `T` may be narrower than `u64`.
///
/// ```
/// let p = sockit::units::number_in::<usize>(1..=100);
/// assert_eq!(p("42"), Ok(42));
/// assert!(p("101").unwrap_err().contains("(1 to 100)"));
/// assert!(p("18446744073709551616").unwrap_err().contains("(1 to 100)"));
/// ```
pub fn number_in<T: TryFrom<u64>>(range: RangeInclusive<u64>) -> impl FlagParser<T> {
    move |s: &str| {
        let t = s.trim();
        let bounds = format!("({} to {})", range.start(), range.end());
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("'{t}' is not a whole number {bounds}"));
        }
        // All digits, so the only way parsing fails is a number too big.
        t.parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| format!("{t} is out of range {bounds}"))
    }
}

/// A byte size (as [`parse_size`] reads it) within `range`.
///
/// ```
/// let p = sockit::units::size_in(1..=16 << 20);
/// assert_eq!(p("64KiB"), Ok(65536));
/// assert!(p("100TiB").unwrap_err().contains("(1 to 16 MiB)"));
/// ```
pub fn size_in(range: RangeInclusive<u64>) -> impl FlagParser<u64> {
    move |s: &str| {
        let n = parse_size(s).map_err(|e| format!("{e} {}", size_bounds(&range)))?;
        match range.contains(&n) {
            true => Ok(n),
            false => Err(format!("size '{}' is out of range {}", s.trim(), size_bounds(&range))),
        }
    }
}

/// [`size_in`] for a size held in memory (`usize`).
pub fn usize_size_in(range: RangeInclusive<u64>) -> impl FlagParser<usize> {
    let parse = size_in(range);
    move |s: &str| parse(s).and_then(|n| usize::try_from(n).map_err(|_| format!("size '{s}' is too large")))
}

fn size_bounds(range: &RangeInclusive<u64>) -> String {
    let show = |n: u64| if n < 1024 { n.to_string() } else { format_size(n) };
    format!("({} to {})", show(*range.start()), show(*range.end()))
}

/// A duration (as [`parse_duration`] reads it) within `range`; every
/// duration flag is also held to [`MAX_DURATION`] by [`parse_duration`].
///
/// ```
/// use std::time::Duration;
/// let p = sockit::units::duration_in(Duration::ZERO..=Duration::from_secs(3600));
/// assert_eq!(p("2m"), Ok(Duration::from_secs(120)));
/// assert!(p("2h").unwrap_err().contains("(0s to 1h)"));
/// ```
pub fn duration_in(range: RangeInclusive<Duration>) -> impl FlagParser<Duration> {
    move |s: &str| {
        let bounds = format!("({} to {})", format_duration(*range.start()), format_duration(*range.end()));
        let d = parse_duration_unchecked(s)?;
        match range.contains(&d) {
            true => Ok(d),
            false => Err(format!("duration '{}' is out of range {bounds}", s.trim())),
        }
    }
}

/// Writes a duration the way [`parse_duration`] reads it back, in the
/// largest unit that divides it: `365d`, `5m`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d.subsec_nanos() % 1_000_000 != 0 {
        return format!("{}s", d.as_secs_f64());
    }
    let ms = d.as_millis();
    let units = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s"), (1, "ms")];
    let (unit, name) = units.iter().find(|(u, _)| ms % u == 0).unwrap_or(&(1, "ms"));
    format!("{}{name}", ms / unit)
}

/// Parses a duration: `5s`, `300ms`, `2m`, `1h 30m` (humantime), or a bare
/// number of seconds (`5`, `0.5`), the way `nc -w 5` takes it. Anything
/// past [`MAX_DURATION`] is refused.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(sockit::units::parse_duration("1.5").unwrap(), Duration::from_millis(1500));
/// assert_eq!(sockit::units::parse_duration("5m").unwrap(), Duration::from_secs(300));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    duration_in(Duration::ZERO..=MAX_DURATION)(s)
}

fn parse_duration_unchecked(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration '{s}'"));
    }
    humantime::parse_duration(s).map_err(|e| format!("invalid duration '{s}': {e} (examples: 5s, 300ms, 2m, 1h)"))
}

/// Parses a byte size: `65536`, `64k`, `64KiB`, `1M`, `2GiB`, `1T`
/// (binary units). Flags check it against their range with [`size_in`].
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
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        other => return Err(format!("unknown size unit '{other}' in '{s}': use k, M, G, T or P")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("size '{s}' is too large"))
}

/// Writes a byte size the way [`parse_size`] reads it back: `16 TiB`, `16 MiB`,
/// `64 KiB`, or `1000 bytes` when no binary unit divides it.
pub fn format_size(n: u64) -> String {
    match n {
        n if n >= 1 << 40 && n % (1 << 40) == 0 => format!("{} TiB", n >> 40),
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// A byte count for people, as the progress bars show it: binary prefixes
/// and two decimals. (The library's own, so its messages need no
/// progress-bar crate.)
///
/// ```
/// assert_eq!(sockit::units::human_size(512), "512 B");
/// assert_eq!(sockit::units::human_size(3 << 19), "1.50 MiB");
/// ```
pub fn human_size(n: u64) -> String {
    const PREFIXES: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Precision lost past 2^53 bytes does not show in two decimals.
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < PREFIXES.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", PREFIXES[i])
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
        assert_eq!(format_size(16 << 40), "16 TiB");
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
    }

    #[test]
    fn durations_past_a_year_are_refused() {
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        for huge in ["366d", "1e19", "1000years"] {
            assert!(parse_duration(huge).unwrap_err().contains("out of range (0s to 365d)"), "{huge}");
        }
        for (d, text) in [(0, "0s"), (1500, "1500ms"), (90_000, "90s"), (86_400_000, "1d"), (7_200_000, "2h")] {
            let d = Duration::from_millis(d);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_micros(1500)), "0.0015s");
    }

    #[test]
    fn ranges_are_checked_and_named() {
        let count = number_in::<u32>(1..=1000);
        assert_eq!(count(" 7 "), Ok(7));
        for bad in ["0", "1001", "18446744073709551616", "99999999999999999999999"] {
            assert_eq!(count(bad).unwrap_err(), format!("{bad} is out of range (1 to 1000)"));
        }
        for bad in ["-1", "", "1e3", "ten"] {
            assert!(count(bad).unwrap_err().contains("not a whole number (1 to 1000)"), "{bad}");
        }
        // The range is checked before the conversion: a u8 cannot wrap.
        assert!(number_in::<u8>(0..=1000)("300").unwrap_err().contains("out of range"));
        let size = usize_size_in(1..=16 << 20);
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert!(size("0").unwrap_err().contains("(1 to 16 MiB)"));
        assert!(size("99999999999G").unwrap_err().contains("(1 to 16 MiB)"));
        let short = duration_in(Duration::from_millis(1)..=Duration::from_secs(60));
        assert!(short("0").unwrap_err().contains("(1ms to 1m)"));
        assert_eq!(short("1m"), Ok(Duration::from_secs(60)));
    }
}
