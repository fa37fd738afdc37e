//! Series selectors (`up{job="x"}`) as used by `match[]`, parsed with `promql-parser`.

use promql_parser::label::{MatchOp as ParsedOp, Matcher as ParsedMatcher};
use promql_parser::parser::{self, Expr, VectorSelector};
use vigil_tsdb::{METRIC_NAME, MatchOp, Matcher};

use crate::QueryError;

/// Parses a series selector into alternatives: the series wanted are those matching every matcher of
/// any one alternative (`{a="1" or b="2"}` has two).
pub fn parse_selector(text: &str) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let expr = parser::parse(text).map_err(|e| QueryError::BadData(format!("invalid parameter \"match[]\": {e}")))?;
    let Expr::VectorSelector(selector) = expr else {
        return Err(QueryError::BadData(format!("invalid parameter \"match[]\": {text:?} is not a series selector")));
    };
    matcher_alternatives(&selector)
}

/// The storage matchers of a parsed selector, one list per `or` alternative, each starting with the
/// metric-name matcher when the selector names a metric.
pub(crate) fn matcher_alternatives(selector: &VectorSelector) -> Result<Vec<Vec<Matcher>>, QueryError> {
    let name_matcher = selector.name.as_ref().map(|name| Matcher::equal(METRIC_NAME, name.clone()));
    let mut groups = vec![&selector.matchers.matchers];
    groups.extend(selector.matchers.or_matchers.iter());
    let mut alternatives = Vec::with_capacity(groups.len());
    for group in groups {
        let mut matchers: Vec<Matcher> = name_matcher.iter().cloned().collect();
        for parsed in group {
            matchers.push(convert(parsed)?);
        }
        alternatives.push(matchers);
    }
    Ok(alternatives)
}

/// Converts one parsed matcher to the storage's matcher.
pub(crate) fn convert(parsed: &ParsedMatcher) -> Result<Matcher, QueryError> {
    let op = match parsed.op {
        ParsedOp::Equal => MatchOp::Equal,
        ParsedOp::NotEqual => MatchOp::NotEqual,
        ParsedOp::Re(_) => MatchOp::Regex,
        ParsedOp::NotRe(_) => MatchOp::NotRegex,
    };
    Ok(Matcher::new(op, parsed.name.clone(), parsed.value.clone())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_matchers() {
        let alternatives = parse_selector(r#"up{job=~"api|web", env!="dev"}"#).unwrap();
        assert_eq!(alternatives.len(), 1);
        let described: Vec<String> =
            alternatives[0].iter().map(|m| format!("{}{:?}{}", m.name, m.op, m.value)).collect();
        assert_eq!(described, ["__name__Equalup", "jobRegexapi|web", "envNotEqualdev"]);
    }

    #[test]
    fn not_a_selector() {
        let error = parse_selector("sum(up)").unwrap_err();
        assert!(error.to_string().contains("is not a series selector"), "{error}");
    }
}
