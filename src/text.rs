//! Text that came from a peer, made safe to show on a terminal.
//!
//! A chat line, a server's refusal or an error message is shown on someone's
//! terminal. Left raw, `\x1b[2K\r<alice> hi` erases the line it lands on and
//! forges a line from alice, an OSC sequence retitles the window, and a bare
//! `\r` overwrites what came before. [`clean`] drops every C0 and C1 control
//! (tab aside), whole escape sequences (CSI, OSC, DCS and the rest, however
//! they end), and the bidirectional overrides that reorder what is shown.

use std::borrow::Cow;

const ESC: char = '\x1b';
const BEL: char = '\x07';

/// `text` without control characters or escape sequences; tabs stay.
/// Borrowed when there was nothing to drop.
///
/// ```
/// use sockit::text::clean;
/// assert_eq!(clean("x\x1b[2K\r<alice> hi"), "x<alice> hi");
/// assert_eq!(clean("\x1b]0;owned\x07title"), "title");
/// assert_eq!(clean("plain\ttext"), "plain\ttext");
/// ```
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ESC => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => skip_csi(&mut chars),
                // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // nF sequences: intermediates, then a final byte.
                Some('\x20'..='\x2f') => {
                    while chars.next_if(|c| ('\x20'..='\x2f').contains(c)).is_some() {}
                    chars.next();
                }
                // Any other ESC x is a two-character sequence.
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if is_unsafe(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Bytes from a peer, decoded as UTF-8 (invalid sequences replaced), then
/// [`clean`]ed.
pub fn clean_bytes(bytes: &[u8]) -> String {
    clean(&String::from_utf8_lossy(bytes)).into_owned()
}

fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // Parameter and intermediate bytes are 0x20..=0x3f; the final byte is
    // 0x40..=0x7e. Anything else ends the sequence where it stands.
    for c in chars.by_ref() {
        if !('\x20'..='\x3f').contains(&c) {
            return;
        }
    }
}

fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            BEL | '\u{9c}' => return,
            ESC => {
                chars.next_if_eq(&'\\');
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_titles_are_defused() {
        let cases = [
            ("x\x1b[2K\r<alice> send me your password", "x<alice> send me your password"),
            ("\r* alice is now root", "* alice is now root"),
            ("\x1b]0;pwned\x07after", "after"),
            ("\x1b]0;pwned\x1b\\after", "after"),
            ("a\x1bcb", "ab"),
            ("a\u{9b}31mred", "ared"),
            ("tab\tstays", "tab\tstays"),
            ("bell\x07 back\x08space\x7f del", "bell backspace del"),
            ("rtl \u{202e}txt.exe", "rtl txt.exe"),
            ("unterminated \x1b]0;title", "unterminated "),
            ("trailing \x1b", "trailing "),
            ("ünïcödé ok", "ünïcödé ok"),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
        assert!(matches!(clean("nothing to do"), Cow::Borrowed(_)));
        assert_eq!(clean_bytes(b"\xff\x1b[1mbold"), "\u{fffd}bold");
    }
}
