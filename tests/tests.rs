//! Integration tests: the real `sockit` binary on loopback, kernel-chosen
//! ports, and real peers (python3, nc, ncat, socat).

mod support;

mod cli;
mod interop;
mod limits;
mod netcat;
mod services;
mod tutorial;
