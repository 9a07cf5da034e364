//! The dashboard's server, tested over real HTTP on 127.0.0.1: its SSE
//! stream from a bus and from a journal (order, the seam between history
//! and live, `Last-Event-ID`, a slow client's bounded queue), the token,
//! errors, and untrusted event data.

mod support;

mod auth;
mod bus;
mod errors;
mod journal;
mod page;
