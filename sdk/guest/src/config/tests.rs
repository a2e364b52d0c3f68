use super::*;
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Settings {
    interval_seconds: u64,
    threshold: f64,
    verbose: bool,
    unit: Unit,
    #[serde(default)]
    sites: Vec<String>,
    label: Option<String>,
    #[serde(default)]
    name: String,
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn environment_variables_fill_typed_fields_by_prefix() {
    let s: Settings = from_pairs(
        vars(&[
            ("THERMO_INTERVAL_SECONDS", "5"),
            ("THERMO_THRESHOLD", " 61.5 "),
            ("THERMO_VERBOSE", "yes"),
            ("THERMO_UNIT", "celsius"),
            ("THERMO_SITES", "barn, silo"),
            ("THERMO_NAME", "007"),
            ("OTHER_LABEL", "not mine"),
            ("PATH", "/bin"),
        ]),
        "THERMO_",
    )
    .unwrap();
    assert_eq!(
        s,
        Settings {
            interval_seconds: 5,
            threshold: 61.5,
            verbose: true,
            unit: Unit::Celsius,
            sites: vec!["barn".into(), "silo".into()],
            label: None,
            // Digits stay text when the field is text.
            name: "007".into(),
        }
    );
}

#[test]
fn a_bad_value_names_the_variable_and_the_value() {
    let err = from_pairs::<Settings, _>(
        vars(&[
            ("T_INTERVAL_SECONDS", "-3"),
            ("T_THRESHOLD", "1"),
            ("T_VERBOSE", "1"),
            ("T_UNIT", "celsius"),
        ]),
        "T_",
    )
    .unwrap_err();
    assert_eq!(err.source.as_deref(), Some("T_INTERVAL_SECONDS"));
    assert!(
        err.message.contains("\"-3\" is not a non-negative integer"),
        "{err}"
    );

    let err = from_pairs::<Settings, _>(
        vars(&[
            ("T_INTERVAL_SECONDS", "3"),
            ("T_THRESHOLD", "1"),
            ("T_VERBOSE", "maybe"),
            ("T_UNIT", "kelvin"),
        ]),
        "T_",
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("T_VERBOSE: ") || err.to_string().starts_with("T_UNIT: "),
        "{err}"
    );
}

#[test]
fn a_missing_field_names_the_variable_to_set() {
    let err = from_pairs::<Settings, _>(vars(&[("T_THRESHOLD", "1")]), "T_").unwrap_err();
    assert_eq!(err.source.as_deref(), Some("T_INTERVAL_SECONDS"));
    assert!(err.message.contains("missing field"), "{err}");
}

#[test]
fn a_mounted_directory_fills_fields_from_files() {
    let dir = std::env::temp_dir().join(format!("spoke-guest-config-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    std::fs::write(dir.join("interval-seconds"), "7\n").unwrap();
    std::fs::write(dir.join("threshold"), "2.5").unwrap();
    std::fs::write(dir.join("verbose"), "false\n").unwrap();
    std::fs::write(dir.join("unit"), "fahrenheit").unwrap();
    std::fs::write(dir.join("label"), "barn\n").unwrap();
    let s: Settings = from_dir(&dir).unwrap();
    assert_eq!(s.interval_seconds, 7);
    assert_eq!(s.unit, Unit::Fahrenheit);
    assert_eq!(s.label.as_deref(), Some("barn"));

    std::fs::write(dir.join("threshold"), "hot").unwrap();
    let err = from_dir::<Settings>(&dir).unwrap_err();
    assert_eq!(
        err.source.as_deref(),
        Some(dir.join("threshold").display().to_string().as_str())
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let err = from_dir::<Settings>(&dir).unwrap_err();
    assert!(err.message.contains("cannot list"), "{err}");
}

#[test]
fn keys_in_kebab_and_camel_case_match_snake_case_fields() {
    assert_eq!(normalise("interval-seconds"), "interval_seconds");
    assert_eq!(normalise("intervalSeconds"), "interval_seconds");
    assert_eq!(normalise("log.level"), "log_level");
    assert_eq!(normalise("plain"), "plain");
}
