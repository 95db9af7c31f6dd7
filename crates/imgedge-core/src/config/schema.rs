//! YAML → raw schema with every schema problem reported, not only the first.
//!
//! serde stops at the first error. To find the next one the offending node is taken out
//! of the document and the rest deserialized again, until it parses: an unknown key is
//! removed, a value of the wrong type is removed (and the "missing field" that follows is
//! not reported twice), a mapping missing a required key is removed whole. Removed
//! sequence elements are remembered, so later problems name their original index.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use serde_yaml::Value;

use super::Problem;

/// At most this many schema problems are reported (a file that is not a config at all
/// would otherwise list every key).
const MAX_PROBLEMS: usize = 50;

/// A problem found while deserializing, and the document paths taken out to go on.
pub(super) struct Parsed<T> {
    pub raw: Option<T>,
    pub problems: Vec<Problem>,
    /// Paths (as reported) of the nodes removed: later checks of what is under them
    /// would only repeat these problems.
    pub removed: Vec<String>,
}

/// Deserializes `text`, collecting every schema problem.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Parsed<T> {
    // the first error from the text itself: it carries a line and column
    let first = match serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(raw) => return Parsed { raw: Some(raw), problems: Vec::new(), removed: Vec::new() },
        Err(e) => e,
    };
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            // not YAML: nothing more can be read
            let problem = problem(&first.path().to_string(), first.inner().to_string());
            return Parsed { raw: None, problems: vec![problem], removed: Vec::new() };
        }
    };
    let mut out = Parsed { raw: None, problems: Vec::new(), removed: Vec::new() };
    let mut shifts = Shifts::default();
    let mut message = Some(first.inner().to_string());
    let mut just_removed: Option<(String, String)> = None;
    for _ in 0..MAX_PROBLEMS {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(raw) => {
                out.raw = Some(raw);
                return out;
            }
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let at = e.path().to_string();
        let text = message.take().unwrap_or_else(|| e.inner().to_string());
        let missing = field_in(&text, "missing field `");
        // a value removed for its type leaves a "missing field" for the same key: said once
        let repeat = matches!((&just_removed, &missing), (Some((was, key)), Some(m)) if *was == at && key == m);
        let unknown = field_in(&text, "unknown field `");
        let mut target = segments.clone();
        if let Some(key) = &unknown {
            if !matches!(target.last(), Some(Segment::Map { key: k }) if k == key) {
                target.push(Segment::Map { key: key.clone() });
            }
        }
        let path = shifts.display(&target);
        if !repeat {
            out.problems.push(problem(&shifts.display(&segments), text));
        }
        if target.is_empty() || !remove(&mut value, &target, &mut shifts) {
            return out;
        }
        out.removed.push(path);
        just_removed = match (target.last(), at.rsplit_once('.')) {
            (Some(Segment::Map { key }), Some((parent, _))) if missing.is_none() && unknown.is_none() => {
                Some((parent.to_owned(), key.clone()))
            }
            (Some(Segment::Map { key }), None) if missing.is_none() && unknown.is_none() => {
                Some((".".to_owned(), key.clone()))
            }
            _ => None,
        };
    }
    out
}

/// The name in "`...`" after `prefix` in a serde message.
fn field_in(message: &str, prefix: &str) -> Option<String> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(rest[..rest.find('`')?].to_owned())
}

fn problem(path: &str, message: String) -> Problem {
    // serde repeats the path in front of nested messages
    let message = match message.strip_prefix(path).and_then(|m| m.strip_prefix(": ")) {
        Some(m) if !path.is_empty() => m.to_owned(),
        _ => message,
    };
    Problem { path: if path == "." { String::new() } else { path.to_owned() }, tenant: None, message }
}

/// Indices removed from sequences, so that paths are reported with the original ones.
#[derive(Default)]
struct Shifts {
    /// (path of the sequence with original indices, original index removed)
    removed: Vec<(String, usize)>,
}

impl Shifts {
    /// `segments` (indices of the document as it is now) with original indices.
    fn display(&self, segments: &[Segment]) -> String {
        let mut out = String::new();
        for seg in segments {
            match seg {
                Segment::Seq { index } => {
                    let original = self.original(&out, *index);
                    out.push_str(&format!("[{original}]"));
                }
                Segment::Map { key } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Enum { variant } => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(variant);
                }
                Segment::Unknown => out.push_str(".?"),
            }
        }
        out
    }

    fn original(&self, seq: &str, mut index: usize) -> usize {
        let mut gone: Vec<usize> = self.removed.iter().filter(|(p, _)| p == seq).map(|(_, i)| *i).collect();
        gone.sort_unstable();
        for g in gone {
            if g <= index {
                index += 1;
            }
        }
        index
    }
}

/// Removes the node at `path`; false if there is none.
fn remove(value: &mut Value, path: &[Segment], shifts: &mut Shifts) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut node = value;
    for seg in parents {
        let next = match (seg, node) {
            (Segment::Seq { index }, Value::Sequence(s)) => s.get_mut(*index),
            (Segment::Map { key }, Value::Mapping(m)) => m.get_mut(key.as_str()),
            (_, Value::Tagged(t)) => Some(&mut t.value),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return false,
        }
    }
    match (last, node) {
        (Segment::Seq { index }, Value::Sequence(s)) if *index < s.len() => {
            let seq = shifts.display(parents);
            let original = shifts.original(&seq, *index);
            shifts.removed.push((seq, original));
            s.remove(*index);
            true
        }
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Doc {
        name: String,
        #[serde(default)]
        size: Option<u32>,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // read by serde only
    struct Item {
        id: String,
        #[serde(default)]
        n: u32,
    }

    fn problems(text: &str) -> Vec<String> {
        parse::<Doc>(text).problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    #[test]
    fn every_problem_once_with_its_original_path() {
        let text = "name: x\nsize: big\ncolour: red\nitems:\n  - {n: 1}\n  - {id: a, n: z}\n  - {id: b, extra: 1}\n";
        let got = problems(text);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].starts_with("size: invalid type"), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("colour") || p.contains("unknown field `colour`")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("items[0]: missing field `id`")), "{got:#?}");
        assert!(got.iter().any(|p| p.starts_with("items[1].n: invalid type")), "{got:#?}");
        assert!(got.iter().any(|p| p.contains("unknown field `extra`") && p.starts_with("items[2]")), "{got:#?}");
    }

    #[test]
    fn a_required_value_of_the_wrong_type_is_one_problem() {
        let got = problems("name: [1, 2]\n");
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(got[0].starts_with("name: invalid type"), "{got:#?}");
    }

    #[test]
    fn good_and_unreadable_documents() {
        assert!(parse::<Doc>("name: x\n").raw.is_some());
        let broken = parse::<Doc>("name: [x\n");
        assert!(broken.raw.is_none());
        assert_eq!(broken.problems.len(), 1);
    }
}
