//! `.dockerignore` rules and the glob matching shared with COPY/ADD sources.
//!
//! Patterns use Go's filepath.Match syntax (`*`, `?`, `[...]`, `\` escapes) plus `**` for any
//! number of directories. A path is excluded when the last pattern matching it (or one of
//! its parent directories) is not an `!` exception.

/// One token of a compiled glob.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: anything, including `/`.
    Globstar,
    /// `**/`: nothing, or anything ending in `/`.
    GlobstarSlash,
    /// `[...]`: ranges, negated or not.
    Class(Vec<(char, char)>, bool),
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Glob {
    toks: Vec<Tok>,
}

/// A malformed pattern (e.g. an unterminated `[`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad pattern '{pattern}': {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Longest pattern accepted (paths are at most PATH_MAX long anyway); keeps matching cheap.
pub const MAX_PATTERN_CHARS: usize = 4096;

impl Glob {
    /// Compile a pattern.
    pub fn new(pattern: &str) -> Result<Self, PatternError> {
        let bad = |reason: &str| PatternError {
            pattern: pattern.chars().take(64).collect(),
            reason: reason.to_string(),
        };
        if pattern.chars().count() > MAX_PATTERN_CHARS {
            return Err(bad("pattern too long"));
        }
        let cs: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < cs.len() {
            match cs[i] {
                '*' => {
                    if cs.get(i + 1) == Some(&'*') {
                        if cs.get(i + 2) == Some(&'/') {
                            toks.push(Tok::GlobstarSlash);
                            i += 3;
                        } else {
                            toks.push(Tok::Globstar);
                            i += 2;
                            while cs.get(i) == Some(&'*') {
                                i += 1;
                            }
                        }
                    } else {
                        toks.push(Tok::Star);
                        i += 1;
                    }
                }
                '?' => {
                    toks.push(Tok::One);
                    i += 1;
                }
                '\\' => {
                    let c = cs.get(i + 1).ok_or_else(|| bad("trailing backslash"))?;
                    toks.push(Tok::Lit(*c));
                    i += 2;
                }
                '[' => {
                    i += 1;
                    let neg = matches!(cs.get(i), Some('^') | Some('!'));
                    if neg {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = cs.get(i) else {
                            return Err(bad("unterminated character class: expected ']'"));
                        };
                        if c == ']' && !first {
                            i += 1;
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            i += 1;
                            *cs.get(i)
                                .ok_or_else(|| bad("trailing backslash in class"))?
                        } else {
                            c
                        };
                        i += 1;
                        let mut hi = lo;
                        if cs.get(i) == Some(&'-') && cs.get(i + 1).is_some_and(|c| *c != ']') {
                            i += 1;
                            let c = cs[i];
                            hi = if c == '\\' {
                                i += 1;
                                *cs.get(i)
                                    .ok_or_else(|| bad("trailing backslash in class"))?
                            } else {
                                c
                            };
                            i += 1;
                            if hi < lo {
                                return Err(bad("character range out of order"));
                            }
                        }
                        ranges.push((lo, hi));
                    }
                    toks.push(Tok::Class(ranges, neg));
                }
                c => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        Ok(Self { toks })
    }

    /// Whether the pattern has any wildcard (otherwise it names one path).
    pub fn has_wildcards(pattern: &str) -> bool {
        pattern.contains(['*', '?', '[', '\\'])
    }

    /// Whether `text` (a `/`-separated relative path) matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        let p = &self.toks;
        if p.iter().all(|k| matches!(k, Tok::Lit(_))) {
            return p.len() == t.len()
                && p.iter()
                    .zip(&t)
                    .all(|(k, c)| matches!(k, Tok::Lit(l) if l == c));
        }
        if t.len() > 4 * MAX_PATTERN_CHARS {
            return false;
        }
        // dp[j] for the current token index i: does toks[i..] match t[j..]?
        let n = t.len();
        let mut next = vec![false; n + 1];
        next[n] = true; // empty pattern matches only the empty rest
        for i in (0..p.len()).rev() {
            let mut cur = vec![false; n + 1];
            for j in (0..=n).rev() {
                cur[j] = match &p[i] {
                    Tok::Lit(c) => j < n && t[j] == *c && next[j + 1],
                    Tok::One => j < n && t[j] != '/' && next[j + 1],
                    Tok::Class(r, neg) => {
                        j < n
                            && t[j] != '/'
                            && (r.iter().any(|(lo, hi)| *lo <= t[j] && t[j] <= *hi) != *neg)
                            && next[j + 1]
                    }
                    Tok::Star => next[j] || (j < n && t[j] != '/' && cur[j + 1]),
                    Tok::Globstar => next[j] || (j < n && cur[j + 1]),
                    Tok::GlobstarSlash => {
                        // Zero directories, or some run ending in '/'.
                        next[j] || (j..n).any(|k| t[k] == '/' && next[k + 1])
                    }
                };
            }
            next = cur;
        }
        next[0]
    }
}

/// Clean a relative path the way Go's filepath.Clean does, without a leading `/`.
/// Returns `None` if it climbs above its start (a `..` too many).
pub fn clean_rel(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// One `.dockerignore` rule.
#[derive(Debug, Clone)]
struct Rule {
    glob: Glob,
    exception: bool,
    /// The cleaned pattern, for "could an exception match below this dir" checks.
    text: String,
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

impl Ignore {
    /// Parse a `.dockerignore` file's content.
    pub fn parse(content: &str) -> Result<Self, PatternError> {
        let mut rules = Vec::new();
        for line in content.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            if pat.is_empty() {
                continue;
            }
            // Patterns are relative to the context root and cleaned like a path in it: "/x" and
            // "./x" are "x", ".." stops at the root (escapes are left as written).
            let cleaned = crate::rootfs::rel_in_root(pat);
            if cleaned.is_empty() {
                continue;
            }
            rules.push(Rule {
                glob: Glob::new(&cleaned)?,
                exception,
                text: cleaned,
            });
        }
        Ok(Self { rules })
    }

    /// Whether no rule was given.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `rel` (relative, `/`-separated, cleaned) is excluded from the context.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut parents = Vec::new();
        let mut acc = String::new();
        for (i, c) in rel.split('/').enumerate() {
            if i > 0 {
                acc.push('/');
            }
            acc.push_str(c);
            parents.push(acc.clone());
        }
        let mut excluded = false;
        for r in &self.rules {
            // A pattern applies to the path itself or any of its parent directories.
            if parents.iter().any(|p| r.glob.matches(p)) {
                excluded = !r.exception;
            }
        }
        excluded
    }

    /// Whether walking into excluded directory `rel` might still find re-included files.
    pub fn may_reinclude_below(&self, rel: &str) -> bool {
        self.rules.iter().any(|r| {
            r.exception
                && (r.text.starts_with(&format!("{rel}/"))
                    || r.text.contains(['*', '?', '['])
                    || r.text.starts_with("**"))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn g(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().matches(t)
    }

    #[test]
    fn glob_basics() {
        assert!(g("*.png", "a.png"));
        assert!(!g("*.png", "d/a.png"));
        assert!(g("index.?s", "index.js"));
        assert!(!g("index.?s", "index.jsx"));
        assert!(g("arr[[]0].txt", "arr[0].txt"));
        assert!(g("[a-c]x", "bx"));
        assert!(!g("[^a-c]x", "bx"));
        assert!(g("**/*.go", "a.go"));
        assert!(g("**/*.go", "x/y/a.go"));
        assert!(g("src/**/*.txt", "src/a.txt"));
        assert!(g("src/**/*.txt", "src/x/y/c.txt"));
        assert!(g("dir/**", "dir/a/b"));
        assert!(g("**", "anything/at/all"));
        assert!(g("a\\*b", "a*b"));
        assert!(!g("a\\*b", "axb"));
        assert!(Glob::new("[abc").is_err());
    }

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse(
            "# comment\n*/temp*\n*/*/temp*\ntemp?\n*.md\n!README*.md\nREADME-secret.md\n/build/\n**/*.log\n",
        )
        .unwrap();
        assert!(ig.excluded("somedir/temporary.txt"));
        assert!(ig.excluded("somedir/subdir/temporary.txt"));
        assert!(ig.excluded("tempa"));
        assert!(!ig.excluded("tempab"));
        assert!(ig.excluded("notes.md"));
        assert!(!ig.excluded("README.md"));
        assert!(ig.excluded("README-secret.md"));
        assert!(ig.excluded("build"));
        assert!(ig.excluded("build/x/y"));
        assert!(ig.excluded("a/b/c.log"));
        assert!(ig.excluded("c.log"));
        assert!(!ig.excluded("src/main.rs"));
    }

    #[test]
    fn clean() {
        assert_eq!(clean_rel("./a/../b/").as_deref(), Some("b"));
        assert_eq!(clean_rel("../x"), None);
        assert_eq!(clean_rel("/").as_deref(), Some(""));
    }
}
