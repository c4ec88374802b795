//! Where an audit's window starts: a while ago, or at a moment.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// The start of an audit's window, as `--since` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before the audit: `90m`, `2h`, `7d`.
    Ago(Duration),
    /// From this moment: an RFC 3339 time such as `2026-12-01T06:00:00Z`.
    At(SystemTime),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSince {
    #[error(
        "`{0}` is neither a duration (`90m`, `2h`) nor an RFC 3339 time (`2026-12-01T06:00:00Z`)"
    )]
    Unreadable(String),
    /// An audit from then would read nothing and pass: a mistyped year must not.
    #[error("{0} is still to come: an audit reads what has happened")]
    Future(String),
}

impl Since {
    /// How far back from `now` to read.
    pub fn window(self, now: SystemTime) -> Result<Duration, BadSince> {
        match self {
            Since::Ago(ago) => Ok(ago),
            Since::At(at) => now
                .duration_since(at)
                .map_err(|_| BadSince::Future(humantime::format_rfc3339(at).to_string())),
        }
    }
}

impl FromStr for Since {
    type Err = BadSince;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        // No duration parses as a time, nor a time as a duration: the order is free.
        if let Ok(ago) = humantime::parse_duration(text) {
            return Ok(Since::Ago(ago));
        }
        humantime::parse_rfc3339_weak(text)
            .map(Since::At)
            .map_err(|_| BadSince::Unreadable(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    /// 2026-12-01T08:00:00Z.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_112_000)
    }

    #[test]
    fn a_duration_reads_back_that_long() {
        assert_eq!(
            "90m".parse::<Since>(),
            Ok(Since::Ago(Duration::from_secs(5_400)))
        );
        let since: Since = "2h".parse().expect("a duration");
        assert_eq!(since.window(now()), Ok(Duration::from_secs(7_200)));
    }

    #[test]
    fn a_time_reads_back_to_it() {
        let since: Since = "2026-12-01T06:00:00Z".parse().expect("a time");
        assert_eq!(
            since,
            Since::At(UNIX_EPOCH + Duration::from_secs(1_796_104_800))
        );
        assert_eq!(since.window(now()), Ok(Duration::from_secs(7_200)));
        // Weak RFC 3339: a space for the `T`, and no zone (UTC).
        assert_eq!("2026-12-01 06:00:00".parse::<Since>(), Ok(since));
        // A time still to come is refused, not read as an empty, clean window.
        let later: Since = "2026-12-02T00:00:00Z".parse().expect("a time");
        assert_eq!(
            later.window(now()),
            Err(BadSince::Future("2026-12-02T00:00:00Z".into()))
        );
    }

    #[test]
    fn anything_else_is_refused_and_named() {
        for bad in ["", "yesterday", "2h ago", "2026-13-01T06:00:00Z", "-5m"] {
            let error = bad.parse::<Since>().expect_err(bad);
            assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
        }
    }
}
