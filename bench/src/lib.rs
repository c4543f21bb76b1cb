//! A harness that drives a real Flotilla system like a user and an operator would: start
//! `flotilla up` on free ports in a temp dir, read what it prints, put steady load through
//! the gateway, find and signal its processes, and clean every one of them up. The system
//! tests in `tests/` and the benchmarks in `bench/` share it.

pub mod chaos;
pub mod load;
pub mod login_flood;
pub mod mtls;
pub mod orders;
pub mod procs;
pub mod shop;
pub mod system;
