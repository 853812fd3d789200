//! Ceiling 2: axum doing one durable SQLite INSERT per request, through one writer thread that
//! group-commits whatever is waiting (the best way this machine's notes found), answering each
//! request after its commit. Args: ADDR DB_PATH [full|normal].
use axum::{Router, routing::post};
use rusqlite::Connection;
use std::sync::mpsc;
use tokio::sync::oneshot;

type Req = (String, oneshot::Sender<i64>);

fn writer(conn: Connection, rx: mpsc::Receiver<Req>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(r) = rx.try_recv() {
            batch.push(r);
            if batch.len() >= 512 {
                break;
            }
        }
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        let mut ids = Vec::with_capacity(batch.len());
        {
            let mut stmt = conn.prepare_cached("INSERT INTO items (body) VALUES (?1)").expect("prepare");
            for (body, _) in &batch {
                stmt.execute([body]).expect("insert");
                ids.push(conn.last_insert_rowid());
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
        for ((_, tx), id) in batch.into_iter().zip(ids) {
            let _ = tx.send(id);
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let path = args.next().unwrap_or_else(|| "ceiling.db".into());
    let sync = args.next().unwrap_or_else(|| "full".into());
    let conn = Connection::open(&path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", &sync).expect("sync");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)").expect("schema");
    let (tx, rx) = mpsc::channel::<Req>();
    std::thread::spawn(move || writer(conn, rx));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().route(
        "/",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let (done, wait) = oneshot::channel();
                tx.send((body, done)).expect("writer alive");
                wait.await.expect("committed").to_string()
            }
        }),
    );
    axum::serve(listener, app).await.expect("serve");
}
