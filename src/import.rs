//! `redstore import products|stock|stores FILE.csv`: onboarding a chain from CSV files.
//!
//! Each command reads and checks the whole file first, with the rules the server applies
//! (`redstore_inventory::domain`), and says which line and column is wrong (`line 17, column
//! price_minor: …`): a file with a bad row sends nothing. Then it streams the records in batches
//! (`ImportProducts` over a few concurrent streams; `ImportStock` in one stream, sorted by store,
//! which PostgreSQL applies all or nothing), with a progress bar. Each batch is applied whole or
//! not at all, under an idempotency key made from its content, its place in the file and `--run`:
//! running the same command again (after a dropped connection, or after fixing a row the server
//! refused) replays what was applied and doubles nothing.
//!
//! Files (a header row first; columns in any order; fields trimmed):
//! - products: `sku,name,price_minor,currency[,barcodes][,active]` — barcodes separated by `|` or
//!   spaces; active is true/false, yes/no or 1/0 (default true). A product that exists is
//!   replaced (name, price, active, exactly these barcodes).
//! - stock: `store_id,sku,quantity` — the count on hand, which replaces the level (not a delta).
//! - stores: `store_id,name[,oversell_policy][,terminals]` — policy strict or allow_negative
//!   (default strict); terminal ids separated by `|` or spaces. Created with CreateStore and
//!   RegisterTerminal, many at once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use crate::client_auth::{Authed, ClientAuth};
use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message as _;
use redstore_inventory::domain;
use redstore_platform::Error;
use redstore_platform::limits;
use redstore_proto::common::Money;
use redstore_proto::inventory::inventory_service_client::InventoryServiceClient;
use redstore_proto::inventory::{
    CreateStoreRequest, GetProductsRequest, ImportProductsRequest, ImportStockRequest, ImportedProduct,
    ListStoresRequest, OversellPolicy, RegisterTerminalRequest, StockCount,
};
use sha2::Digest as _;
use tokio::time::Instant;
use tonic_types::StatusExt as _;

/// How an import reaches the server and splits its work.
#[derive(clap::Args, Clone, Debug)]
pub struct ImportOptions {
    /// The server (its inventory service), native gRPC.
    #[arg(long, env = "REDSTORE_IMPORT_TARGET", default_value = "http://127.0.0.1:50051")]
    pub target: String,
    /// Records per batch (each applied whole or not at all), 1 to 1,000.
    #[arg(long, env = "REDSTORE_IMPORT_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u16).range(1..=limits::MAX_IMPORT_RECORDS as i64))]
    pub batch: u16,
    /// Concurrent streams of products (stores: concurrent requests are 16 times this; stock goes in
    /// one stream, applied whole).
    #[arg(long, env = "REDSTORE_IMPORT_STREAMS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub streams: u16,
    /// Part of every batch's idempotency key: the same file imported again under another run
    /// applies again (a new count of the same shelves); under the same run it changes nothing.
    #[arg(long, env = "REDSTORE_IMPORT_RUN", default_value = "")]
    pub run: String,
    /// Imports are an admin's: an admin's access token, or the deployment's signing key.
    #[command(flatten)]
    pub auth: ClientAuth,
}

/// What an import did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub what: &'static str,
    pub records: u64,
    /// Batches sent and, of them, those applied before (stores go one request each: none).
    pub batches: Option<(u64, u64)>,
    pub elapsed: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(f, "imported {} {}", self.records, self.what)?;
        if let Some((batches, replayed)) = self.batches {
            write!(f, " in {batches} batches ({replayed} replayed)")?;
        }
        write!(f, " in {secs:.2} s = {:.0} {}/s", self.records as f64 / secs.max(1e-9), self.what)
    }
}

/// The most problems of a file listed before the rest are only counted.
const MAX_LISTED: usize = 20;

/// What is wrong with a file, line by line.
#[derive(Default)]
struct Problems {
    listed: Vec<String>,
    more: usize,
}

impl Problems {
    fn add(&mut self, line: u64, column: &str, message: impl std::fmt::Display) {
        if self.listed.len() < MAX_LISTED {
            self.listed.push(format!("line {line}, column {column}: {message}"));
        } else {
            self.more += 1;
        }
    }

    fn into_result(self, path: &Path) -> anyhow::Result<()> {
        if self.listed.is_empty() {
            return Ok(());
        }
        let mut text = format!("{} is not imported; nothing was sent:\n  {}", path.display(), self.listed.join("\n  "));
        if self.more > 0 {
            text.push_str(&format!("\n  … and {} more", self.more));
        }
        bail!(text)
    }
}

