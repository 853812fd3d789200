//! Reading provider outputs into [`ProviderOutput`]: URLs become files to copy, text becomes
//! `output.text`.

use crate::http::file_name;
use runbase_domain::provider::{FileData, OutputFile, ProviderOutput};
use serde_json::Value;

/// Whether a string is a file reference (`http(s)://` or `data:` URI) rather than text.
pub fn is_file_ref(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://") || s.starts_with("data:")
}

/// Adds a file to download (or decode) to `out`.
pub fn push_url(out: &mut ProviderOutput, url: &str, content_type: Option<&str>) {
    let n = out.files.len();
    out.files.push(OutputFile {
        name: file_name(n, Some(url), content_type.or_else(|| data_uri_type(url))),
        content_type: content_type.unwrap_or_default().to_owned(),
        data: FileData::Url(url.to_owned()),
    });
}

fn data_uri_type(url: &str) -> Option<&str> {
    url.strip_prefix("data:")?
        .split([';', ','])
        .next()
        .filter(|t| !t.is_empty())
}

/// The output of a model server that returns "whatever the model returned" (Cog, Replicate):
/// a file URL, a list of file URLs, a string, a list of strings (an LLM's tokens, joined), or
/// any other JSON value (kept as `output.result`).
pub fn from_model_value(value: &Value) -> ProviderOutput {
    let mut out = ProviderOutput::default();
    match value {
        Value::Null => {}
        Value::String(s) if is_file_ref(s) => push_url(&mut out, s, None),
        Value::String(s) => {
            out.fields.insert("text".into(), Value::String(s.clone()));
        }
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|v| v.as_str().is_some_and(is_file_ref)) =>
        {
            for url in items.iter().filter_map(Value::as_str) {
                push_url(&mut out, url, None);
            }
        }
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let text: String = items.iter().filter_map(Value::as_str).collect();
            out.fields.insert("text".into(), Value::String(text));
        }
        other => {
            out.fields.insert("result".into(), other.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_values_become_files_or_text() {
        let o = from_model_value(&json!("https://x/out.png"));
        assert_eq!(o.files.len(), 1);
        assert_eq!(o.files[0].name, "output-0.png");
        let o = from_model_value(&json!(["https://x/a.webp", "https://x/b.webp"]));
        assert_eq!(o.files.len(), 2);
        let o = from_model_value(&json!(["Hel", "lo"]));
        assert_eq!(o.fields["text"], "Hello");
        let o = from_model_value(&json!("data:image/png;base64,AAAA"));
        assert_eq!(o.files[0].name, "output-0.png");
        let o = from_model_value(&json!({"score": 1}));
        assert_eq!(o.fields["result"], json!({"score": 1}));
    }
}
