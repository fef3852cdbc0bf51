//! Arbitrary requests to every unary RPC the server offers, built from its own descriptors: each
//! is answered (never a hang), never with INTERNAL or a broken connection (a panic), and a
//! refusal writes nothing. New RPCs and fields are covered without a line here.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use proptest::prelude::*;
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use prost::encoding::{WireType, encode_key, encode_varint};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

use crate::helpers::*;

/// Passes request and response bytes through as they are.
#[derive(Clone, Copy, Default)]
pub(crate) struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// The messages and unary methods of the server's contracts.
pub(crate) struct Contracts {
    pub(crate) messages: HashMap<String, DescriptorProto>,
    /// (path, input type) of every unary method of a `redstore.*` service.
    pub(crate) methods: Vec<(String, String)>,
}

impl Contracts {
    pub(crate) fn load() -> Self {
        let set = FileDescriptorSet::decode(redstore_proto::FILE_DESCRIPTOR_SET).expect("descriptor set");
        let mut messages = HashMap::new();
        let mut methods = Vec::new();
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                collect(&format!(".{package}"), message, &mut messages);
            }
            if !package.starts_with("redstore.") {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    if method.client_streaming() || method.server_streaming() {
                        continue;
                    }
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    methods.push((path, method.input_type().to_owned()));
                }
            }
        }
        Self { messages, methods }
    }
}

fn collect(scope: &str, message: &DescriptorProto, into: &mut HashMap<String, DescriptorProto>) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        collect(&name, nested, into);
    }
    into.insert(name, message.clone());
}

/// Where a request's values come from.
trait Source {
    /// Whether to send an optional field.
    fn present(&mut self) -> bool;
    /// How many items a repeated field gets.
    fn count(&mut self, depth: usize) -> usize;
    fn string(&mut self, field: &str) -> String;
    fn signed(&mut self) -> i64;
    fn unsigned(&mut self) -> u64;
    fn enumeration(&mut self) -> i64;
    fn bytes(&mut self) -> Vec<u8>;
    /// A fresh key, so that requests do not all replay the first one.
    fn fresh(&mut self) -> String;
}

/// A value that fits string field `field` (by its name).
fn fitting(field: &str, fresh: String) -> Vec<String> {
    if field.contains("store") {
        vec!["store-1".into(), "store-2".into()]
    } else if field.contains("terminal") {
        vec!["till-1".into(), "till-2".into()]
    } else if field.contains("sku") {
        vec!["SKU-0001".into(), "SKU-0005".into(), "SKU-0012".into()]
    } else if field.contains("code") && !field.contains("currency") {
        vec![demo_barcode(1), demo_barcode(9)]
    } else if field.contains("currency") {
        vec!["EUR".into()]
    } else if field.contains("name") || field.contains("note") || field.contains("reason") {
        vec!["Till by the door".into(), "Oat milk 1 l".into()]
    } else {
        vec![fresh]
    }
}

/// Strings any field may get: the valid, the edge and the hostile.
fn string_pool(fresh: String) -> Vec<String> {
    vec![
        String::new(),
        "store-1".into(),
        "store-2".into(),
        "till-3".into(),
        "SKU-0005".into(),
        "SKU-9999".into(),
        demo_barcode(7),
        "4006381333931".into(),
        "USD".into(),
        "eur".into(),
        "after:SKU-0001".into(),
        "garbage-token".into(),
        fresh,
        " padded ".into(),
        "a b".into(),
        "x".repeat(65),
        "x".repeat(5000),
        "\0".into(),
        "nul\0inside".into(),
        "\u{1b}[2J".into(),
        "\u{202E}evil".into(),
        "Été".into(),
        "😀".into(),
        "line\nbreak".into(),
    ]
}

