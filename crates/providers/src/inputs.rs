//! The files a run's input names (reference images, first frames) that an adapter must send
//! itself. One of this server's own file URLs (an upload, or an earlier run's output) is read
//! from the file storage, never over HTTP (no request from the server to itself); any other
//! URL is fetched with [`http::fetch_user_url`]'s rules. Which account may name an upload is
//! checked when the run is created (`runbase_domain::uploads::check_input_files`).

use crate::http::{self, Fetched};
use runbase_domain::files::{FileStore, GetError};
use std::sync::{Arc, OnceLock};

/// Shared by the adapters that fetch inputs; the storage is attached once the server knows it
/// ([`crate::Providers::read_own_files_from`]). Until then every URL goes over HTTP.
#[derive(Clone, Default)]
pub struct InputFiles(Arc<OnceLock<Own>>);

struct Own {
    public_url: String,
    files: Arc<dyn FileStore>,
}

impl InputFiles {
    pub(crate) fn attach(&self, public_url: &str, files: Arc<dyn FileStore>) {
        let _ = self.0.set(Own {
            public_url: public_url.to_owned(),
            files,
        });
    }

    /// The bytes of `url`, at most `max_bytes`; the error says why in words a user can act on.
    pub async fn fetch(&self, url: &str, max_bytes: usize) -> Result<Fetched, String> {
        let Some(own) = self.0.get() else {
            return http::fetch_user_url(url, max_bytes).await;
        };
        let Some(path) = runbase_domain::uploads::own_file_path(&own.public_url, url) else {
            return http::fetch_user_url(url, max_bytes).await;
        };
        let file = match own.files.get(&path, max_bytes as u64).await {
            Ok(f) => f,
            Err(GetError::TooLarge(_)) => {
                return Err(format!("the file is larger than {} MB", max_bytes >> 20));
            }
            Err(GetError::Storage(e)) => {
                tracing::error!(error = %e, "reading an input file from storage failed");
                return Err("the file could not be read from this server's storage".to_owned());
            }
        };
        let file = file.ok_or("there is no such file on this server")?;
        Ok(Fetched {
            bytes: file.bytes,
            content_type: Some(file.content_type),
        })
    }
}
