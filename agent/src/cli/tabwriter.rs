//! The table layout of calicoctl's `ps` and `wide` output: Go's `text/tabwriter` as
//! calicoctl configures it (`NewWriter(out, 5, 1, 3, ' ', 0)`), with every cell,
//! headings included, followed by a tab.
//!
//! So each column is as wide as its widest cell plus 3 spaces, and at least 5; cells
//! are left-aligned and padded with spaces, which leaves trailing spaces on every line,
//! exactly as calicoctl prints them.

const MIN_WIDTH: usize = 5;
const PADDING: usize = 3;

/// Lays out `rows` (the first one being the headings) as one table.
pub fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count() + PADDING)
                .fold(MIN_WIDTH, usize::max)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        for (cell, width) in row.iter().zip(&widths) {
            out.push_str(cell);
            let pad = width - cell.chars().count();
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn columns_are_widest_cell_plus_three_and_at_least_five() {
        let table = render(&[row(&["NAME", "TAGS"]), row(&["databases", ""])]);
        let expected = format!("NAME        TAGS   \ndatabases{}\n", " ".repeat(3 + 7));
        assert_eq!(table, expected);
    }

    #[test]
    fn short_columns_get_the_minimum_width() {
        assert_eq!(render(&[row(&["N"]), row(&["a"])]), "N    \na    \n");
    }
}
