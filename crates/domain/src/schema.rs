//! A model's input schema (JSON Schema, draft 2020-12): defaults applied, then validated, with
//! messages that name the offending field and what was expected.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::{Map, Value};

/// A compiled input schema.
pub struct InputSchema {
    raw: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for InputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputSchema")
            .field("raw", &self.raw)
            .finish_non_exhaustive()
    }
}

impl InputSchema {
    /// Compiles `raw`; the error says what is wrong with the schema itself.
    pub fn compile(raw: Value) -> Result<Self, String> {
        if raw.get("type").and_then(Value::as_str) != Some("object") {
            return Err("an input schema must have \"type\": \"object\"".into());
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .with_format("uri", is_web_url)
            .build(&raw)
            .map_err(|e| e.to_string())?;
        Ok(Self { raw, validator })
    }

    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Fills in `default` values of top-level properties the client left out.
    pub fn apply_defaults(&self, input: &mut Map<String, Value>) {
        if let Some(props) = self.raw.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                if let Some(default) = prop.get("default")
                    && !input.contains_key(name)
                {
                    input.insert(name.clone(), default.clone());
                }
            }
        }
    }

    /// Validates `input`; on failure, one message per problem, joined with `; `.
    pub fn validate(&self, input: &Value) -> Result<(), String> {
        if self.validator.is_valid(input) {
            return Ok(());
        }
        let mut messages: Vec<String> = self
            .validator
            .iter_errors(input)
            .take(5)
            .map(|e| describe(&e))
            .collect();
        messages.dedup();
        Err(messages.join("; "))
    }
}

/// What `format: uri` means in a model's input: an absolute `http(s)` URL with a host, the only
/// kind of address a model can be given (an upstream fetches it, or Runbase does for it). `""`,
/// `missing`, `file:///etc/passwd` and `data:` URIs are refused at create, as `invalid_input`.
fn is_web_url(s: &str) -> bool {
    // `https:example.com` and `http:/\\host` parse (the URL standard repairs them), but they are
    // not what anyone meant, and an upstream given the raw string would fail on it.
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://"))
        && s.len() <= 8192
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && url::Url::parse(s).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        })
}

