//! Logging like runc: `--log FILE` (default stderr) and `--log-format text|json`.
//!
//! Text lines look like logrus's (`time="..." level=error msg="..."`), JSON lines like
//! `{"level":"error","msg":"...","time":"..."}`. When a log file is given, a fatal error is
//! also printed plainly on stderr, as runc does.
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

/// Output format of log entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// logrus text.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug)]
struct Config {
    file: Option<PathBuf>,
    format: Format,
    debug: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Configure logging once, from the global flags.
pub fn init(file: Option<PathBuf>, format: Format, debug: bool) {
    let _ = CONFIG.set(Config {
        file,
        format,
        debug,
    });
}

fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config {
        file: None,
        format: Format::Text,
        debug: false,
    })
}

/// Whether `--debug` was given.
pub fn debug_enabled() -> bool {
    config().debug
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Render one entry in `format`.
fn render(format: Format, level: &str, msg: &str) -> String {
    match format {
        Format::Json => {
            let v = serde_json::json!({"level": level, "msg": msg, "time": timestamp()});
            format!("{v}\n")
        }
        Format::Text => {
            let quoted = serde_json::to_string(msg).unwrap_or_else(|_| format!("{msg:?}"));
            format!("time=\"{}\" level={level} msg={quoted}\n", timestamp())
        }
    }
}

fn write(level: &str, msg: &str) {
    let c = config();
    let line = render(c.format, level, msg);
    match &c.file {
        Some(path) => {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(line.as_bytes());
            }
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

/// Log a fatal error the way runc does (log entry, plus plain stderr when logging to a file).
pub fn fatal(msg: &str) {
    write("error", msg);
    if config().file.is_some() {
        let _ = writeln!(std::io::stderr(), "{msg}");
    }
}

/// Log a warning.
pub fn warn(msg: &str) {
    write("warning", msg);
}

/// Log a debug message (only with `--debug`).
pub fn debug(msg: &str) {
    if config().debug {
        write("debug", msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_entry_shape() {
        let l = render(Format::Json, "error", "container does not exist");
        let v: serde_json::Value = serde_json::from_str(l.trim()).expect("json");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "container does not exist");
        assert!(v["time"].is_string());
    }

    #[test]
    fn text_entry_shape() {
        let l = render(Format::Text, "error", "say \"hi\"");
        assert!(l.starts_with("time=\""));
        assert!(l.contains("level=error msg=\"say \\\"hi\\\"\""));
    }
}
