//! End-to-end tests: the real server on port 0 with real clients (tonic over HTTP/2, reqwest
//! over HTTP/1.1 for gRPC-web and SSE, and a real grpcurl). One binary, one module per concern.

mod helpers;

mod access;
mod analytics;
mod bench_cli;
mod broker_restart;
mod chain;
mod checkout_race;
mod config_file;
mod connections;
mod deploy_shape;
mod distributed;
mod edge;
mod embedded_db;
mod faults;
mod fuzz;
mod idempotency;
mod import;
mod interop;
mod limits;
mod observability;
mod refunds;
mod retention;
mod sale_flow;
mod scanning;
mod shutdown;
mod sign_in;
mod sse_resume;
mod tls;
mod validation;
