// The terminal's only way to the server: typed gRPC-web clients (generated from proto/ by buf)
// on the page's own origin. Signing in goes without a token; every other call carries the
// signed-in staff member's access token, which `session.ts` keeps fresh.

import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { AnalyticsService } from "../gen/redstore/analytics/v1/analytics_pb";
import { AuthService } from "../gen/redstore/auth/v1/auth_pb";
import { InventoryService } from "../gen/redstore/inventory/v1/inventory_pb";
import { SalesService } from "../gen/redstore/sales/v1/sales_pb";
import { InventoryStreamService } from "../gen/redstore/stream/v1/stream_pb";

let tokenSource: () => Promise<string | undefined> = async () => undefined;

/** Who gives the access token for each call (the session, once someone signs in). */
export function useTokens(source: () => Promise<string | undefined>): void {
  tokenSource = source;
}

const bearer: Interceptor = (next) => async (request) => {
  const token = await tokenSource();
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

const baseUrl = location.origin;
/** A call unanswered for this long failed (and is retried): shop Wi-Fi loses requests. */
const defaultTimeoutMs = 10_000;
const open = createGrpcWebTransport({ baseUrl, defaultTimeoutMs });
const signedIn = createGrpcWebTransport({ baseUrl, interceptors: [bearer], defaultTimeoutMs });
/** Live streams last as long as the screen: no deadline (live.ts watches them instead). */
const streaming = createGrpcWebTransport({ baseUrl, interceptors: [bearer] });

/** RequestCode, VerifyCode, Refresh, SignOut and UnlockTerminal: no token. */
export const signIn = createClient(AuthService, open);
/** The rest of AuthService (switching staff, PINs, device credentials). */
export const auth = createClient(AuthService, signedIn);
export const inventory = createClient(InventoryService, signedIn);
export const sales = createClient(SalesService, signedIn);
export const analytics = createClient(AnalyticsService, signedIn);
export const stream = createClient(InventoryStreamService, streaming);

/** What went wrong, in the server's words (they name the field at fault). */
export function describe(error: unknown): string {
  if (error instanceof ConnectError) return error.rawMessage || Code[error.code];
  return error instanceof Error ? error.message : String(error);
}

export function codeOf(error: unknown): Code | undefined {
  return error instanceof ConnectError ? error.code : undefined;
}

/** Whether a call failed on the way (no answer, or a timeout): it may have happened. A request
 * sent again after such a failure must carry the same idempotency key, so it counts once. */
export function lost(error: unknown): boolean {
  return [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded].includes(codeOf(error) ?? Code.Unknown);
}

/** Shop Wi-Fi drops requests: a call whose answer was lost is sent again, with the same
 * idempotency key (the caller builds the request once), so it counts once. */
export async function retried<T>(call: () => Promise<T>): Promise<T> {
  const pauses = [300, 1000, 2500];
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      if (!lost(error) || attempt >= pauses.length) throw error;
      await new Promise((resolve) => setTimeout(resolve, pauses[attempt]));
    }
  }
}

/** The start of the terminal's day (local midnight): "today" for the sales list and the report. */
export function startOfToday(): Timestamp {
  const midnight = new Date();
  midnight.setHours(0, 0, 0, 0);
  return timestampFromDate(midnight);
}
