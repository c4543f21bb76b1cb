//! A side-by-side line diff of two config values, each pretty-printed JSON: the longest common
//! subsequence of lines, then rows pairing what was removed on the left with what was added
//! on the right, as a code review shows them. Values are small (a config value, a route
//! table); past [`MAX_LINES`] a side the diff says so instead of spending quadratic time.

/// Past this many lines a side, only the changed-paths list is shown.
pub(super) const MAX_LINES: usize = 2000;

/// One row of the side-by-side view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Row {
    /// The same line on both sides (line numbers left and right).
    Same(usize, usize, String),
    /// A line on the left replaced by one on the right.
    Changed(usize, String, usize, String),
    /// A line only on the left.
    Removed(usize, String),
    /// A line only on the right.
    Added(usize, String),
}

/// Numbered lines waiting to be paired.
type Lines<'a> = Vec<(usize, &'a str)>;

/// The rows, or `None` when a side is longer than [`MAX_LINES`].
pub(super) fn side_by_side(left: &str, right: &str) -> Option<Vec<Row>> {
    let a: Vec<&str> = left.lines().collect();
    let b: Vec<&str> = right.lines().collect();
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        return None;
    }
    // lcs[i][j]: the common subsequence's length of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut rows = Vec::new();
    let (mut removed, mut added): (Lines<'_>, Lines<'_>) = (Vec::new(), Vec::new());
    let flush = |rows: &mut Vec<Row>, removed: &mut Lines<'_>, added: &mut Lines<'_>| {
        let pairs = removed.len().max(added.len());
        for k in 0..pairs {
            rows.push(match (removed.get(k), added.get(k)) {
                (Some(&(l, x)), Some(&(r, y))) => Row::Changed(l, x.to_owned(), r, y.to_owned()),
                (Some(&(l, x)), None) => Row::Removed(l, x.to_owned()),
                (None, Some(&(r, y))) => Row::Added(r, y.to_owned()),
                (None, None) => continue,
            });
        }
        removed.clear();
        added.clear();
    };
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            flush(&mut rows, &mut removed, &mut added);
            rows.push(Row::Same(i + 1, j + 1, a[i].to_owned()));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            added.push((j + 1, b[j]));
            j += 1;
        } else {
            removed.push((i + 1, a[i]));
            i += 1;
        }
    }
    flush(&mut rows, &mut removed, &mut added);
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_are_all_the_same() {
        let rows = side_by_side("a\nb", "a\nb").unwrap();
        assert_eq!(rows, vec![Row::Same(1, 1, "a".into()), Row::Same(2, 2, "b".into())]);
    }

    #[test]
    fn a_replaced_line_pairs_up_and_the_rest_stays_aligned() {
        let left = "{\n  \"page_size\": 20,\n  \"max\": 100\n}";
        let right = "{\n  \"page_size\": 30,\n  \"max\": 100,\n  \"new\": true\n}";
        let rows = side_by_side(left, right).unwrap();
        assert_eq!(rows[0], Row::Same(1, 1, "{".into()));
        assert_eq!(
            rows[1],
            Row::Changed(2, "  \"page_size\": 20,".into(), 2, "  \"page_size\": 30,".into())
        );
        assert!(rows.contains(&Row::Added(4, "  \"new\": true".into())), "{rows:?}");
        assert_eq!(rows.last(), Some(&Row::Same(4, 5, "}".into())));
    }

    #[test]
    fn removed_lines_stand_alone_on_the_left() {
        let rows = side_by_side("a\nb\nc", "a\nc").unwrap();
        assert_eq!(
            rows,
            vec![
                Row::Same(1, 1, "a".into()),
                Row::Removed(2, "b".into()),
                Row::Same(3, 2, "c".into())
            ]
        );
    }

    #[test]
    fn a_huge_value_is_not_diffed_line_by_line() {
        let big = "x\n".repeat(MAX_LINES + 1);
        assert!(side_by_side(&big, "x").is_none());
    }
}