/// `input.a.b[2]` from the JSON pointer of the failing value.
fn field_path(pointer: &str) -> String {
    let mut out = String::from("input");
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            out.push('.');
            out.push_str(&seg);
        }
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn a_type(t: &str) -> String {
    match t {
        "integer" | "object" | "array" => format!("an {t}"),
        "null" => "null".into(),
        other => format!("a {other}"),
    }
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let path = field_path(e.instance_path().as_str());
    match e.kind() {
        ValidationErrorKind::Required { property } => {
            format!(
                "{}: is required",
                field_path(&format!(
                    "{}/{}",
                    e.instance_path().as_str(),
                    show(property)
                ))
            )
        }
        ValidationErrorKind::Enum { options } => {
            let list = options
                .as_array()
                .map(|a| a.iter().map(show).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            format!("{path}: must be one of {list}")
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => a_type(&t.to_string()),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| a_type(&t.to_string()))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("{path}: must be {expected}")
        }
        ValidationErrorKind::Minimum { limit } => format!("{path}: must be at least {limit}"),
        ValidationErrorKind::Maximum { limit } => format!("{path}: must be at most {limit}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("{path}: must be greater than {limit}")
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("{path}: must be less than {limit}")
        }
        ValidationErrorKind::MinLength { limit } => {
            format!(
                "{path}: must be at least {limit} character{} long",
                if *limit == 1 { "" } else { "s" }
            )
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("{path}: must be at most {limit} characters long")
        }
        ValidationErrorKind::MinItems { limit } => {
            format!("{path}: must have at least {limit} items")
        }
        ValidationErrorKind::MaxItems { limit } => {
            format!("{path}: must have at most {limit} items")
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let fields: Vec<String> = unexpected
                .iter()
                .map(|u| field_path(&format!("{}/{u}", e.instance_path().as_str())))
                .collect();
            format!("{}: not a field of this model's input", fields.join(", "))
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{path}: must match the pattern {pattern}")
        }
        ValidationErrorKind::Format { format } if format == "uri" => {
            format!("{path}: must be an absolute http:// or https:// URL")
        }
        ValidationErrorKind::Format { format } => format!("{path}: must be a valid {format}"),
        ValidationErrorKind::Constant { expected_value } => {
            format!("{path}: must be {}", show(expected_value))
        }
        _ => format!("{path}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> InputSchema {
        InputSchema::compile(json!({
            "type": "object",
            "required": ["prompt"],
            "additionalProperties": false,
            "properties": {
                "prompt": {"type": "string", "minLength": 1},
                "aspect_ratio": {"type": "string", "enum": ["1:1", "16:9"], "default": "1:1"},
                "steps": {"type": "integer", "minimum": 1, "maximum": 50},
                "image_urls": {"type": "array", "items": {"type": "string"}},
                "refs": {"type": "array", "items": {"type": "string", "format": "uri"}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn defaults_are_applied_only_when_missing() {
        let s = schema();
        let mut m = json!({"prompt": "x"}).as_object().unwrap().clone();
        s.apply_defaults(&mut m);
        assert_eq!(m["aspect_ratio"], "1:1");
        let mut m = json!({"prompt": "x", "aspect_ratio": "16:9"})
            .as_object()
            .unwrap()
            .clone();
        s.apply_defaults(&mut m);
        assert_eq!(m["aspect_ratio"], "16:9");
    }

    #[test]
    fn messages_name_the_field_and_the_expectation() {
        let s = schema();
        assert_eq!(
            s.validate(&json!({})).unwrap_err(),
            "input.prompt: is required"
        );
        assert_eq!(
            s.validate(&json!({"prompt": "x", "aspect_ratio": "2:1"}))
                .unwrap_err(),
            "input.aspect_ratio: must be one of 1:1, 16:9"
        );
        assert_eq!(
            s.validate(&json!({"prompt": 3})).unwrap_err(),
            "input.prompt: must be a string"
        );
        assert_eq!(
            s.validate(&json!({"prompt": "x", "steps": 0})).unwrap_err(),
            "input.steps: must be at least 1"
        );
        assert_eq!(
            s.validate(&json!({"prompt": "x", "image_urls": [1]}))
                .unwrap_err(),
            "input.image_urls[0]: must be a string"
        );
        assert_eq!(
            s.validate(&json!({"prompt": "x", "colour": 1}))
                .unwrap_err(),
            "input.colour: not a field of this model's input"
        );
        assert!(s.validate(&json!({"prompt": "x", "steps": 50})).is_ok());
    }

    #[test]
    fn uri_entries_must_be_web_urls() {
        let s = schema();
        for bad in [
            "",
            "missing",
            "https:example.com/a.png",
            "http:/\\127.0.0.1/o.png",
            "/files/x.png",
            "file:///etc/passwd",
            "data:image/png;base64,AA",
            "ftp://h/x",
            "http://",
            "https://a b/c",
        ] {
            assert_eq!(
                s.validate(&json!({"prompt": "x", "refs": ["https://ok.example/a.png", bad]}))
                    .unwrap_err(),
                "input.refs[1]: must be an absolute http:// or https:// URL",
                "{bad:?}"
            );
        }
        for good in [
            "https://example.com/a.png",
            "http://127.0.0.1:8080/files/run_1/x.png?sig=1",
            "HTTPS://EXAMPLE.COM/A",
        ] {
            assert!(
                s.validate(&json!({"prompt": "x", "refs": [good]})).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn a_schema_must_describe_an_object() {
        assert!(InputSchema::compile(json!({"type": "string"})).is_err());
        assert!(
            InputSchema::compile(json!({"type": "object", "properties": {"a": {"type": 5}}}))
                .is_err()
        );
    }
}
