//! Config-file loading with complete, located error reports.
//!
//! Owns turning TOML text into a serde type while reporting *every* problem (not just the
//! first one serde hits), each as `FILE:LINE:COL: message`, and mapping semantic-validation
//! problems (given as a document path) back to a source location.
//!
//! serde stops at the first error, so `parse_all` "repairs and retries": after each error it
//! neutralises the offending `key = value` in a working copy (same byte offsets, so spans
//! still point into the original text) and deserializes again.
//!
//! Messages are toml/serde's own, cleaned to one line. Typical ones:
//! - `unknown field `verbose`, expected `listen``
//! - `invalid type: string "fast", expected u32`
//! - `invalid value: integer `70000`, expected u16`
//! - `missing field `name`` (located at the table header, e.g. `[[cameras]]`)
//! - syntax: `unclosed array, expected `]``, `key with no value, expected `=``, `duplicate key`,
//!   `string values must be quoted, expected literal string`

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

/// One problem found in a config file, already located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)
    }
}

/// A path into the TOML document, e.g. [Key("cameras"), Index(1), Key("name")].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// Each round costs a few full deserializations; 64 errors in one file is already plenty.
const MAX_ROUNDS: usize = 64;
/// Tried before deleting a bad entry: keeping the key present avoids a spurious
/// "missing field" for required fields whose value was merely wrong.
const STAND_INS: [&str; 5] = ["0", "\"\"", "false", "[]", "{}"];

type Entry<'t, 'i> = (&'t Spanned<DeString<'i>>, &'t Spanned<DeValue<'i>>);

/// Parse `text` (named `file` in messages) into T, collecting EVERY problem instead of stopping at the first.
pub fn parse_all<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, Vec<ConfigProblem>> {
    if let Err(e) = DeTable::parse(text) {
        let at = e.span().map_or(0, |s| s.start);
        return Err(vec![problem_at(file, text, at, clean(e.message()))]);
    }
    let mut work = text.to_owned();
    let mut problems = Vec::new();
    let mut seen: Vec<Range<usize>> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let err = match toml::from_str::<T>(&work) {
            Ok(v) if problems.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let msg = clean(err.message());
        let missing = missing_field(&msg);
        // A missing field we caused by deleting a bad entry is our artefact, not the user's.
        if missing.as_ref().is_some_and(|m| removed.contains(m)) {
            break;
        }
        let Some(span) = err.span() else {
            problems.push(problem_at(file, text, 0, msg));
            break;
        };
        problems.push(problem_at(file, text, span.start, msg));
        if missing.is_some() || seen.contains(&span) {
            break;
        }
        seen.push(span.clone());
        match repair::<T>(&work, span) {
            Some((next, key)) => {
                work = next;
                removed.push(key);
            }
            None => break,
        }
    }
    problems.sort_by_key(|p| (p.line, p.col));
    problems.dedup();
    Err(problems)
}

