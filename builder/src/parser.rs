//! The Dockerfile parser: parser directives, logical lines (escape-character continuations,
//! comments and blank lines inside them), here-documents, instruction flags, and the
//! conversion of each line into a typed [`Instruction`].
//!
//! Token-level grammar pieces are `nom` parsers; the line structure (which needs to look at
//! the following physical lines for continuations and heredoc bodies) is driven by a loop.
//! Nothing here panics on any input: every failure is a [`ParseError`] with file, line and
//! column.

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_while, take_while1};
use nom::character::complete::{char as nchar, digit0, digit1, space0};
use nom::combinator::{opt, rest};
use nom::multi::many1;
use nom::{IResult, Parser as _};

use crate::error::{ParseError, Position};
use crate::instructions::{
    Command, CopySpec, Dockerfile, Health, Heredoc, Instruction, KeyValue, Located, MountSpec,
};

/// Largest Dockerfile accepted, so a hostile input cannot make the parser use unbounded memory.
pub const MAX_DOCKERFILE_BYTES: usize = 16 * 1024 * 1024;

/// Parse a whole Dockerfile. `file` names it in error messages.
pub fn parse(file: &str, src: &str) -> Result<Dockerfile, ParseError> {
    let mut p = Parser::new(file, src)?;
    p.run()
}

/// One physical line's contribution to a logical line.
#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Byte offset in the logical text where this segment starts.
    off: usize,
    line: usize,
    /// 1-based column of the segment's first character on its physical line.
    col: usize,
}

/// An instruction's text with continuations removed, and the map back to physical positions.
#[derive(Debug, Clone)]
struct Logical {
    text: String,
    segs: Vec<Seg>,
}

impl Logical {
    fn pos(&self, off: usize) -> Position {
        let mut seg = self.segs.first().copied().unwrap_or(Seg {
            off: 0,
            line: 1,
            col: 1,
        });
        for s in &self.segs {
            if s.off <= off {
                seg = *s;
            } else {
                break;
            }
        }
        let start = seg.off.min(self.text.len());
        let end = off.min(self.text.len()).max(start);
        let chars = self
            .text
            .get(start..end)
            .map(|s| s.chars().count())
            .unwrap_or(0);
        Position {
            line: seg.line,
            column: seg.col + chars,
        }
    }
}

struct Parser<'a> {
    file: String,
    lines: Vec<&'a str>,
    i: usize,
    escape: char,
    syntax: Option<String>,
    check: Option<String>,
    notes: Vec<String>,
}

/// A word of an instruction's arguments with its byte offset in the logical text.
#[derive(Debug, Clone)]
struct Word {
    text: String,
    off: usize,
    end: usize,
}

/// A `--name[=value]` flag.
#[derive(Debug, Clone)]
struct Flag {
    name: String,
    value: Option<String>,
    off: usize,
}

const KNOWN_INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

// ---------------------------------------------------------------- nom token parsers

/// `# key = value` parser directive.
fn directive(i: &str) -> IResult<&str, (&str, &str)> {
    let (i, _) = (nchar('#'), space0).parse(i)?;
    let (i, key) = take_while1(|c: char| c.is_ascii_alphanumeric()).parse(i)?;
    let (i, _) = (space0, nchar('='), space0).parse(i)?;
    let (i, value) = rest.parse(i)?;
    Ok((i, (key, value.trim_end_matches([' ', '\t']))))
}

/// The instruction keyword at the start of a logical line.
fn keyword(i: &str) -> IResult<&str, &str> {
    take_while1(|c: char| c.is_ascii_alphabetic()).parse(i)
}

/// `--name` or `--name=value` (value raw, may be empty).
fn flag_word(i: &str) -> IResult<&str, (&str, Option<&str>)> {
    let (i, _) = tag("--").parse(i)?;
    let (i, name) =
        take_while1(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_').parse(i)?;
    let (i, value) = opt((nchar('='), rest).map(|(_, v)| v)).parse(i)?;
    Ok((i, (name, value)))
}

/// `[n]<<[-]WORD` here-document marker: (fd digits, chomp, word).
fn heredoc_word(i: &str) -> IResult<&str, (&str, bool, &str)> {
    let (i, fd) = digit0.parse(i)?;
    let (i, _) = tag("<<").parse(i)?;
    let (i, chomp) = opt(nchar('-')).parse(i)?;
    let (i, word) = take_while1(|c: char| c != '<').parse(i)?;
    Ok((i, (fd, chomp.is_some(), word)))
}

/// A Go-style duration such as `30s`, `1m30s`, `500ms`, `1.5h`: returns nanoseconds.
fn duration(i: &str) -> IResult<&str, u64> {
    let unit = alt((
        tag("ns"),
        tag("us"),
        tag("µs"),
        tag("ms"),
        tag("s"),
        tag("m"),
        tag("h"),
    ));
    let number = (digit1, opt((nchar('.'), digit0)));
    let (i, parts) = many1((number, unit)).parse(i)?;
    let mut total: f64 = 0.0;
    for ((int, frac), unit) in parts {
        let mut s = int.to_string();
        if let Some((_, f)) = frac {
            s.push('.');
            s.push_str(f);
        }
        let n: f64 = s.parse().unwrap_or(0.0);
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            _ => 3600e9,
        };
        total += n * mult;
    }
    if !(0.0..1.8e19).contains(&total) {
        return Err(nom::Err::Error(nom::error::Error::new(
            i,
            nom::error::ErrorKind::TooLarge,
        )));
    }
    Ok((i, total as u64))
}

