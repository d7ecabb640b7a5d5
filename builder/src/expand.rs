//! Shell-word processing of instruction arguments, as the Dockerfile reference defines it:
//! quote removal, escapes with the file's escape character, and `$var` / `${var...}`
//! substitution (`:-`, `-`, `:+`, `+`, `:?`, `?`, `#`, `##`, `%`, `%%`, `/`, `//`).
//!
//! The builder, not a shell, does this for ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL,
//! USER, VOLUME, WORKDIR and ONBUILD-triggered forms of those; RUN/CMD/ENTRYPOINT are left to
//! the shell of the container.

use crate::error::ExpandError;

/// Looks a variable up; `None` means unset (distinct from set-but-empty).
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A piece of processed text, remembering whether word splitting may cut it.
#[derive(Debug, Clone)]
enum Frag {
    /// Text that is never split (literal characters, quoted text, escaped characters).
    Fixed(String),
    /// Result of an unquoted substitution: split on whitespace in multi-word mode.
    Splittable(String),
    /// Unquoted literal whitespace: a word boundary in multi-word mode.
    Space(String),
    /// Marks that a (possibly empty) quoted string was present, so `""` makes a word.
    QuotedEmpty,
}

impl Frag {
    /// The fragment for the text of a quoted string: an empty one still makes a word.
    fn quoted(s: String) -> Frag {
        if s.is_empty() {
            Frag::QuotedEmpty
        } else {
            Frag::Fixed(s)
        }
    }
}

/// The expander: holds the Dockerfile's escape character.
#[derive(Debug, Clone, Copy)]
pub struct Expander {
    escape: char,
}

impl Default for Expander {
    fn default() -> Self {
        Self { escape: '\\' }
    }
}

impl Expander {
    /// An expander for a Dockerfile whose escape directive is `escape`.
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// Process one word: quotes removed, escapes applied, variables substituted; whitespace is kept.
    pub fn word(&self, input: &str, env: Lookup<'_>) -> Result<String, ExpandError> {
        Ok(concat(self.run(input, env, false)?))
    }

    /// Process a string into several words, splitting on unquoted whitespace (including
    /// whitespace produced by unquoted substitutions).
    pub fn words(&self, input: &str, env: Lookup<'_>) -> Result<Vec<String>, ExpandError> {
        let frags = self.run(input, env, false)?;
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut started = false;
        for f in frags {
            match f {
                Frag::Fixed(s) => {
                    cur.push_str(&s);
                    started = true;
                }
                Frag::QuotedEmpty => started = true,
                Frag::Space(_) => {
                    if started {
                        words.push(std::mem::take(&mut cur));
                        started = false;
                    }
                }
                Frag::Splittable(s) => {
                    let mut first = true;
                    for (i, part) in s.split([' ', '\t', '\n']).enumerate() {
                        if i > 0 {
                            first = false;
                            if started {
                                words.push(std::mem::take(&mut cur));
                                started = false;
                            }
                        }
                        if !part.is_empty() {
                            cur.push_str(part);
                            started = true;
                        }
                    }
                    let _ = first;
                }
            }
        }
        if started {
            words.push(cur);
        }
        Ok(words)
    }

    /// Expand a here-document body: only `$` substitutions (and `\$` escapes) are processed;
    /// quotes and other characters stay as written, as a shell here-document does.
    pub fn heredoc(&self, input: &str, env: Lookup<'_>) -> Result<String, ExpandError> {
        Ok(concat(self.run(input, env, true)?))
    }

    /// Lex all of `input`; `raw` is here-document mode (quotes are ordinary characters).
    fn run(&self, input: &str, env: Lookup<'_>, raw: bool) -> Result<Vec<Frag>, ExpandError> {
        let chars: Vec<char> = input.chars().collect();
        let mut lx = Lex {
            chars: &chars,
            pos: 0,
            escape: self.escape,
            env,
            depth: 0,
            raw,
        };
        lx.process(None)
    }
}

/// The text of fragments as one string, for the forms that do no word splitting.
fn concat(frags: Vec<Frag>) -> String {
    let mut out = String::new();
    for f in frags {
        match f {
            Frag::Fixed(s) | Frag::Splittable(s) | Frag::Space(s) => out.push_str(&s),
            Frag::QuotedEmpty => {}
        }
    }
    out
}

struct Lex<'a, 'e> {
    chars: &'a [char],
    pos: usize,
    escape: char,
    env: Lookup<'e>,
    depth: usize,
    /// Here-document mode: quotes are ordinary characters; the escape only protects `$`.
    raw: bool,
}

const MAX_DEPTH: usize = 64;

