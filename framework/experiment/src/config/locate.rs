//! Finding the line of a dotted key path (`train.lr`, `strategy[1].hparams.lambda`) in TOML text.

use toml_edit::{ImDocument, Item, TableLike};

/// 1-based line of the key named by `path` in `text`, or of the deepest enclosing key that
/// exists (so a missing key points at its table). `None` if the text does not parse.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let doc = ImDocument::parse(text).ok()?;
    let mut current: &dyn TableLike = doc.as_table();
    let mut best: Option<usize> = None;
    for (name, index) in split_path(path) {
        let Some((key, child)) = current.get_key_value(name) else {
            break;
        };
        if let Some(span) = key.span() {
            best = Some(span.start);
        }
        let next: Option<&dyn TableLike> = match (child, index) {
            (Item::ArrayOfTables(a), Some(i)) => a.get(i).map(|t| {
                if let Some(span) = t.span() {
                    best = Some(span.start);
                }
                t as &dyn TableLike
            }),
            (Item::Value(toml_edit::Value::Array(arr)), Some(i)) => {
                if let Some(span) = arr.get(i).and_then(|v| v.span()) {
                    best = Some(span.start);
                }
                match arr.get(i) {
                    Some(toml_edit::Value::InlineTable(t)) => Some(t as &dyn TableLike),
                    _ => None,
                }
            }
            (_, Some(_)) => None,
            (item, None) => item.as_table_like(),
        };
        match next {
            Some(t) => current = t,
            None => break,
        }
    }
    best.map(|offset| line_at(text, offset))
}

/// Splits `a.b[2].c` into `[("a", None), ("b", Some(2)), ("c", None)]`.
fn split_path(path: &str) -> Vec<(&str, Option<usize>)> {
    path.split('.')
        .map(|seg| match seg.find('[') {
            Some(open) => {
                let idx = seg[open + 1..].trim_end_matches(']').parse().ok();
                (&seg[..open], idx)
            }
            None => (seg, None),
        })
        .collect()
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name = \"x\"\n\n[train]\nlr = 0.1\nbatch_size = 4\n\n[[strategy]]\nname = \"a\"\n\n[[strategy]]\nname = \"b\"\nhparams = { lambda = 3 }\n";

    #[test]
    fn finds_lines_of_nested_keys() {
        assert_eq!(line_of(TEXT, "name"), Some(1));
        assert_eq!(line_of(TEXT, "train.lr"), Some(4));
        assert_eq!(line_of(TEXT, "train.batch_size"), Some(5));
        assert_eq!(line_of(TEXT, "strategy[1].name"), Some(11));
        assert_eq!(line_of(TEXT, "strategy[1].hparams.lambda"), Some(12));
        assert_eq!(line_of(TEXT, "strategy[0]"), Some(7));
    }

    #[test]
    fn missing_key_points_at_its_table() {
        assert_eq!(line_of(TEXT, "train.epochs"), Some(3));
        assert_eq!(line_of(TEXT, "nothing.here"), None);
    }
}