/// Opens a CSV file with its header row, checking that the required columns are there.
fn open_csv(path: &Path, required: &[&str]) -> anyhow::Result<csv::Reader<std::fs::File>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let headers = reader.headers().with_context(|| format!("line 1 of {}: no header row", path.display()))?;
    let missing: Vec<&str> = required.iter().copied().filter(|c| !headers.iter().any(|h| h == *c)).collect();
    if !missing.is_empty() {
        bail!("line 1 of {}: the header lacks column(s) {} (it has: {})", path.display(), missing.join(", "), {
            headers.iter().collect::<Vec<_>>().join(",")
        });
    }
    Ok(reader)
}

/// The rows of a CSV file as `T`, each with its line number; a row that cannot be read (a wrong
/// number of fields, bad UTF-8) is a problem of its line.
fn rows<T: serde::de::DeserializeOwned>(
    reader: &mut csv::Reader<std::fs::File>,
    problems: &mut Problems,
) -> Vec<(u64, T)> {
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    let headers = reader.headers().cloned().unwrap_or_default();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, csv::Position::line);
                match record.deserialize::<T>(Some(&headers)) {
                    Ok(row) => out.push((line, row)),
                    Err(e) => problems.add(line, "*", e),
                }
            }
            Err(e) => problems.add(e.position().map_or(line, csv::Position::line), "*", e),
        }
    }
    out
}