impl Lex<'_, '_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Process until end of input or an unquoted `stop` character (which is consumed).
    fn process(&mut self, stop: Option<char>) -> Result<Vec<Frag>, ExpandError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExpandError::new("substitution nested too deeply"));
        }
        let mut out: Vec<Frag> = Vec::new();
        let mut lit = String::new();
        let flush = |lit: &mut String, out: &mut Vec<Frag>| {
            if !lit.is_empty() {
                out.push(Frag::Fixed(std::mem::take(lit)));
            }
        };
        let mut stopped = stop.is_none();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                stopped = true;
                break;
            }
            if c == self.escape {
                self.pos += 1;
                match self.next() {
                    Some(n) if self.raw && n != '$' && n != self.escape => {
                        lit.push(c);
                        lit.push(n);
                    }
                    Some(n) => lit.push(n),
                    None => lit.push(c),
                }
                continue;
            }
            if self.raw && (c == '\'' || c == '"' || c.is_whitespace()) {
                self.pos += 1;
                lit.push(c);
                continue;
            }
            match c {
                '\'' => {
                    self.pos += 1;
                    flush(&mut lit, &mut out);
                    let s = self.single_quoted()?;
                    out.push(Frag::quoted(s));
                }
                '"' => {
                    self.pos += 1;
                    flush(&mut lit, &mut out);
                    let s = self.double_quoted()?;
                    out.push(Frag::quoted(s));
                }
                '$' => {
                    self.pos += 1;
                    match self.dollar()? {
                        Some(v) => {
                            flush(&mut lit, &mut out);
                            out.push(Frag::Splittable(v));
                        }
                        None => lit.push('$'),
                    }
                }
                ' ' | '\t' | '\n' => {
                    self.pos += 1;
                    flush(&mut lit, &mut out);
                    out.push(Frag::Space(c.to_string()));
                }
                _ => {
                    self.pos += 1;
                    lit.push(c);
                }
            }
        }
        flush(&mut lit, &mut out);
        self.depth -= 1;
        if !stopped {
            return Err(ExpandError::new(format!(
                "syntax error: missing '{}'",
                stop.unwrap_or('}')
            )));
        }
        Ok(out)
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        let mut s = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError::new(
                        "unexpected end of statement while looking for matching single-quote",
                    ))
                }
                Some('\'') => return Ok(s),
                Some(c) => s.push(c),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, ExpandError> {
        let mut s = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(ExpandError::new(
                        "unexpected end of statement while looking for matching double-quote",
                    ))
                }
                Some('"') => return Ok(s),
                Some('$') => match self.dollar()? {
                    Some(v) => s.push_str(&v),
                    None => s.push('$'),
                },
                Some(c) if c == self.escape => match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        s.push(n);
                    }
                    _ => s.push(c),
                },
                Some(c) => s.push(c),
            }
        }
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        n
    }

    /// After a `$`: returns the substituted value, or `None` when the `$` is literal.
    fn dollar(&mut self) -> Result<Option<String>, ExpandError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced().map(Some)
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let n = self.name();
                Ok(Some((self.env)(&n).unwrap_or_default()))
            }
            _ => Ok(None),
        }
    }

    /// The word of a `${name<op>word}` modifier, processed up to the closing brace.
    fn modifier_word(&mut self) -> Result<String, ExpandError> {
        Ok(concat(self.process(Some('}'))?))
    }

    /// Raw pattern text up to `terminators` (escapes kept so `\*` stays literal), with
    /// variables inside it substituted.
    fn pattern(&mut self, terminators: &[char]) -> Result<(String, Option<char>), ExpandError> {
        let mut s = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::new("syntax error: missing '}'")),
                Some(c) if terminators.contains(&c) => return Ok((s, Some(c))),
                Some(c) if c == self.escape => {
                    if let Some(n) = self.next() {
                        s.push('\\');
                        s.push(n);
                    }
                }
                Some('$') => match self.dollar()? {
                    Some(v) => s.push_str(&escape_glob(&v)),
                    None => s.push('$'),
                },
                Some(c) => s.push(c),
            }
        }
    }

    fn braced(&mut self) -> Result<String, ExpandError> {
        let name = self.name();
        if name.is_empty() {
            return Err(ExpandError::new("bad substitution: missing variable name"));
        }
        let value = (self.env)(&name);
        match self.next() {
            None => Err(ExpandError::new("syntax error: missing '}'")),
            Some('}') => Ok(value.unwrap_or_default()),
            Some(':') => {
                let op = self.next();
                match op {
                    Some('-') => {
                        let w = self.modifier_word()?;
                        Ok(match value {
                            Some(v) if !v.is_empty() => v,
                            _ => w,
                        })
                    }
                    Some('+') => {
                        let w = self.modifier_word()?;
                        Ok(match value {
                            Some(v) if !v.is_empty() => w,
                            _ => String::new(),
                        })
                    }
                    Some('?') => {
                        let w = self.modifier_word()?;
                        match value {
                            Some(v) if !v.is_empty() => Ok(v),
                            _ => Err(ExpandError::new(format!(
                                "{name}: {}",
                                if w.is_empty() { "is not allowed to be unset or empty" } else { &w }
                            ))),
                        }
                    }
                    Some(c) => Err(ExpandError::new(format!(
                        "unsupported modifier ({c}) in substitution of {name}: expected one of ':-', ':+', ':?'"
                    ))),
                    None => Err(ExpandError::new("syntax error: missing '}'")),
                }
            }
            Some('-') => {
                let w = self.modifier_word()?;
                Ok(value.unwrap_or(w))
            }
            Some('+') => {
                let w = self.modifier_word()?;
                Ok(if value.is_some() { w } else { String::new() })
            }
            Some('?') => {
                let w = self.modifier_word()?;
                match value {
                    Some(v) => Ok(v),
                    None => Err(ExpandError::new(format!(
                        "{name}: {}",
                        if w.is_empty() {
                            "is not allowed to be unset"
                        } else {
                            &w
                        }
                    ))),
                }
            }
            Some(c @ ('#' | '%')) => {
                let longest = self.peek() == Some(c);
                if longest {
                    self.pos += 1;
                }
                let (pat, _) = self.pattern(&['}'])?;
                let v = value.unwrap_or_default();
                Ok(if c == '#' {
                    trim_prefix(&v, &pat, longest)
                } else {
                    trim_suffix(&v, &pat, longest)
                })
            }
            Some('/') => {
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let (pat, term) = self.pattern(&['/', '}'])?;
                let repl = if term == Some('/') {
                    self.modifier_word()?
                } else {
                    String::new()
                };
                Ok(replace(&value.unwrap_or_default(), &pat, &repl, all))
            }
            Some(c) => Err(ExpandError::new(format!(
                "bad substitution: unexpected '{c}' after ${{{name}: expected '}}' or a modifier"
            ))),
        }
    }
}

