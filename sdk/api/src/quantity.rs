//! Kubernetes resource quantities: `100m`, `64Mi`, `1.5`, `2G`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity as written by the user. YAML lets users write `cpu: 1` as a
/// number, so both numbers and strings are accepted and kept as text.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(pub String);

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
        }))
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A Kubernetes quantity: 100m, 64Mi, 1.5",
            "anyOf": [{"type": "string"}, {"type": "number"}]
        })
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity(s.to_string())
    }
}

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Syntax,
    #[error("must not be negative")]
    Negative,
    #[error("is too large")]
    Overflow,
}

/// Splits `1.5Gi` into its number and suffix multiplier (as a power of 2 or 10).
fn split(s: &str) -> Result<(f64, f64), QuantityError> {
    let s = s.trim();
    let cut = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(cut);
    if num.is_empty() || num == "+" || num == "-" {
        return Err(QuantityError::Syntax);
    }
    let value: f64 = num.parse().map_err(|_| QuantityError::Syntax)?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "u" => 1e-6,
        "n" => 1e-9,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        "Pi" => 1024.0f64.powi(5),
        "Ei" => 1024.0f64.powi(6),
        other => {
            let exp = other
                .strip_prefix(['e', 'E'])
                .ok_or(QuantityError::Syntax)?;
            let exp: i32 = exp.parse().map_err(|_| QuantityError::Syntax)?;
            10f64.powi(exp)
        }
    };
    if value < 0.0 {
        return Err(QuantityError::Negative);
    }
    Ok((value, mult))
}

impl Quantity {
    /// The value in whole units, rounded up (`64Mi` → 67108864 bytes).
    pub fn to_units(&self) -> Result<u64, QuantityError> {
        let (v, m) = split(&self.0)?;
        let total = (v * m).ceil();
        if !total.is_finite() || total >= u64::MAX as f64 {
            return Err(QuantityError::Overflow);
        }
        Ok(total as u64)
    }

    /// The value in thousandths, rounded up: cpu in millicores (`250m` → 250,
    /// `1.5` → 1500).
    pub fn to_milli(&self) -> Result<u64, QuantityError> {
        let (v, m) = split(&self.0)?;
        let total = (v * m * 1000.0).ceil();
        if !total.is_finite() || total >= u64::MAX as f64 {
            return Err(QuantityError::Overflow);
        }
        Ok(total as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_binary_and_decimal_suffixes() {
        let cases = [
            ("64Mi", 64 << 20),
            ("1Gi", 1 << 30),
            ("1k", 1000),
            ("2G", 2_000_000_000),
            ("1.5Ki", 1536),
            ("100", 100),
            ("1e3", 1000),
        ];
        for (text, want) in cases {
            assert_eq!(Quantity::from(text).to_units(), Ok(want), "{text}");
        }
    }

    #[test]
    fn reads_cpu_in_millicores() {
        for (text, want) in [("250m", 250), ("1", 1000), ("1.5", 1500), ("0.1", 100)] {
            assert_eq!(Quantity::from(text).to_milli(), Ok(want), "{text}");
        }
    }

    #[test]
    fn refuses_garbage_and_negatives() {
        for text in ["", "Mi", "12XB", "abc", "1.2.3", "--1"] {
            assert_eq!(
                Quantity::from(text).to_units(),
                Err(QuantityError::Syntax),
                "{text}"
            );
        }
        assert_eq!(
            Quantity::from("-1").to_units(),
            Err(QuantityError::Negative)
        );
        assert_eq!(
            Quantity::from("1e400").to_units(),
            Err(QuantityError::Overflow)
        );
    }

    #[test]
    fn yaml_numbers_become_quantities() {
        let q: Quantity = serde_json::from_str("2").unwrap();
        assert_eq!(q.0, "2");
        let q: Quantity = serde_json::from_str("0.5").unwrap();
        assert_eq!(q.to_milli(), Ok(500));
    }
}