const SIGNED: [i64; 20] = [
    0,
    1,
    -1,
    2,
    3,
    40,
    100,
    1_000_000,
    1_000_001,
    -1_000_001,
    10_000_000_000,
    10_000_000_001,
    1_000_000_000_000,
    1_000_000_000_001,
    -1_000_000_000_001,
    100_000_000_000_000_000,
    i64::MAX,
    i64::MIN,
    i64::MAX - 1,
    -5,
];
const UNSIGNED: [u64; 9] = [0, 1, 2, 50, 500, 501, 1000, u32::MAX as u64, u64::MAX];
const ENUMS: [i64; 7] = [-1, 0, 1, 2, 3, 4, 99];
const COUNTS: [usize; 6] = [0, 1, 2, 3, 5, 501];

/// Decisions drawn from proptest's bytes, so a failing case shrinks. A `mild` request draws
/// mostly values that fit, so the fuzzer also gets past validation into the stores.
struct Entropy {
    bytes: Vec<u8>,
    at: usize,
    mild: bool,
}

impl Entropy {
    fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[usize::from(self.byte()) % items.len()].clone()
    }
    fn chance(&mut self, percent: u8) -> bool {
        self.byte() % 100 < percent
    }
    /// From `valid` most of the time in a mild request, else from `any`.
    fn choose<T: Clone>(&mut self, valid: &[T], any: &[T]) -> T {
        if self.mild && self.chance(90) { self.pick(valid) } else { self.pick(any) }
    }
}

impl Source for Entropy {
    fn present(&mut self) -> bool {
        let percent = if self.mild { 95 } else { 70 };
        self.chance(percent)
    }
    fn count(&mut self, depth: usize) -> usize {
        if depth == 0 { self.choose(&[1, 2, 3], &COUNTS) } else { self.choose(&[1, 2], &COUNTS[..4]) }
    }
    fn string(&mut self, field: &str) -> String {
        let fresh = self.fresh();
        self.choose(&fitting(field, fresh.clone()), &string_pool(fresh))
    }
    fn signed(&mut self) -> i64 {
        self.choose(&[1, 2, 3, 100, 1000], &SIGNED)
    }
    fn unsigned(&mut self) -> u64 {
        self.choose(&[0, 1, 50], &UNSIGNED)
    }
    fn enumeration(&mut self) -> i64 {
        self.choose(&[1, 2], &ENUMS)
    }
    fn bytes(&mut self) -> Vec<u8> {
        self.pick(&[Vec::new(), vec![1, 2, 3], vec![0xff; 300]])
    }
    fn fresh(&mut self) -> String {
        format!("k{}-{}", self.byte(), self.byte())
    }
}

/// A request that fits in every field but one, decision number `target`, which gets the
/// `value`-th hostile value of its kind. Sweeping both covers every field with every value.
struct OneFault {
    target: usize,
    value: usize,
    seen: usize,
    /// Whether the fault was placed (the request has more than `target` decisions).
    placed: bool,
    fresh: u64,
}

impl OneFault {
    fn new(target: usize, value: usize, fresh: u64) -> Self {
        Self { target, value, seen: 0, placed: false, fresh }
    }
    /// Whether this decision is the faulty one.
    fn faulty(&mut self) -> bool {
        let now = self.seen == self.target;
        self.seen += 1;
        self.placed |= now;
        now
    }
    fn nth<T: Clone>(&self, items: &[T]) -> T {
        items[self.value % items.len()].clone()
    }
}

impl Source for OneFault {
    fn present(&mut self) -> bool {
        true
    }
    fn count(&mut self, _depth: usize) -> usize {
        if self.faulty() { self.nth(&[0, 501]) } else { 1 }
    }
    fn string(&mut self, field: &str) -> String {
        let fresh = self.fresh();
        if self.faulty() { self.nth(&string_pool(fresh)) } else { fitting(field, fresh)[0].clone() }
    }
    fn signed(&mut self) -> i64 {
        if self.faulty() { self.nth(&SIGNED) } else { 1 }
    }
    fn unsigned(&mut self) -> u64 {
        if self.faulty() { self.nth(&UNSIGNED) } else { 0 }
    }
    fn enumeration(&mut self) -> i64 {
        if self.faulty() { self.nth(&ENUMS) } else { 1 }
    }
    fn bytes(&mut self) -> Vec<u8> {
        if self.faulty() { self.nth(&[Vec::new(), vec![0xff; 300]]) } else { vec![1, 2, 3] }
    }
    fn fresh(&mut self) -> String {
        self.fresh += 1;
        format!("sweep-{}", self.fresh)
    }
}

