//! Integration tests: the real `sockit` binary on loopback, kernel-chosen
//! ports, and real peers (python3, nc, ncat, socat); and the library run
//! in-process (`library`).

mod support;

mod bench;
mod chat;
mod chat_redis;
mod cli;
mod exec;
mod files;
mod get;
mod hostile;
mod interop;
mod library;
mod limits;
mod netcat;
mod relay;
mod services;
mod tls;
mod tutorial;
mod web;
mod ws;
