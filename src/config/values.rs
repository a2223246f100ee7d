//! Value parsers shared by every setting: each turns one flag's text into its typed value, or
//! into the message [`ConfigError`](super::ConfigError) prints after the flag's name. They are
//! clap `value_parser`s, so a bad value fails while the command line is read, whatever its
//! source (flag, environment variable or default).

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;

use super::secret::Secret;

/// A whole number from 1 to `max` (surrounding blanks ignored).
pub fn whole<T>(max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: FromStr + PartialOrd + Default + Display + Copy + Send + Sync + 'static,
{
    move |raw| match raw.trim().parse::<T>() {
        Ok(n) if n > T::default() && n <= max => Ok(n),
        _ => Err(format!("{raw:?} is not a whole number from 1 to {max}")),
    }
}

/// A positive number up to `max`, fractions allowed.
pub fn positive(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |raw| match raw.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= max => Ok(n),
        _ => Err(format!("{raw:?} is not a positive number up to {max}")),
    }
}

/// A duration given in whole seconds, from 1 s to `max`.
pub fn whole_secs(
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let secs = whole(max.as_secs());
    move |raw| secs(raw).map(Duration::from_secs)
}

/// A duration given in seconds, fractions allowed, up to `max`.
pub fn positive_secs(
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let secs = positive(max.as_secs_f64());
    move |raw| secs(raw).map(Duration::from_secs_f64)
}

/// A duration given in whole milliseconds, from 1 ms to `max`.
pub fn whole_millis(
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    let millis = whole(u64::try_from(max.as_millis()).unwrap_or(u64::MAX));
    move |raw| millis(raw).map(Duration::from_millis)
}

/// `duration` as a `--…-secs` flag writes it: the default shown in `--help`.
pub fn secs_text(duration: Duration) -> String {
    duration.as_secs_f64().to_string()
}

/// `duration` as a `--…-ms` flag writes it: the default shown in `--help`.
pub fn millis_text(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// A secret of at least `min_bytes` bytes.
pub fn secret(
    min_bytes: usize,
) -> impl Fn(&str) -> Result<Secret, String> + Clone + Send + Sync + 'static {
    move |raw| {
        if raw.len() < min_bytes {
            Err(format!("must be at least {min_bytes} bytes long"))
        } else {
            Ok(Secret::new(raw))
        }
    }
}

/// One of `E`'s names (surrounding blanks ignored); the error lists them all.
pub fn one_of<E: ValueEnum>(raw: &str) -> Result<E, String> {
    let raw = raw.trim();
    E::from_str(raw, false).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(E::to_possible_value)
            .map(|value| value.get_name().to_owned())
            .collect();
        format!("{raw:?} is not one of: {}", names.join(", "))
    })
}

/// The name [`one_of`] reads for `value`: how such an enum displays, so that its default can be
/// written once as a value.
pub fn name_of<E: ValueEnum>(value: &E) -> String {
    value
        .to_possible_value()
        .map(|value| value.get_name().to_owned())
        .unwrap_or_default()
}

/// An `http://` or `https://` URL with a host, without a trailing slash.
pub fn http_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url.to_owned()),
        _ => Err(format!("{raw:?} is not an http:// or https:// URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_are_bounded_on_both_sides() {
        let parse = whole(10u32);
        assert_eq!(parse(" 7 "), Ok(7));
        for bad in ["0", "11", "-1", "1.5", "lots", ""] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("from 1 to 10"), "case {bad:?}: {err}");
        }
    }

    #[test]
    fn positive_numbers_refuse_nan_infinity_and_zero() {
        let parse = positive(100.0);
        assert_eq!(parse("0.5"), Ok(0.5));
        for bad in ["0", "NaN", "inf", "101", "-3"] {
            assert!(parse(bad).is_err(), "case {bad:?}");
        }
    }

    #[test]
    fn durations_keep_their_unit_and_their_default_text_round_trips() {
        assert_eq!(
            whole_millis(Duration::from_secs(60))("2000"),
            Ok(Duration::from_secs(2))
        );
        assert_eq!(
            positive_secs(Duration::from_secs(60))("0.25"),
            Ok(Duration::from_millis(250))
        );
        for duration in [Duration::from_secs(30), Duration::from_millis(1_500)] {
            let parse = positive_secs(Duration::from_secs(60));
            assert_eq!(parse(&secs_text(duration)), Ok(duration));
        }
        assert_eq!(millis_text(Duration::from_secs(2)), "2000");
        assert!(whole_secs(Duration::from_secs(60))("61").is_err());
    }
}