/// Splits a list field on `|` and white space.
fn split_list(value: &str) -> Vec<String> {
    value.split(|c: char| c == '|' || c.is_whitespace()).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "" | "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A batch's idempotency key: what it is, the run, its index and its content.
fn batch_key(what: &str, run: &str, index: usize, content: &[u8]) -> String {
    let mut hash = sha2::Sha256::new();
    for part in [what.as_bytes(), run.as_bytes(), &(index as u64).to_be_bytes(), content] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("import-{what}-{hex}")
}

async fn connect(options: &ImportOptions) -> anyhow::Result<Authed> {
    crate::client_auth::connect(&options.target, options.auth.admin("redstore-import")?).await
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template =
        format!("{{elapsed_precise}} [{{bar:40}}] {{human_pos}}/{{human_len}} {what} ({{per_sec}}, {{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The column of a CSV file a field of a record comes from.
fn column_of(field: &str) -> &str {
    let field = field.split('[').next().unwrap_or(field);
    match field {
        "price.units_minor" => "price_minor",
        "price" | "price.currency_code" => "currency",
        "counts" | "products" => "*",
        other => other,
    }
}

/// A batch ready to send: its key, its records and the line each came from.
struct Batch<R> {
    key: String,
    records: Vec<R>,
    lines: Vec<u64>,
}

fn batches<R: prost::Message>(what: &str, run: &str, size: usize, rows: Vec<(u64, R)>) -> Vec<Batch<R>> {
    let mut out = Vec::with_capacity(rows.len().div_ceil(size));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let (lines, records): (Vec<u64>, Vec<R>) = rows.by_ref().take(size).unzip();
        let mut content = Vec::new();
        for r in &records {
            r.encode_length_delimited(&mut content).unwrap_or_default();
        }
        out.push(Batch { key: batch_key(what, run, out.len(), &content), records, lines });
    }
    out
}

/// Why the server refused a batch, pointed at the line and column of the record it names
/// (`batches[b].products[i].price.units_minor`); `line_of(b, i)` is the line of batch b's record
/// i, `left` what the refusal left applied.
fn refusal(
    status: &tonic::Status,
    line_of: &dyn Fn(usize, usize) -> Option<u64>,
    record_field: &str,
    left: &str,
) -> anyhow::Error {
    let violation = status.get_details_bad_request().and_then(|b| b.field_violations.into_iter().next());
    if let Some(v) = violation {
        let parsed = (|| {
            let rest = v.field.strip_prefix("batches[")?;
            let (b, rest) = rest.split_once("].")?;
            let rest = rest.strip_prefix(record_field)?.strip_prefix('[')?;
            let (i, field) = rest.split_once(']')?;
            let line = line_of(b.parse::<usize>().ok()?, i.parse::<usize>().ok()?)?;
            Some((line, column_of(field.trim_start_matches('.')).to_owned()))
        })();
        if let Some((line, column)) = parsed {
            return anyhow::anyhow!(
                "the server refused the batch of line {line} ({left}): line {line}, column {column}: {}",
                v.description
            );
        }
    }
    anyhow::anyhow!("the server refused a batch ({left}): {:?}: {}", status.code(), status.message())
}

/// What a refused products file left behind.
const PRODUCTS_REFUSED: &str = "the batches before it are applied; fix the line and run the same command again";

/// One stream's batches as it sends them: (idempotency key, records).
type Messages<R> = Vec<(String, Vec<R>)>;

/// Streams batches over `streams` concurrent client streams (batch k on stream k mod streams);
/// `call` sends one stream's batches and answers (batches, replayed batches).
async fn send_all<R, F, Fut>(
    batches: Vec<Batch<R>>,
    streams: usize,
    bar: &ProgressBar,
    record_field: &str,
    call: F,
) -> anyhow::Result<(u64, u64)>
where
    F: Fn(Messages<R>, ProgressBar) -> Fut,
    Fut: std::future::Future<Output = Result<(u64, u64), tonic::Status>>,
{
    // Each lane's messages, and the lines of each of its batches (to name a refused record's).
    let mut lanes: Vec<(Messages<R>, Vec<Vec<u64>>)> = (0..streams).map(|_| Default::default()).collect();
    for (k, batch) in batches.into_iter().enumerate() {
        let (messages, lines) = &mut lanes[k % streams];
        messages.push((batch.key, batch.records));
        lines.push(batch.lines);
    }
    let calls = lanes.into_iter().filter(|(messages, _)| !messages.is_empty()).map(|(messages, lines)| {
        let answer = call(messages, bar.clone());
        async move {
            answer.await.map_err(|status| {
                let line_of = |b: usize, i: usize| lines.get(b)?.get(i).copied();
                refusal(&status, &line_of, record_field, PRODUCTS_REFUSED)
            })
        }
    });
    let answers = futures::future::join_all(calls).await;
    let (mut sent, mut replayed) = (0, 0);
    for answer in answers {
        let (b, r) = answer?;
        sent += b;
        replayed += r;
    }
    Ok((sent, replayed))
}

#[derive(serde::Deserialize)]
struct ProductRow {
    sku: String,
    name: String,
    price_minor: String,
    currency: String,
    #[serde(default)]
    barcodes: String,
    #[serde(default)]
    active: String,
}

/// `redstore import products FILE.csv`.
pub async fn products(path: &Path, options: &ImportOptions) -> anyhow::Result<Summary> {
    let mut reader = open_csv(path, &["sku", "name", "price_minor", "currency"])?;
    let mut problems = Problems::default();
    let raw: Vec<(u64, ProductRow)> = rows(&mut reader, &mut problems);
    let mut records = Vec::with_capacity(raw.len());
    let mut skus: HashMap<String, u64> = HashMap::with_capacity(raw.len());
    let mut barcodes: HashMap<String, u64> = HashMap::with_capacity(raw.len());
    for (line, row) in raw {
        let Ok(price_minor) = row.price_minor.parse::<i64>() else {
            problems.add(line, "price_minor", format!("{:?} is not a whole number of minor units", row.price_minor));
            continue;
        };
        let Some(active) = parse_bool(&row.active) else {
            problems.add(line, "active", format!("{:?} is not true or false", row.active));
            continue;
        };
        let record = ImportedProduct {
            sku: row.sku,
            name: row.name,
            price: Some(Money { currency_code: row.currency, units_minor: price_minor }),
            barcodes: split_list(&row.barcodes),
            active,
        };
        let parsed = match domain::import_product(&record) {
            Ok(parsed) => parsed,
            Err(e) => {
                problem(&mut problems, line, e);
                continue;
            }
        };
        if let Some(first) = skus.insert(parsed.product.sku.clone(), line) {
            problems.add(line, "sku", format!("sku {:?} is also on line {first}", parsed.product.sku));
            continue;
        }
        if let Some((b, first)) =
            parsed.barcodes.iter().find_map(|b| barcodes.insert(b.gtin13().to_owned(), line).map(|f| (b, f)))
        {
            problems.add(line, "barcodes", format!("barcode {b} is also on line {first}"));
            continue;
        }
        records.push((line, record));
    }
    problems.into_result(path)?;
    let total = records.len() as u64;
    let batches = batches("products", &options.run, usize::from(options.batch), records);
    let channel = connect(options).await?;
    let bar = progress(total, "products");
    let started = Instant::now();
    let outcome = send_all(batches, usize::from(options.streams), &bar, "products", |messages, bar| {
        let mut client = InventoryServiceClient::new(channel.clone());
        async move {
            let stream = futures::stream::iter(messages).map(move |(key, products)| {
                bar.inc(products.len() as u64);
                ImportProductsRequest { idempotency_key: key, products }
            });
            let answer = client.import_products(stream).await?.into_inner();
            Ok((answer.batches, answer.replayed_batches))
        }
    })
    .await;
    bar.finish_and_clear();
    Ok(Summary { what: "products", records: total, batches: Some(outcome?), elapsed: started.elapsed() })
}

/// A record's error as a problem of its line, in the column its field comes from.
fn problem(problems: &mut Problems, line: u64, err: Error) {
    match err {
        Error::InvalidArgument { field, reason } => problems.add(line, column_of(&field), reason),
        other => problems.add(line, "*", other),
    }
}

/// One count of a stock file, compact (a chain's whole stock is held while it is checked):
/// its line, its store's and sku's numbers ([`intern`]) and the quantity.
#[derive(Clone, Copy)]
struct Counted {
    line: u64,
    store: u32,
    sku: u32,
    quantity: i64,
}

/// `redstore import stock FILE.csv`: the whole file read and checked, sorted by store, then sent in
/// ONE stream, which PostgreSQL applies all or nothing (the embedded store batch by batch).
pub async fn stock(path: &Path, options: &ImportOptions) -> anyhow::Result<Summary> {
    let mut reader = open_csv(path, &["store_id", "sku", "quantity"])?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap_or_default();
    let (store_at, sku_at, quantity_at) = (column("store_id"), column("sku"), column("quantity"));
    let mut problems = Problems::default();
    let mut stores: HashMap<String, (u32, u64)> = HashMap::new();
    let mut skus: HashMap<String, (u32, u64)> = HashMap::new();
    let (mut store_names, mut sku_names): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    // Each (store, sku) once in the file: a bit per sku number in each store.
    let mut counted: Vec<Vec<u64>> = Vec::new();
    let mut records: Vec<Counted> = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut last_store: Option<u32> = None;
    loop {
        let at = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                problems.add(e.position().map_or(at, csv::Position::line), "*", e);
                continue;
            }
        }
        let line = record.position().map_or(at, csv::Position::line);
        let field = |i: usize| record.get(i).unwrap_or_default();
        let Ok(quantity) = field(quantity_at).parse::<i64>() else {
            problems.add(line, "quantity", format!("{:?} is not a whole number", field(quantity_at)));
            continue;
        };
        let (store_id, sku) = match domain::check_stock_count(field(store_at), field(sku_at), quantity) {
            Ok(checked) => checked,
            Err(e) => {
                problem(&mut problems, line, e);
                continue;
            }
        };
        // Files are mostly grouped by store: the last store's number needs no lookup.
        let store = match last_store {
            Some(n) if store_names[n as usize] == store_id => n,
            _ => intern(&mut stores, &mut store_names, store_id, line),
        };
        last_store = Some(store);
        let sku_n = intern(&mut skus, &mut sku_names, sku, line);
        if counted.len() <= store as usize {
            counted.resize_with(store as usize + 1, Vec::new);
        }
        let bits = &mut counted[store as usize];
        let (word, bit) = (sku_n as usize / 64, 1u64 << (sku_n % 64));
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & bit != 0 {
            let first = if problems.listed.len() < MAX_LISTED {
                records.iter().find(|r| r.store == store && r.sku == sku_n).map_or(0, |r| r.line)
            } else {
                0
            };
            problems.add(line, "sku", format!("sku {sku:?} of store {store_id:?} is also on line {first}"));
            continue;
        }
        bits[word] |= bit;
        records.push(Counted { line, store, sku: sku_n, quantity });
    }
    drop(counted);
    problems.into_result(path)?;
    let channel = connect(options).await?;
    let mut problems = Problems::default();
    preflight(&channel, &stores, &skus, &mut problems).await?;
    problems.into_result(path)?;
    drop((stores, skus));
    sort_by_store(&mut records, &store_names);
    let total = records.len() as u64;
    let size = usize::from(options.batch);
    let count = records.len().div_ceil(size);
    let file = std::sync::Arc::new((records, store_names, sku_names));
    let bar = progress(total, "counts");
    let started = Instant::now();
    let (sent, run, bar_inc) = (file.clone(), options.run.clone(), bar.clone());
    let stream = futures::stream::iter(0..count).map(move |b| {
        let (records, store_names, sku_names) = &*sent;
        let counts: Vec<StockCount> = records[b * size..((b + 1) * size).min(records.len())]
            .iter()
            .map(|r| StockCount {
                store_id: store_names[r.store as usize].clone(),
                sku: sku_names[r.sku as usize].clone(),
                quantity: r.quantity,
            })
            .collect();
        let mut content = Vec::new();
        for c in &counts {
            c.encode_length_delimited(&mut content).unwrap_or_default();
        }
        bar_inc.inc(counts.len() as u64);
        ImportStockRequest { idempotency_key: batch_key("stock", &run, b, &content), counts }
    });
    let answer = InventoryServiceClient::new(channel).import_stock(stream).await;
    bar.finish_and_clear();
    let answer = answer
        .map_err(|status| {
            let line_of = |b: usize, i: usize| file.0.get(b * size + i).map(|r| r.line);
            refusal(&status, &line_of, "counts", STOCK_REFUSED)
        })?
        .into_inner();
    Ok(Summary {
        what: "counts",
        records: total,
        batches: Some((answer.batches, answer.replayed_batches)),
        elapsed: started.elapsed(),
    })
}

