//! "Did you mean ...?": the nearest valid name by edit distance.

/// Levenshtein distance between `a` and `b` (insertions, deletions, substitutions), over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    // prev[j] = distance between the first i-1 chars of a and the first j chars of b.
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate nearest to `word`, if it is close enough to be a plausible typo (at most a
/// third of the longer name's length, and at least 1 edit allowed).
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (word.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Parses serde's "unknown field `x`, expected one of `a`, `b`" (or "expected `a`") into the
/// field and the candidates.
pub fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.split("unknown field `").nth(1)?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected").map(|(_, e)| e).unwrap_or("");
    let candidates = expected.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((field.to_string(), candidates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("steps", "steps"), 0);
        assert_eq!(edit_distance("stepz", "steps"), 1);
    }

    #[test]
    fn nearest_only_when_close() {
        let c = ["steps", "eval_every", "seed"];
        assert_eq!(nearest("stepz", c), Some("steps"));
        assert_eq!(nearest("eval_evry", c), Some("eval_every"));
        assert_eq!(nearest("learning_rate", c), None);
    }

    #[test]
    fn serde_messages_are_parsed() {
        let m = "unknown field `stepz`, expected one of `steps`, `eval_every`, `seed`";
        let (f, c) = parse_unknown_field(m).unwrap();
        assert_eq!(f, "stepz");
        assert_eq!(c, ["steps", "eval_every", "seed"]);
        let (f, c) = parse_unknown_field("unknown field `x`, expected `path`").unwrap();
        assert_eq!((f.as_str(), c), ("x", vec!["path".to_string()]));
        let (_, c) = parse_unknown_field("unknown field `x`, there are no fields").unwrap();
        assert!(c.is_empty());
        assert!(parse_unknown_field("missing field `batch`").is_none());
    }
}
