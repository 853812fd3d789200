//! Every run of the account, page after page, as a stream.

use crate::{Client, Error, Run};
use futures_util::stream::{self, Stream, StreamExt, TryStreamExt};
use std::pin::Pin;

/// The account's runs of the key's mode (test or live), newest first, fetched a page at a time
/// as the stream is read.
pub type RunStream = Pin<Box<dyn Stream<Item = Result<Run, Error>> + Send>>;

/// Where the next page starts.
enum Cursor {
    First,
    After(String),
    Done,
}

impl Client {
    /// Every run of the account, newest first, following the API's cursor (`startingAfter` =
    /// the last run of the page) while `hasMore` is true, 100 runs a page. Read it with
    /// `futures_util::StreamExt::next` (or `TryStreamExt::try_collect`); a failed page ends the
    /// stream with its error.
    pub fn list(&self) -> RunStream {
        self.list_with_page_size(100)
    }

    /// [`Client::list`] with pages of `page_size` runs (1–100).
    pub fn list_with_page_size(&self, page_size: u32) -> RunStream {
        let client = self.clone();
        let pages = stream::try_unfold(Cursor::First, move |cursor| {
            let client = client.clone();
            async move {
                let after = match cursor {
                    Cursor::Done => return Ok(None),
                    Cursor::First => None,
                    Cursor::After(id) => Some(id),
                };
                let page = client.list_page(Some(page_size), after.as_deref()).await?;
                // A page that says "more" but is empty would loop forever: stop there.
                let next = match page.data.last() {
                    Some(last) if page.has_more => Cursor::After(last.id.clone()),
                    _ => Cursor::Done,
                };
                Ok::<_, Error>(Some((page.data, next)))
            }
        });
        pages
            .map_ok(|runs| stream::iter(runs.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }
}