/// What a refused stock file left behind.
const STOCK_REFUSED: &str = "on PostgreSQL nothing of the file is applied; on the embedded store the batches before it \
                             are; fix the line and run the same command again";

/// Orders a stock file's counts by store (byte order, the order sales lock stores in, so that a
/// load and sales never wait for each other in a circle), keeping the file's order within a store.
fn sort_by_store(records: &mut [Counted], store_names: &[String]) {
    let mut by_name: Vec<u32> = (0..store_names.len() as u32).collect();
    by_name.sort_by(|a, b| store_names[*a as usize].cmp(&store_names[*b as usize]));
    let mut rank = vec![0u32; store_names.len()];
    for (r, n) in by_name.into_iter().enumerate() {
        rank[n as usize] = r as u32;
    }
    if records.windows(2).any(|w| rank[w[0].store as usize] > rank[w[1].store as usize]) {
        records.sort_by_key(|r| rank[r.store as usize]);
    }
}

/// A name's number (and the first line it is on), numbered in the order names first appear;
/// `names` lists them by number.
fn intern(map: &mut HashMap<String, (u32, u64)>, names: &mut Vec<String>, name: &str, line: u64) -> u32 {
    if let Some(&(n, _)) = map.get(name) {
        return n;
    }
    let n = names.len() as u32;
    map.insert(name.to_owned(), (n, line));
    names.push(name.to_owned());
    n
}