/// An encoding of message `type_name` with the values `source` gives.
fn message(contracts: &Contracts, type_name: &str, source: &mut dyn Source, depth: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let Some(descriptor) = contracts.messages.get(type_name) else { return buf };
    for field in &descriptor.field {
        if !source.present() {
            continue;
        }
        let tag = u32::try_from(field.number()).expect("tag");
        let count = if field.label() == Label::Repeated { source.count(depth) } else { 1 };
        for _ in 0..count {
            let length_delimited = |buf: &mut Vec<u8>, bytes: &[u8]| {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(bytes.len() as u64, buf);
                buf.extend_from_slice(bytes);
            };
            let varint = |buf: &mut Vec<u8>, value: u64| {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(value, buf);
            };
            match field.r#type() {
                Type::String => length_delimited(&mut buf, source.string(field.name()).as_bytes()),
                Type::Bytes => length_delimited(&mut buf, &source.bytes()),
                Type::Message if depth < 3 => {
                    length_delimited(&mut buf, &message(contracts, field.type_name(), source, depth + 1))
                }
                Type::Message => {}
                Type::Bool => varint(&mut buf, u64::from(source.present())),
                Type::Enum => varint(&mut buf, source.enumeration() as u64),
                Type::Uint64 => varint(&mut buf, source.unsigned()),
                Type::Uint32 => varint(&mut buf, source.unsigned() & u64::from(u32::MAX)),
                Type::Int64 => varint(&mut buf, source.signed() as u64),
                Type::Int32 => varint(&mut buf, i64::from(source.signed() as i32) as u64),
                other => panic!("the contracts use no {other:?} fields; teach the fuzzer"),
            }
        }
    }
    buf
}

/// Reads everything the services have written, except what background consumers write on their
/// own (analytics, offsets, the reconciler's watermark).
enum Written {
    Embedded(std::path::PathBuf),
    Postgres(sqlx::PgPool),
}

impl Written {
    async fn of(app: &TestApp) -> Self {
        match app.scratch() {
            None => Self::Embedded(app.dir.path().join("redstore.db")),
            Some(scratch) => Self::Postgres(
                redstore_platform::pg::connect(&scratch.admin_url, 1, Duration::from_secs(5)).await.unwrap(),
            ),
        }
    }

    async fn close(self) {
        if let Self::Postgres(admin) = self {
            admin.close().await;
        }
    }

    async fn digest(&self) -> String {
        match self {
            Self::Embedded(path) => {
                let conn =
                    rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
                let mut tables = BTreeMap::new();
                for table in [
                    "stores",
                    "terminals",
                    "products",
                    "product_barcodes",
                    "stock",
                    "cart_items",
                    "sales",
                    "refunds",
                    "event_log",
                    "store_sequences",
                    "idempotency_keys",
                ] {
                    let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
                    let columns = stmt.column_count();
                    let mut rows: Vec<String> = stmt
                        .query_map([], |r| {
                            let values = (0..columns).map(|i| format!("{:?}", r.get_ref(i).unwrap()));
                            Ok(values.collect::<Vec<_>>().join(","))
                        })
                        .unwrap()
                        .map(Result::unwrap)
                        .collect();
                    rows.sort();
                    tables.insert(table, rows);
                }
                format!("{tables:?}")
            }
            Self::Postgres(admin) => {
                let tables = [
                    "inventory.stores",
                    "inventory.terminals",
                    "inventory.products",
                    "inventory.product_barcodes",
                    "inventory.stock",
                    "inventory.store_sequences",
                    "inventory.outbox",
                    "inventory.checkouts",
                    "sales.cart_items",
                    "sales.sales",
                    "sales.sale_stores",
                    "sales.refunds",
                    "sales.store_sequences",
                    "sales.outbox",
                    "platform.idempotency_keys",
                ];
                let parts: Vec<String> = tables
                    .iter()
                    .map(|t| {
                        format!(
                            "SELECT '{t}:' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM {t} x"
                        )
                    })
                    .collect();
                let rows: Vec<String> = sqlx::query_scalar(&parts.join(" UNION ALL ")).fetch_all(admin).await.unwrap();
                rows.join("|")
            }
        }
    }
}

