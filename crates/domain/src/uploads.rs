//! Files a user uploads (reference images, video, audio) to name in a run's input.
//!
//! An upload is kept in the file storage under a generated path (`upl_.../upload.png`: nothing
//! of the client's file name is used) and recorded in the store with its account. Its URL is
//! served like a run's output files, so an upstream that takes image URLs can fetch it; a run
//! that names an upload is accepted only from the account that uploaded it
//! ([`check_input_files`]). It is received as it arrives, within the account's quota
//! ([`Incoming`]), and deleted after the retention by a periodic [`sweep`].

use crate::error::{ApiError, ErrorCode};
use crate::service::internal;
use crate::store::Store;
use crate::time::Timestamp;
use serde_json::Value;

mod incoming;
mod retention;

pub use incoming::{Incoming, too_large};
pub use retention::{SweepReport, sweep, sweep_forever};

/// The largest upload accepted unless configured otherwise (`[uploads] max_bytes`): 30 MB.
pub const DEFAULT_MAX_BYTES: u64 = 30 * 1024 * 1024;

/// What one account's uploads may take in all unless configured otherwise
/// (`[uploads] quota_bytes_per_account`): 1 GiB, about 34 files at the largest size.
pub const DEFAULT_QUOTA_BYTES: u64 = 1 << 30;

/// How long an upload is kept unless configured otherwise (`[uploads] retention_days`).
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// What the uploads of an account never credited by a payment or an operator may take, unless
/// configured otherwise (`[uploads] uncredited_quota_bytes`): 100 MiB. Such an account costs
/// nothing to make (sign-up is free, perhaps with a welcome credit), so its room is small.
pub const DEFAULT_UNCREDITED_QUOTA_BYTES: u64 = 100 << 20;

/// What the uploads of all never-credited accounts may take together, unless configured
/// otherwise (`[uploads] uncredited_total_bytes`): 10 GiB. However many free accounts one
/// person makes, they cannot fill the disk past it.
pub const DEFAULT_UNCREDITED_TOTAL_BYTES: u64 = 10 << 30;

/// The `[uploads]` rules an upload is received under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// The largest file, in bytes.
    pub max_bytes: u64,
    /// The quotas the file is recorded under.
    pub quota: UploadQuota,
    /// Days an upload is kept; `None`: kept until deleted otherwise.
    pub retention_days: Option<u32>,
}

/// The quotas an upload is recorded under (checked again, exactly, by
/// [`Store::create_upload`] in the transaction that records it). `None`: no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadQuota {
    /// What one account's uploads may take in all, in bytes.
    pub account_bytes: Option<u64>,
    /// What one account's uploads may take while it has never been credited (by a payment or
    /// an operator's grant; a welcome credit does not count): the smaller of this and
    /// `account_bytes` applies.
    pub uncredited_account_bytes: Option<u64>,
    /// What the uploads made by never-credited accounts may take together.
    pub uncredited_total_bytes: Option<u64>,
}

impl UploadQuota {
    /// The quotas from the configuration's numbers (`[uploads] quota_bytes_per_account`,
    /// `uncredited_quota_bytes`, `uncredited_total_bytes`), where 0 means "none".
    pub fn from_config(account: u64, uncredited_account: u64, uncredited_total: u64) -> Self {
        let limit = |q: u64| (q > 0).then_some(q);
        UploadQuota {
            account_bytes: limit(account),
            uncredited_account_bytes: limit(uncredited_account),
            uncredited_total_bytes: limit(uncredited_total),
        }
    }

    /// Only a per-account quota, whoever the account is.
    pub fn per_account(bytes: u64) -> Self {
        UploadQuota {
            account_bytes: Some(bytes),
            ..UploadQuota::default()
        }
    }

    /// The quota that applies to one account's own uploads.
    pub fn for_account(&self, credited: bool) -> Option<u64> {
        match (credited, self.account_bytes, self.uncredited_account_bytes) {
            (true, q, _) | (false, q, None) => q,
            (false, None, u) => u,
            (false, Some(q), Some(u)) => Some(q.min(u)),
        }
    }

