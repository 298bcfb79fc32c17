//! The chat protocol's commands, parsed from a line: pure, no I/O.

/// Longest nick or room name.
pub const MAX_NAME: usize = 32;

/// What a line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// A plain line for the room (`//x` sends `/x`).
    Say(&'a str),
    /// `/nick NAME`.
    Nick(&'a str),
    /// `/join ROOM`.
    Join(&'a str),
    /// `/rooms`.
    Rooms,
    /// `/who`.
    Who,
    /// `/msg NICK text`.
    Msg(&'a str, &'a str),
    /// `/quit`.
    Quit,
    /// `/ids`: room lines come with their id (`#ID `), for clients that
    /// recover what they missed.
    Ids,
    /// `/since ID`: the room's lines after ID, from its history.
    Since(u64),
    /// `/help`.
    Help,
    /// A command used wrong; the text says how to use it.
    Usage(&'static str),
    /// An unknown command.
    Unknown(&'a str),
}

/// The `/help` text, one line each.
pub const HELP: &[&str] = &[
    "* commands:",
    "*   /nick NAME       change your nick (letters, digits, - and _, at most 32)",
    "*   /join ROOM       leave your room for ROOM (created if new)",
    "*   /rooms           list rooms and how many are in each",
    "*   /who             list who is in your room",
    "*   /msg NICK text   send text to NICK alone",
    "*   /history         the room's last lines again",
    "*   /ids             mark room lines with their id (#ID), for /since",
    "*   /since ID        the room's lines after ID, and how many were lost",
    "*   /quit            leave",
    "*   anything else goes to everyone in your room (start with // to send a line starting with /)",
];

/// Parses one line.
///
/// ```
/// use sockit::services::chat::protocol::{parse, Command};
/// assert_eq!(parse("/msg bob hi there"), Command::Msg("bob", "hi there"));
/// assert_eq!(parse("hello"), Command::Say("hello"));
/// ```
pub fn parse(line: &str) -> Command<'_> {
    if line.starts_with("//") {
        return Command::Say(&line[1..]);
    }
    let Some(cmd) = line.strip_prefix('/') else { return Command::Say(line) };
    let (name, arg) = cmd.split_once(' ').map_or((cmd, ""), |(n, a)| (n, a.trim()));
    match name {
        "nick" if arg.is_empty() || arg.contains(' ') => Command::Usage("usage: /nick NAME"),
        "nick" => Command::Nick(arg),
        "join" if arg.is_empty() || arg.contains(' ') => Command::Usage("usage: /join ROOM"),
        "join" => Command::Join(arg),
        "rooms" => Command::Rooms,
        "who" => Command::Who,
        "msg" => match arg.split_once(' ') {
            Some((nick, text)) if !text.trim().is_empty() => Command::Msg(nick, text.trim_start()),
            _ => Command::Usage("usage: /msg NICK text"),
        },
        "quit" => Command::Quit,
        "ids" => Command::Ids,
        "history" => Command::Since(0),
        "since" => match arg.parse() {
            Ok(id) => Command::Since(id),
            Err(_) => Command::Usage("usage: /since ID (a number from a #ID mark)"),
        },
        "help" => Command::Help,
        _ => Command::Unknown(name),
    }
}

/// Whether `name` is a valid nick or room name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("/nick alice"), Command::Nick("alice"));
        assert_eq!(parse("/nick"), Command::Usage("usage: /nick NAME"));
        assert_eq!(parse("/nick a b"), Command::Usage("usage: /nick NAME"));
        assert_eq!(parse("/join dev"), Command::Join("dev"));
        assert_eq!(parse("/rooms"), Command::Rooms);
        assert_eq!(parse("/who"), Command::Who);
        assert_eq!(parse("/msg bob  hi"), Command::Msg("bob", "hi"));
        assert_eq!(parse("/msg bob"), Command::Usage("usage: /msg NICK text"));
        assert_eq!(parse("/quit"), Command::Quit);
        assert_eq!(parse("/help"), Command::Help);
        assert_eq!(parse("/ids"), Command::Ids);
        assert_eq!(parse("/since 42"), Command::Since(42));
        assert_eq!(parse("/since x"), Command::Usage("usage: /since ID (a number from a #ID mark)"));
        assert_eq!(parse("/dance"), Command::Unknown("dance"));
        assert_eq!(parse("//etc/passwd"), Command::Say("/etc/passwd"));
        assert_eq!(parse("plain text"), Command::Say("plain text"));
        assert_eq!(parse(""), Command::Say(""));
    }

    #[test]
    fn names() {
        assert!(valid_name("alice_2-b"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("ü"));
        assert!(!valid_name(&"x".repeat(33)));
        assert!(valid_name(&"x".repeat(32)));
    }
}
