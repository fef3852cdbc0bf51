// What every signed-in screen shares: the bar (which terminal, whether its live stream is up, who
// is signed in, the screens their role may open, switching, locking and signing out) and the
// store's live stock, which stays open while the screens change.

import { Role } from "../../gen/redstore/auth/v1/auth_pb";
import { LiveStock, type Connection } from "../live";
import { lock, onChange, roleName, signOut, signedIn } from "../session";
import { h, show } from "../ui";
import { pinDialog } from "./staff";

export interface Screen {
  path: string;
  label: string;
  /** The least role that may open it; the server refuses the RPCs behind it to anyone below. */
  least: Role;
}

export const SCREENS: Screen[] = [
  { path: "till", label: "Till", least: Role.CASHIER },
  { path: "sales", label: "Sales", least: Role.CASHIER },
  { path: "stock", label: "Stock", least: Role.MANAGER },
  { path: "report", label: "Report", least: Role.MANAGER },
];

const CONNECTION_TEXT: Record<Connection, string> = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

export interface Frame {
  /** Where the current screen goes. */
  content: HTMLElement;
  live: LiveStock;
  /** Marks the screen shown in the bar. */
  showing(path: string): void;
  close(): void;
}

export function may(screen: Screen): boolean {
  return (signedIn()?.role ?? Role.UNSPECIFIED) >= screen.least;
}

export function frame(root: HTMLElement): Frame {
  const who = signedIn();
  const storeId = who?.storeId ?? "";
  const live = new LiveStock(storeId);
  const connection = h("output", { class: "connection", "data-state": live.connection }, CONNECTION_TEXT[live.connection]);
  const cashier = h("span", { class: "cashier" });
  const nav = h("nav", { class: "screens", "aria-label": "Screens" });
  const content = h("div", { class: "content" });
  root.append(
    h(
      "header",
      { class: "bar" },
      h("strong", {}, "Red Store"),
      h("span", { class: "terminal-name" }, `${who?.terminalId ?? ""} · ${storeId}`),
      connection,
      nav,
      cashier,
      h("button", { type: "button", onclick: () => pinDialog("switch") }, "Switch cashier"),
      h("button", { type: "button", onclick: () => pinDialog("set") }, "My PIN"),
      h("button", { type: "button", onclick: lock }, "Lock"),
      h("button", { type: "button", onclick: () => void signOut() }, "Sign out"),
    ),
    content,
  );
  let current = "";

  function render(): void {
    const now = signedIn();
    if (!now) return;
    show(cashier, now.displayName);
    cashier.title = `${now.staffId}, ${roleName(now.role)}`;
    // A colleague who switched in may have another role: the bar offers what theirs may open.
    show(
      nav,
      ...SCREENS.filter(may).map((screen) =>
        h("a", { href: `#/${screen.path}`, "aria-current": screen.path === current ? "page" : undefined }, screen.label),
      ),
    );
  }

  live.onConnection((state) => {
    connection.dataset.state = state;
    show(connection, CONNECTION_TEXT[state]);
  });
  const stop = onChange(render);
  render();
  return {
    content,
    live,
    showing(path) {
      current = path;
      render();
    },
    close() {
      stop();
      live.close();
    },
  };
}
