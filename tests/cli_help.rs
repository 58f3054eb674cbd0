//! The two command lines as a reader meets them: every subcommand of `ember-edge` and `ember-tools` answers
//! `--help`, the appliance binary neither lists nor contains the development tools, and every `ember-edge …`
//! or `ember-tools …` command written in README.md and docs/ names subcommands and flags that exist.

use std::path::{Path, PathBuf};
use std::process::Command;

const EDGE: &str = env!("CARGO_BIN_EXE_ember-edge");
const TOOLS: &str = env!("CARGO_BIN_EXE_ember-tools");

/// Subcommands that `--help` does not list (hidden on purpose), checked explicitly.
const HIDDEN_SUBCOMMANDS: &[(&str, &[&str])] = &[("ember-edge", &["model", "check"])];

/// Development flags hidden from `--help` that documentation may still name.
const HIDDEN_FLAGS: &[&str] = &["--dump-features", "--dump-boxes", "--yuyv"];

/// Development tools: in `ember-tools`, never in the appliance.
const TOOL_SUBCOMMANDS: &[&str] = &["loadtest", "bench", "eval", "collect"];

/// Text that only the tools' code carries (clap help and report strings), to look for in the binaries.
const TOOL_MARKERS: &[&str] =
    &["loadtest", "tcp_sensor_load_test", "camera_stream_load_test", "Micro-benchmarks", "Detector evaluation"];

fn exe(bin: &str) -> &'static str {
    match bin {
        "ember-edge" => EDGE,
        "ember-tools" => TOOLS,
        other => panic!("unknown binary {other}"),
    }
}

/// `bin path… --help`: (exit code, stdout).
fn help(bin: &str, path: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(exe(bin)).args(path).arg("--help").output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subcommand names listed under "Commands:" in a help text (without clap's own `help`).
fn listed_subcommands(help_text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_commands = false;
    for line in help_text.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            // Entries are indented two spaces; wrapped descriptions further.
            let Some(rest) = line.strip_prefix("  ") else { break };
            if rest.starts_with(' ') {
                continue;
            }
            let name = rest.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                out.push(name.to_owned());
            }
        }
    }
    out
}

/// Every subcommand path of `bin`, depth first, found through its `--help` texts.
fn all_paths(bin: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let (code, text) = help(bin, &args);
        assert_eq!(code, Some(0), "`{bin} {} --help` failed", args.join(" "));
        for sub in listed_subcommands(&text) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
        out.push(path);
    }
    out
}

#[test]
fn every_subcommand_of_both_binaries_answers_help() {
    for bin in ["ember-edge", "ember-tools"] {
        let paths = all_paths(bin);
        assert!(paths.len() > 3, "{bin}: too few subcommands found: {paths:?}");
        for (hidden_bin, path) in HIDDEN_SUBCOMMANDS {
            if *hidden_bin == bin {
                let (code, text) = help(bin, path);
                assert_eq!(code, Some(0), "`{bin} {} --help` failed", path.join(" "));
                assert!(text.contains("Usage:"), "{text}");
            }
        }
    }
    let edge = all_paths("ember-edge");
    for want in [&["run"][..], &["demo"], &["check-config"], &["print-config"], &["thermal", "decode"]] {
        assert!(edge.iter().any(|p| p == want), "ember-edge lacks {want:?}: {edge:?}");
    }
    assert!(edge.iter().any(|p| p == &["simulate", "sensor"]), "{edge:?}");
    let tools = all_paths("ember-tools");
    for want in [
        &["collect"][..],
        &["loadtest", "sensors"],
        &["loadtest", "uplink"],
        &["loadtest", "alarm"],
        &["loadtest", "vision"],
        &["loadtest", "streams"],
        &["eval", "frames"],
        &["bench", "detect"],
    ] {
        assert!(tools.iter().any(|p| p == want), "ember-tools lacks {want:?}: {tools:?}");
    }
}

#[test]
fn the_appliance_lists_no_development_tool() {
    let (code, text) = help("ember-edge", &[]);
    assert_eq!(code, Some(0));
    let edge = listed_subcommands(&text);
    let (_, text) = help("ember-tools", &[]);
    let tools = listed_subcommands(&text);
    for t in TOOL_SUBCOMMANDS {
        assert!(!edge.iter().any(|s| s == t), "`ember-edge --help` lists {t}: {edge:?}");
        assert!(tools.iter().any(|s| s == t), "`ember-tools --help` does not list {t}: {tools:?}");
    }
    // And the other way: the tools are not a second copy of the appliance.
    assert!(!tools.iter().any(|s| s == "run" || s == "demo"), "{tools:?}");
}

