// Who this terminal is and who is signed in on it. The device (store, terminal, credential) and
// the session's tokens are kept in localStorage, so a reload keeps the cashier signed in. The
// access token is refreshed while someone uses the terminal; one left alone for the
// deployment's idle lock period locks to the PIN screen, as the server's sessions do.

import { Code } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { codeOf, retried, signIn, useTokens } from "./api";
import { Role, type Session } from "../gen/redstore/auth/v1/auth_pb";
import { newKey } from "./ui";

export interface Device {
  storeId: string;
  terminalId: string;
  credential: string;
}

export interface SignedIn {
  staffId: string;
  displayName: string;
  role: Role;
  storeId: string;
  terminalId: string;
  accessToken: string;
  accessExpiresAt: number;
  refreshToken: string;
  idleLockMs: number;
  /** When the server last issued a token (its idle clock restarts then). */
  refreshedAt: number;
}

export type State = "signed-out" | "signed-in" | "locked";

const DEVICE = "redstore.device";
const SESSION = "redstore.session";
/** Refresh at most this often while in use: the server counts idleness from the last refresh. */
const ACTIVE_REFRESH_MS = 30_000;

let current: SignedIn | undefined = read<SignedIn>(SESSION);
let locked = false;
let lastActivity = Date.now();
let refreshing: Promise<string | undefined> | undefined;
const listeners = new Set<() => void>();

function read<T>(key: string): T | undefined {
  try {
    const text = localStorage.getItem(key);
    return text ? (JSON.parse(text) as T) : undefined;
  } catch {
    return undefined;
  }
}

export function device(): Device | undefined {
  return read<Device>(DEVICE);
}

export function registerDevice(registered: Device): void {
  localStorage.setItem(DEVICE, JSON.stringify(registered));
  changed();
}

export function forgetDevice(): void {
  localStorage.removeItem(DEVICE);
  clear();
}

export function state(): State {
  if (!current) return "signed-out";
  return locked ? "locked" : "signed-in";
}

export function signedIn(): SignedIn | undefined {
  return current;
}

/** Screens re-render when who is signed in changes. */
export function onChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function changed(): void {
  for (const listener of listeners) listener();
}

/** Keeps a session the server answered (VerifyCode, Refresh, SwitchStaff, UnlockTerminal). */
export function keep(session: Session | undefined): void {
  if (!session?.staff) throw new Error("the server answered no session");
  current = {
    staffId: session.staff.staffId,
    displayName: session.staff.displayName || session.staff.staffId,
    role: session.staff.role,
    storeId: session.staff.storeId,
    terminalId: session.terminalId,
    accessToken: session.accessToken,
    accessExpiresAt: session.accessExpiresAt ? timestampMs(session.accessExpiresAt) : 0,
    refreshToken: session.refreshToken,
    idleLockMs: session.idleLockSeconds * 1000,
    refreshedAt: Date.now(),
  };
  localStorage.setItem(SESSION, JSON.stringify(current));
  locked = false;
  lastActivity = Date.now();
  changed();
}

function clear(): void {
  current = undefined;
  locked = false;
  localStorage.removeItem(SESSION);
  changed();
}

export function lock(): void {
  if (current && !locked) {
    locked = true;
    changed();
  }
}

/** Signs out (ends the session on the server too; signing out twice is no error). */
export async function signOut(): Promise<void> {
  const refreshToken = current?.refreshToken;
  clear();
  if (refreshToken) await signIn.signOut({ refreshToken }).catch(() => undefined);
}

async function refresh(session: SignedIn): Promise<string | undefined> {
  try {
    const answer = await retried(() => signIn.refresh({ idempotencyKey: newKey(), refreshToken: session.refreshToken }));
    keep(answer.session);
    return current?.accessToken;
  } catch (error) {
    if (codeOf(error) === Code.FailedPrecondition) {
      lock();
    } else if (codeOf(error) === Code.Unauthenticated) {
      // Ended elsewhere: signed out, the device revoked, the staff member deactivated.
      clear();
    } else if (Date.now() < session.accessExpiresAt) {
      return session.accessToken;
    }
    return undefined;
  }
}

/** The access token for the next call, refreshed first when it is about to expire or the
 * terminal has been in use since its last refresh. */
async function accessToken(): Promise<string | undefined> {
  const session = current;
  if (!session || locked) return undefined;
  const now = Date.now();
  const stale = session.accessExpiresAt - now < 60_000 || now - session.refreshedAt > ACTIVE_REFRESH_MS;
  if (!stale) return session.accessToken;
  refreshing ??= refresh(session).finally(() => (refreshing = undefined));
  return refreshing;
}

useTokens(accessToken);

/** Notes that someone is using the terminal (a touch, a key, a scan). */
export function touched(): void {
  lastActivity = Date.now();
}

// A terminal nobody touched for the idle lock period shows its PIN screen.
for (const kind of ["pointerdown", "keydown"]) addEventListener(kind, touched, { capture: true, passive: true });
setInterval(() => {
  if (current && current.terminalId && current.idleLockMs > 0 && Date.now() - lastActivity >= current.idleLockMs) {
    lock();
  }
}, 1000);

const ROLE_NAMES: Partial<Record<Role, string>> = {
  [Role.CASHIER]: "Cashier",
  [Role.SUPERVISOR]: "Supervisor",
  [Role.MANAGER]: "Manager",
  [Role.ADMIN]: "Admin",
};

export function roleName(role: Role): string {
  return ROLE_NAMES[role] ?? "Staff";
}