/// `AS` keyword of FROM.
fn as_keyword(i: &str) -> IResult<&str, &str> {
    tag_no_case("as").parse(i)
}

/// A stage name: lower-case letter then letters, digits, `-`, `_`, `.`.
fn stage_name(i: &str) -> IResult<&str, &str> {
    let (i, _) = take_while1(|c: char| c.is_ascii_lowercase()).parse(i)?;
    take_while(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c)).parse(i)
}

// ---------------------------------------------------------------- driver

impl<'a> Parser<'a> {
    fn new(file: &str, src: &'a str) -> Result<Self, ParseError> {
        if src.len() > MAX_DOCKERFILE_BYTES {
            return Err(ParseError {
                file: file.to_string(),
                pos: Position { line: 1, column: 1 },
                message: format!(
                    "Dockerfile is larger than {} bytes; refusing to parse",
                    MAX_DOCKERFILE_BYTES
                ),
            });
        }
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        let lines = src
            .split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect();
        Ok(Self {
            file: file.to_string(),
            lines,
            i: 0,
            escape: '\\',
            syntax: None,
            check: None,
            notes: Vec::new(),
        })
    }

    fn err(&self, pos: Position, message: impl Into<String>) -> ParseError {
        ParseError {
            file: self.file.clone(),
            pos,
            message: message.into(),
        }
    }

    fn run(&mut self) -> Result<Dockerfile, ParseError> {
        self.directives()?;
        let mut out = Vec::new();
        while let Some(ll) = self.next_logical() {
            let located = self.instruction(&ll)?;
            out.push(located);
        }
        Ok(Dockerfile {
            escape: self.escape,
            syntax: self.syntax.clone(),
            check: self.check.clone(),
            instructions: out,
            notes: std::mem::take(&mut self.notes),
        })
    }

    fn directives(&mut self) -> Result<(), ParseError> {
        let mut seen: Vec<String> = Vec::new();
        while self.i < self.lines.len() {
            let line = self.lines[self.i];
            let Ok((_, (key, value))) = directive(line) else {
                break;
            };
            let key_l = key.to_ascii_lowercase();
            if !matches!(key_l.as_str(), "escape" | "syntax" | "check") {
                // Unknown directives are comments and end the directive section.
                break;
            }
            let pos = Position {
                line: self.i + 1,
                column: 1,
            };
            if seen.contains(&key_l) {
                return Err(self.err(
                    pos,
                    format!("only one {key_l} parser directive can be used"),
                ));
            }
            seen.push(key_l.clone());
            match key_l.as_str() {
                "escape" => {
                    let mut cs = value.chars();
                    match (cs.next(), cs.next()) {
                        (Some(c @ ('\\' | '`')), None) => self.escape = c,
                        _ => {
                            return Err(self.err(
                                pos,
                                format!("invalid escape token '{value}': expected '\\' or '`'"),
                            ))
                        }
                    }
                }
                "syntax" => {
                    self.notes.push(format!(
                        "line {}: syntax directive '{value}' accepted and ignored (skiff-build has its own frontend)",
                        self.i + 1
                    ));
                    self.syntax = Some(value.to_string());
                }
                _ => {
                    self.notes.push(format!(
                        "line {}: check directive accepted and ignored",
                        self.i + 1
                    ));
                    self.check = Some(value.to_string());
                }
            }
            self.i += 1;
        }
        Ok(())
    }

    /// Strip a trailing escape-character continuation (`\` then optional blanks at end).
    fn continuation(&self, line: &'a str) -> (&'a str, bool) {
        let t = line.trim_end_matches([' ', '\t']);
        match t.strip_suffix(self.escape) {
            Some(s) => (s, true),
            None => (line, false),
        }
    }

    fn is_skippable(line: &str) -> bool {
        let t = line.trim_start();
        t.is_empty() || t.starts_with('#')
    }

    /// Assemble the next logical line, or `None` at end of file.
    fn next_logical(&mut self) -> Option<Logical> {
        while self.i < self.lines.len() && Self::is_skippable(self.lines[self.i]) {
            self.i += 1;
        }
        if self.i >= self.lines.len() {
            return None;
        }
        let first = self.lines[self.i];
        let trimmed = first.trim_start();
        let mut ll = Logical {
            text: String::new(),
            segs: Vec::new(),
        };
        let mut cur = trimmed;
        let mut col = first[..first.len() - trimmed.len()].chars().count() + 1;
        loop {
            let (content, more) = self.continuation(cur);
            ll.segs.push(Seg {
                off: ll.text.len(),
                line: self.i + 1,
                col,
            });
            ll.text.push_str(content);
            self.i += 1;
            if !more {
                break;
            }
            // Comments and blank lines inside a continuation are dropped.
            let mut next = None;
            while self.i < self.lines.len() {
                let l = self.lines[self.i];
                if l.trim().is_empty() {
                    self.notes.push(format!(
                        "line {}: empty continuation line (deprecated)",
                        self.i + 1
                    ));
                    self.i += 1;
                } else if l.trim_start().starts_with('#') {
                    self.i += 1;
                } else {
                    next = Some(l);
                    break;
                }
            }
            match next {
                Some(l) => {
                    cur = l;
                    col = 1;
                }
                None => break,
            }
        }
        let trimmed_len = ll.text.trim_end().len();
        ll.text.truncate(trimmed_len);
        Some(ll)
    }