/// Whether the file holds `needle` anywhere. grep, because a byte search over a 90 MB debug binary compiled
/// without optimisation takes seconds (minutes under qemu-user), and grep is on every machine that runs this.
fn file_contains(path: &str, needle: &str) -> bool {
    let status = Command::new("grep").args(["-qaF", "--", needle, path]).status().unwrap();
    assert!(matches!(status.code(), Some(0 | 1)), "grep failed on {path}: {status}");
    status.code() == Some(0)
}

#[test]
fn the_appliance_binary_carries_no_tool_code() {
    for m in TOOL_MARKERS {
        // The marker must mean something: the tools binary has it.
        assert!(file_contains(TOOLS, m), "marker `{m}` is not in ember-tools; pick another");
        assert!(!file_contains(EDGE, m), "ember-edge contains `{m}`: tool code was linked into the appliance");
    }
}

/// Markdown files that document commands: README.md and everything under docs/.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The code in a Markdown text: each fenced block's lines (backslash continuations joined) and each inline
/// code span (which may wrap across lines).
fn code_snippets(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prose = String::new();
    let mut fence: Option<Vec<String>> = None;
    for line in md.lines() {
        let t = line.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            match fence.take() {
                Some(lines) => {
                    let mut joined = String::new();
                    for l in lines {
                        match l.trim_end().strip_suffix('\\') {
                            Some(head) => {
                                joined.push_str(head);
                                joined.push(' ');
                            }
                            None => {
                                joined.push_str(&l);
                                out.push(std::mem::take(&mut joined));
                            }
                        }
                    }
                    if !joined.is_empty() {
                        out.push(joined);
                    }
                }
                None => fence = Some(Vec::new()),
            }
            continue;
        }
        match fence.as_mut() {
            Some(lines) => lines.push(line.to_owned()),
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    // Inline spans: a blank line ends a paragraph, so an unmatched backtick never runs into the next one.
    for para in prose.split("\n\n") {
        let para = para.replace('\n', " ");
        out.extend(para.split('`').skip(1).step_by(2).map(str::to_owned));
    }
    out
}

/// A documented command: which binary and its words, from a snippet that starts with the binary's name
/// (after an optional `$ `, `sudo ` or path such as `./target/release/`) or with `cargo run … --`.
fn command_of(snippet: &str) -> Option<(&'static str, Vec<String>)> {
    let s = snippet.trim();
    let s = s.strip_prefix("$ ").unwrap_or(s).trim_start();
    let s = s.strip_prefix("sudo ").unwrap_or(s).trim_start();
    let mut words = s.split_whitespace();
    let first = words.next()?;
    let bin = if first == "cargo" {
        let rest: Vec<&str> = s.split_whitespace().collect();
        if rest.get(1) != Some(&"run") {
            return None;
        }
        let dashes = rest.iter().position(|w| *w == "--")?;
        let named = rest[..dashes].windows(2).find(|w| w[0] == "--bin").map(|w| w[1]);
        let bin = match named {
            Some("ember-tools") => "ember-tools",
            Some("ember-edge") | None => "ember-edge",
            Some(_) => return None,
        };
        return Some((bin, shell_words(&rest[dashes + 1..])));
    } else {
        match first.rsplit('/').next()? {
            "ember-edge" => "ember-edge",
            "ember-tools" => "ember-tools",
            _ => return None,
        }
    };
    let rest: Vec<&str> = words.collect();
    Some((bin, shell_words(&rest)))
}

/// The command's own words: up to a shell operator or a comment.
fn shell_words(words: &[&str]) -> Vec<String> {
    words
        .iter()
        .take_while(|w| {
            !matches!(**w, "|" | "||" | "&&" | ";" | "&" | "#") && !w.starts_with('>') && !w.starts_with("2>")
        })
        .map(|w| (*w).to_owned())
        .collect()
}

/// Checks one documented command: its leading words are subcommands (the usage line of `--help` names them),
/// and every `--flag` it uses appears in the innermost subcommand's help.
fn check_command(bin: &str, words: &[String]) -> Result<(), String> {
    let mut path: Vec<&str> = Vec::new();
    let (code, mut text) = help(bin, &[]);
    if code != Some(0) {
        return Err(format!("`{bin} --help` failed"));
    }
    for w in words {
        let is_word = w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !is_word {
            break;
        }
        let mut next = path.clone();
        next.push(w);
        let (code, t) = help(bin, &next);
        let usage = format!("Usage: {bin} {}", next.join(" "));
        let is_sub = code == Some(0) && t.lines().any(|l| l == usage || l.starts_with(&format!("{usage} ")));
        if !is_sub {
            if path.is_empty() {
                return Err(format!("`{w}` is not a subcommand of {bin}"));
            }
            break;
        }
        path = next;
        text = t;
    }
    if path.is_empty() && !words.iter().any(|w| w == "--help" || w == "--version" || w == "-V" || w == "-h") {
        return Err(format!("no subcommand in `{bin} {}`", words.join(" ")));
    }
    for w in words {
        let flag = w.trim_start_matches(['[', '(']).trim_end_matches([']', ')', ',', '.', ';']);
        let flag = flag.split('=').next().unwrap_or(flag);
        if !flag.starts_with("--") || flag.len() < 3 || HIDDEN_FLAGS.contains(&flag) {
            continue;
        }
        let known = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).any(|t| t == flag);
        if !known && flag != "--help" && flag != "--version" {
            return Err(format!("`{bin} {}` has no flag {flag}", path.join(" ")));
        }
    }
    Ok(())
}

