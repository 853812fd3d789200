//! The dashboard's languages: Fluent messages compiled into the binary (`locales/*.ftl`), the
//! language of a request (the `rb_lang` cookie set by the switch, else `Accept-Language`, else
//! English), and [`t`] to look a message up while a page renders.
//!
//! The language is held in a task-local for the duration of one request (set by [`middleware`]),
//! so page code asks for a message by id without passing the language through every function.
//! API error messages are not translated: they come from the domain's error table unchanged.

use crate::web::{PageQuery, cookie, safe_next, set_cookie};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use runbase_http::AppState;
use serde::Deserialize;
use std::sync::LazyLock;
use unic_langid::LanguageIdentifier;

/// The cookie remembering the language chosen with the switch.
pub const LANG_COOKIE: &str = "rb_lang";

/// A language of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
    Ja,
    ZhCn,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::En, Lang::De, Lang::Ja, Lang::ZhCn];

    /// The BCP 47 tag (the `lang` attribute, the cookie's value).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
            Lang::Ja => "ja",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// The language's name in itself, for the switch.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::De => "Deutsch",
            Lang::Ja => "日本語",
            Lang::ZhCn => "简体中文",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Lang::En => include_str!("../locales/en.ftl"),
            Lang::De => include_str!("../locales/de.ftl"),
            Lang::Ja => include_str!("../locales/ja.ftl"),
            Lang::ZhCn => include_str!("../locales/zh-CN.ftl"),
        }
    }

    fn index(self) -> usize {
        match self {
            Lang::En => 0,
            Lang::De => 1,
            Lang::Ja => 2,
            Lang::ZhCn => 3,
        }
    }

    /// The language a tag asks for, if the dashboard has it: `de-AT` is German, `zh`,
    /// `zh-CN`, `zh-SG` and `zh-Hans` are Simplified Chinese (`zh-TW` and `zh-Hant` are not).
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let id: LanguageIdentifier = tag.trim().parse().ok()?;
        match id.language.as_str() {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            "ja" => Some(Lang::Ja),
            "zh" => {
                let traditional = id.script.is_some_and(|s| s.as_str() == "Hant")
                    || (id.script.is_none()
                        && id
                            .region
                            .is_some_and(|r| matches!(r.as_str(), "TW" | "HK" | "MO")));
                (!traditional).then_some(Lang::ZhCn)
            }
            _ => None,
        }
    }

    /// The best language of an `Accept-Language` header: the highest `q` the dashboard has.
    pub fn from_accept_language(header: &str) -> Option<Lang> {
        let mut best: Option<(f32, Lang)> = None;
        for (i, item) in header.split(',').take(32).enumerate() {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            // Earlier entries win ties; `q=0` means "not this one".
            let q = q - i as f32 * 1e-4;
            if q <= 0.0 {
                continue;
            }
            if let Some(lang) = Lang::from_tag(tag)
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l)
    }
}

type Bundle = FluentBundle<FluentResource>;

static BUNDLES: LazyLock<Vec<Bundle>> = LazyLock::new(|| {
    Lang::ALL
        .iter()
        .map(|&lang| {
            let id: LanguageIdentifier = lang.code().parse().unwrap_or_default();
            let mut bundle = FluentBundle::new_concurrent(vec![id]);
            // Pages are HTML with `lang` set; Unicode isolation marks would only get in the way
            // of copying text.
            bundle.set_use_isolating(false);
            let resource = FluentResource::try_new(lang.source().to_owned()).unwrap_or_else(
                |(partial, errors)| {
                    tracing::error!(lang = lang.code(), ?errors, "a locale file has errors");
                    partial
                },
            );
            if let Err(errors) = bundle.add_resource(resource) {
                tracing::error!(
                    lang = lang.code(),
                    ?errors,
                    "a locale file repeats messages"
                );
            }
            bundle
        })
        .collect()
});

/// What a page being rendered needs to know of its request: its language, and its own path (for
/// the language switch's links back).
#[derive(Debug, Clone)]
struct Context {
    lang: Lang,
    path: String,
}

tokio::task_local! {
    static CURRENT: Context;
}

/// The language of the request being handled (English outside one).
pub fn current() -> Lang {
    CURRENT.try_with(|c| c.lang).unwrap_or(Lang::En)
}

/// The path and query of the request being handled (`/` outside one).
pub fn current_path() -> String {
    CURRENT
        .try_with(|c| c.path.clone())
        .unwrap_or_else(|_| "/".to_owned())
}

/// The language switch's link to `lang`, back to this page.
pub fn switch_href(lang: Lang) -> String {
    let q = serde_urlencoded::to_string([("lang", lang.code()), ("next", &current_path())])
        .unwrap_or_default();
    format!("/language?{q}")
}

fn format(lang: Lang, id: &str, args: Option<&FluentArgs>) -> Option<String> {
    let bundle = BUNDLES.get(lang.index())?;
    let msg = bundle.get_message(id)?;
    let pattern = msg.value()?;
    let mut errors = Vec::new();
    let text = bundle.format_pattern(pattern, args, &mut errors);
    Some(text.into_owned())
}

