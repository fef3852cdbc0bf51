// The store's stock, live: WatchInventory over gRPC-web opens with a snapshot, then every change
// any terminal makes. A dropped connection is opened again from the last event seen
// (`resume_after`), so nothing is missed, and the state shows on screen while it is away.

import { Code } from "@connectrpc/connect";
import { codeOf, stream } from "./api";
import type { WatchInventoryResponse } from "../gen/redstore/stream/v1/stream_pb";

/** How often a quiet stream sends a keep-alive. */
const KEEP_ALIVE_SECONDS = 3;
/** Silence that means the connection is gone: two keep-alives missed. */
const SILENCE_MS = KEEP_ALIVE_SECONDS * 2_000 + 1_000;

export type Connection = "connecting" | "live" | "reconnecting";

export class LiveStock {
  readonly quantities = new Map<string, bigint>();
  connection: Connection = "connecting";
  /** The last event applied: the stream resumes after it. */
  private seq = 0n;
  private readonly abort = new AbortController();
  private readonly listeners = new Set<(changed: string[] | "all") => void>();
  private readonly connectionListeners = new Set<(connection: Connection) => void>();

  constructor(private readonly storeId: string) {
    void this.run();
  }

  /** Called with the skus that changed ("all" after a snapshot). */
  onChange(listener: (changed: string[] | "all") => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  onConnection(listener: (connection: Connection) => void): void {
    this.connectionListeners.add(listener);
  }

  close(): void {
    this.abort.abort();
  }

  private setConnection(connection: Connection): void {
    if (connection === this.connection) return;
    this.connection = connection;
    for (const listener of this.connectionListeners) listener(connection);
  }

  private async run(): Promise<void> {
    let pause = 500;
    while (!this.abort.signal.aborted) {
      // A link that died without a word (shop Wi-Fi) shows as silence: the server sends a
      // keep-alive whenever it has nothing else for KEEP_ALIVE_SECONDS, so a longer silence
      // ends this attempt and the stream is opened again from the last event seen.
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      this.abort.signal.addEventListener("abort", stop);
      let watchdog = setTimeout(stop, SILENCE_MS);
      try {
        const messages = stream.watchInventory(
          {
            storeId: this.storeId,
            resumeAfter: this.seq,
            includeSnapshot: this.seq === 0n,
            keepAliveSeconds: KEEP_ALIVE_SECONDS,
          },
          { signal: attempt.signal },
        );
        for await (const message of messages) {
          clearTimeout(watchdog);
          watchdog = setTimeout(stop, SILENCE_MS);
          this.setConnection("live");
          pause = 500;
          this.apply(message.item);
        }
      } catch (error) {
        if (this.abort.signal.aborted) return;
        // Signed out or locked: the screen that follows closes this stream.
        if (codeOf(error) === Code.Unauthenticated || codeOf(error) === Code.PermissionDenied) return;
      } finally {
        clearTimeout(watchdog);
        this.abort.signal.removeEventListener("abort", stop);
      }
      this.setConnection("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 5000);
    }
  }

  private apply(item: WatchInventoryResponse["item"]): void {
    if (item.case === "snapshot") {
      this.quantities.clear();
      for (const { sku, quantity } of item.value.items) this.quantities.set(sku, quantity);
      this.seq = item.value.asOfSeq;
      this.emit("all");
    } else if (item.case === "event") {
      const event = item.value;
      if (event.storeSeq <= this.seq) return;
      this.seq = event.storeSeq;
      if (event.payload.case !== "inventoryChanged") return;
      const changes = event.payload.value.changes;
      for (const change of changes) this.quantities.set(change.sku, change.quantityAfter);
      this.emit(changes.map((c) => c.sku));
    }
  }

  private emit(changed: string[] | "all"): void {
    for (const listener of this.listeners) listener(changed);
  }
}