#[test]
fn every_documented_command_exists_as_written() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for doc in documents() {
        let md = std::fs::read_to_string(&doc).unwrap();
        let name = doc.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&doc).display().to_string();
        for snippet in code_snippets(&md) {
            let Some((bin, words)) = command_of(&snippet) else { continue };
            if words.is_empty() {
                continue;
            }
            checked += 1;
            if let Err(e) = check_command(bin, &words) {
                problems.push(format!("{name}: `{}`: {e}", snippet.trim()));
            }
        }
    }
    assert!(problems.is_empty(), "documented commands that do not run as written:\n{}", problems.join("\n"));
    assert!(checked >= 5, "only {checked} documented commands found; is the extraction broken?");
}

#[test]
fn the_extraction_finds_commands_in_blocks_and_spans() {
    let md = "Run `ember-tools eval frames DIR --json` or\n`./target/release/ember-edge check-config\nFILE...`.\n\n\
              ```sh\ncargo run --release -- demo --duration 15   # a comment\n\
              sudo ember-edge model check --library L \\\n    --model M | tee x\n\
              journalctl -u ember-edge -f\n```\n";
    let found: Vec<_> = code_snippets(md).iter().filter_map(|s| command_of(s)).collect();
    let want = |bin: &'static str, w: &[&str]| (bin, w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        found,
        vec![
            want("ember-edge", &["demo", "--duration", "15"]),
            want("ember-edge", &["model", "check", "--library", "L", "--model", "M"]),
            want("ember-tools", &["eval", "frames", "DIR", "--json"]),
            want("ember-edge", &["check-config", "FILE..."]),
        ]
    );
    assert!(check_command("ember-tools", &["eval".into(), "frames".into(), "DIR".into(), "--json".into()]).is_ok());
    assert!(check_command("ember-edge", &["eval".into(), "frames".into()]).is_err());
    assert!(check_command("ember-edge", &["run".into(), "--no-such-flag".into()]).is_err());
}

/// Absurd or zero durations on the command line are usage errors (exit 2), not panics (exit 101).
#[test]
fn absurd_durations_are_usage_errors_not_panics() {
    let edge = exe("ember-edge");
    for args in [
        &["run", "--config", "configs/default.toml", "--duration", "1e300"][..],
        &["run", "--config", "configs/default.toml", "--duration", "NaN"][..],
        &["demo", "--duration=-1"][..],
        &["simulate", "sensor", "--connect", "127.0.0.1:9", "--interval", "0"][..],
        &["simulate", "sensor", "--connect", "127.0.0.1:9", "--duration", "inf"][..],
    ] {
        let out = std::process::Command::new(edge).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("seconds") && !err.contains("panicked"), "{args:?}: {err}");
    }
}
