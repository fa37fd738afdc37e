use super::*;

fn data(labels: &[(&str, &str)], value: f64) -> TemplateData {
    TemplateData {
        labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        value,
        ..TemplateData::default()
    }
}

fn render(text: &str, value: f64) -> String {
    expand(text, &data(&[("instance", "db-1:9100"), ("job", "node")], value)).unwrap()
}

#[test]
fn floats_print_as_go_prints_them() {
    let cases = [
        (3.0, "3"),
        (100000.0, "100000"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (2.5e-7, "2.5e-07"),
        (1e21, "1e+21"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-42.5, "-42.5"),
        (f64::INFINITY, "+Inf"),
        (f64::NAN, "NaN"),
    ];
    for (v, expected) in cases {
        assert_eq!(go_float(v, None), expected, "{v}");
    }
    assert_eq!(go_float(1234.5678, Some(4)), "1235");
    assert_eq!(go_float(12345.0, Some(4)), "1.234e+04");
    assert_eq!(go_float(1.5, Some(4)), "1.5");
    assert_eq!(go_float(0.000012345, Some(4)), "1.234e-05");
}

#[test]
fn humanize_functions_match_prometheus() {
    assert_eq!(humanize(1234567.0), "1.235M");
    assert_eq!(humanize(1000.0), "1k");
    assert_eq!(humanize(-1234.0), "-1.234k");
    assert_eq!(humanize(0.001234), "1.234m");
    assert_eq!(humanize(0.0), "0");
    assert_eq!(humanize(12.0), "12");
    assert_eq!(humanize_1024(1048576.0), "1Mi");
    assert_eq!(humanize_1024(1536.0), "1.5ki");
    assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
    assert_eq!(humanize_duration(3661.0), "1h 1m 1s");
    assert_eq!(humanize_duration(61.0), "1m 1s");
    assert_eq!(humanize_duration(1.5), "1.5s");
    assert_eq!(humanize_duration(0.0015), "1.5ms");
    assert_eq!(humanize_timestamp(1_700_000_000.5), "2023-11-14 22:13:20.5 +0000 UTC");
    assert_eq!(render("{{ 0.1234 | humanizePercentage }}", 0.0), "12.34%");
}

#[test]
fn labels_values_and_pipelines_render() {
    assert_eq!(
        render("{{ $labels.instance }} of {{ .Labels.job }} is at {{ $value | humanize }}", 1234567.0),
        "db-1:9100 of node is at 1.235M"
    );
    assert_eq!(render("[{{ $labels.missing }}]", 0.0), "[]", "missing keys render empty");
    assert_eq!(render("{{ printf \"%.2f\" $value }}", 0.12345), "0.12");
    assert_eq!(render("{{ printf \"%s=%d (%5.1f%%)\" $labels.job 7 $value }}", 12.34), "node=7 ( 12.3%)");
    assert_eq!(render("{{ $labels.instance | stripPort | toUpper }}", 0.0), "DB-1");
    assert_eq!(render("{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}", 0.0), "db-1");
    assert_eq!(render("{{ $v := 2.0 }}{{ $v }}", 0.0), "2");
}

#[test]
fn conditions_and_trimming() {
    let text = "{{ if gt $value 100.0 }}high{{ else if gt $value 10.0 }}medium{{ else }}low{{ end }}";
    assert_eq!(render(text, 500.0), "high");
    assert_eq!(render(text, 50.0), "medium");
    assert_eq!(render(text, 5.0), "low");
    assert_eq!(render("a  {{- /* note */ -}}  b", 0.0), "ab");
    assert_eq!(
        render("{{ if and (eq $labels.job \"node\") (not (eq $labels.instance \"x\")) }}yes{{ end }}", 0.0),
        "yes"
    );
}

#[test]
fn bad_templates_are_rejected_when_parsed() {
    for text in [
        "{{ $labels.x ",
        "{{ query \"up\" }}",
        "{{ if true }}no end",
        "{{ end }}",
        "{{ \"open }}",
        "{{ range . }}{{ end }}",
    ] {
        assert!(Template::parse(text).is_err(), "{text:?} should not parse");
    }
    assert!(Template::parse("{{ nosuch 1 }}").unwrap_err().0.contains("nosuch"));
}
