//! The commented reference config (`ember-edge print-config`, configs/default.toml) against the config types.
//! With every commented `# key = value` line (and commented table) uncommented, the reference:
//! - still parses: it names no key the code does not know;
//! - shows each key's serde default: taking a key out changes nothing, unless the key is one of the simulated
//!   site's working values or examples listed in `WORKING_VALUES` (and those must really differ);
//! - names every field of every section, and every value of every enum-valued key.
//!
//! So a field added without documenting it, or a default changed in the code or in the file alone, fails here.
//! The config structs have no `Serialize`; the test compares the `Debug` of what a table parses to with and
//! without a key, and reads the field and variant lists from serde's own "unknown field/variant" messages.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use ember_edge::config::{Config, DEFAULT_TOML};
use toml::{Table, Value};

/// Keys whose reference value is a working value of the simulated site, or an example of an optional setting,
/// rather than the default. Paths as printed by this test (`section.key`, `[i]` for the i-th table of an array).
const WORKING_VALUES: &[&str] = &[
    "site.device_id",
    "site.name",
    "site.board",
    "telemetry.token",
    "telemetry.basic_auth",
    "cameras[0].path",
    "cameras[0].fps",
    "cameras[0].min_fps",
    "cameras[0].replay_size",
    "cameras[0].max_width",
    "cameras[0].max_height",
    "cameras[1].url",
    "sensors.devices[0].loc_id",
    "sensors.devices[0].serial",
    "sensors.devices[0].ip",
    "sensors.devices[0].flame_alarm_pct",
    "sensors.serial[0].device",
    "simulator[0].scenario",
    "zones[0].cameras",
    "zones[0].devices",
    "uplink.enabled",
    "uplink.server",
    "uplink.key_file",
    "uplink.spool_dir",
    "uplink.events_dir",
    "uplink.snapshots_dir",
    "runtime.hardware_watchdog",
    "uplink.mqtt.ca_file",
    "uplink.mqtt.client_cert",
    "uplink.mqtt.client_key",
    "collector.enabled",
];

/// A key that is not a field: serde names the real ones when it refuses it.
const PROBE: &str = "zz_not_a_field";

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn show(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if s.is_empty() => s.push_str(k),
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The same path with indices dropped: one name for a key of every table of an array.
fn schema(path: &[Seg]) -> String {
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect();
    keys.join(".")
}

fn print_config() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ember-edge")).arg("print-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, DEFAULT_TOML, "print-config prints the embedded reference");
    text
}

/// `# key = value` and `# [table]` lines lose their `# `; `# # text` (a comment inside a commented example)
/// becomes `# text`. Returns the text and how many lines were uncommented.
fn uncomment(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len());
    let mut n = 0;
    for line in text.lines() {
        let body = line.strip_prefix("# ");
        let setting = body.is_some_and(|b| {
            let table = b.starts_with('[') && b.trim_end().ends_with(']');
            let key = b.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
            table || key
        });
        match body {
            Some(b) if setting => {
                out.push_str(b);
                n += 1;
            }
            Some(b) if b.starts_with("# ") => out.push_str(b),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    (out, n)
}

fn full_reference() -> Table {
    let (text, n) = uncomment(&print_config());
    assert!(n > 20, "expected the reference's commented settings, uncommented {n} lines");
    let table: Table = text.parse().unwrap_or_else(|e| panic!("uncommented reference is not TOML: {e}\n{text}"));
    if let Err(e) = parse(&table) {
        panic!("the uncommented reference does not parse as a config (a key the code does not know?): {e}");
    }
    table
}

fn parse(t: &Table) -> Result<Config, String> {
    Value::Table(t.clone()).try_into::<Config>().map_err(|e| e.to_string())
}

fn debug(t: &Table) -> Result<String, String> {
    parse(t).map(|c| format!("{c:?}"))
}

/// Every key holding a value (not a table, not an array of tables), with its path.
fn leaves(t: &Table, path: &mut Vec<Seg>, out: &mut Vec<(Vec<Seg>, Value)>) {
    for (k, v) in t {
        path.push(Seg::Key(k.clone()));
        match v {
            Value::Table(inner) => leaves(inner, path, out),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if let Value::Table(inner) = item {
                        leaves(inner, path, out);
                    }
                    path.pop();
                }
            }
            _ => out.push((path.clone(), v.clone())),
        }
        path.pop();
    }
}

/// Every table of the reference (the root, sections, each table of an array), with its path.
fn tables(t: &Table, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(path.clone());
    for (k, v) in t {
        path.push(Seg::Key(k.clone()));
        match v {
            Value::Table(inner) => tables(inner, path, out),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_table) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if let Value::Table(inner) = item {
                        tables(inner, path, out);
                    }
                    path.pop();
                }
            }
            _ => {}
        }
        path.pop();
    }
}

