//! YAML as this project prints it (`render`, `crd`): block style, and every string that a YAML
//! 1.1 reader (kubectl's, PyYAML) or a YAML 1.2 reader could take for anything but that string
//! double-quoted. YAML 1.1 reads `on`, `no`, `y`, `~`, `0755` or `1:30` as booleans, nulls and
//! numbers, so an annotation `"on"` printed plain becomes a boolean that the API server refuses;
//! the YAML serializers on crates.io quote by the 1.2 rules only. Pure.

use serde::Serialize;
use serde_json::Value;

/// `value` as a YAML document (no `---`), every line ending in a newline.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = String::new();
    match &value {
        Value::Object(map) if !map.is_empty() => mapping(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => sequence(&mut out, items, 0, false),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    Ok(out)
}

fn indent(out: &mut String, width: usize) {
    out.extend(std::iter::repeat_n(' ', width));
}

/// A value written on the line of its key or dash: scalars and empty collections.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn is_block(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    }
}

fn mapping(out: &mut String, map: &serde_json::Map<String, Value>, width: usize) {
    for (key, value) in map {
        indent(out, width);
        entry(out, key, value, width);
    }
}

/// `key: value` from the current position; nested blocks below it.
fn entry(out: &mut String, key: &str, value: &Value, width: usize) {
    out.push_str(&scalar(key));
    out.push(':');
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            mapping(out, map, width + 2);
        }
        // A sequence under a key starts at the key's own indentation, as kubectl prints it.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            sequence(out, items, width, false);
        }
        scalar_value => {
            out.push(' ');
            out.push_str(&inline(scalar_value));
            out.push('\n');
        }
    }
}

/// The items of a sequence, the first on the current line when `continues` (a sequence in a
/// sequence: `- - a`).
fn sequence(out: &mut String, items: &[Value], width: usize, continues: bool) {
    for (n, item) in items.iter().enumerate() {
        if n > 0 || !continues {
            indent(out, width);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first entry on the dash's line, the others aligned with it.
                for (i, (key, value)) in map.iter().enumerate() {
                    if i > 0 {
                        indent(out, width + 2);
                    }
                    entry(out, key, value, width + 2);
                }
            }
            Value::Array(inner) if is_block(item) => sequence(out, inner, width + 2, true),
            scalar_value => {
                out.push_str(&inline(scalar_value));
                out.push('\n');
            }
        }
    }
}

/// A string as a plain scalar when no YAML 1.1 or 1.2 reader can read it as anything else,
/// else double-quoted.
pub fn scalar(s: &str) -> String {
    if needs_quotes(s) {
        double_quoted(s)
    } else {
        s.to_string()
    }
}

/// Double-quoted, with every character a reader would fold, drop or refuse escaped: breaks
/// (`\n`, NEL, the line and paragraph separators) would fold into spaces, and YAML 1.1 refuses
/// the non-printable ones outright. Escapes common to YAML 1.1 and 1.2.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if !is_printable(c) || is_special_space(c) => {
                let n = u32::from(c);
                if n <= 0xFFFF {
                    out.push_str(&format!("\\u{n:04X}"));
                } else {
                    out.push_str(&format!("\\U{n:08X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// YAML 1.1's printable characters (1.2's are a superset).
fn is_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Words YAML 1.1 reads as booleans or null (its `bool` and `null` types), and 1.2's.
const RESERVED: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "<<",
    "=",
];

fn needs_quotes(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    if RESERVED.contains(&s) {
        return true;
    }
    let second = s[first.len_utf8()..].chars().next();
    // Anything that may start a number, a timestamp or a special float in either version:
    // `012`, `0o12`, `0x1F`, `1_000`, `1:30`, `2001-12-14`, `+1`, `-.5`, `.inf`, `.NaN`.
    let numberish = first.is_ascii_digit()
        || (matches!(first, '-' | '+') && second.is_some_and(|c| c.is_ascii_digit() || c == '.'))
        || (first == '.' && second.is_some_and(|c| c.is_ascii_digit()))
        || matches!(s.to_ascii_lowercase().as_str(), ".inf" | ".nan");
    // Characters that begin YAML syntax, not a plain scalar (`-`, `?` and `:` only before a
    // space or at the end: `--timeout=90` is plain).
    let indicator = matches!(
        first,
        ',' | '['
            | ']'
            | '{'
            | '}'
            | '#'
            | '&'
            | '*'
            | '!'
            | '|'
            | '>'
            | '\''
            | '"'
            | '%'
            | '@'
            | '`'
    ) || (matches!(first, '-' | '?' | ':')
        && second.is_none_or(char::is_whitespace));
    numberish
        || indicator
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace)
        || s.ends_with(':')
        || s.contains(": ")
        || s.contains(" #")
        || s.chars()
            .any(|c| c.is_control() || !is_printable(c) || is_special_space(c))
}

/// Line and paragraph separators and the byte-order mark: YAML readers treat them as breaks.
fn is_special_space(c: char) -> bool {
    matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_yaml_1_1_reads_as_other_types_are_quoted() {
        for s in [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "Y",
            "NO",
            "true",
            "null",
            "~",
            "",
            "0755",
            "012",
            "0x1F",
            "1_000",
            "1:30",
            "2001-12-14",
            "+1",
            "-1",
            ".5",
            ".inf",
            "-.inf",
            ".NaN",
            "1e3",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "key:",
            "- item",
            "*alias",
            "&anchor",
            "!tag",
            "%directive",
            "@at",
            "`tick",
            "|",
            ">",
            "{a}",
            "[a]",
            "line\nbreak",
            "tab\t",
            "<<",
            "=",
        ] {
            assert!(scalar(s).starts_with('"'), "{s:?} is printed plain");
            let back: String = serde_yaml::from_str(&scalar(s)).expect("a YAML string");
            assert_eq!(back, s);
        }
        for s in [
            "app",
            "http",
            "/healthz",
            "gunicorn",
            "example/app:1",
            "python",
            "--timeout=90",
            "shop.wsgi:application",
            "a-b",
            "workerpool.dev/pool",
            "ünïcode",
            ".spec.replicas",
        ] {
            assert_eq!(scalar(s), s, "{s:?} needs no quotes");
        }
    }

    #[test]
    fn block_style_as_kubectl_prints_it() {
        // Keys in sorted order, so the map's order is the same with and without serde_json's
        // `preserve_order`.
        let value = json!({
            "metadata": {"annotations": {}, "labels": {"a": "on"}, "name": "api"},
            "spec": {"containers": [{"args": ["--x", "no"], "name": "app", "ports": []}],
                     "nested": [[1, 2], []], "paused": false, "replicas": 2}
        });
        let text = to_string(&value).expect("yaml");
        assert_eq!(
            text,
            "metadata:\n  annotations: {}\n  labels:\n    a: \"on\"\n  name: api\nspec:\n  containers:\n  - args:\n    - --x\n    - \"no\"\n    name: app\n    ports: []\n  nested:\n  - - 1\n    - 2\n  - []\n  paused: false\n  replicas: 2\n"
        );
        let back: Value = serde_yaml::from_str(&text).expect("parses back");
        assert_eq!(back, value);
    }
}
