//! Commands the dashboard offers to copy and paste into a shell: every value in them is quoted
//! for a POSIX shell, so a catalogue default, an enum value, a model id or the public URL is
//! always one literal argument and never shell syntax.

/// `s` as one shell word: unchanged when it is made only of characters no shell treats
/// specially, otherwise in single quotes (where nothing is special), each `'` written as `'\''`.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The `Authorization` header argument for `curl -H`: the environment variable stays
/// expandable (double quotes around a fixed text and `$RUNBASE_API_KEY`); anything else is
/// quoted literally.
pub fn bearer(placeholder: &str) -> String {
    if placeholder == ENV_KEY {
        format!("\"Authorization: Bearer {ENV_KEY}\"")
    } else {
        quote(&format!("Authorization: Bearer {placeholder}"))
    }
}

/// The key in the examples when none of the viewer's is picked.
pub const ENV_KEY: &str = "$RUNBASE_API_KEY";

/// `curl` creating a run with `body` (JSON) at `base`.
pub fn curl_create(base: &str, placeholder: &str, body: &str) -> String {
    format!(
        "curl -X POST {} \\\n  -H {} \\\n  -H 'Content-Type: application/json' \\\n  -d {}",
        quote(&format!("{base}/api/v1/runs")),
        bearer(placeholder),
        quote(body)
    )
}

/// [`curl_create`] with an `Idempotency-Key` header, so that it can be retried safely.
pub fn curl_create_idempotent(base: &str, placeholder: &str, key: &str, body: &str) -> String {
    format!(
        "curl -X POST {} \\\n  -H {} \\\n  -H 'Content-Type: application/json' \\\n  -H {} \\\n  -d {}",
        quote(&format!("{base}/api/v1/runs")),
        bearer(placeholder),
        quote(&format!("Idempotency-Key: {key}")),
        quote(body)
    )
}

/// `curl` reading `path` (e.g. `/api/v1/runs/RUN_ID`) at `base`.
pub fn curl_get(base: &str, path: &str, placeholder: &str) -> String {
    format!(
        "curl {} \\\n  -H {}",
        quote(&format!("{base}{path}")),
        bearer(placeholder)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// What `sh` makes of `words`: each argument on its own line.
    fn sh_args(words: &str) -> Vec<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s\\n' {words}"))
            .env("RUNBASE_API_KEY", "sk-from-env")
            .output()
            .expect("sh");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn quoted_values_stay_one_literal_argument() {
        for hostile in [
            "x'; touch /tmp/runbase-pwned #",
            "a cat's portrait",
            "$(id)",
            "`id`",
            "a\"b",
            "semi;colon & amp | pipe > out",
            "",
            "plain",
            "\\back'slash'",
        ] {
            assert_eq!(sh_args(&quote(hostile)), [hostile], "{hostile:?}");
        }
    }

    #[test]
    fn the_create_command_sends_the_json_it_shows() {
        let body = r#"{"input":{"prompt":"x'; touch /tmp/runbase-pwned #"},"model":"a/b"}"#;
        let cmd = curl_create("http://127.0.0.1:8080", ENV_KEY, body);
        let words = cmd.trim_start_matches("curl ").replace("\\\n", " ");
        assert_eq!(
            sh_args(&words),
            [
                "-X",
                "POST",
                "http://127.0.0.1:8080/api/v1/runs",
                "-H",
                "Authorization: Bearer sk-from-env",
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
            ]
        );
        assert!(!std::path::Path::new("/tmp/runbase-pwned").exists());
        let cmd = curl_create_idempotent("http://127.0.0.1:8080", ENV_KEY, "a'b", body);
        let words = cmd.trim_start_matches("curl ").replace("\\\n", " ");
        let args = sh_args(&words);
        assert_eq!(args[7..9], ["-H", "Idempotency-Key: a'b"]);
        assert_eq!(args[10], body);
    }
}
