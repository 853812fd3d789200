//! `runbase run` input fields (`key=value`, `key:=JSON`, `key=@FILE`) into the run's input
//! object, typed by the model's input schema when it is known.

use serde_json::{Map, Value};

/// Builds the input object from the command line's fields. `schema` is the model's
/// `inputSchema` (or `Value::Null` when it could not be read).
pub fn build(fields: &[String], schema: &Value) -> Result<Value, String> {
    let properties = schema.get("properties");
    // Each key's values, in the order the keys first appear.
    let mut values: Vec<(String, Vec<Value>)> = Vec::new();
    for field in fields {
        let (key, value) = parse_field(field, properties)?;
        match values.iter_mut().find(|(k, _)| *k == key) {
            Some((_, vs)) => vs.push(value),
            None => values.push((key, vec![value])),
        }
    }
    let mut input = Map::new();
    for (key, mut vs) in values {
        let property = properties.and_then(|p| p.get(&key));
        let is_array = property.is_some_and(|p| has_type(p, "array"));
        if vs.len() > 1 && property.is_some() && !is_array {
            // Said here rather than sent: the server would refuse the array.
            return Err(format!("{key} takes one value, but was given {}", vs.len()));
        }
        let value = match vs.pop() {
            // One value: as is, or as the only item of an array field.
            Some(v) if vs.is_empty() => {
                if is_array && !v.is_array() {
                    Value::Array(vec![v])
                } else {
                    v
                }
            }
            // A repeated key: an array of every value.
            Some(v) => {
                vs.push(v);
                Value::Array(vs)
            }
            None => continue,
        };
        input.insert(key, value);
    }
    Ok(Value::Object(input))
}

/// `key`, whether it is `:=` (raw JSON), and the value text.
fn split(field: &str) -> Option<(&str, bool, &str)> {
    let eq = field.find('=')?;
    let (key, raw) = match field[..eq].strip_suffix(':') {
        Some(key) => (key, true),
        None => (&field[..eq], false),
    };
    (!key.is_empty()).then_some((key, raw, &field[eq + 1..]))
}

fn parse_field(field: &str, properties: Option<&Value>) -> Result<(String, Value), String> {
    let (key, raw, text) = split(field)
        .ok_or_else(|| format!("input field {field:?} is not key=value, key:=JSON or key=@FILE"))?;
    if raw {
        let value = serde_json::from_str(text)
            .map_err(|e| format!("{key}:= takes JSON ({e}): {text:?}"))?;
        return Ok((key.to_owned(), value));
    }
    if let Some(path) = text.strip_prefix('@') {
        let mut content = std::fs::read_to_string(path)
            .map_err(|e| format!("{key}=@{path}: cannot read the file: {e}"))?;
        // The line end an editor or `echo` leaves at the end of a file is not part of the
        // value (as with the shell's `$(cat FILE)`); other whitespace is kept.
        if content.ends_with('\n') {
            content.pop();
            if content.ends_with('\r') {
                content.pop();
            }
        }
        return Ok((key.to_owned(), Value::String(content)));
    }
    let property = properties.and_then(|p| p.get(key));
    Ok((key.to_owned(), typed(text, property)))
}

