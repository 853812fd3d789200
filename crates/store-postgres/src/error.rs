//! The store's own error, turned into the domain's [`StoreError`] at the trait boundary.

use runbase_domain::store::{CreateRunError, StoreError};

/// A failure talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("connection pool: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("{0}")]
    Data(String),
    /// No connection could be had for work queued on the caller's behalf (a create batch).
    #[error("connection pool: {0}")]
    Unavailable(String),
}

/// tokio-postgres prints only "db error" for errors the server sent; the server's code and
/// message are what an operator needs.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(db) => describe(db),
        other => other.to_string(),
    }
}

impl Error {
    /// The SQLSTATE of an error the server sent.
    pub fn sqlstate(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            Error::Db(e) => e.code(),
            _ => None,
        }
    }

    /// This failure again, for each request of a batch that shared it: a connection that could
    /// not be had stays `Unavailable` (nothing was sent; the client may retry), anything else is
    /// told as it was.
    pub(crate) fn for_each_request(&self) -> Error {
        match self {
            Error::Pool(p) => Error::Unavailable(describe_pool(p)),
            Error::Unavailable(why) => Error::Unavailable(why.clone()),
            other => Error::Data(other.to_string()),
        }
    }

    pub(crate) fn is_unique_violation(&self) -> bool {
        self.sqlstate() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        // Failing to get a connection happens before any statement is sent: the request did
        // nothing, and the client may retry (503). A failure on a connection in use may have
        // half-happened from the client's view (a lost COMMIT answer), so it stays a 500.
        match e {
            Error::Pool(_) | Error::Unavailable(_) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<Error> for CreateRunError {
    fn from(e: Error) -> Self {
        CreateRunError::Store(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_failure_is_told_to_each_request_as_it_was() {
        let waited = Error::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ));
        let each = waited.for_each_request();
        assert!(matches!(each, Error::Unavailable(_)));
        assert_eq!(each.to_string(), waited.to_string(), "one prefix, not two");
        assert!(matches!(
            Error::Data("bad row".into()).for_each_request(),
            Error::Data(m) if m == "bad row"
        ));
    }

    #[test]
    fn no_connection_to_be_had_is_unavailable_and_a_failed_statement_is_not() {
        let waited = Error::Pool(deadpool_postgres::PoolError::Timeout(
            deadpool_postgres::TimeoutType::Wait,
        ));
        assert!(matches!(
            StoreError::from(waited),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(Error::Data("bad row".into())),
            StoreError::Backend(_)
        ));
    }
}