/// Map a semantic-validation problem given as a path to a located ConfigProblem.
pub fn locate(file: &str, text: &str, path: &[PathSeg], message: String) -> ConfigProblem {
    let mut at = 0;
    if let Ok(doc) = DeTable::parse(text) {
        let mut table = Some(doc.get_ref());
        let mut array = None;
        for seg in path {
            let next = match seg {
                PathSeg::Key(k) => table
                    .and_then(|t| t.iter().find(|(tk, _)| tk.get_ref().as_ref() == k.as_str()))
                    .map(|(tk, v)| (tk.span().start, v)),
                PathSeg::Index(i) => array.and_then(|a: &toml::de::DeArray<'_>| a.get(*i)).map(|v| (v.span().start, v)),
            };
            let Some((start, v)) = next else { break };
            at = start;
            table = v.get_ref().as_table();
            array = v.get_ref().as_array();
        }
    }
    problem_at(file, text, at, message)
}

/// Neutralise the entry behind `err` in `work`; returns the new text and the removed key name.
fn repair<T: serde::de::DeserializeOwned>(work: &str, err: Range<usize>) -> Option<(String, String)> {
    let doc = DeTable::parse(work).ok()?;
    // Zero-width spans (e.g. end of input) would otherwise overlap nothing.
    let err = if err.is_empty() { err.start..err.start + 1 } else { err };
    let mut best = None;
    find(doc.get_ref(), work, &err, false, 0, None, &mut best);
    let (_, (key, value)) = best?;
    let name = key.get_ref().to_string();
    if !is_container(work, value) {
        let range = line_start(work, key.span().start)..value.span().end;
        let prefix = work.get(range.start..key.span().end)?;
        for s in STAND_INS {
            let Some(cand) = overwrite(work, &range, &format!("{prefix} = {s}")) else { continue };
            if DeTable::parse(&cand).is_err() {
                continue;
            }
            match toml::from_str::<T>(&cand) {
                Ok(_) => return Some((cand, name)),
                Err(e) if e.span().is_some_and(|s| !overlaps(&s, &range)) => return Some((cand, name)),
                Err(_) => {}
            }
        }
    }
    let mut ranges = Vec::new();
    removal_ranges(work, key, value, &mut ranges);
    let mut bytes = work.as_bytes().to_vec();
    for r in ranges {
        for b in bytes.get_mut(r)?.iter_mut().filter(|b| !matches!(b, b'\n' | b'\r')) {
            *b = b' ';
        }
    }
    let out = String::from_utf8(bytes).ok()?;
    // Never hand the next round a syntax error of our own making.
    DeTable::parse(&out).ok()?;
    Some((out, name))
}

/// Deepest entry whose key or value overlaps `err`; inside inline tables/arrays the
/// enclosing normal-table entry stands in, since only whole lines can be blanked safely.
fn find<'t, 'i>(
    table: &'t DeTable<'i>,
    text: &str,
    err: &Range<usize>,
    inline: bool,
    depth: usize,
    anchor: Option<Entry<'t, 'i>>,
    best: &mut Option<(usize, Entry<'t, 'i>)>,
) {
    for (k, v) in table.iter() {
        let here = if inline { anchor } else { Some((k, v)) };
        if (overlaps(&k.span(), err) || overlaps(&v.span(), err))
            && let Some(h) = here
            && best.as_ref().is_none_or(|(d, _)| depth > *d)
        {
            *best = Some((depth, h));
        }
        descend(v, text, err, inline, depth + 1, here, best);
    }
}

fn descend<'t, 'i>(
    v: &'t Spanned<DeValue<'i>>,
    text: &str,
    err: &Range<usize>,
    inline: bool,
    depth: usize,
    anchor: Option<Entry<'t, 'i>>,
    best: &mut Option<(usize, Entry<'t, 'i>)>,
) {
    match v.get_ref() {
        DeValue::Table(t) => find(t, text, err, inline || starts_with(text, v, '{'), depth, anchor, best),
        DeValue::Array(a) => {
            for e in a.iter() {
                let header = is_header_table(text, e);
                match e.get_ref() {
                    DeValue::Table(t) => find(t, text, err, inline || !header, depth + 1, anchor, best),
                    DeValue::Array(_) => descend(e, text, err, true, depth + 1, anchor, best),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// Byte ranges to blank so an entry disappears: headers of `[t]`/`[[t]]` tables plus every
/// leaf line under them; a leaf runs from its line's first key char to the value end.
fn removal_ranges(text: &str, key: &Spanned<DeString<'_>>, value: &Spanned<DeValue<'_>>, out: &mut Vec<Range<usize>>) {
    match value.get_ref() {
        DeValue::Table(t) if !starts_with(text, value, '{') => {
            if starts_with(text, value, '[') {
                out.push(value.span());
            }
            t.iter().for_each(|(k, v)| removal_ranges(text, k, v, out));
        }
        DeValue::Array(a) if is_container(text, value) => {
            for e in a.iter() {
                out.push(e.span());
                if let DeValue::Table(t) = e.get_ref() {
                    t.iter().for_each(|(k, v)| removal_ranges(text, k, v, out));
                }
            }
        }
        _ => out.push(line_start(text, key.span().start)..value.span().end),
    }
}

/// True for `[t]` / dotted tables and `[[t]]` arrays, whose pieces live on several lines.
fn is_container(text: &str, v: &Spanned<DeValue<'_>>) -> bool {
    match v.get_ref() {
        DeValue::Table(_) => !starts_with(text, v, '{'),
        DeValue::Array(a) => a.first().is_some_and(|e| is_header_table(text, e)),
        _ => false,
    }
}

fn is_header_table(text: &str, v: &Spanned<DeValue<'_>>) -> bool {
    matches!(v.get_ref(), DeValue::Table(_)) && starts_with(text, v, '[')
}

fn starts_with(text: &str, v: &Spanned<DeValue<'_>>, c: char) -> bool {
    text.get(v.span()).is_some_and(|s| s.starts_with(c))
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// In a normal table a key/value always starts its line, so this also covers dotted prefixes.
fn line_start(text: &str, pos: usize) -> usize {
    let head = text.as_bytes().get(..pos).unwrap_or_default();
    let start = head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    start + head.get(start..).unwrap_or_default().iter().take_while(|b| matches!(b, b' ' | b'\t')).count()
}

/// Replace `range` with `with`, padding with spaces but keeping newlines so offsets stay put.
fn overwrite(text: &str, range: &Range<usize>, with: &str) -> Option<String> {
    let mut bytes = text.as_bytes().to_vec();
    let slot = bytes.get_mut(range.clone())?;
    if with.len() > slot.len() {
        return None;
    }
    let mut fill = with.bytes();
    for b in slot.iter_mut() {
        match fill.next() {
            Some(c) => *b = c,
            None if matches!(b, b'\n' | b'\r') => {}
            None => *b = b' ',
        }
    }
    String::from_utf8(bytes).ok()
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    Some(rest.split('`').next().unwrap_or_default().to_owned())
}

fn clean(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn problem_at(file: &str, text: &str, offset: usize, message: String) -> ConfigProblem {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = text.get(..off).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    ConfigProblem { file: file.to_owned(), line, col, message }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Config {
        telemetry: Telemetry,
        cameras: Vec<Camera>,
        sensors: Sensors,
    }
    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Telemetry {
        listen: String,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Camera {
        name: String,
        #[serde(default = "five")]
        fps: u32,
    }
    fn five() -> u32 {
        5
    }
    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sensors {
        port: u16,
    }

    const VALID: &str = "[telemetry]\nlisten = \"0.0.0.0:9000\"\n\n[[cameras]]\nname = \"front\"\nfps = 10\n\n[[cameras]]\nname = \"back\"\n\n[sensors]\nport = 7000\n";

    fn at(problems: &[ConfigProblem]) -> Vec<(usize, usize)> {
        problems.iter().map(|p| (p.line, p.col)).collect()
    }

    #[test]
    fn valid_file_parses() {
        let c: Config = parse_all("c.toml", VALID).expect("valid");
        assert_eq!(c.cameras.len(), 2);
        assert_eq!(c.cameras[1].fps, 5);
        assert_eq!(c.sensors.port, 7000);
    }

    #[test]
    fn three_mistakes_all_reported() {
        let text = "[telemetry]\nlisten = \"0.0.0.0:9000\"\nverbose = true\n\n[[cameras]]\nname = \"front\"\nfps = 10\n\n[[cameras]]\nname = \"back\"\nfps = \"fast\"\n\n[sensors]\nport = 70000\n";
        let p = parse_all::<Config>("c.toml", text).expect_err("3 problems");
        assert_eq!(at(&p), vec![(3, 1), (11, 7), (14, 8)], "{p:#?}");
        assert_eq!(p[0].message, "unknown field `verbose`, expected `listen`");
        assert_eq!(p[1].message, "invalid type: string \"fast\", expected u32");
        assert_eq!(p[2].message, "invalid value: integer `70000`, expected u16");
        assert_eq!(p[0].to_string(), "c.toml:3:1: unknown field `verbose`, expected `listen`");
    }

    #[test]
    fn syntax_error_is_one_problem() {
        let p = parse_all::<Config>("c.toml", "[sensors]\nport = \nx = 1\n").expect_err("syntax");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].line, 2, "{p:?}");
    }

    #[test]
    fn missing_field_reported_at_header() {
        let text = "[[cameras]]\nname = \"a\"\n[[cameras]]\nfps = 3\n";
        let p = parse_all::<Config>("c.toml", text).expect_err("missing");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].line, p[0].col), (3, 1));
        assert_eq!(p[0].message, "missing field `name`");
    }

    #[test]
    fn tables_dotted_and_inline_entries_are_skipped() {
        let text = "x.y = 1\n[bogus]\na = 1\n[telemetry]\nlisten = { a = 1, b = [1, 2] }\n[[cams]]\nq = 1\n[sensors]\nport = -1\n";
        let p = parse_all::<Config>("c.toml", text).expect_err("problems");
        assert_eq!(at(&p), vec![(1, 1), (2, 2), (5, 10), (6, 3), (9, 8)], "{p:#?}");
    }

    #[test]
    fn multiline_inline_table_and_crlf() {
        let text = "[telemetry]\r\nlisten = \"x\"\r\nextra = {\r\n  a = 1,\r\n}\r\n[sensors]\r\nport = 1.5\r\n";
        let p = parse_all::<Config>("c.toml", text).expect_err("problems");
        assert_eq!(at(&p), vec![(3, 1), (7, 8)], "{p:#?}");
        let p = parse_all::<Config>("c.toml", "[sensors]\nport = \n").expect_err("syntax");
        assert_eq!(p[0].message, "string values must be quoted, expected literal string", "{p:?}");
    }

    #[test]
    fn locate_resolves_paths() {
        let path = [PathSeg::Key("cameras".into()), PathSeg::Index(1), PathSeg::Key("name".into())];
        let p = locate("c.toml", VALID, &path, "duplicate name".into());
        assert_eq!((p.line, p.col), (9, 1));
        let missing = [PathSeg::Key("cameras".into()), PathSeg::Index(1), PathSeg::Key("nope".into())];
        assert_eq!(locate("c.toml", VALID, &missing, String::new()).line, 8);
        assert_eq!(locate("c.toml", "= =", &path, String::new()).line, 1);
    }

    #[test]
    fn garbage_never_panics() {
        for text in ["", "\u{0}", "[[", "a = \"\u{e9}", "ü = 1", "[a]\n[a]\n", "cameras = 1\ncameras = 2"] {
            let _ = parse_all::<Config>("g", text);
        }
        let mut seed = crate::prng::XorShift64::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || seed.next();
        let base = "[telemetry]\nlisten = \"x\"\nverbose = true\n[[cameras]]\nname = \"é\"\nfps = \"fast\"\nx.y = { a = [1, {b = 2}] }\n[sensors]\nport = 70000\n";
        let alphabet = b"[]{}=\".,#\n 0a\\'";
        for round in 0..400 {
            let mut bytes = if round % 2 == 0 { base } else { VALID }.as_bytes().to_vec();
            for _ in 0..(1 + next() % 4) {
                let i = (next() as usize) % bytes.len();
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes[i] = c,
                    1 => bytes.insert(i, c),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_all::<Config>("f", &text);
            let path = [PathSeg::Key("cameras".into()), PathSeg::Index(0), PathSeg::Key("fps".into())];
            let _ = locate("f", &text, &path, String::new());
        }
    }
}
