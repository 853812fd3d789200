//! The Redis the tests share (`RUNBASE_TEST_REDIS_URL`, default redis://127.0.0.1:6379;
//! `.ci/run` starts one). Tests never flush it: each uses keys under a random prefix.

use std::io::{Read, Write};

pub fn redis_url() -> String {
    std::env::var("RUNBASE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `host:port` of a `redis://[user@]host:port[/db]` URL.
pub fn redis_addr(url: &str) -> &str {
    let rest = url.trim_start_matches("redis://");
    let authority = rest.split('/').next().unwrap_or(rest);
    authority.rsplit('@').next().unwrap_or(authority)
}

/// Whether Redis answers a PING; panics under CI when it does not.
pub fn redis_up() -> bool {
    let url = redis_url();
    let up = std::net::TcpStream::connect(redis_addr(&url)).is_ok_and(|mut s| {
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    });
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "Redis is not reachable at {url} (.ci/run starts it)"
        );
        eprintln!("skipped: no Redis at {url}");
    }
    up
}

/// A key prefix no other test uses.
pub fn random_prefix() -> String {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    format!("runbase-test:{}:", hex::encode(b))
}
