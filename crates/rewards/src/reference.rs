//! Reading typed fields out of an example's reference data, with errors that name the field.
//!
//! Custom rewards can use these too, so their errors look like the built-in ones.

use crate::RewardError;
use serde_json::Value;

fn bad(reward: &str, field: &str, reason: impl Into<String>) -> RewardError {
    RewardError::Reference { reward: reward.to_string(), field: field.to_string(), reason: reason.into() }
}

/// The raw value of `field`; an error when the reference is not an object or lacks the field.
pub fn get<'v>(reward: &str, reference: &'v Value, field: &str) -> Result<&'v Value, RewardError> {
    let obj =
        reference.as_object().ok_or_else(|| bad(reward, field, "the reference is not a JSON object"))?;
    obj.get(field).ok_or_else(|| bad(reward, field, "missing"))
}

/// `field` as text: a JSON string as is, a JSON number in its shortest form (`42`, `4.5`).
pub fn get_text(reward: &str, reference: &Value, field: &str) -> Result<String, RewardError> {
    match get(reward, reference, field)? {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(bad(reward, field, format!("expected a string or a number, found {}", kind(other)))),
    }
}

/// `field` as an integer (a JSON integer, or a float with no fractional part such as `24.0`).
pub fn get_int(reward: &str, reference: &Value, field: &str) -> Result<i128, RewardError> {
    as_int(get(reward, reference, field)?).map_err(|why| bad(reward, field, why))
}

/// `field` as a non-empty array of integers.
pub fn get_int_list(reward: &str, reference: &Value, field: &str) -> Result<Vec<i128>, RewardError> {
    let v = get(reward, reference, field)?;
    let items = v
        .as_array()
        .ok_or_else(|| bad(reward, field, format!("expected an array of integers, found {}", kind(v))))?;
    if items.is_empty() {
        return Err(bad(reward, field, "the array is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, x)| as_int(x).map_err(|why| bad(reward, field, format!("item {i}: {why}"))))
        .collect()
}

fn as_int(v: &Value) -> Result<i128, String> {
    if let Some(i) = v.as_i64() {
        return Ok(i as i128);
    }
    if let Some(u) = v.as_u64() {
        return Ok(u as i128);
    }
    match v.as_f64() {
        // Whole floats up to 2^53 are exact, so `24.0` is accepted as 24.
        Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(f as i128),
        Some(f) => Err(format!("expected an integer, found {f}")),
        None => Err(format!("expected an integer, found {}", kind(v))),
    }
}

/// The JSON type of `v`, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn typed_fields() {
        let r = json!({"a": "42", "n": 7, "f": 24.0, "x": 2.5, "l": [1, 2, 3], "bad": [1, "2"]});
        assert_eq!(get_text("t", &r, "a").unwrap(), "42");
        assert_eq!(get_text("t", &r, "n").unwrap(), "7");
        assert_eq!(get_int("t", &r, "f").unwrap(), 24);
        assert!(get_int("t", &r, "x").is_err());
        assert_eq!(get_int_list("t", &r, "l").unwrap(), vec![1, 2, 3]);
        let e = get_int_list("t", &r, "bad").unwrap_err().to_string();
        assert!(e.contains("`bad`") && e.contains("item 1"), "{e}");
        let e = get_text("t", &r, "missing").unwrap_err().to_string();
        assert!(e.contains("`missing`") && e.contains("missing"), "{e}");
        assert!(get("t", &json!([1]), "a").unwrap_err().to_string().contains("not a JSON object"));
    }
}
