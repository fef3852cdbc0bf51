// The terminal's entry: shows the screen for where the terminal is — not yet set up, signed out,
// locked, or signed in on one of the screens of `#/<path>` (the till by default) — and switches
// when that changes.

import { lockScreen } from "./screens/lock";
import { frame, may, SCREENS, type Frame } from "./screens/frame";
import { reportScreen } from "./screens/report";
import { salesScreen } from "./screens/sales";
import { sellScreen } from "./screens/sell";
import { setupScreen } from "./screens/setup";
import { signInScreen } from "./screens/signin";
import { stockScreen } from "./screens/stock";
import { device, onChange, signedIn, state } from "./session";
import { h } from "./ui";

type Open = (content: HTMLElement, frame: Frame) => (() => void) | void;

const OPEN: Record<string, Open> = {
  till: (content, frame) => sellScreen(content, frame.live),
  sales: (content) => salesScreen(content),
  stock: (content, frame) => stockScreen(content, frame.live),
  report: (content) => reportScreen(content),
};

const root = document.getElementById("app") as HTMLElement;
let shown = "";
let open: Frame | undefined;
let leave: (() => void) | void;

function clear(): void {
  leave?.();
  leave = undefined;
  // Nothing of the previous screen stays: a locked or signed-out terminal shows no store data.
  for (const dialog of document.querySelectorAll("dialog")) dialog.remove();
}

function route(): void {
  const registered = device();
  const now = state();
  const where = !registered ? "setup" : now === "signed-out" ? "sign-in" : now === "locked" ? "locked" : "signed-in";
  const path = location.hash.replace(/^#\//, "") || "till";
  // A colleague switching in re-opens the screen: theirs may be another role.
  const who = signedIn();
  const next = where === "signed-in" ? `signed-in:${path}:${who?.staffId}:${who?.role}` : where;
  if (next === shown) return;
  shown = next;
  clear();
  document.body.dataset.screen = where === "signed-in" ? path : where;
  document.body.classList.toggle("signed-in", where === "signed-in");
  if (where !== "signed-in") {
    open?.close();
    open = undefined;
    root.replaceChildren();
    if (!registered) setupScreen(root);
    else if (where === "sign-in") signInScreen(root, registered);
    else lockScreen(root);
    return;
  }
  if (!open) {
    root.replaceChildren();
    open = frame(root);
  }
  open.content.replaceChildren();
  open.showing(path);
  const screen = SCREENS.find((s) => s.path === path);
  if (!screen) {
    open.content.append(h("p", { class: "refusal", role: "alert" }, "No such screen. ", h("a", { href: "#/till" }, "Back to the till")));
  } else if (!may(screen)) {
    // The server would refuse its RPCs anyway; the screen does not even ask.
    open.content.append(h("p", { class: "refusal", role: "alert" }, `${screen.label} needs a manager. `, h("a", { href: "#/till" }, "Back to the till")));
  } else {
    leave = OPEN[screen.path](open.content, open);
  }
}

onChange(route);
addEventListener("hashchange", route);
route();
