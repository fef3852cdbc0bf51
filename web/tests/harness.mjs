// What the browser tests share: a real `redstore up` (the binary cargo built) on a free port
// with the demo chain, sign-in codes read from its log as a developer reads them, grpcurl for
// checking through the API what the pages did, and headless Chromium (Debian's, at
// /usr/bin/chromium, or $CHROMIUM) driven by playwright-core.

import { spawn, execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createServer, connect } from "node:net";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { after, before } from "node:test";
import { chromium } from "playwright-core";

const run = promisify(execFile);
const repo = resolve(import.meta.dirname, "../..");
export const BIN = process.env.REDSTORE_BIN ?? join(repo, "target/debug/redstore");

/** iPad Air landscape, the size most screens are checked at. */
export const IPAD = { width: 1180, height: 820 };

/** Where the PostgreSQL shape makes its scratch databases (as the Rust suites do). */
const PG_ADMIN = process.env.REDSTORE_TEST_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** A fresh PostgreSQL database, migrated; answers the URL the server connects with (the
 * application role, under row-level security) and how to drop it. */
async function scratchDatabase() {
  const name = `rs_test_web_${Date.now()}_${process.pid}`;
  await run("psql", [PG_ADMIN, "-qAtc", `CREATE DATABASE ${name}`]);
  const admin = new URL(PG_ADMIN);
  admin.pathname = `/${name}`;
  await run(BIN, ["migrate", "--database-url", admin.href]);
  const app = new URL(admin.href);
  app.username = "redstore_app";
  app.password = "";
  const drop = () => run("psql", [PG_ADMIN, "-qAtc", `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
  return { name, url: app.href, drop };
}

/** A free TCP port on this machine (the OS picks it). */
async function freePort() {
  const probe = createServer();
  await new Promise((resolvePromise) => probe.listen(0, "127.0.0.1", resolvePromise));
  const { port } = probe.address();
  await new Promise((resolvePromise) => probe.close(resolvePromise));
  return port;
}

/** A Redis of this server's own (its stock cache and channels start empty), stopped with it. */
async function privateRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  for (let tries = 0; ; tries++) {
    try {
      await run("redis-cli", ["-p", String(port), "ping"]);
      break;
    } catch (error) {
      if (tries > 50) throw error;
      await new Promise((resolvePromise) => setTimeout(resolvePromise, 100));
    }
  }
  return { url: `redis://127.0.0.1:${port}`, stop: () => child.kill() };
}

export class Server {
  /** Starts `redstore up` with the demo chain in a fresh data directory: on the embedded
   * database, or with REDSTORE_TEST_BACKEND=postgres on the distributed shape's backends — a
   * scratch PostgreSQL database, a Redis of its own, and the Kafka broker at
   * REDSTORE_TEST_KAFKA (127.0.0.1:9092) under topics of its own. */
  static async start(extraArgs = []) {
    const dataDir = mkdtempSync(join(tmpdir(), "redstore-web-"));
    const args = ["up", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-format", "json", ...extraArgs];
    const backends = [];
    if (process.env.REDSTORE_TEST_BACKEND === "postgres") {
      const database = await scratchDatabase();
      const redis = await privateRedis();
      backends.push(() => database.drop(), () => redis.stop());
      const kafka = process.env.REDSTORE_TEST_KAFKA ?? "127.0.0.1:9092";
      args.push("--database-url", database.url, "--redis-url", redis.url);
      args.push("--kafka-brokers", kafka, "--kafka-topic-prefix", `web-${database.name}`);
    }
    const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
    const server = new Server(child, dataDir, backends);
    server.url = await server.waitFor((line) => line.message === "red store is listening" && `http://${line.addr}`);
    return server;
  }

  constructor(child, dataDir, backends) {
    this.child = child;
    this.dataDir = dataDir;
    this.backends = backends;
    this.lines = [];
    this.waiters = new Set();
    for (const output of [child.stdout, child.stderr]) {
      createInterface({ input: output }).on("line", (text) => {
        let line;
        try {
          line = JSON.parse(text);
        } catch {
          line = { text };
        }
        this.lines.push(line);
        for (const waiter of this.waiters) waiter(line);
      });
    }
    child.on("exit", (code) => {
      for (const waiter of this.waiters) waiter({ exited: code });
    });
  }

  /** The first log line (past or future) for which `match` answers something truthy. */
  waitFor(match, timeoutMs = 20_000) {
    for (const line of this.lines) {
      const found = match(line);
      if (found) return Promise.resolve(found);
    }
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`no such log line in ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = (line) => {
        if (line.exited !== undefined) {
          clearTimeout(timer);
          reject(new Error(`redstore exited (${line.exited}):\n${this.lines.slice(-20).map((l) => JSON.stringify(l)).join("\n")}`));
          return;
        }
        const found = match(line);
        if (found) {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolvePromise(found);
        }
      };
      this.waiters.add(waiter);
    });
  }

  /** The newest sign-in code the development sender wrote for `staffId` after log line `after`. */
  async codeFor(staffId, after = 0) {
    return this.waitFor((line) => {
      if (this.lines.indexOf(line) < after || line.staff_id !== staffId) return undefined;
      return /sign-in code (\d{6})/.exec(line.message ?? "")?.[1];
    });
  }

  /** Calls an RPC with grpcurl, as an operator would; answers the JSON response. */
  async call(method, body, token) {
    const args = ["-plaintext", "-d", JSON.stringify(body)];
    if (token) args.push("-H", `authorization: Bearer ${token}`);
    const { stdout } = await run("grpcurl", [...args, this.url.replace("http://", ""), method]);
    return JSON.parse(stdout);
  }

  /** Signs a staff member in over the API (not through a page); answers the access token. */
  async token(staffId) {
    const mark = this.lines.length;
    const key = `${staffId}-${Date.now()}-${Math.random()}`;
    const { challengeId } = await this.call("redstore.auth.v1.AuthService/RequestCode", { idempotencyKey: `c-${key}`, staffId });
    const code = await this.codeFor(staffId, mark);
    const { session } = await this.call("redstore.auth.v1.AuthService/VerifyCode", { idempotencyKey: `v-${key}`, challengeId, code });
    return session.accessToken;
  }

  async stop() {
    this.child.kill("SIGTERM");
    await new Promise((resolvePromise) => (this.child.exitCode !== null ? resolvePromise() : this.child.on("exit", resolvePromise)));
    rmSync(this.dataDir, { recursive: true, force: true });
    for (const stop of this.backends) await stop();
  }
}

/** The shop's Wi-Fi between an iPad and the server: a TCP relay that can drop everything
 * silently (no reset: packets are just lost, as when an iPad walks out of range) and come back. */
export class WiFi {
  static async to(server) {
    const wifi = new WiFi(new URL(server.url));
    await new Promise((resolvePromise) => wifi.relay.listen(0, "127.0.0.1", resolvePromise));
    wifi.url = `http://127.0.0.1:${wifi.relay.address().port}`;
    return wifi;
  }

  constructor(target) {
    this.up = true;
    this.links = new Set();
    this.relay = createServer((terminal) => {
      const upstream = connect(Number(target.port), target.hostname);
      const link = [terminal, upstream];
      this.links.add(link);
      const end = () => {
        this.links.delete(link);
        terminal.destroy();
        upstream.destroy();
      };
      terminal.on("data", (bytes) => this.up && upstream.write(bytes));
      upstream.on("data", (bytes) => this.up && terminal.write(bytes));
      for (const socket of link) socket.on("close", end).on("error", end);
    });
  }

  drop() {
    this.up = false;
  }

  /** Back in range: connections that lost bytes meanwhile are reset, as their peers give up. */
  restore() {
    for (const [terminal, upstream] of this.links) {
      terminal.destroy();
      upstream.destroy();
    }
    this.links.clear();
    this.up = true;
  }

  close() {
    this.restore();
    this.relay.close();
  }
}

/** A server (`redstore up` with `serverArgs`) and a browser for the tests of one file: started
 * before them, stopped after them; read `.server` and `.browser` inside a test. */
export function sharedServer(serverArgs = []) {
  const shared = {};
  before(async () => {
    shared.server = await Server.start(serverArgs);
    shared.browser = await launchBrowser();
  });
  after(async () => {
    await shared.browser?.close();
    await shared.server?.stop();
  });
  return shared;
}

export async function launchBrowser() {
  // A camera that films a test pattern, allowed without asking (the camera test).
  const args = ["--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"];
  return chromium.launch({ executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args });
}

/** A page as a new iPad: its own storage, iPad-sized, touch. */
export async function newTerminal(browser, server, { viewport = IPAD, via = server, bypassCSP = false, before } = {}) {
  const context = await browser.newContext({ viewport, hasTouch: true, baseURL: via.url, bypassCSP });
  // Runs in every page of the context before its own scripts (a stand-in for a browser API).
  if (before) await context.addInitScript(before);
  const page = await context.newPage();
  await page.goto("/");
  return page;
}

/** Signs in with a one-time code on a page showing the code form. */
export async function signInWithCode(page, server, staffId) {
  const mark = server.lines.length;
  await page.getByLabel("Staff ID").fill(staffId);
  await page.getByRole("button", { name: "Send me a code" }).click();
  const code = await server.codeFor(staffId, mark);
  await page.getByLabel("The 6-digit code we sent you").fill(code);
  await page.getByRole("button", { name: "Sign in" }).click();
}

/** Registers the page's iPad as `terminalId` (a manager signs in to do it). */
export async function registerTerminal(page, server, terminalId, manager = "manager-1") {
  await signInWithCode(page, server, manager);
  await page.getByRole("button", { name: new RegExp(`${terminalId}$`) }).click();
  await page.getByText(`${terminalId} ·`).waitFor();
}

/** A registered iPad with `staffId` signed in, on the till. */
export async function tillFor(browser, server, terminalId, staffId = "cashier-1", options = {}) {
  const page = await newTerminal(browser, server, options);
  await registerTerminal(page, server, terminalId);
  await signInWithCode(page, server, staffId);
  await page.locator(".connection[data-state=live]").waitFor();
  return page;
}

/** Types a code as a keyboard-wedge scanner does: fast, then Enter, wherever focus is. */
export async function wedgeScan(page, code) {
  await page.keyboard.type(code, { delay: 5 });
  await page.keyboard.press("Enter");
}

export { repo };
