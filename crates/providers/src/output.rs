//! Reading provider outputs into [`ProviderOutput`]: URLs become files to copy, text becomes
//! `output.text`.

use crate::http::{file_name, truncate};
use runbase_domain::provider::{FileData, OutputFile, ProviderError, ProviderOutput};
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

/// What kind of file a model makes, from its catalogue tags (`... to image`, `Image editing`,
/// `... to video`, `Text to speech`, ...); `None` for models that answer in text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Media {
    Image,
    Video,
    Audio,
    None,
}

pub fn media_of(tags: &[String]) -> Media {
    let mut found = Media::None;
    for tag in tags {
        let tag = tag.to_ascii_lowercase();
        let media = media_of_tag(&tag);
        // Video wins over image (an image-to-video model is tagged with both kinds of words).
        if media == Media::Video || found == Media::None {
            found = media;
        }
    }
    found
}

fn media_of_tag(tag: &str) -> Media {
    let Some(produced) = tag
        .split_once(" to ")
        .map(|(_, p)| p)
        .or((tag == "image editing").then_some("image"))
    else {
        return Media::None;
    };
    if produced.contains("video") {
        Media::Video
    } else if produced.contains("image") {
        Media::Image
    } else if produced.contains("audio")
        || produced.contains("speech")
        || produced.contains("music")
    {
        Media::Audio
    } else {
        Media::None
    }
}

/// Whether a model with these tags produces files (images, video, audio) rather than text.
/// Only such models have their string outputs read as file URLs: a language model answering
/// with a URL (or a `data:` URI) is answering text, and Runbase must not fetch it.
pub fn produces_files(tags: &[String]) -> bool {
    media_of(tags) != Media::None
}

/// The failure of a prediction whose status is `failed` (Cog and Replicate): its `error`.
pub fn model_failure(prediction: &Value) -> ProviderError {
    model_failed(prediction.get("error").and_then(Value::as_str))
}

/// A `model_error` for a job the upstream says failed, quoting its reason (shortened) when it
/// gave one. Every adapter words this failure the same way.
pub fn model_failed(why: Option<&str>) -> ProviderError {
    let why = why.map_or_else(|| "no reason given".into(), truncate);
    ProviderError::new("model_error", format!("The model failed: {why}"))
}

/// The output of a model server that returns "whatever the model returned" (Cog, Replicate):
/// a file URL, a list of file URLs, a string, a list of strings (an LLM's tokens, joined), or
/// any other JSON value (kept as `output.result`). Strings are files only when `files` says
/// the model produces files.
pub fn from_model_value(value: &Value, files: bool) -> ProviderOutput {
    let mut out = ProviderOutput::default();
    match value {
        Value::Null => {}
        Value::String(s) if files && is_file_ref(s) => push_url(&mut out, s, None),
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
        let o = from_model_value(&json!("https://x/out.png"), true);
        assert_eq!(o.files.len(), 1);
        assert_eq!(o.files[0].name, "output-0.png");
        let o = from_model_value(&json!(["https://x/a.webp", "https://x/b.webp"]), true);
        assert_eq!(o.files.len(), 2);
        let o = from_model_value(&json!(["Hel", "lo"]), true);
        assert_eq!(o.fields["text"], "Hello");
        let o = from_model_value(&json!("data:image/png;base64,AAAA"), true);
        assert_eq!(o.files[0].name, "output-0.png");
        let o = from_model_value(&json!({"score": 1}), true);
        // A language model answering with a URL answered text.
        let o2 = from_model_value(&json!("http://169.254.169.254/latest"), false);
        assert!(o2.files.is_empty());
        assert_eq!(o2.fields["text"], "http://169.254.169.254/latest");
        let tags = |t: &str| vec![t.to_owned()];
        assert!(produces_files(&tags("text to image")) && produces_files(&tags("image to video")));
        assert!(
            !produces_files(&tags("text generation")) && !produces_files(&tags("image to text"))
        );
        assert_eq!(o.fields["result"], json!({"score": 1}));
    }
}