/// Sends one request; panics on a hang, an INTERNAL or a broken connection, or a refusal that
/// wrote. `mutates`: the method may write (reads are not compared).
async fn probe(written: &Written, channel: &crate::helpers::Ch, path: &str, request: Vec<u8>, mutates: bool) {
    let before = if mutates { Some(written.digest().await) } else { None };
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the server accepts calls");
    let call = grpc.unary(tonic::Request::new(request), PathAndQuery::try_from(path).expect("path"), Raw);
    let answer = tokio::time::timeout(Duration::from_secs(20), call).await;
    let answer = answer.unwrap_or_else(|_| panic!("{path} hung"));
    if let Err(status) = answer {
        assert!(
            !matches!(
                status.code(),
                Code::Internal | Code::Unknown | Code::Unavailable | Code::DataLoss | Code::Unimplemented
            ),
            "{path} answered {status:?}"
        );
        assert!(status.message().len() < 1024, "{path}: a short message, not an echo: {status:?}");
        if let Some(before) = before {
            assert_eq!(written.digest().await, before, "{path} refused ({status:?}) but wrote");
        }
    }
}

/// Whether a method may write (by the contracts' naming: reads are Get, List and Lookup).
fn mutates(path: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    !["Get", "List", "Lookup"].iter().any(|read| method.starts_with(read))
}

/// Every field of every RPC, each with every hostile value of its kind, the rest fitting.
#[test]
fn every_field_of_every_rpc_refuses_each_bad_value_precisely_and_writes_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let channel = runtime.block_on(app.new_channel());
    let written = runtime.block_on(Written::of(&app));
    let contracts = Contracts::load();
    let values = string_pool(String::new()).len().max(SIGNED.len());
    let mut fresh = 0;
    let mut sent = 0;
    runtime.block_on(async {
        for (path, input) in &contracts.methods {
            for target in 0.. {
                let mut placed = false;
                for value in 0..values {
                    let mut source = OneFault::new(target, value, fresh);
                    let request = message(&contracts, input, &mut source, 0);
                    fresh = source.fresh;
                    placed = source.placed;
                    if !placed {
                        break;
                    }
                    probe(&written, &channel, path, request, mutates(path)).await;
                    sent += 1;
                }
                if !placed {
                    break;
                }
            }
        }
    });
    assert!(sent > 1000, "{sent} requests");
    runtime.block_on(written.close());
    runtime.block_on(app.stop());
}

#[test]
fn arbitrary_requests_to_every_rpc_are_answered_precisely_and_refusals_write_nothing() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let app = runtime.block_on(TestApp::spawn());
    let channel = runtime.block_on(app.new_channel());
    let written = runtime.block_on(Written::of(&app));
    let contracts = Contracts::load();
    assert!(contracts.methods.len() >= 25, "every unary RPC: {:?}", contracts.methods);
    let config = ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(which in any::<prop::sample::Index>(), bytes in prop::collection::vec(any::<u8>(), 1..256))| {
        let (path, input) = &contracts.methods[which.index(contracts.methods.len())];
        let mild = bytes[0] % 2 == 0;
        let request = message(&contracts, input, &mut Entropy { bytes, at: 1, mild }, 0);
        runtime.block_on(probe(&written, &channel, path, request, true));
    });
    runtime.block_on(written.close());
    runtime.block_on(app.stop());
}
