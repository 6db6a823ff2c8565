//! The box tables of calicoctl v0.x, drawn by Python's PrettyTable with its defaults:
//! `+`, `-` and `|` borders, one space of padding, every cell centred.

/// A one-column table: `heading`, then `rows` in the given order.
pub fn render_column(heading: &str, rows: &[String]) -> String {
    let width = rows
        .iter()
        .map(|row| row.chars().count())
        .fold(heading.chars().count(), usize::max);
    let border = format!("+{}+\n", "-".repeat(width + 2));
    let line = |text: &str| format!("| {} |\n", centre(text, width));
    let mut out = border.clone();
    out.push_str(&line(heading));
    out.push_str(&border);
    for row in rows {
        out.push_str(&line(row));
    }
    out.push_str(&border);
    out
}

/// PrettyTable's centring: when the spare room is odd, the extra space goes right of an
/// odd-length text and left of an even-length one.
fn centre(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let excess = width.saturating_sub(len);
    let (left, right) = if excess.is_multiple_of(2) {
        (excess / 2, excess / 2)
    } else if len % 2 == 1 {
        (excess / 2, excess / 2 + 1)
    } else {
        (excess / 2 + 1, excess / 2)
    };
    format!("{}{text}{}", " ".repeat(left), " ".repeat(right))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn calicoctl_v0_example() {
        let rows = ["PROF".to_string(), "WEB".to_string()];
        assert_eq!(
            render_column("Name", &rows),
            "+------+\n| Name |\n+------+\n| PROF |\n| WEB  |\n+------+\n"
        );
    }

    #[test]
    fn heading_is_centred_over_long_rows() {
        let row = "46007b33d4dd56b13ede0f10bb427ba4481e3c0efe64960b0567dd53a80d3420".to_string();
        let table = render_column("Name", std::slice::from_ref(&row));
        let spaces = " ".repeat(31);
        assert_eq!(
            table.lines().nth(1).unwrap(),
            format!("|{spaces}Name{spaces}|")
        );
    }
}