/// The value of `key=text`: as the schema's property types it; for a property the schema does
/// not describe, a number or boolean as JSON and anything else as a string.
fn typed(text: &str, property: Option<&Value>) -> Value {
    let string = || Value::String(text.to_owned());
    let Some(property) = property else {
        return scalar(text).unwrap_or_else(string);
    };
    // An array field types its items by `items`.
    let property = if has_type(property, "array") {
        match property.get("items") {
            Some(items) => items,
            None => return scalar(text).unwrap_or_else(string),
        }
    } else {
        property
    };
    if let Some(options) = property.get("enum").and_then(Value::as_array) {
        // An enum takes the option written so: "5" for a string enum, 5 for a number enum.
        if let Some(option) = options.iter().find(|o| match o {
            Value::String(s) => s == text,
            other => serde_json::from_str::<Value>(text).is_ok_and(|v| &v == *other),
        }) {
            return option.clone();
        }
    }
    if has_type(property, "string") {
        return string();
    }
    let parsed = scalar(text);
    let fits = |v: &Value| {
        (has_type(property, "number") && v.is_number())
            || (has_type(property, "integer") && (v.is_i64() || v.is_u64()))
            || (has_type(property, "boolean") && v.is_boolean())
    };
    match parsed {
        Some(v) if fits(&v) => v,
        // No type the schema states fits: a string, which the server's schema check reports.
        Some(v) if property.get("type").is_none() => v,
        _ => string(),
    }
}

/// A JSON number or `true` / `false`, else `None`.
fn scalar(text: &str) -> Option<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => Some(v),
        _ => None,
    }
}

/// Whether a schema property has this `type` (a string or a list of them).
fn has_type(property: &Value, name: &str) -> bool {
    match property.get("type") {
        Some(Value::String(t)) => t == name,
        Some(Value::Array(types)) => types.iter().any(|t| t == name),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_schema_types_each_field() {
        let schema = json!({"properties": {
            "prompt": {"type": "string"},
            "duration": {"type": "string", "enum": ["5", "10"]},
            "seconds": {"type": "number"},
            "count": {"type": "integer"},
            "generate_audio": {"type": "boolean"},
            "image_urls": {"type": "array", "items": {"type": "string"}},
        }});
        let input = build(
            &fields(&[
                "prompt=1984",
                "duration=5",
                "seconds=2.5",
                "count=3",
                "generate_audio=true",
                "image_urls=https://a/x.png",
                "extra=7",
                "other=hello world",
                "flag=false",
            ]),
            &schema,
        )
        .expect("input");
        assert_eq!(
            input,
            json!({
                "prompt": "1984", "duration": "5", "seconds": 2.5, "count": 3,
                "generate_audio": true, "image_urls": ["https://a/x.png"], "extra": 7,
                "other": "hello world", "flag": false,
            })
        );
        // A value the type does not take stays a string, for the server to report.
        let input = build(&fields(&["count=many", "seconds=2.5x"]), &schema).expect("input");
        assert_eq!(input, json!({"count": "many", "seconds": "2.5x"}));
    }

    #[test]
    fn raw_json_files_and_repeated_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("prompt.txt");
        std::fs::write(&file, "from a file\n").expect("write");
        let input = build(
            &fields(&[
                "a:=[1,2]",
                "b:=\"007\"",
                &format!("prompt=@{}", file.display()),
                "tag=x",
                "tag=y",
                "eq=a=b",
                "n:=[1]",
                "n:=[2]",
            ]),
            &Value::Null,
        )
        .expect("input");
        assert_eq!(
            input,
            json!({"a": [1, 2], "b": "007", "prompt": "from a file", "tag": ["x", "y"], "eq": "a=b", "n": [[1], [2]]})
        );
        for bad in ["novalue", "=x", ":=1", "a:=nope", "p=@/does/not/exist"] {
            assert!(build(&fields(&[bad]), &Value::Null).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_field_of_one_value_given_twice_is_refused_before_sending() {
        let schema = json!({"properties": {
            "prompt": {"type": "string"},
            "image_urls": {"type": "array", "items": {"type": "string"}},
        }});
        let twice = build(&fields(&["prompt=a", "prompt=b"]), &schema).expect_err("twice");
        assert!(twice.contains("prompt takes one value"), "{twice}");
        // An array field takes each; a field the schema does not know, too.
        let input = build(
            &fields(&["image_urls=x", "image_urls=y", "extra=1", "extra=2"]),
            &schema,
        )
        .expect("input");
        assert_eq!(input, json!({"image_urls": ["x", "y"], "extra": [1, 2]}));
    }
}