    /// How much room a new file has under these quotas, given the standing of its account
    /// (`None`: no limit).
    pub fn room(&self, usage: &UploadUsage) -> Option<u64> {
        let own = self
            .for_account(usage.credited)
            .map(|q| q.saturating_sub(usage.account_bytes));
        let shared = match (usage.credited, self.uncredited_total_bytes) {
            (false, Some(total)) => Some(total.saturating_sub(usage.uncredited_total_bytes)),
            _ => None,
        };
        match (own, shared) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Where an account stands for uploads ([`Store::upload_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadUsage {
    /// What its uploads take, in bytes.
    pub account_bytes: u64,
    /// Whether it has ever been credited by a payment or an operator's grant.
    pub credited: bool,
    /// What all uploads made by never-credited accounts take together, in bytes.
    pub uncredited_total_bytes: u64,
}

impl UploadLimits {
    /// The limits from the configuration's numbers, where 0 means "none" for the quotas and
    /// the retention (and the default size for `max_bytes`).
    pub fn from_config(max_bytes: u64, quota: UploadQuota, retention_days: u32) -> Self {
        UploadLimits {
            max_bytes: if max_bytes == 0 {
                DEFAULT_MAX_BYTES
            } else {
                max_bytes
            },
            quota,
            retention_days: (retention_days > 0).then_some(retention_days),
        }
    }
}

/// A stored upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// `upl_` and a random part; also the first segment of `path`.
    pub id: String,
    pub account_id: String,
    /// Where the bytes are in the file storage (`{id}/upload.{ext}`).
    pub path: String,
    /// Sniffed from the content, never taken from the client.
    pub content_type: String,
    pub size_bytes: u64,
    pub created_at: Timestamp,
}

/// What the content of a file says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sniffed {
    pub content_type: &'static str,
    pub extension: &'static str,
}

/// The kinds of file an upload may be, by the extension `infer` names them with.
const ACCEPTED: &[(&str, &str)] = &[
    ("png", "image/png"),
    ("jpg", "image/jpeg"),
    ("webp", "image/webp"),
    ("gif", "image/gif"),
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("wav", "audio/wav"),
    ("ogg", "audio/ogg"),
    ("flac", "audio/flac"),
];

/// What the file's first bytes (its magic number) say it is, if it is an image, video or audio
/// file of a kind Runbase accepts. The name and the declared type of the file play no part.
pub fn sniff(bytes: &[u8]) -> Option<Sniffed> {
    let kind = infer::get(bytes)?;
    ACCEPTED
        .iter()
        .find(|(ext, _)| *ext == kind.extension())
        .map(|&(extension, content_type)| Sniffed {
            content_type,
            extension,
        })
}

/// The kinds accepted, for messages and docs.
pub const ACCEPTED_KINDS: &str = "PNG, JPEG, WebP, GIF, MP4, MOV, WebM, MP3, WAV, OGG or FLAC";

/// The public URL of a stored file (an upload or a run's output).
pub fn file_url(public_url: &str, path: &str) -> String {
    format!("{}/files/{path}", public_url.trim_end_matches('/'))
}

/// The upload id a URL names, if its path is an upload's (`/files/upl_.../NAME`), whatever its
/// host: the same file can be reached under several names of this server, and an id is
/// unique, so the path alone decides. Percent-escapes are decoded first, as the files route
/// decodes them.
pub fn upload_id_in(url: &str) -> Option<String> {
    let scheme = |s: &str| {
        url.get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    if !(scheme("http://") || scheme("https://")) {
        return None;
    }
    let parsed = url::Url::parse(url).ok()?;
    // Every spelling a server or a proxy in front of it might take for the same path: escapes
    // decoded (`%2F` too), empty segments (`//`) dropped, letters in any case.
    let segments: Vec<String> = parsed
        .path_segments()?
        .map(percent_decode)
        .flat_map(|s| s.split('/').map(str::to_owned).collect::<Vec<_>>())
        .filter(|s| !s.is_empty())
        .collect();
    // An upload id anywhere after a `files` segment: a server whose `public_url` has a path
    // (`https://host/base/files/upl_.../name`) serves its uploads under it, and what comes
    // around the id (a name, `.` or `..` segments a proxy might resolve, more segments) does not
    // change whose file it may be. Ids are generated in lower case; a lookup in another case
    // would miss the upload.
    let files = segments
        .iter()
        .position(|s| s.eq_ignore_ascii_case("files"))?;
    segments[files + 1..]
        .iter()
        .find(|id| id.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("upl_")))
        .map(|id| id.to_ascii_lowercase())
}

/// Where in this server's file storage a URL points, when it is one of this server's own file
/// URLs (under `public_url`, `/files/{upl_... or run_...}/{name}`): the storage path, which a
/// run reads directly rather than over HTTP. Anything else is `None`.
pub fn own_file_path(public_url: &str, url: &str) -> Option<String> {
    let base = url::Url::parse(public_url).ok()?;
    let scheme = |s: &str| {
        url.get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s))
    };
    if !(scheme("http://") || scheme("https://")) {
        return None;
    }
    let target = url::Url::parse(url).ok()?;
    if target.scheme() != base.scheme()
        || target.host_str() != base.host_str()
        || target.port_or_known_default() != base.port_or_known_default()
    {
        return None;
    }
    let prefix: Vec<String> = base
        .path_segments()?
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segments: Vec<String> = target.path_segments()?.map(percent_decode).collect();
    let rest = segments.strip_prefix(prefix.as_slice())?;
    match rest {
        [files, dir, name]
            if files == "files" && (dir.starts_with("upl_") || dir.starts_with("run_")) =>
        {
            let path = format!("{dir}/{name}");
            crate::files::is_safe_path(&path).then_some(path)
        }
        _ => None,
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The most upload URLs of one input looked up (an input is at most 64 KiB of JSON anyway).
const MAX_CHECKED: usize = 64;

/// Refuses an input that names another account's upload (`invalid_input`, naming the field).
/// An upload id this store does not know is left alone: it is another server's file, fetched
/// like any other URL.
pub async fn check_input_files(
    store: &dyn Store,
    account_id: &str,
    input: &Value,
) -> Result<(), ApiError> {
    let named = named_uploads(input);
    if named.len() > MAX_CHECKED {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "input: names {} uploaded files; at most {MAX_CHECKED} are accepted",
                named.len()
            ),
        ));
    }
    for (field, id) in named {
        let upload = store.upload(&id).await.map_err(internal)?;
        if upload.is_some_and(|u| u.account_id != account_id) {
            return Err(ApiError::new(
                ErrorCode::InvalidInput,
                format!(
                    "{field}: names a file uploaded by another account; upload it with a key of \
                     this account (POST /api/v1/files) and use that URL"
                ),
            ));
        }
    }
    Ok(())
}

