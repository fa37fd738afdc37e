//! Request parameters: form fields from the query string and a urlencoded body, times and durations.

use chrono::DateTime;

use crate::QueryError;

/// Form fields of a request in arrival order; names may repeat (`match[]`).
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Fields from the raw query string and, for POST, a `application/x-www-form-urlencoded` body.
    pub(crate) fn parse(query: Option<&str>, body: &[u8]) -> Self {
        let mut fields: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        fields.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
        Params(fields)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
    }

    /// A time parameter in milliseconds, or `default` when absent.
    pub(crate) fn time_ms(&self, name: &str, default: i64) -> Result<i64, QueryError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(raw) => parse_time_seconds(raw)
                .map(|seconds| (seconds * 1000.0).round() as i64)
                .map_err(|reason| QueryError::BadData(format!("invalid parameter \"{name}\": {reason}"))),
        }
    }

    /// A non-negative integer limit; absent or 0 means unlimited.
    pub(crate) fn limit(&self) -> Result<Option<usize>, QueryError> {
        match self.get("limit") {
            None | Some("") => Ok(None),
            Some(raw) => match raw.parse::<usize>() {
                Ok(0) => Ok(None),
                Ok(limit) => Ok(Some(limit)),
                Err(_) => Err(QueryError::BadData(format!(
                    "invalid parameter \"limit\": cannot parse {raw:?} to a valid limit"
                ))),
            },
        }
    }
}

/// Earliest and latest times the API accepts, as Prometheus uses for "no bound".
pub(crate) const MIN_TIME_MS: i64 = -9_223_372_036_854_775 / 1000 * 1000;
pub(crate) const MAX_TIME_MS: i64 = 9_223_372_036_854_775 / 1000 * 1000;

/// Parses Unix seconds (decimals allowed) or an RFC 3339 timestamp into Unix seconds.
pub fn parse_time_seconds(raw: &str) -> Result<f64, String> {
    if let Ok(seconds) = raw.parse::<f64>()
        && seconds.is_finite()
    {
        return Ok(seconds);
    }
    match DateTime::parse_from_rfc3339(raw) {
        Ok(time) => Ok(time.timestamp_millis() as f64 / 1000.0),
        Err(_) => Err(format!("cannot parse {raw:?} to a valid timestamp")),
    }
}

/// Parses a Prometheus duration (`5m`, `1h30m`, `250ms`) or float seconds into seconds.
pub fn parse_duration_seconds(raw: &str) -> Result<f64, String> {
    if let Ok(seconds) = raw.parse::<f64>() {
        return if seconds.is_finite() && seconds >= 0.0 {
            Ok(seconds)
        } else {
            Err(format!("invalid duration {raw:?}"))
        };
    }
    let invalid = || format!("cannot parse {raw:?} to a valid duration");
    let mut total_ms: u64 = 0;
    let mut rest = raw;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return Err(invalid()),
        };
        total_ms = number.checked_mul(unit_ms).and_then(|ms| total_ms.checked_add(ms)).ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    Ok(total_ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_both_forms() {
        assert_eq!(parse_time_seconds("1722506400.5"), Ok(1722506400.5));
        assert_eq!(parse_time_seconds("2024-08-01T10:00:00Z"), Ok(1722506400.0));
        assert_eq!(parse_time_seconds("2024-08-01T12:00:00.250+02:00"), Ok(1722506400.25));
        assert!(parse_time_seconds("yesterday").unwrap_err().contains("valid timestamp"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_seconds("1h30m"), Ok(5400.0));
        assert_eq!(parse_duration_seconds("250ms"), Ok(0.25));
        assert_eq!(parse_duration_seconds("15"), Ok(15.0));
        assert!(parse_duration_seconds("5x").is_err());
        assert!(parse_duration_seconds("m").is_err());
    }

    #[test]
    fn repeated_fields_from_query_and_body() {
        let params = Params::parse(Some("match%5B%5D=up&limit=5"), b"match[]=down");
        assert_eq!(params.all("match[]"), ["up", "down"]);
        assert_eq!(params.limit().unwrap(), Some(5));
    }
}