fn table_at<'a>(root: &'a mut Table, path: &[Seg]) -> &'a mut Table {
    let mut v = root;
    let mut i = 0;
    while i < path.len() {
        let next = match (&path[i], path.get(i + 1)) {
            (Seg::Key(k), Some(Seg::Index(n))) => {
                i += 2;
                v.get_mut(k).and_then(|a| a.as_array_mut()).and_then(|a| a.get_mut(*n))
            }
            (Seg::Key(k), _) => {
                i += 1;
                v.get_mut(k)
            }
            (Seg::Index(_), _) => unreachable!("an index always follows a key"),
        };
        v = next.and_then(Value::as_table_mut).unwrap_or_else(|| panic!("no table at {}", show(path)));
    }
    v
}

/// The names serde lists after "expected" in an unknown field/variant message.
fn expected_names(message: &str) -> Vec<String> {
    let Some((_, list)) = message.split_once("expected") else { return Vec::new() };
    let list = list.lines().next().unwrap_or("");
    list.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn every_reference_value_is_the_serde_default_or_a_listed_working_value() {
    let reference = full_reference();
    let base = debug(&reference).unwrap();
    let mut found = Vec::new();
    leaves(&reference, &mut Vec::new(), &mut found);
    let mut wrong = Vec::new();
    let mut differing = BTreeSet::new();
    for (path, value) in &found {
        let (parent, key) = path.split_at(path.len() - 1);
        let Seg::Key(key) = &key[0] else { unreachable!("a leaf ends in a key") };
        let mut without = reference.clone();
        table_at(&mut without, parent).remove(key);
        let Ok(default) = debug(&without) else {
            continue; // a required key (a name, a source): it has no default
        };
        let name = show(path);
        if default != base {
            differing.insert(name.clone());
            if !WORKING_VALUES.contains(&name.as_str()) {
                wrong.push(format!("{name} = {value}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the reference shows values that are not the serde defaults (fix the default in one of the two places, \
         or list a deliberate working value in WORKING_VALUES):\n  {}",
        wrong.join("\n  ")
    );
    let stale: Vec<&&str> = WORKING_VALUES.iter().filter(|k| !differing.contains(**k)).collect();
    assert!(stale.is_empty(), "WORKING_VALUES lists keys the reference does not set to a non-default value: {stale:?}");
}

#[test]
fn every_field_of_every_section_is_in_the_reference() {
    let reference = full_reference();
    let mut all = Vec::new();
    tables(&reference, &mut Vec::new(), &mut all);
    // Keys shown per kind of table (all cameras together: the example cameras show the other sources' keys).
    let mut shown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut fields: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &all {
        let mut probed = reference.clone();
        let t = table_at(&mut probed, path);
        shown.entry(schema(path)).or_default().extend(t.keys().cloned());
        t.insert(PROBE.into(), Value::Integer(0));
        let err = parse(&probed).expect_err("an unknown key is refused");
        assert!(err.contains("unknown field"), "{}: {err}", show(path));
        let names = expected_names(&err);
        assert!(!names.is_empty(), "{}: no field list in {err}", show(path));
        fields.entry(schema(path)).or_default().extend(names);
    }
    let mut missing = Vec::new();
    for (table, names) in &fields {
        for n in names.difference(&shown[table]) {
            missing.push(if table.is_empty() { n.clone() } else { format!("{table}.{n}") });
        }
    }
    assert!(missing.is_empty(), "fields missing from configs/default.toml (document them there): {missing:?}");
}

#[test]
fn every_value_of_every_enum_is_named_in_the_reference() {
    let text = print_config();
    let reference = full_reference();
    let mut found = Vec::new();
    leaves(&reference, &mut Vec::new(), &mut found);
    let mut enums = 0;
    let mut unnamed = Vec::new();
    for (path, value) in &found {
        if !value.is_str() {
            continue;
        }
        let (parent, key) = path.split_at(path.len() - 1);
        let Seg::Key(key) = &key[0] else { unreachable!("a leaf ends in a key") };
        let mut probed = reference.clone();
        table_at(&mut probed, parent).insert(key.clone(), Value::String(PROBE.into()));
        let Err(err) = parse(&probed) else { continue };
        if !err.contains("unknown variant") {
            continue; // a string that is not an enum (a path, an address)
        }
        enums += 1;
        for v in expected_names(&err) {
            if !text.contains(&format!("\"{v}\"")) {
                unnamed.push(format!("{} = \"{v}\"", show(path)));
            }
        }
    }
    assert!(enums >= 10, "expected the reference's enum-valued keys, found {enums}");
    assert!(unnamed.is_empty(), "values the reference does not name (say what they do): {unnamed:?}");
}