/// Checks that every store and sku of a stock file exists before anything is sent (a page of
/// stores, a thousand skus a call), so that an unknown one refuses the whole file, naming its
/// first line.
async fn preflight(
    channel: &Authed,
    stores: &HashMap<String, (u32, u64)>,
    skus: &HashMap<String, (u32, u64)>,
    problems: &mut Problems,
) -> anyhow::Result<()> {
    let mut client = InventoryServiceClient::new(channel.clone());
    let mut known: HashSet<String> = HashSet::new();
    let mut page = None;
    loop {
        let answer = client
            .list_stores(ListStoresRequest { page: Some(page.take().unwrap_or_else(|| stores_page(String::new()))) })
            .await
            .context("listing the chain's stores")?
            .into_inner();
        known.extend(answer.stores.into_iter().map(|s| s.store_id));
        match answer.page {
            Some(p) if !p.next_page_token.is_empty() => page = Some(stores_page(p.next_page_token)),
            _ => break,
        }
    }
    let mut missing: Vec<(u64, String)> = stores
        .iter()
        .filter(|(id, _)| !known.contains(*id))
        .map(|(id, (_, line))| (*line, format!("store {id:?} does not exist")))
        .map(|(line, m)| (line, format!("store_id\u{0}{m}")))
        .collect();
    let names: Vec<&String> = skus.keys().collect();
    for chunk in names.chunks(1000) {
        let asked = GetProductsRequest { skus: chunk.iter().map(|s| (*s).clone()).collect() };
        let found: HashSet<String> = client
            .get_products(asked)
            .await
            .context("reading the catalog")?
            .into_inner()
            .products
            .into_iter()
            .map(|p| p.sku)
            .collect();
        for sku in chunk.iter().filter(|s| !found.contains(s.as_str())) {
            missing.push((skus[sku.as_str()].1, format!("sku\u{0}sku {sku:?} does not exist")));
        }
    }
    missing.sort();
    for (line, m) in missing {
        let (column, message) = m.split_once('\u{0}').unwrap_or(("*", &m));
        problems.add(line, column, message);
    }
    Ok(())
}

