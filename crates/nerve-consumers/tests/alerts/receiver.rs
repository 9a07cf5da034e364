//! A webhook receiver on 127.0.0.1 made of plain threads, so it answers
//! whatever runtime the test blocks (or has none).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;

use serde_json::Value;

use super::PATIENCE;

/// Receives webhook requests; each body is sent down a channel before the
/// answer is written, so a sender that saw the answer is sure the body is
/// there.
pub(crate) struct Receiver {
    pub(crate) url: String,
    bodies: mpsc::Receiver<Value>,
}

impl Receiver {
    /// Answers every request with `status`.
    pub(crate) fn answering(status: u16) -> Self {
        Self::start(Some(status))
    }

    /// Reads requests and never answers them.
    pub(crate) fn silent() -> Self {
        Self::start(None)
    }

    fn start(status: Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/hook/secret-token",
            listener.local_addr().unwrap()
        );
        let (tx, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let tx = tx.clone();
                std::thread::spawn(move || serve(stream, status, &tx));
            }
        });
        Self { url, bodies }
    }

    /// The next body, waiting for it (at most [`PATIENCE`]).
    pub(crate) fn next(&self) -> Value {
        self.bodies
            .recv_timeout(PATIENCE)
            .expect("no request arrived in time")
    }

    /// A body already received, without waiting.
    pub(crate) fn received(&self) -> Option<Value> {
        self.bodies.try_recv().ok()
    }
}

/// One connection, which may carry several requests (keep-alive).
fn serve(stream: TcpStream, status: Option<u16>, tx: &mpsc::Sender<Value>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = tx.send(serde_json::from_slice(&body).unwrap());
        let Some(status) = status else {
            // Hold the connection open, unanswered, until the client goes.
            let _ = reader.read_to_end(&mut Vec::new());
            return;
        };
        let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if reader.get_mut().write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// An address on 127.0.0.1 where nothing listens: connecting is refused.
pub(crate) fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
