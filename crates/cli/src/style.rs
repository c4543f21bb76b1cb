//! Terminal styling shared by every command that prints for people: whether to colour, the
//! per-process palette of `flotilla up` (which `flotilla logs` reuses so a process keeps its
//! colour), and the `name │ ` prefix of a merged log line.

use std::io::IsTerminal;

/// ANSI colours for process names, picked by slot: control plane, gateway, then each service.
const PALETTE: [&str; 6] = ["36", "33", "35", "32", "34", "91"];

/// Red, for errors.
pub const RED: &str = "31";
/// Yellow, for warnings.
pub const YELLOW: &str = "33";
/// Green, for the ordinary.
pub const GREEN: &str = "32";
/// Dim, for what matters least.
pub const DIM: &str = "2";
/// Bold, for the supervisor's own voice and headers.
pub const BOLD: &str = "1";

/// Whether standard output gets colours: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>), so piped output stays plain text for tools.
pub fn stdout_wants_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` in the ANSI colour `code` when `color` is on; `text` unchanged otherwise.
pub fn paint(code: &str, text: &str, color: bool) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// The colour of palette slot `slot` (wrapping), so a process keeps one colour.
pub fn slot_color(slot: usize) -> &'static str {
    PALETTE[slot % PALETTE.len()]
}

/// The `name │ ` prefix of a merged log line: the name padded to `width`, coloured by slot.
pub fn process_prefix(name: &str, slot: usize, width: usize, color: bool) -> String {
    let label = format!("{name:<width$} │");
    format!("{} ", paint(slot_color(slot), &label, color))
}

/// Cuts `text` to at most `width` characters, ending in `…` when it was cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

/// `text` padded with spaces to `width` characters (counted as chars, not bytes, so the
/// box-drawing and arrow characters of the drawings line up).
pub fn pad(text: &str, width: usize) -> String {
    let len = text.chars().count();
    let mut out = text.to_owned();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paint_is_plain_without_colour() {
        assert_eq!(paint(RED, "x", false), "x");
        assert_eq!(paint(RED, "x", true), "\x1b[31mx\x1b[0m");
    }

    #[test]
    fn prefix_pads_the_name() {
        assert_eq!(process_prefix("gateway", 1, 10, false), "gateway    │ ");
        assert!(process_prefix("gateway", 1, 10, true).starts_with("\x1b[33m"));
    }

    #[test]
    fn truncate_and_pad_count_chars() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(pad("▶a", 4), "▶a  ");
        assert_eq!(pad("abcdef", 4), "abcdef");
    }
}
