//! Human-readable counts, durations and byte sizes for the report and the progress lines.

/// `1234567` as `1,234,567`.
pub fn count(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A size in the short form used in headings: `1 K`, `10 K`, `1 M`, or the plain count.
pub fn short_count(value: u64) -> String {
    if value >= 1_000_000 && value.is_multiple_of(1_000_000) {
        format!("{} M", value / 1_000_000)
    } else if value >= 1_000 && value.is_multiple_of(1_000) {
        format!("{} K", value / 1_000)
    } else {
        count(value)
    }
}

/// Nanoseconds with three significant digits and the unit that fits: `812 ns`, `4.21 µs`, `1.30 s`.
pub fn nanoseconds(value: f64) -> String {
    let (scaled, unit) = if value < 1e3 {
        (value, "ns")
    } else if value < 1e6 {
        (value / 1e3, "µs")
    } else if value < 1e9 {
        (value / 1e6, "ms")
    } else {
        (value / 1e9, "s")
    };
    format!("{} {unit}", three_significant(scaled))
}

/// Seconds, formatted like [`nanoseconds`].
pub fn seconds(value: f64) -> String {
    nanoseconds(value * 1e9)
}

/// Bytes with the binary unit that fits: `512 B`, `3.42 KiB`, `480 MiB`.
pub fn bytes(value: f64) -> String {
    let (scaled, unit) = if value.abs() < 1024.0 {
        return format!("{value:.0} B");
    } else if value.abs() < 1024.0 * 1024.0 {
        (value / 1024.0, "KiB")
    } else if value.abs() < 1024.0 * 1024.0 * 1024.0 {
        (value / (1024.0 * 1024.0), "MiB")
    } else {
        (value / (1024.0 * 1024.0 * 1024.0), "GiB")
    };
    format!("{} {unit}", three_significant(scaled))
}

/// A ratio as `12.3×`.
pub fn ratio(value: f64) -> String {
    format!("{}×", three_significant(value))
}

fn three_significant(value: f64) -> String {
    if value.fract() == 0.0 || value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(short_count(10_000), "10 K");
        assert_eq!(short_count(1_000_000), "1 M");
        assert_eq!(short_count(16_351), "16,351");
        assert_eq!(nanoseconds(812.0), "812 ns");
        assert_eq!(nanoseconds(4_210.0), "4.21 µs");
        assert_eq!(seconds(1.3), "1.30 s");
        assert_eq!(seconds(2.0), "2 s");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.5 * 1024.0), "3.50 KiB");
        assert_eq!(bytes(64.0 * 1024.0), "64 KiB");
        assert_eq!(ratio(12.34), "12.3×");
    }
}
