//! Aligned text tables for the terminal: every column as wide as its widest cell, the last one
//! unpadded.

/// Renders `header` and `rows` (each as many cells as the header) as aligned lines.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_and_the_last_is_not_padded() {
        let out = render(
            ["A", "LONGER", "LAST"],
            &[
                ["wide cell".into(), "x".into(), "end".into()],
                ["y".into(), "z".into(), String::new()],
            ],
        );
        assert_eq!(out, "A          LONGER  LAST\nwide cell  x       end\ny          z\n");
    }
}
