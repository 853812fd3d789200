//! Downloading a run's output files.

use crate::{Client, Error, Run};
use reqwest::Url;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

impl Client {
    /// Saves the file behind `url` (an `output.urls` entry) at `path`, streamed to disk (a
    /// `.part` file renamed into place when complete); answers its size in bytes. Output files
    /// need no key, so none is sent: a URL pointing elsewhere never sees it.
    pub async fn download(&self, url: &str, path: &Path) -> Result<u64, Error> {
        let parsed = Url::parse(url).map_err(|e| Error::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let mut resp = self.http.get(parsed).send().await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            return Err(crate::error_of(status, &headers, &body));
        }
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".part");
        let partial = PathBuf::from(partial);
        let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
        let mut size = 0u64;
        let written = async {
            while let Some(chunk) = resp.chunk().await? {
                file.write_all(&chunk).await.map_err(io)?;
                size += chunk.len() as u64;
            }
            file.flush().await.map_err(io)?;
            Ok::<_, Error>(())
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, path).await.map_err(io)?;
        Ok(size)
    }

    /// Saves every `output.urls` file of `run` into `dir` (created if missing), each under the
    /// last segment of its URL (`<dir>/run_...-output-0.png`); answers the paths, in the order
    /// of the URLs.
    pub async fn download_outputs(&self, run: &Run, dir: &Path) -> Result<Vec<PathBuf>, Error> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        let mut saved: Vec<PathBuf> = Vec::new();
        for (i, url) in run.output_urls().into_iter().enumerate() {
            let mut name = file_name(url, i);
            if saved.iter().any(|p| p.file_name() == Some(name.as_ref())) {
                name = format!("{i}-{name}");
            }
            let path = dir.join(name);
            self.download(url, &path).await?;
            saved.push(path);
        }
        Ok(saved)
    }
}

/// A safe local name for the file at `url`: its last path segment, with anything but
/// `A-Z a-z 0-9 . - _` replaced, never empty or a dot name.
fn file_name(url: &str, index: usize) -> String {
    let last = Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_owned))
        })
        .unwrap_or_default();
    let clean: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.trim_matches('.').is_empty() {
        format!("output-{index}")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(
            file_name("http://h/files/run_1/run_1-output-0.png", 0),
            "run_1-output-0.png"
        );
        assert_eq!(
            file_name("http://h/files/run_1/a%2F..%2Fb", 1),
            "a_2F.._2Fb"
        );
        assert_eq!(file_name("http://h/files/run_1/..", 2), "output-2");
        assert_eq!(file_name("http://h/", 3), "output-3");
        assert_eq!(file_name("not a url", 4), "output-4");
    }
}
