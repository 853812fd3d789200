//! The page shell (header, navigation, footer) and the small pieces every page uses.

use crate::i18n::{self, t};
use crate::web::Viewer;
use maud::{DOCTYPE, Markup, html};
use runbase_domain::ApiError;
use runbase_domain::money::Millicents;
use runbase_domain::run::RunStatus;
use runbase_domain::time::Timestamp;

/// Where support is reached; shown on error pages.
pub const SUPPORT_EMAIL: &str = "support@runbase.net";

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Home,
    Runs,
    Models,
    Docs,
    Keys,
    Credits,
    Account,
    None,
}

/// Whom a page's header is for.
#[derive(Clone, Copy)]
enum Who<'a> {
    SignedIn(&'a Viewer),
    SignedOut,
    /// A request with a session cookie that was not checked (an error page, answered without a
    /// store read): the signed-in navigation, without the account's address or the sign-out
    /// form (which needs the session's CSRF token). Its links send a stale session to `/login`.
    Unchecked,
}

/// A whole page.
pub fn shell(title: &str, viewer: Option<&Viewer>, nav: Nav, body: Markup) -> Markup {
    let who = match viewer {
        Some(v) => Who::SignedIn(v),
        None => Who::SignedOut,
    };
    page_shell(title, who, nav, body)
}

fn page_shell(title: &str, who: Who<'_>, nav: Nav, body: Markup) -> Markup {
    let account_links = !matches!(who, Who::SignedOut);
    let link = |href: &str, label: &str, this: Nav| {
        html! {
            a href=(href) aria-current=[(nav == this).then_some("page")] { (label) }
        }
    };
    let lang = i18n::current();
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Runbase" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { (t("nav-skip")) }
                header.top {
                    a.brand href="/" { span.logo aria-hidden="true" { "◆" } " Runbase" }
                    nav aria-label=(t("nav-main")) {
                        @if account_links {
                            (link("/", &t("nav-dashboard"), Nav::Home))
                            (link("/runs", &t("nav-runs"), Nav::Runs))
                        }
                        (link("/models", &t("nav-models"), Nav::Models))
                        (link("/docs/authentication", &t("nav-docs"), Nav::Docs))
                        @if account_links {
                            (link("/settings/api-keys", &t("nav-keys"), Nav::Keys))
                            (link("/settings/credits", &t("nav-credits"), Nav::Credits))
                        }
                    }
                    div.who {
                        @match who {
                            Who::SignedIn(v) => {
                                a.email href="/settings/password" aria-current=[(nav == Nav::Account).then_some("page")] title=(t("nav-account")) { (v.account.email) }
                                form method="post" action="/logout" {
                                    (csrf_field(v))
                                    button.link type="submit" { (t("nav-logout")) }
                                }
                            }
                            Who::SignedOut => {
                                a href="/login" { (t("nav-login")) }
                                a.button href="/signup" { (t("nav-signup")) }
                            }
                            Who::Unchecked => {}
                        }
                    }
                }
                main #main { (body) }
                footer.bottom {
                    nav.langs aria-label=(t("nav-language")) {
                        span { (t("nav-language")) ": " }
                        @for l in i18n::Lang::ALL {
                            @if l == lang {
                                span lang=(l.code()) aria-current="true" { (l.native_name()) }
                            } @else {
                                a href=(i18n::switch_href(l)) lang=(l.code()) hreflang=(l.code()) { (l.native_name()) }
                            }
                        }
                    }
                    p {
                        "Runbase · "
                        a href="/docs/error-codes" { (t("nav-error-codes")) }
                        " · "
                        a href="/docs/rate-limits" { (t("nav-rate-limits")) }
                        " · " (t("nav-support")) ": "
                        a href=(format!("mailto:{SUPPORT_EMAIL}")) { (SUPPORT_EMAIL) }
                    }
                }
            }
        }
    }
}

/// The hidden field carrying the session's CSRF token; every form of a logged-in page has it.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf_token" value=(v.session.csrf_token); }
}

/// A message box: `kind` is `ok` or `error`.
pub fn notice(kind: &str, text: &str) -> Markup {
    let role = if kind == "error" { "alert" } else { "status" };
    html! { div class=(format!("notice {kind}")) role=(role) { (text) } }
}

pub fn money(m: Millicents) -> String {
    m.usd()
}

/// A time for people (UTC, to the minute), with the exact instant in `datetime`.
pub fn time(t: Timestamp) -> Markup {
    let full = t.to_rfc3339();
    let short = full.get(..16).unwrap_or(&full).replace('T', " ");
    html! { time datetime=(full) title=(full) { (short) " UTC" } }
}

pub fn opt_time(t: Option<Timestamp>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

pub fn status_badge(s: RunStatus) -> Markup {
    html! { span class=(format!("badge {}", s.as_str())) { (s.as_str()) } }
}

/// A table that scrolls sideways on narrow screens instead of widening the page.
pub fn table<S: AsRef<str>>(caption: &str, head: &[S], rows: Markup) -> Markup {
    html! {
        div.table-wrap {
            table {
                caption.visually-hidden { (caption) }
                thead { tr { @for h in head { th scope="col" { (h.as_ref()) } } } }
                tbody { (rows) }
            }
        }
    }
}

/// Pretty-printed JSON in a code block.
pub fn json_block(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.code { code { (text) } } }
}

/// A page for an error, with what to do about it and where to get help. `session_cookie`: the
/// request carries a session cookie, not checked (an error page reads nothing from the store), so
/// the header shows the signed-in links and does not offer to sign in; with a stale cookie those
/// links lead to `/login`.
pub fn error_page(e: &ApiError, session_cookie: bool) -> Markup {
    let body = html! {
        section.narrow {
            h1 { (e.code.status()) " · " (e.message) }
            p { (e.code.fix()) "." }
            p.muted { (t("error-code")) " " code { (e.code.as_str()) } ". " (t("error-support")) " "
                a href=(format!("mailto:{SUPPORT_EMAIL}")) { (SUPPORT_EMAIL) } "." }
            p { a href="/" { (t("error-back")) } }
        }
    };
    let who = if session_cookie {
        Who::Unchecked
    } else {
        Who::SignedOut
    };
    page_shell(&t("error-title"), who, Nav::None, body)
}

/// Text for a copy button's target; kept here so every copy button looks the same.
pub fn copy_button(target_id: &str) -> Markup {
    html! {
        button.copy type="button" data-copy=(format!("#{target_id}")) data-copied=(t("copied")) { (t("copy")) }
    }
}