/// The upload ids named by the input's strings, each with its field's path (`input.images[1]`).
fn named_uploads(input: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect(input, &mut Vec::new(), &mut out);
    out
}

/// One step of the path from the input down to a value.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The path is written out only for a string that names an upload: most inputs name none, and
/// formatting every field's path cost allocations on each create.
fn collect<'a>(value: &'a Value, path: &mut Vec<Step<'a>>, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => {
            if let Some(id) = upload_id_in(s) {
                let mut field = String::from("input");
                for step in path.iter() {
                    match step {
                        Step::Key(k) => {
                            field.push('.');
                            field.push_str(k);
                        }
                        Step::Index(i) => {
                            use std::fmt::Write as _;
                            let _ = write!(field, "[{i}]");
                        }
                    }
                }
                out.push((field, id));
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Step::Index(i));
                collect(v, path, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Step::Key(k));
                collect(v, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

    #[test]
    fn the_content_decides_the_kind() {
        assert_eq!(sniff(PNG).map(|k| k.content_type), Some("image/png"));
        assert_eq!(
            sniff(b"\xff\xd8\xff\xe0\0\x10JFIF\0").map(|k| k.extension),
            Some("jpg")
        );
        assert_eq!(
            sniff(b"RIFF\x24\0\0\0WAVEfmt \x10\0\0\0").map(|k| k.content_type),
            Some("audio/wav")
        );
        assert_eq!(sniff(b"fLaC\0\0\0\x22").map(|k| k.extension), Some("flac"));
        assert_eq!(
            sniff(b"GIF89a\x01\0\x01\0").map(|k| k.extension),
            Some("gif")
        );
        assert_eq!(sniff(b"just some text, not a picture"), None);
        assert_eq!(sniff(b"%PDF-1.7\n"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn upload_urls_are_recognised_on_any_host() {
        let id = upload_id_in("https://rb.example/files/upl_abc/upload.png");
        assert_eq!(id.as_deref(), Some("upl_abc"));
        assert_eq!(
            upload_id_in("http://127.0.0.1:8080/files/upl%5Fabc/upload.png").as_deref(),
            Some("upl_abc")
        );
        assert_eq!(
            upload_id_in("http://h/files/run_x/../upl_abc/upload.png").as_deref(),
            Some("upl_abc")
        );
        assert_eq!(upload_id_in("http://h/files/run_abc/out.png"), None);
        assert_eq!(upload_id_in("http://h/other/upl_abc/out.png"), None);
        assert_eq!(upload_id_in("upl_abc"), None);
        // Other spellings of the same path (doubled slashes, an escaped slash, capitals).
        for spelling in [
            "http://h//files//upl_abc//upload.png",
            "http://h/files/upl_abc%2Fupload.png",
            "http://h/files%2Fupl_abc%2Fupload.png",
            "http://h/FILES/upl_abc/upload.png",
            "http://h/files/UPL_ABC/upload.png",
            "http://h/files/%55pl_abc/upload.png",
            "http://h/files/upl_abc/.%2Fupload.png",
            "http://h/files/upl_abc/upload.png/more",
            "http://h/files/run_x/%2E%2E/upl_abc/upload.png",
        ] {
            assert_eq!(
                upload_id_in(spelling).as_deref(),
                Some("upl_abc"),
                "{spelling}"
            );
        }
        // The scheme in any case; anything else that is not http(s), or too short to be, is no URL.
        assert_eq!(
            upload_id_in("HTTPS://h/files/upl_abc/x.png").as_deref(),
            Some("upl_abc")
        );
        assert_eq!(
            upload_id_in("hTTp://h/files/upl_abc").as_deref(),
            Some("upl_abc")
        );
        for not_one in [
            "ftp://h/files/upl_abc",
            "http:/",
            "",
            "é://h/files/upl_abc",
            "httpé",
        ] {
            assert_eq!(upload_id_in(not_one), None, "{not_one}");
        }
        // Under a `public_url` with a path, too (the ownership check must see it).
        assert_eq!(
            upload_id_in("http://127.0.0.1:8080/base/files/upl_abc/upload.png").as_deref(),
            Some("upl_abc")
        );
    }

    #[test]
    fn own_files_are_found_under_the_public_url_only() {
        let own = |u| own_file_path("http://127.0.0.1:8080", u);
        assert_eq!(
            own("http://127.0.0.1:8080/files/upl_a/upload.png").as_deref(),
            Some("upl_a/upload.png")
        );
        assert_eq!(
            own("http://127.0.0.1:8080/files/run_a/out-0.png").as_deref(),
            Some("run_a/out-0.png")
        );
        assert_eq!(
            own("http://127.0.0.1:8080/files/upl%5Fa/upload.png").as_deref(),
            Some("upl_a/upload.png")
        );
        assert_eq!(own("http://127.0.0.1:8081/files/upl_a/upload.png"), None);
        assert_eq!(own("https://127.0.0.1:8080/files/upl_a/upload.png"), None);
        assert_eq!(own("http://127.0.0.1:8080/files/upl_a/..%2f..%2fetc"), None);
        assert_eq!(own("http://127.0.0.1:8080/files/other/x.png"), None);
        assert_eq!(own("http://127.0.0.1:8080/assets/app.js"), None);
        let behind = |u| own_file_path("https://rb.example/base/", u);
        assert_eq!(
            behind("https://rb.example/base/files/upl_a/upload.png").as_deref(),
            Some("upl_a/upload.png")
        );
        assert_eq!(behind("https://rb.example/files/upl_a/upload.png"), None);
    }

    #[test]
    fn every_string_of_the_input_is_looked_at() {
        let input = serde_json::json!({
            "prompt": "http://h/files/upl_a/x.png",
            "image_urls": ["https://x.test/a.png", "http://h/files/upl_b/y.png"],
            "deep": {"list": [{"n": 1}, [null, "http://h/files/upl_c/z.png"]]},
        });
        let mut out = named_uploads(&input);
        out.sort();
        assert_eq!(
            out,
            [
                ("input.deep.list[1][1]".to_owned(), "upl_c".to_owned()),
                ("input.image_urls[1]".to_owned(), "upl_b".to_owned()),
                ("input.prompt".to_owned(), "upl_a".to_owned())
            ]
        );
    }
}