/// A page of the chain's stores, as large as pages go.
fn stores_page(page_token: String) -> redstore_proto::common::PageRequest {
    redstore_proto::common::PageRequest { page_size: redstore_platform::page::MAX_PAGE_SIZE, page_token }
}

#[derive(serde::Deserialize)]
struct StoreRowCsv {
    store_id: String,
    name: String,
    #[serde(default)]
    oversell_policy: String,
    #[serde(default)]
    terminals: String,
}

/// `redstore import stores FILE.csv`: CreateStore and RegisterTerminal, many at once, each under
/// a key made from its row.
pub async fn stores(path: &Path, options: &ImportOptions) -> anyhow::Result<Summary> {
    let mut reader = open_csv(path, &["store_id", "name"])?;
    let mut problems = Problems::default();
    let raw: Vec<(u64, StoreRowCsv)> = rows(&mut reader, &mut problems);
    let mut requests = Vec::with_capacity(raw.len());
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (line, row) in raw {
        let policy = match row.oversell_policy.to_ascii_lowercase().as_str() {
            "" | "strict" => OversellPolicy::Strict,
            "allow_negative" => OversellPolicy::AllowNegative,
            other => {
                problems.add(line, "oversell_policy", format!("{other:?} is not strict or allow_negative"));
                continue;
            }
        };
        let store_id = match redstore_platform::error::identifier("store_id", &row.store_id) {
            Ok(id) => id.to_owned(),
            Err(e) => {
                problem(&mut problems, line, e);
                continue;
            }
        };
        if let Err(e) = domain::product_name("name", &row.name) {
            problem(&mut problems, line, e);
            continue;
        }
        let terminals = split_list(&row.terminals);
        if let Some(e) = terminals.iter().find_map(|t| redstore_platform::error::identifier("terminals", t).err()) {
            problem(&mut problems, line, e);
            continue;
        }
        if let Some(first) = seen.insert(store_id.clone(), line) {
            problems.add(line, "store_id", format!("store {store_id:?} is also on line {first}"));
            continue;
        }
        let store = CreateStoreRequest {
            idempotency_key: String::new(),
            store_id,
            name: row.name,
            oversell_policy: policy as i32,
        };
        requests.push((line, store, terminals));
    }
    problems.into_result(path)?;
    let channel = connect(options).await?;
    let total = requests.len() as u64;
    let bar = progress(total, "stores");
    let started = Instant::now();
    let run = options.run.clone();
    let results = futures::stream::iter(requests)
        .map(|(line, mut store, terminals)| {
            let mut client = InventoryServiceClient::new(channel.clone());
            let (bar, run) = (bar.clone(), run.clone());
            async move {
                store.idempotency_key = batch_key("store", &run, 0, &store.encode_to_vec());
                let store_id = store.store_id.clone();
                client.create_store(store).await.map_err(|s| (line, s))?;
                for terminal_id in terminals {
                    let mut terminal = RegisterTerminalRequest {
                        idempotency_key: String::new(),
                        store_id: store_id.clone(),
                        terminal_id,
                        name: String::new(),
                    };
                    terminal.idempotency_key = batch_key("terminal", &run, 0, &terminal.encode_to_vec());
                    client.register_terminal(terminal).await.map_err(|s| (line, s))?;
                }
                bar.inc(1);
                Ok::<_, (u64, tonic::Status)>(())
            }
        })
        .buffer_unordered(usize::from(options.streams) * 16)
        .collect::<Vec<_>>()
        .await;
    bar.finish_and_clear();
    let mut refused: Vec<(u64, tonic::Status)> = results.into_iter().filter_map(Result::err).collect();
    refused.sort_by_key(|(line, _)| *line);
    if let Some((line, status)) = refused.first() {
        bail!(
            "the server refused line {line} ({} line(s) refused in all; the others are imported, and running the same \
             command again changes nothing for them): {:?}: {}",
            refused.len(),
            status.code(),
            status.message()
        );
    }
    Ok(Summary { what: "stores", records: total, batches: None, elapsed: started.elapsed() })
}
