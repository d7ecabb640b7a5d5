//! One entry point that drives every front-end component with arbitrary text; shared by the
//! cargo-fuzz target (fuzz/) and the random-input test so both check the same thing: no panic.

use crate::dockerignore::{Glob, Ignore};
use crate::expand::Expander;
use crate::instructions::{Command, Instruction};

/// Parse `input` as a Dockerfile, expand its words, and use it as .dockerignore and glob text.
/// Returns how many instructions parsed (the value is irrelevant; not panicking is the point).
pub fn exercise(input: &str) -> usize {
    let lookup = |k: &str| -> Option<String> {
        match k.len() % 3 {
            0 => None,
            1 => Some(String::new()),
            _ => Some(format!("v {k} *")),
        }
    };
    for esc in ['\\', '`'] {
        let e = Expander::new(esc);
        let _ = e.word(input, &lookup);
        let _ = e.words(input, &lookup);
    }
    // Matching costs pattern length x path length; paths are short in real builds, so only
    // short inputs are also used as paths (keeps the fuzzer fast on long inputs).
    let short = input.len() <= 256;
    if let Ok(ig) = Ignore::parse(input) {
        for p in ["a", "a/b", "x/y/z.log"] {
            let _ = ig.excluded(p);
        }
        if short {
            let _ = ig.excluded(input);
        }
    }
    if let Ok(g) = Glob::new(input) {
        let _ = g.matches("some/path.txt");
        if short {
            let _ = g.matches(input);
        }
    }
    let Ok(df) = crate::parser::parse("fuzz", input) else {
        return 0;
    };
    let e = Expander::new(df.escape);
    for l in &df.instructions {
        let words: Vec<String> = match &l.instruction {
            Instruction::From {
                image, platform, ..
            } => {
                let mut v = vec![image.clone()];
                v.extend(platform.clone());
                v
            }
            Instruction::Env { vars } => vars.iter().filter_map(|kv| kv.value.clone()).collect(),
            Instruction::Label { labels } => labels
                .iter()
                .flat_map(|kv| [Some(kv.key.clone()), kv.value.clone()])
                .flatten()
                .collect(),
            Instruction::Copy(c) | Instruction::Add(c) => {
                let mut v = c.sources.clone();
                v.push(c.dest.clone());
                v
            }
            Instruction::Workdir { path } => vec![path.clone()],
            Instruction::User { user } => vec![user.clone()],
            Instruction::Expose { ports } => ports.clone(),
            Instruction::Volume { paths } => paths.clone(),
            Instruction::Run {
                command: Command::Shell(s),
                ..
            } => vec![s.clone()],
            _ => Vec::new(),
        };
        for w in words {
            let _ = e.word(&w, &lookup);
            let _ = e.words(&w, &lookup);
        }
    }
    df.instructions.len()
}
