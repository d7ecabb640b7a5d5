//! Random-input robustness test that runs in plain `cargo test` (the cargo-fuzz target in
//! fuzz/ runs the same `exercise` function much longer): the front end must never panic.

#![allow(clippy::unwrap_used)]

/// Small deterministic xorshift generator, so failures are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[(self.next() % v.len() as u64) as usize]
    }
}

const PIECES: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "SHELL ",
    "CMD ",
    "EXPOSE ",
    "VOLUME ",
    "WORKDIR ",
    "USER ",
    "# escape=`\n",
    "# syntax=x\n",
    "\\\n",
    "`\n",
    "\n",
    " ",
    "\t",
    "\"",
    "'",
    "$",
    "${",
    "}",
    ":-",
    ":+",
    "#",
    "%",
    "/",
    "//",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "EOF\n",
    "\tEOF\n",
    "--mount=",
    "type=cache,target=/x",
    "--from=",
    "--chown=",
    "--",
    "=",
    "[",
    "]",
    "[\"a\",\"b\"]",
    ",",
    "*",
    "**",
    "?",
    "[a-",
    "!",
    "NONE",
    "CMD",
    "AS ",
    "x",
    "é",
    "\u{feff}",
    "\r\n",
    "--interval=",
    "5m",
    "1.5s",
];

#[test]
fn random_inputs_never_panic() {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for _ in 0..20_000 {
        let n = (rng.next() % 40) as usize;
        let mut s = String::new();
        for _ in 0..n {
            if rng.next().is_multiple_of(8) {
                let c = char::from_u32((rng.next() % 0x250) as u32).unwrap_or('x');
                s.push(c);
            } else {
                s.push_str(rng.pick(PIECES));
            }
        }
        let _ = skiff_build::fuzzing::exercise(&s);
    }
}

#[test]
fn pathological_inputs_never_panic() {
    let cases = [
        "${".repeat(10_000),
        "RUN ".to_string() + &"<<A ".repeat(2_000),
        "\\\n".repeat(10_000),
        "ENV ".to_string() + &"a=\"b\\\"".repeat(1_000),
        "[".repeat(5_000),
        "FROM x\nONBUILD ".repeat(100),
        "*".repeat(3_000) + "x",
    ];
    for c in cases {
        let _ = skiff_build::fuzzing::exercise(&c);
    }
}
