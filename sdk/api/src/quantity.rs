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

/// A quantity as exact numbers: `mantissa × 10^exp10 × 1024^exp1024`.
/// Decimal fractions are not floats here: `9m` is nine thousandths, not
/// 0.00900000000000000019 (which rounded up to 10 millicores).
struct Exact {
    mantissa: u128,
    exp10: i64,
    exp1024: u32,
}

/// Reads `1.5Gi` as `15 × 10^-1 × 1024^3`.
fn split(s: &str) -> Result<Exact, QuantityError> {
    let s = s.trim();
    let cut = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(cut);
    let (negative, digits) = match num.as_bytes().first() {
        Some(b'-') => (true, &num[1..]),
        Some(b'+') => (false, &num[1..]),
        _ => (false, num),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
        return Err(QuantityError::Syntax);
    }
    // Trailing zeros of the fraction add no precision (`1.500`).
    let frac = frac.trim_end_matches('0');
    let mut mantissa: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        // More than 38 significant digits: beyond any quantity a node has.
        mantissa = mantissa
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(b - b'0')))
            .ok_or(QuantityError::Overflow)?;
    }
    let (exp10, exp1024): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        other => {
            let exp = other
                .strip_prefix(['e', 'E'])
                .ok_or(QuantityError::Syntax)?;
            let exp: i32 = exp.parse().map_err(|_| QuantityError::Syntax)?;
            (i64::from(exp), 0)
        }
    };
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative);
    }
    Ok(Exact {
        mantissa,
        exp10: exp10 - frac.len() as i64,
        exp1024,
    })
}

impl Exact {
    /// The value times `10^extra10`, rounded up to a whole number.
    fn ceil_scaled(&self, extra10: i64) -> Result<u64, QuantityError> {
        if self.mantissa == 0 {
            return Ok(0);
        }
        let whole = 1024u128
            .checked_pow(self.exp1024)
            .and_then(|b| self.mantissa.checked_mul(b))
            .ok_or(QuantityError::Overflow)?;
        let exp10 = self.exp10 + extra10;
        let value = if exp10 >= 0 {
            u32::try_from(exp10)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
                .and_then(|p| whole.checked_mul(p))
                .ok_or(QuantityError::Overflow)?
        } else {
            match u32::try_from(-exp10)
                .ok()
                .and_then(|e| 10u128.checked_pow(e))
            {
                Some(div) => whole.div_ceil(div),
                // Smaller than one unit, and not zero.
                None => 1,
            }
        };
        u64::try_from(value).map_err(|_| QuantityError::Overflow)
    }
}

impl Quantity {
    /// The value in whole units, rounded up (`64Mi` → 67108864 bytes).
    pub fn to_units(&self) -> Result<u64, QuantityError> {
        split(&self.0)?.ceil_scaled(0)
    }

    /// The value in thousandths, rounded up: cpu in millicores (`250m` → 250,
    /// `1.5` → 1500).
    pub fn to_milli(&self) -> Result<u64, QuantityError> {
        split(&self.0)?.ceil_scaled(3)
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
        // Exact decimals: in floating point these came out one too high
        // (found by the property test in tests/properties.rs).
        for (text, want) in [("9m", 9), ("16.1", 16100), ("13m", 13), ("0.5u", 1)] {
            assert_eq!(Quantity::from(text).to_milli(), Ok(want), "{text}");
        }
        assert_eq!(Quantity::from("3n").to_units(), Ok(1), "rounded up");
        assert_eq!(Quantity::from("1.500Ki").to_units(), Ok(1536));
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
