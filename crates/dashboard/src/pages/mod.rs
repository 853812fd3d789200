//! One file per area of the dashboard.

pub mod auth;
pub mod credits;
pub mod docs;
pub mod home;
pub mod keys;
pub mod models;
pub mod playground;
pub mod runs;
pub mod webhooks;