/// The message `id` in the request's language (English where a translation lacks it; the id
/// itself where English lacks it too, which a unit test forbids).
pub fn t(id: &str) -> String {
    t_args(id, &[])
}

/// [`t`] with arguments (`{ $name }` in the message).
pub fn t_args(id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
    let mut fargs = FluentArgs::new();
    for (k, v) in args {
        fargs.set(*k, v.clone());
    }
    let fargs = (!args.is_empty()).then_some(&fargs);
    format(current(), id, fargs)
        .or_else(|| format(Lang::En, id, fargs))
        .unwrap_or_else(|| id.to_owned())
}

/// The language a request asks for: the switch's cookie, else `Accept-Language`, else English.
pub fn negotiate(state: &AppState, headers: &HeaderMap) -> Lang {
    cookie(state, headers, LANG_COOKIE)
        .and_then(|c| Lang::from_tag(&c))
        .or_else(|| {
            headers
                .get(header::ACCEPT_LANGUAGE)
                .and_then(|v| v.to_str().ok())
                .and_then(Lang::from_accept_language)
        })
        .unwrap_or(Lang::En)
}

/// Runs the rest of the request in its language, and says which it is (`Content-Language`).
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let lang = negotiate(&state, req.headers());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut resp = CURRENT.scope(Context { lang, path }, next.run(req)).await;
    let h = resp.headers_mut();
    if h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/html"))
    {
        h.insert(
            header::CONTENT_LANGUAGE,
            HeaderValue::from_static(lang.code()),
        );
        h.append(header::VARY, HeaderValue::from_static("Accept-Language"));
    }
    resp
}

#[derive(Deserialize, Default)]
pub struct SwitchQuery {
    lang: Option<String>,
    next: Option<String>,
}

/// `GET /language?lang=de&next=/models`: remembers the choice (a cookie, one year) and goes back.
pub async fn switch(
    State(state): State<AppState>,
    PageQuery(q): PageQuery<SwitchQuery>,
) -> Response {
    let to = safe_next(q.next.as_deref());
    let mut resp = Redirect::to(&to).into_response();
    if let Some(lang) = q.lang.as_deref().and_then(Lang::from_tag) {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(&state, LANG_COOKIE, lang.code(), 365 * 24 * 3600),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ids(source: &str) -> BTreeSet<String> {
        let resource = FluentResource::try_new(source.to_owned())
            .unwrap_or_else(|(_, e)| panic!("a locale file does not parse: {e:?}"));
        resource
            .entries()
            .filter_map(|e| match e {
                fluent_syntax::ast::Entry::Message(m) => Some(m.id.name.to_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_language_has_every_message() {
        let english = ids(Lang::En.source());
        assert!(english.len() > 50, "{}", english.len());
        for lang in Lang::ALL {
            let these = ids(lang.source());
            let missing: Vec<_> = english.difference(&these).collect();
            let extra: Vec<_> = these.difference(&english).collect();
            assert!(missing.is_empty(), "{} lacks {missing:?}", lang.code());
            assert!(
                extra.is_empty(),
                "{} has ids English lacks: {extra:?}",
                lang.code()
            );
            // Each message formats without errors (arguments aside).
            for id in &these {
                assert!(format(lang, id, None).is_some(), "{} {id}", lang.code());
            }
        }
    }

    /// Every `t("id")` / `t_args("id", ...)` in the dashboard's code names an English message.
    #[test]
    fn pages_use_only_known_ids() {
        let english = ids(Lang::En.source());
        let mut files = vec![];
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let mut used = 0;
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for call in ["t(\"", "t_args(\""] {
                for (at, _) in text.match_indices(call) {
                    // Not part of a longer name (`format(`, `select_t(`).
                    let before = text[..at].chars().next_back();
                    if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        continue;
                    }
                    let rest = &text[at + call.len()..];
                    let id = &rest[..rest.find('"').unwrap()];
                    if id == "id" {
                        continue; // the doc comments' own example
                    }
                    used += 1;
                    assert!(
                        english.contains(id),
                        "{} uses {id:?}, missing from en.ftl",
                        f.display()
                    );
                }
            }
        }
        assert!(used > 50, "{used}");
    }

    #[test]
    fn accept_language_picks_the_best_available() {
        assert_eq!(
            Lang::from_accept_language("de-DE,de;q=0.9,en;q=0.8"),
            Some(Lang::De)
        );
        assert_eq!(
            Lang::from_accept_language("fr-FR, ja;q=0.5, en;q=0.4"),
            Some(Lang::Ja)
        );
        assert_eq!(
            Lang::from_accept_language("zh-TW, zh-CN;q=0.8"),
            Some(Lang::ZhCn)
        );
        assert_eq!(Lang::from_accept_language("zh-Hant"), None);
        assert_eq!(Lang::from_accept_language("zh"), Some(Lang::ZhCn));
        assert_eq!(
            Lang::from_accept_language("en;q=0.1, de;q=0"),
            Some(Lang::En)
        );
        assert_eq!(Lang::from_accept_language("fr, es"), None);
        assert_eq!(Lang::from_accept_language("garbage;;;,"), None);
    }
}