    /// Read heredoc bodies from the physical lines after the instruction.
    fn read_heredocs(
        &mut self,
        ll: &Logical,
        markers: Vec<(Word, Option<u32>, bool, String, bool)>,
    ) -> Result<Vec<Heredoc>, ParseError> {
        let mut docs = Vec::new();
        for (w, fd, chomp, name, expand) in markers {
            let mut content = String::new();
            let mut found = false;
            while self.i < self.lines.len() {
                let line = self.lines[self.i];
                self.i += 1;
                let body_line = if chomp {
                    line.trim_start_matches('\t')
                } else {
                    line
                };
                if body_line == name {
                    found = true;
                    break;
                }
                content.push_str(body_line);
                content.push('\n');
            }
            if !found {
                return Err(self.err(
                    ll.pos(w.off),
                    format!(
                        "unterminated here-document: expected a line '{name}' before end of file"
                    ),
                ));
            }
            docs.push(Heredoc {
                name,
                content,
                expand,
                chomp,
                fd,
            });
        }
        Ok(docs)
    }

    fn instruction(&mut self, ll: &Logical) -> Result<Located, ParseError> {
        let pos = ll.pos(0);
        let text = ll.text.as_str();
        let (after_kw, kw) = keyword(text).map_err(|_| {
            self.err(
                pos,
                format!(
                    "expected an instruction keyword (one of {}), found '{}'",
                    KNOWN_INSTRUCTIONS.join(", "),
                    text.chars().take(20).collect::<String>()
                ),
            )
        })?;
        if let Some(c) = after_kw.chars().next() {
            if !c.is_whitespace() {
                return Err(self.err(
                    ll.pos(kw.len()),
                    format!("expected whitespace after instruction '{kw}', found '{c}'"),
                ));
            }
        }
        let kw_upper = kw.to_ascii_uppercase();
        let args_off = text.len() - after_kw.trim_start().len();
        let instruction = self.build(&kw_upper, ll, args_off, true)?;
        Ok(Located {
            pos,
            source: ll.text.clone(),
            instruction,
        })
    }

    /// Split raw words (quotes and escapes kept) starting at `off`, with their offsets.
    fn raw_words(&self, ll: &Logical, off: usize) -> Result<Vec<Word>, ParseError> {
        self.raw_words_until(ll, off, false, usize::MAX)
    }

