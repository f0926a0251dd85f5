//! Answer normalisation for exact matching: whitespace, case and numeric forms.

/// Normalises an answer for comparison: trims, collapses whitespace runs to one space, lowercases,
/// and rewrites a plain decimal number in canonical form (see [`canonical_number`]), so that
/// `" 042 "`, `"42"`, `"+42.0"` and `"42."` are all `"42"`.
pub fn normalize_answer(s: &str) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    canonical_number(&collapsed).unwrap_or(collapsed)
}

/// The canonical form of a plain decimal number, or `None` if `s` is not one.
///
/// Accepted: an optional sign, ASCII digits (optionally grouped by commas in threes, as in
/// `1,234`), and an optional fraction after `.`. Canonical: no `+`, no commas, no leading zeros,
/// no trailing fractional zeros, no trailing `.`, and `0` for negative zero. Other scripts' digits
/// (`٤٢`) are not numbers here, so they only ever equal themselves.
pub fn canonical_number(s: &str) -> Option<String> {
    let (negative, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !frac_part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = ungroup(int_part)?;
    let int_trim = digits.trim_start_matches('0');
    let frac_trim = frac_part.trim_end_matches('0');
    let int_canon = if int_trim.is_empty() { "0" } else { int_trim };
    let mut out = String::with_capacity(s.len());
    if negative && (int_canon != "0" || !frac_trim.is_empty()) {
        out.push('-');
    }
    out.push_str(int_canon);
    if !frac_trim.is_empty() {
        out.push('.');
        out.push_str(frac_trim);
    }
    Some(out)
}

/// The integer part's digits with thousands commas removed; `None` if it is malformed.
fn ungroup(int_part: &str) -> Option<String> {
    if !int_part.contains(',') {
        return int_part.bytes().all(|b| b.is_ascii_digit()).then(|| int_part.to_string());
    }
    let groups: Vec<&str> = int_part.split(',').collect();
    let first_ok = (1..=3).contains(&groups[0].len());
    let rest_ok = groups[1..].iter().all(|g| g.len() == 3);
    let digits_ok = groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit()));
    (first_ok && rest_ok && digits_ok).then(|| groups.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_forms() {
        for (raw, want) in [
            ("042", "42"),
            ("+42", "42"),
            ("42.0", "42"),
            ("42.", "42"),
            ("4.50", "4.5"),
            (".5", "0.5"),
            ("-0", "0"),
            ("-0.00", "0"),
            ("-007", "-7"),
            ("1,234", "1234"),
            ("12,345,678.90", "12345678.9"),
            ("0", "0"),
        ] {
            assert_eq!(canonical_number(raw).as_deref(), Some(want), "{raw}");
        }
        for raw in ["", "-", ".", "1,2", "1,2345", "12a", "1.2.3", "٤٢", "1e5", "--1", "1 2", ",123"] {
            assert_eq!(canonical_number(raw), None, "{raw}");
        }
    }

    #[test]
    fn text_forms() {
        assert_eq!(normalize_answer("  Hello \t  World\n"), "hello world");
        assert_eq!(normalize_answer(" 0042 "), "42");
        assert_eq!(normalize_answer("POSITIVE"), "positive");
        assert_eq!(normalize_answer(""), "");
    }
}
