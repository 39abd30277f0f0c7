//! A command run the way a person runs it — on a terminal — and what the screen shows at the
//! end (issue 16).
//!
//! The pseudo-terminal comes from util-linux's `script` (`script -qfec CMD /dev/null`), sized
//! with `stty` to 110 columns; the bytes it records are replayed into [`Screen`], a small model
//! of a terminal that moves the cursor, clears lines and wraps as xterm does (a character written
//! after the last column goes to the next line). A row that wrapped and is still on the screen at
//! the end is a line wider than the terminal, broken wherever the column ran out.

use std::path::PathBuf;
use std::process::Command;

/// The width the issue's new user had.
pub const COLUMNS: usize = 110;

/// `program` found on the test process's PATH (not the sandbox's).
pub fn system_tool(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{program}` is needed for the terminal tests (util-linux)"))
}

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// `cmd` (with its environment and working directory) under a pseudo-terminal of
/// [`COLUMNS`] columns, stdout and stderr both on it; the raw bytes it drew, and its exit code.
pub fn run_on_terminal(cmd: &Command) -> (String, Option<i32>) {
    let mut line = format!(
        "{} sane cols {COLUMNS} rows 60 && exec {}",
        quote(&system_tool("stty").display().to_string()),
        quote(&cmd.get_program().to_string_lossy())
    );
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(&a.to_string_lossy()));
    }
    let mut script = Command::new(system_tool("script"));
    script
        .args(["-qfec", &line, "/dev/null"])
        .env_clear()
        .env("TERM", "xterm-256color")
        .env("SHELL", "/bin/sh")
        .stdin(std::process::Stdio::null());
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            script.env(k, v);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    let out = script.output().expect("`script` runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

/// A terminal's screen (and scrollback): lines of characters and a cursor.
pub struct Screen {
    lines: Vec<Vec<char>>,
    row: usize,
    col: usize,
    width: usize,
    /// Rows whose text ran past the last column onto the next row, and not cleared since.
    wrapped: std::collections::BTreeSet<usize>,
}

impl Screen {
    /// An empty screen `width` columns wide.
    pub fn new(width: usize) -> Screen {
        Screen {
            lines: vec![Vec::new()],
            row: 0,
            col: 0,
            width,
            wrapped: std::collections::BTreeSet::new(),
        }
    }

    /// Replay `bytes` as a terminal would draw them.
    pub fn feed(&mut self, text: &str) {
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\r' => self.col = 0,
                // `stty sane` sets `onlcr`: the terminal sees `\r\n`.
                '\n' => {
                    self.col = 0;
                    self.down(1);
                }
                '\x08' => self.col = self.col.saturating_sub(1),
                '\x1b' => {
                    if chars.peek() != Some(&'[') {
                        chars.next();
                        continue;
                    }
                    chars.next();
                    let mut params = String::new();
                    let mut fin = ' ';
                    for p in chars.by_ref() {
                        if p.is_ascii_alphabetic() || p == '@' || p == '~' {
                            fin = p;
                            break;
                        }
                        params.push(p);
                    }
                    self.csi(&params, fin);
                }
                c if c.is_control() => {}
                c => self.put(c),
            }
        }
    }

    fn line(&mut self) -> &mut Vec<char> {
        while self.lines.len() <= self.row {
            self.lines.push(Vec::new());
        }
        &mut self.lines[self.row]
    }

    fn down(&mut self, n: usize) {
        self.row += n;
        self.line();
    }

    fn put(&mut self, c: char) {
        if self.col >= self.width {
            // xterm's deferred wrap: the character goes to the next row.
            self.wrapped.insert(self.row);
            self.col = 0;
            self.down(1);
        }
        let col = self.col;
        let line = self.line();
        while line.len() < col {
            line.push(' ');
        }
        if col < line.len() {
            line[col] = c;
        } else {
            line.push(c);
        }
        self.col += 1;
    }

    fn csi(&mut self, params: &str, fin: char) {
        let private = params.starts_with('?');
        let n = |default: usize| {
            params
                .trim_start_matches('?')
                .split(';')
                .next()
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(default)
        };
        match fin {
            'A' => self.row = self.row.saturating_sub(n(1)),
            'B' => self.down(n(1)),
            'C' => self.col += n(1),
            'D' => self.col = self.col.saturating_sub(n(1)),
            'G' => self.col = n(1).saturating_sub(1),
            'K' => {
                let col = self.col;
                let line = self.line();
                match n(0) {
                    0 => line.truncate(col),
                    1 => line.iter_mut().take(col + 1).for_each(|c| *c = ' '),
                    _ => line.clear(),
                }
                if n(0) != 1 {
                    let row = self.row;
                    self.wrapped.remove(&row);
                }
            }
            'J' if !private => {
                let col = self.col;
                match n(0) {
                    0 => {
                        self.line().truncate(col);
                        self.lines.truncate(self.row + 1);
                        let row = self.row;
                        self.wrapped.retain(|r| *r < row);
                    }
                    _ => {
                        self.lines = vec![Vec::new()];
                        self.row = 0;
                        self.wrapped.clear();
                    }
                }
            }
            // Colours, cursor visibility, modes: nothing on the screen moves.
            _ => {}
        }
    }

    /// Lines on the screen now that were wider than it: each row that ran onto the next one
    /// (with that next row).
    pub fn overflows(&self) -> Vec<String> {
        let row = |r: usize| -> String {
            self.lines
                .get(r)
                .map_or(String::new(), |l| l.iter().collect())
        };
        self.wrapped
            .iter()
            .map(|r| format!("{}⏎{}", row(*r), row(r + 1)))
            .collect()
    }

    /// The screen's lines, trailing spaces and trailing empty lines removed.
    pub fn text(&self) -> String {
        let mut lines: Vec<String> = self
            .lines
            .iter()
            .map(|l| l.iter().collect::<String>().trim_end().to_string())
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines.join("\n")
    }
}

/// Durations as people read them (`0.4s`, `12m03s`, `1h02m`) replaced by `[T]`, padded on the
/// left to the width they had, so columns stay where they were.
pub fn without_durations(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split(' ')
                .map(|w| {
                    let (core, tail) = match w.find([')', ':', ',']) {
                        Some(i) => w.split_at(i),
                        None => (w, ""),
                    };
                    let (head, core) = match core.strip_prefix('(') {
                        Some(c) => ("(", c),
                        None => ("", core),
                    };
                    if is_duration(core) {
                        format!("{head}{:>width$}{tail}", "[T]", width = core.len())
                    } else {
                        w.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_duration(w: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if let Some(s) = w.strip_suffix('s') {
        if let Some((a, b)) = s.split_once('.') {
            return digits(a) && b.len() == 1 && digits(b);
        }
        if let Some((m, sec)) = s.split_once('m') {
            return digits(m) && sec.len() == 2 && digits(sec);
        }
    }
    if let Some(s) = w.strip_suffix('m')
        && let Some((h, m)) = s.split_once('h')
    {
        return digits(h) && m.len() == 2 && digits(m);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_screen_model_follows_cursor_moves_and_clears() {
        let mut s = Screen::new(20);
        s.feed("⠋ one\r\n⠋ two\r\n");
        // indicatif-style redraw: up two lines, clear, draw again.
        s.feed("\x1b[2A\r\x1b[2K✓ one\r\n\x1b[2K⠙ two\r\n");
        s.feed("\x1b[1A\r\x1b[J✓ two\r\n");
        assert_eq!(s.text(), "✓ one\n✓ two");
        assert!(s.overflows().is_empty());
        // A live line exactly as wide as the screen, redrawn: nothing is left over.
        s.feed("01234567890123456789x\r\x1b[2K\x1b[1A\r\x1b[2Kdone\n");
        assert!(s.overflows().is_empty(), "{:?}", s.overflows());
        // A line wider than the screen stays broken.
        s.feed("0123456789012345678901\n");
        assert_eq!(s.overflows(), ["01234567890123456789⏎01"]);
    }

    #[test]
    fn durations_are_masked_in_place() {
        assert_eq!(
            without_durations("✓ vms             4.2s  ok (12m03s), took 0.1s 1h02m"),
            "✓ vms              [T]  ok (   [T]), took  [T]   [T]"
        );
    }
}