    /// Like [`Self::raw_words`]; `lenient` accepts an unterminated quote (the word runs to the
    /// end), and at most `max` words are returned. `Word::end` is the word's byte length in
    /// the source.
    fn raw_words_until(
        &self,
        ll: &Logical,
        off: usize,
        lenient: bool,
        max: usize,
    ) -> Result<Vec<Word>, ParseError> {
        let text = ll.text.get(off..).unwrap_or("");
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut start = None;
        let mut quote: Option<(char, usize)> = None;
        let mut it = text.char_indices().peekable();
        while let Some((i, c)) = it.next() {
            if let Some((q, _)) = quote {
                cur.push(c);
                if c == self.escape && q == '"' {
                    if let Some((_, n)) = it.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
                continue;
            }
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    words.push(Word {
                        text: std::mem::take(&mut cur),
                        off: off + s,
                        end: i - s,
                    });
                    if words.len() >= max {
                        return Ok(words);
                    }
                }
                continue;
            }
            if start.is_none() {
                start = Some(i);
            }
            cur.push(c);
            if c == self.escape {
                if let Some((_, n)) = it.next() {
                    cur.push(n);
                }
            } else if c == '"' || c == '\'' {
                quote = Some((c, i));
            }
        }
        if let (Some((q, qi)), false) = (quote, lenient) {
            return Err(self.err(
                ll.pos(off + qi),
                format!("unterminated quote: expected a closing {q}"),
            ));
        }
        if let Some(s) = start {
            words.push(Word {
                text: cur,
                off: off + s,
                end: text.len() - s,
            });
        }
        Ok(words)
    }

    /// Split on whitespace only (no quote handling), as COPY/ADD/EXPOSE/VOLUME/FROM do.
    fn plain_words(ll: &Logical, off: usize) -> Vec<Word> {
        let text = ll.text.get(off..).unwrap_or("");
        let mut out = Vec::new();
        let mut start = None;
        for (i, c) in text.char_indices() {
            if c.is_whitespace() {
                if let Some(s) = start.take() {
                    out.push(Word {
                        text: text[s..i].to_string(),
                        off: off + s,
                        end: i - s,
                    });
                }
            } else if start.is_none() {
                start = Some(i);
            }
        }
        if let Some(s) = start {
            out.push(Word {
                text: text[s..].to_string(),
                off: off + s,
                end: text.len() - s,
            });
        }
        out
    }

    /// Leading `--flags`; returns them and the offset of the rest. Only the flag words are
    /// tokenized, so the rest (a shell command, say) may contain anything.
    fn flags(&self, ll: &Logical, off: usize) -> Result<(Vec<Flag>, usize), ParseError> {
        let mut flags = Vec::new();
        let mut pos = off.min(ll.text.len());
        loop {
            let text = ll.text.get(pos..).unwrap_or("");
            let skip = text.len() - text.trim_start().len();
            pos += skip;
            let text = &text[skip..];
            if !text.starts_with("--") {
                break;
            }
            let words = self.raw_words_until(ll, pos, false, 1)?;
            let Some(w) = words.into_iter().next() else {
                break;
            };
            pos = w.off + w.end;
            if w.text == "--" {
                break;
            }
            let Ok((_, (name, value))) = flag_word(&w.text) else {
                return Err(self.err(
                    ll.pos(w.off),
                    format!(
                        "malformed flag '{}': expected --name or --name=value",
                        w.text
                    ),
                ));
            };
            flags.push(Flag {
                name: name.to_ascii_lowercase(),
                value: value.map(str::to_string),
                off: w.off,
            });
        }
        let text = ll.text.get(pos..).unwrap_or("");
        pos += text.len() - text.trim_start().len();
        Ok((flags, pos))
    }

    fn check_flags(
        &self,
        ll: &Logical,
        kw: &str,
        flags: &[Flag],
        allowed: &[&str],
        multi: &[&str],
    ) -> Result<(), ParseError> {
        for (n, f) in flags.iter().enumerate() {
            if !allowed.contains(&f.name.as_str()) {
                let expect = if allowed.is_empty() {
                    format!("{kw} takes no flags")
                } else {
                    format!(
                        "{kw} accepts {}",
                        allowed
                            .iter()
                            .map(|a| format!("--{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                return Err(self.err(
                    ll.pos(f.off),
                    format!("unknown flag: --{} ({expect})", f.name),
                ));
            }
            if !multi.contains(&f.name.as_str()) && flags[..n].iter().any(|g| g.name == f.name) {
                return Err(self.err(
                    ll.pos(f.off),
                    format!("flag --{} given more than once", f.name),
                ));
            }
        }
        Ok(())
    }

    fn flag_value(
        &self,
        ll: &Logical,
        flags: &[Flag],
        name: &str,
    ) -> Result<Option<String>, ParseError> {
        flags
            .iter()
            .rev()
            .find(|f| f.name == name)
            .map(|f| self.flag_arg(ll, f, name))
            .transpose()
    }

    fn flag_values(
        &self,
        ll: &Logical,
        flags: &[Flag],
        name: &str,
    ) -> Result<Vec<(String, usize)>, ParseError> {
        flags
            .iter()
            .filter(|f| f.name == name)
            .map(|f| Ok((self.flag_arg(ll, f, name)?, f.off)))
            .collect()
    }

    /// The value of flag `f` (named `name`), which must be given and not empty.
    fn flag_arg(&self, ll: &Logical, f: &Flag, name: &str) -> Result<String, ParseError> {
        match &f.value {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err(self.err(
                ll.pos(f.off),
                format!("flag --{name} requires a value: expected --{name}=<value>"),
            )),
        }
    }

    fn flag_bool(
        &self,
        ll: &Logical,
        flags: &[Flag],
        name: &str,
    ) -> Result<Option<bool>, ParseError> {
        match flags.iter().rev().find(|f| f.name == name) {
            None => Ok(None),
            Some(f) => match f.value.as_deref() {
                None => Ok(Some(true)),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "" => Ok(Some(true)),
                    "false" | "0" => Ok(Some(false)),
                    _ => Err(self.err(
                        ll.pos(f.off),
                        format!("flag --{name}: expected true or false, found '{v}'"),
                    )),
                },
            },
        }
    }

    /// `[...]` JSON array of strings, if the text is one.
    fn json_array(text: &str) -> Option<Vec<String>> {
        let t = text.trim();
        if !t.starts_with('[') {
            return None;
        }
        serde_json::from_str::<Vec<String>>(t).ok()
    }

    fn command(&self, ll: &Logical, off: usize, kw: &str) -> Result<Command, ParseError> {
        let text = ll.text.get(off..).unwrap_or("");
        if let Some(v) = Self::json_array(text) {
            return Ok(Command::Exec(v));
        }
        if text.trim().is_empty() {
            return Err(self.err(
                ll.pos(off),
                format!("{kw} requires at least one argument: expected a command"),
            ));
        }
        Ok(Command::Shell(text.to_string()))
    }

    /// Heredoc markers among raw words: (word, fd, chomp, name, expand).
    #[allow(clippy::type_complexity)]
    fn heredoc_markers(
        &self,
        ll: &Logical,
        words: &[Word],
    ) -> Result<Vec<(Word, Option<u32>, bool, String, bool)>, ParseError> {
        let mut out = Vec::new();
        for w in words {
            let Ok(("", (fd, chomp, raw))) = heredoc_word(&w.text) else {
                continue;
            };
            let quoted = raw.contains(['"', '\'']);
            let name = crate::expand::Expander::new(self.escape)
                .word(raw, &|_| None)
                .map_err(|e| {
                    self.err(ll.pos(w.off), format!("bad here-document delimiter: {e}"))
                })?;
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(self.err(
                    ll.pos(w.off),
                    "bad here-document delimiter: expected a single non-empty word after <<",
                ));
            }
            let fd = if fd.is_empty() {
                None
            } else {
                Some(fd.parse::<u32>().map_err(|_| {
                    self.err(ll.pos(w.off), "here-document file descriptor out of range")
                })?)
            };
            out.push((w.clone(), fd, chomp, name, !quoted));
        }
        Ok(out)
    }

    /// `key=value ...` or legacy `key value` (ENV, LABEL).
    fn name_values(
        &self,
        ll: &Logical,
        off: usize,
        kw: &str,
        legacy: bool,
    ) -> Result<Vec<KeyValue>, ParseError> {
        let words = self.raw_words(ll, off)?;
        if words.is_empty() {
            return Err(self.err(
                ll.pos(off),
                format!("{kw} requires at least one argument: expected <key>=<value>"),
            ));
        }
        if legacy && !words[0].text.contains('=') {
            // Legacy form: the whole rest of the line is the value.
            let key = words[0].text.clone();
            let value_off = words.get(1).map(|w| w.off);
            let Some(voff) = value_off else {
                return Err(self.err(
                    ll.pos(words[0].off),
                    format!("{kw} {key} needs a value: expected {kw} <key>=<value> or {kw} <key> <value>"),
                ));
            };
            return Ok(vec![KeyValue {
                key,
                value: Some(ll.text.get(voff..).unwrap_or("").to_string()),
            }]);
        }
        let mut out = Vec::new();
        for w in &words {
            match w.text.split_once('=') {
                Some((k, v)) if !k.is_empty() => out.push(KeyValue {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                }),
                Some(_) => {
                    return Err(self.err(ll.pos(w.off), format!("{kw} names can not be blank")))
                }
                None => {
                    return Err(self.err(
                        ll.pos(w.off),
                        format!(
                            "syntax error - can't find = in '{}': expected <key>=<value>",
                            w.text
                        ),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn mount(&self, ll: &Logical, value: &str, off: usize) -> Result<MountSpec, ParseError> {
        let mut m = MountSpec {
            kind: "bind".into(),
            ..Default::default()
        };
        let fields = csv_fields(value)
            .ok_or_else(|| self.err(ll.pos(off), "--mount: unterminated quote in mount options"))?;
        for field in fields {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
                None => (field.trim().to_ascii_lowercase(), None),
            };
            let need = |v: Option<String>| -> Result<String, ParseError> {
                v.ok_or_else(|| {
                    self.err(
                        ll.pos(off),
                        format!("--mount: option '{k}' requires a value"),
                    )
                })
            };
            let boolv = |v: &Option<String>| -> Result<bool, ParseError> {
                match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") | Some("1") => Ok(true),
                    Some("false") | Some("0") => Ok(false),
                    Some(o) => Err(self.err(
                        ll.pos(off),
                        format!("--mount: option '{k}': expected true or false, found '{o}'"),
                    )),
                }
            };
            match k.as_str() {
                "type" => m.kind = need(v)?.to_ascii_lowercase(),
                "target" | "dst" | "destination" => m.target = Some(need(v)?),
                "source" | "src" => m.source = Some(need(v)?),
                "from" => m.from = Some(need(v)?),
                "id" => m.id = Some(need(v)?),
                "ro" | "readonly" => m.readonly = Some(boolv(&v)?),
                "rw" | "readwrite" => m.readonly = Some(!boolv(&v)?),
                "sharing" => {
                    let s = need(v)?;
                    if !matches!(s.as_str(), "shared" | "private" | "locked") {
                        return Err(self.err(
                            ll.pos(off),
                            format!("--mount: unsupported sharing value '{s}': expected shared, private or locked"),
                        ));
                    }
                    m.sharing = Some(s)
                }
                "mode" => m.mode = Some(need(v)?),
                "uid" => m.uid = Some(need(v)?),
                "gid" => m.gid = Some(need(v)?),
                "required" => m.required = Some(boolv(&v)?),
                "env" => m.env = Some(need(v)?),
                "size" => m.size = Some(need(v)?),
                other => {
                    return Err(self.err(
                        ll.pos(off),
                        format!("--mount: unexpected key '{other}' in mount options"),
                    ))
                }
            }
        }
        match m.kind.as_str() {
            "bind" | "cache" | "tmpfs" => {
                if m.target.is_none() {
                    return Err(self.err(
                        ll.pos(off),
                        format!("--mount type={}: target is required: expected target=<path>", m.kind),
                    ));
                }
            }
            "secret" | "ssh" => {}
            other => {
                return Err(self.err(
                    ll.pos(off),
                    format!("--mount: unsupported mount type '{other}': expected bind, cache, tmpfs, secret or ssh"),
                ))
            }
        }
        Ok(m)
    }

    fn copy_spec(
        &mut self,
        ll: &Logical,
        off: usize,
        kw: &str,
        top: bool,
    ) -> Result<CopySpec, ParseError> {
        let (flags, rest) = self.flags(ll, off)?;
        let (allowed, multi): (&[&str], &[&str]) = if kw == "COPY" {
            (
                &["from", "chown", "chmod", "link", "parents", "exclude"],
                &["exclude"],
            )
        } else {
            (
                &[
                    "chown",
                    "chmod",
                    "link",
                    "checksum",
                    "keep-git-dir",
                    "unpack",
                    "exclude",
                ],
                &["exclude"],
            )
        };
        self.check_flags(ll, kw, &flags, allowed, multi)?;
        let text = ll.text.get(rest..).unwrap_or("");
        let mut spec = CopySpec {
            from: self.flag_value(ll, &flags, "from")?,
            chown: self.flag_value(ll, &flags, "chown")?,
            chmod: self.flag_value(ll, &flags, "chmod")?,
            link: self.flag_bool(ll, &flags, "link")?.unwrap_or(false),
            parents: self.flag_bool(ll, &flags, "parents")?.unwrap_or(false),
            exclude: self
                .flag_values(ll, &flags, "exclude")?
                .into_iter()
                .map(|(v, _)| v)
                .collect(),
            checksum: self.flag_value(ll, &flags, "checksum")?,
            unpack: self.flag_bool(ll, &flags, "unpack")?,
            keep_git_dir: self.flag_bool(ll, &flags, "keep-git-dir")?,
            ..Default::default()
        };
        let words: Vec<String> = match Self::json_array(text) {
            Some(v) => v,
            None => {
                let raw = self.raw_words_until(ll, rest, true, usize::MAX)?;
                let markers = if top {
                    self.heredoc_markers(ll, &raw)?
                } else {
                    Vec::new()
                };
                if !markers.is_empty() {
                    let marker_offs: Vec<usize> = markers.iter().map(|m| m.0.off).collect();
                    spec.heredocs = self.read_heredocs(ll, markers)?;
                    // Heredoc sources are named `<<NAME`; other words stay as written.
                    let mut v = Vec::new();
                    let mut hd = spec.heredocs.iter();
                    for w in &raw {
                        if marker_offs.contains(&w.off) {
                            if let Some(h) = hd.next() {
                                v.push(format!("<<{}", h.name));
                            }
                        } else {
                            v.push(w.text.clone());
                        }
                    }
                    v
                } else {
                    Self::plain_words(ll, rest)
                        .into_iter()
                        .map(|w| w.text)
                        .collect()
                }
            }
        };
        if words.len() < 2 {
            return Err(self.err(
                ll.pos(rest.min(ll.text.len())),
                format!(
                    "{kw} requires at least two arguments, but only {} provided: expected {kw} <src>... <dest>",
                    if words.is_empty() { "none was" } else { "one was" }
                ),
            ));
        }
        let mut words = words;
        spec.dest = words.pop().unwrap_or_default();
        spec.sources = words;
        Ok(spec)
    }

    /// Build the typed instruction for keyword `kw` whose arguments start at `off`.
    fn build(
        &mut self,
        kw: &str,
        ll: &Logical,
        off: usize,
        top: bool,
    ) -> Result<Instruction, ParseError> {
        let args = ll.text.get(off..).unwrap_or("");
        let no_flags = |p: &Self| -> Result<(), ParseError> {
            let (flags, _) = p.flags(ll, off)?;
            p.check_flags(ll, kw, &flags, &[], &[])
        };
        let require = |p: &Self, what: &str| -> Result<(), ParseError> {
            if args.trim().is_empty() {
                Err(p.err(
                    ll.pos(off),
                    format!("{kw} requires an argument: expected {what}"),
                ))
            } else {
                Ok(())
            }
        };
        Ok(match kw {
            "FROM" => {
                let (flags, rest) = self.flags(ll, off)?;
                self.check_flags(ll, kw, &flags, &["platform"], &[])?;
                let platform = self.flag_value(ll, &flags, "platform")?;
                let words = Self::plain_words(ll, rest);
                match words.as_slice() {
                    [image] => Instruction::From {
                        image: image.text.clone(),
                        platform,
                        name: None,
                    },
                    [image, as_kw, name] if as_keyword(&as_kw.text).map(|r| r.0.is_empty()).unwrap_or(false) => {
                        let lname = name.text.to_ascii_lowercase();
                        match stage_name(&lname) {
                            Ok(("", _)) => {}
                            _ => {
                                return Err(self.err(
                                    ll.pos(name.off),
                                    format!("invalid stage name '{}': expected a letter followed by letters, digits, '-', '_' or '.'", name.text),
                                ))
                            }
                        }
                        Instruction::From {
                            image: image.text.clone(),
                            platform,
                            name: Some(lname),
                        }
                    }
                    _ => {
                        return Err(self.err(
                            ll.pos(rest.min(ll.text.len())),
                            "FROM requires either one or three arguments: expected FROM [--platform=<platform>] <image> [AS <name>]",
                        ))
                    }
                }
            }
            "RUN" => {
                let (flags, rest) = self.flags(ll, off)?;
                self.check_flags(
                    ll,
                    kw,
                    &flags,
                    &["mount", "network", "security", "device"],
                    &["mount", "device"],
                )?;
                let mut mounts = Vec::new();
                for (v, o) in self.flag_values(ll, &flags, "mount")? {
                    mounts.push(self.mount(ll, &v, o)?);
                }
                let network = self.flag_value(ll, &flags, "network")?;
                if let Some(n) = &network {
                    if !matches!(n.as_str(), "default" | "none" | "host") {
                        return Err(self.err(
                            ll.pos(off),
                            format!("unsupported --network '{n}': expected default, none or host"),
                        ));
                    }
                }
                let security = self.flag_value(ll, &flags, "security")?;
                if let Some(s) = &security {
                    if !matches!(s.as_str(), "sandbox" | "insecure") {
                        return Err(self.err(
                            ll.pos(off),
                            format!("unsupported --security '{s}': expected sandbox or insecure"),
                        ));
                    }
                }
                let devices = self
                    .flag_values(ll, &flags, "device")?
                    .into_iter()
                    .map(|(v, _)| v)
                    .collect();
                let command = self.command(ll, rest.min(ll.text.len()), kw)?;
                let heredocs = match &command {
                    Command::Shell(_) if top => {
                        let raw = self.raw_words_until(ll, rest, true, usize::MAX)?;
                        let markers = self.heredoc_markers(ll, &raw)?;
                        self.read_heredocs(ll, markers)?
                    }
                    _ => Vec::new(),
                };
                Instruction::Run {
                    command,
                    heredocs,
                    mounts,
                    network,
                    security,
                    devices,
                }
            }
            "CMD" | "ENTRYPOINT" => {
                no_flags(self)?;
                let command = self.command(ll, off, kw)?;
                if kw == "CMD" {
                    Instruction::Cmd { command }
                } else {
                    Instruction::Entrypoint { command }
                }
            }
            "ENV" => {
                no_flags(self)?;
                Instruction::Env {
                    vars: self.name_values(ll, off, kw, true)?,
                }
            }
            "LABEL" => {
                no_flags(self)?;
                Instruction::Label {
                    labels: self.name_values(ll, off, kw, true)?,
                }
            }
            "ARG" => {
                no_flags(self)?;
                let words = self.raw_words(ll, off)?;
                if words.is_empty() {
                    return Err(self.err(
                        ll.pos(off),
                        "ARG requires at least one argument: expected ARG <name>[=<default>]",
                    ));
                }
                let mut args = Vec::new();
                for w in words {
                    let (k, v) = match w.text.split_once('=') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (w.text.clone(), None),
                    };
                    if k.is_empty() {
                        return Err(self.err(ll.pos(w.off), "ARG names can not be blank"));
                    }
                    args.push(KeyValue { key: k, value: v });
                }
                Instruction::Arg { args }
            }
            "COPY" => Instruction::Copy(self.copy_spec(ll, off, kw, top)?),
            "ADD" => Instruction::Add(self.copy_spec(ll, off, kw, top)?),
            "WORKDIR" => {
                no_flags(self)?;
                require(self, "a path")?;
                Instruction::Workdir {
                    path: args.to_string(),
                }
            }
            "USER" | "STOPSIGNAL" => {
                no_flags(self)?;
                let words = Self::plain_words(ll, off);
                if words.len() != 1 {
                    return Err(self.err(
                        ll.pos(off),
                        format!(
                            "{kw} requires exactly one argument: expected {}",
                            if kw == "USER" {
                                "<user>[:<group>]"
                            } else {
                                "a signal name or number"
                            }
                        ),
                    ));
                }
                let v = words[0].text.clone();
                if kw == "USER" {
                    Instruction::User { user: v }
                } else {
                    Instruction::Stopsignal { signal: v }
                }
            }
            "MAINTAINER" => {
                no_flags(self)?;
                require(self, "a name")?;
                Instruction::Maintainer {
                    name: args.to_string(),
                }
            }
            "EXPOSE" => {
                no_flags(self)?;
                require(self, "<port>[/<protocol>]...")?;
                Instruction::Expose {
                    ports: Self::plain_words(ll, off)
                        .into_iter()
                        .map(|w| w.text)
                        .collect(),
                }
            }
            "VOLUME" => {
                no_flags(self)?;
                require(self, "one or more paths")?;
                let paths = match Self::json_array(args) {
                    Some(v) => v,
                    None => Self::plain_words(ll, off)
                        .into_iter()
                        .map(|w| w.text)
                        .collect(),
                };
                if paths.is_empty() || paths.iter().any(|p| p.trim().is_empty()) {
                    return Err(self.err(
                        ll.pos(off),
                        "VOLUME specified can not be an empty string: expected one or more paths",
                    ));
                }
                Instruction::Volume { paths }
            }
            "SHELL" => {
                no_flags(self)?;
                match Self::json_array(args) {
                    Some(v) if !v.is_empty() => Instruction::Shell { shell: v },
                    _ => {
                        return Err(self.err(
                            ll.pos(off),
                            "SHELL requires the arguments to be in JSON form: expected SHELL [\"executable\", \"parameters\"]",
                        ))
                    }
                }
            }
            "HEALTHCHECK" => {
                let (flags, rest) = self.flags(ll, off)?;
                self.check_flags(
                    ll,
                    kw,
                    &flags,
                    &[
                        "interval",
                        "timeout",
                        "start-period",
                        "start-interval",
                        "retries",
                    ],
                    &[],
                )?;
                let words = Self::plain_words(ll, rest);
                let Some(first) = words.first() else {
                    return Err(self.err(
                        ll.pos(off),
                        "HEALTHCHECK requires an argument: expected NONE or CMD <command>",
                    ));
                };
                match first.text.to_ascii_uppercase().as_str() {
                    "NONE" => {
                        if words.len() > 1 || !flags.is_empty() {
                            return Err(self.err(
                                ll.pos(first.off),
                                "HEALTHCHECK NONE takes no other arguments or flags",
                            ));
                        }
                        Instruction::Healthcheck(Health::None)
                    }
                    "CMD" => {
                        let cmd_off = first.off + first.text.len();
                        let cmd_off = cmd_off
                            + ll.text
                                .get(cmd_off..)
                                .map(|s| s.len() - s.trim_start().len())
                                .unwrap_or(0);
                        let command = self.command(ll, cmd_off, "HEALTHCHECK CMD")?;
                        let dur = |p: &Self, name: &str| -> Result<u64, ParseError> {
                            match p.flag_value(ll, &flags, name)? {
                                None => Ok(0),
                                Some(v) => match duration(&v) {
                                    Ok(("", ns)) => {
                                        if ns != 0 && ns < 1_000_000 {
                                            Err(p.err(ll.pos(off), format!("--{name} cannot be less than 1ms")))
                                        } else {
                                            Ok(ns)
                                        }
                                    }
                                    _ => Err(p.err(
                                        ll.pos(off),
                                        format!("--{name}: invalid duration '{v}': expected e.g. 30s, 5m, 1m30s"),
                                    )),
                                },
                            }
                        };
                        let retries = match self.flag_value(ll, &flags, "retries")? {
                            None => 0,
                            Some(v) => v.parse::<u32>().map_err(|_| {
                                self.err(
                                    ll.pos(off),
                                    format!(
                                        "--retries: expected a non-negative integer, found '{v}'"
                                    ),
                                )
                            })?,
                        };
                        Instruction::Healthcheck(Health::Check {
                            command,
                            interval_ns: dur(self, "interval")?,
                            timeout_ns: dur(self, "timeout")?,
                            start_period_ns: dur(self, "start-period")?,
                            start_interval_ns: dur(self, "start-interval")?,
                            retries,
                        })
                    }
                    other => {
                        return Err(self.err(
                            ll.pos(first.off),
                            format!("unknown type '{other}' in HEALTHCHECK: expected NONE or CMD"),
                        ))
                    }
                }
            }
            "ONBUILD" => {
                no_flags(self)?;
                require(self, "an instruction")?;
                let (after, inner) = keyword(args).map_err(|_| {
                    self.err(ll.pos(off), "ONBUILD: expected an instruction keyword")
                })?;
                let inner_u = inner.to_ascii_uppercase();
                match inner_u.as_str() {
                    "ONBUILD" => {
                        return Err(self.err(
                            ll.pos(off),
                            "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                        ))
                    }
                    "FROM" | "MAINTAINER" => {
                        return Err(self.err(
                            ll.pos(off),
                            format!("{inner_u} isn't allowed as an ONBUILD trigger"),
                        ))
                    }
                    _ => {}
                }
                if !KNOWN_INSTRUCTIONS.contains(&inner_u.as_str()) {
                    return Err(self.err(
                        ll.pos(off),
                        format!(
                            "unknown instruction in ONBUILD: {inner}: expected one of {}",
                            KNOWN_INSTRUCTIONS.join(", ")
                        ),
                    ));
                }
                if let Some(c) = after.chars().next() {
                    if !c.is_whitespace() {
                        return Err(self.err(
                            ll.pos(off + inner.len()),
                            format!("expected whitespace after '{inner}'"),
                        ));
                    }
                }
                let inner_off = off + (args.len() - after.trim_start().len());
                let instruction = self.build(&inner_u, ll, inner_off, false)?;
                Instruction::Onbuild {
                    expression: args.to_string(),
                    instruction: Box::new(instruction),
                }
            }
            other => {
                return Err(self.err(
                    ll.pos(0),
                    format!(
                        "unknown instruction: {other}: expected one of {}",
                        KNOWN_INSTRUCTIONS.join(", ")
                    ),
                ))
            }
        })
    }
}

/// Split comma-separated fields with `"` quoting (like Go's encoding/csv, one record).
fn csv_fields(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if inq {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    inq = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' {
            inq = true;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if inq {
        return None;
    }
    out.push(cur);
    Some(out.into_iter().filter(|f| !f.is_empty()).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s").map(|r| r.1).ok(), Some(30_000_000_000));
        assert_eq!(duration("1m30s").map(|r| r.1).ok(), Some(90_000_000_000));
        assert_eq!(duration("500ms").map(|r| r.1).ok(), Some(500_000_000));
        assert!(duration("abc").is_err());
    }

    #[test]
    fn directive_forms() {
        for l in [
            "#directive=value",
            "# directive =value",
            "#\tdirective= value",
            "# directive = value",
        ] {
            let (_, (k, v)) = directive(l).expect("directive");
            assert_eq!((k, v), ("directive", "value"));
        }
    }

    #[test]
    fn heredoc_words() {
        assert_eq!(
            heredoc_word("<<EOF").map(|r| r.1).ok(),
            Some(("", false, "EOF"))
        );
        assert_eq!(
            heredoc_word("<<-EOT").map(|r| r.1).ok(),
            Some(("", true, "EOT"))
        );
        assert_eq!(
            heredoc_word("3<<X").map(|r| r.1).ok(),
            Some(("3", false, "X"))
        );
        assert!(heredoc_word("<<<x").is_err());
    }
}