fn escape_glob(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\' | '[') {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// Matches `text` against a substitution pattern (`*`, `?`, `\x` literal).
fn glob_match(pat: &[char], text: &[char]) -> bool {
    // Iterative wildcard matching with backtracking over the last `*`.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() {
            match pat[p] {
                '*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                '?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                '\\' if p + 1 < pat.len() && pat[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                '\\' if p + 1 < pat.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    while p < pat.len() && pat[p] == '*' {
        p += 1;
    }
    p == pat.len()
}

fn trim_prefix(v: &str, pat: &str, longest: bool) -> String {
    let vc: Vec<char> = v.chars().collect();
    let pc: Vec<char> = pat.chars().collect();
    let range: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new((0..=vc.len()).rev())
    } else {
        Box::new(0..=vc.len())
    };
    for n in range {
        if glob_match(&pc, &vc[..n]) {
            return vc[n..].iter().collect();
        }
    }
    v.to_string()
}

fn trim_suffix(v: &str, pat: &str, longest: bool) -> String {
    let vc: Vec<char> = v.chars().collect();
    let pc: Vec<char> = pat.chars().collect();
    let range: Box<dyn Iterator<Item = usize>> = if longest {
        Box::new(0..=vc.len())
    } else {
        Box::new((0..=vc.len()).rev())
    };
    for start in range {
        if glob_match(&pc, &vc[start..]) {
            return vc[..start].iter().collect();
        }
    }
    v.to_string()
}

fn replace(v: &str, pat: &str, repl: &str, all: bool) -> String {
    let vc: Vec<char> = v.chars().collect();
    let pc: Vec<char> = pat.chars().collect();
    if pc.is_empty() {
        return v.to_string();
    }
    let mut out = String::new();
    let mut i = 0;
    let mut replaced = false;
    while i < vc.len() {
        if !replaced || all {
            // Longest match starting at i.
            let mut found = None;
            for end in (i + 1..=vc.len()).rev() {
                if glob_match(&pc, &vc[i..end]) {
                    found = Some(end);
                    break;
                }
            }
            if let Some(end) = found {
                out.push_str(repl);
                i = end;
                replaced = true;
                continue;
            }
        }
        out.push(vc[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("foo".into(), "/bar".into());
        m.insert("empty".into(), String::new());
        m.insert("sp".into(), "a b  c".into());
        m.insert("str".into(), "foobarbaz".into());
        m
    }

    fn w(s: &str) -> Result<String, ExpandError> {
        let e = env();
        let f = move |k: &str| e.get(k).cloned();
        Expander::default().word(s, &f)
    }

    fn ws(s: &str) -> Vec<String> {
        let e = env();
        let f = move |k: &str| e.get(k).cloned();
        Expander::default().words(s, &f).expect("words")
    }

    #[test]
    fn reference_examples() {
        assert_eq!(w("${foo}").unwrap(), "/bar");
        assert_eq!(w("$foo").unwrap(), "/bar");
        assert_eq!(w("\\$foo").unwrap(), "$foo");
        assert_eq!(w("\\${foo}").unwrap(), "${foo}");
        assert_eq!(w("${foo}_bar").unwrap(), "/bar_bar");
        assert_eq!(w("$DIRPATH/$DIRNAME").unwrap(), "/");
    }

    #[test]
    fn modifiers() {
        assert_eq!(w("${foo:-x}").unwrap(), "/bar");
        assert_eq!(w("${nope:-x}").unwrap(), "x");
        assert_eq!(w("${empty:-x}").unwrap(), "x");
        assert_eq!(w("${empty-x}").unwrap(), "");
        assert_eq!(w("${nope-x}").unwrap(), "x");
        assert_eq!(w("${foo:+x}").unwrap(), "x");
        assert_eq!(w("${empty:+x}").unwrap(), "");
        assert_eq!(w("${empty+x}").unwrap(), "x");
        assert_eq!(w("${nope+x}").unwrap(), "");
        assert_eq!(w("${nope:-$foo/y}").unwrap(), "/bar/y");
        assert_eq!(w("${nope:-${foo:+z}}").unwrap(), "z");
        assert!(w("${nope:?must be set}").is_err());
        assert!(w("${nope?}").is_err());
        assert_eq!(w("${empty?}").unwrap(), "");
    }

    #[test]
    fn patterns() {
        assert_eq!(w("${str#f*b}").unwrap(), "arbaz");
        assert_eq!(w("${str##f*b}").unwrap(), "az");
        assert_eq!(w("${str%b*}").unwrap(), "foobar");
        assert_eq!(w("${str%%b*}").unwrap(), "foo");
        assert_eq!(w("${str/ba/fo}").unwrap(), "fooforbaz");
        assert_eq!(w("${str//ba/fo}").unwrap(), "fooforfoz");
        assert_eq!(w("${str/o?/X}").unwrap(), "fXbarbaz");
    }

    #[test]
    fn quotes() {
        assert_eq!(w("'$foo'").unwrap(), "$foo");
        assert_eq!(w("\"$foo\"").unwrap(), "/bar");
        assert_eq!(w("\"a\\\"b\"").unwrap(), "a\"b");
        assert_eq!(w("\"a\\nb\"").unwrap(), "a\\nb");
        assert_eq!(w("Rex\\ The\\ Dog").unwrap(), "Rex The Dog");
        assert_eq!(w("\"John Doe\"").unwrap(), "John Doe");
        assert_eq!(w("a$").unwrap(), "a$");
        assert_eq!(w("$ x").unwrap(), "$ x");
        assert_eq!(w("x\\").unwrap(), "x\\");
    }

    #[test]
    fn errors() {
        assert!(w("${foo").is_err());
        assert!(w("'abc").is_err());
        assert!(w("\"abc").is_err());
        assert!(w("${}").is_err());
        assert!(w("${foo!}").is_err());
        assert!(w("${foo:x}").is_err());
    }

    #[test]
    fn splitting() {
        assert_eq!(ws("a b"), vec!["a", "b"]);
        assert_eq!(ws("$sp"), vec!["a", "b", "c"]);
        assert_eq!(ws("\"$sp\""), vec!["a b  c"]);
        assert_eq!(ws("x$sp"), vec!["xa", "b", "c"]);
        assert_eq!(ws("\"\" a"), vec!["", "a"]);
        assert_eq!(ws("$empty a"), vec!["a"]);
        assert_eq!(ws("a\\ b c"), vec!["a b", "c"]);
    }

    #[test]
    fn heredoc_mode_keeps_quotes() {
        let e = env();
        let f = move |k: &str| e.get(k).cloned();
        let x = Expander::default();
        assert_eq!(
            x.heredoc("echo \"hello ${foo}\" '$foo' \\$foo\n", &f)
                .unwrap(),
            "echo \"hello /bar\" '/bar' $foo\n"
        );
    }

    #[test]
    fn backtick_escape() {
        let f = |_: &str| None;
        let e = Expander::new('`');
        assert_eq!(e.word("c:\\dir`$x", &f).unwrap(), "c:\\dir$x");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = "${a:-".repeat(200);
        assert!(w(&s).is_err());
    }
}
