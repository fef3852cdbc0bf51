// The terminal's entry: shows the screen for where the terminal is — not yet set up, signed out,
// locked, or selling — and switches when that changes.

import { device, onChange, state } from "./session";
import { lockScreen } from "./screens/lock";
import { sellScreen } from "./screens/sell";
import { setupScreen } from "./screens/setup";
import { signInScreen } from "./screens/signin";

const root = document.getElementById("app") as HTMLElement;
let shown = "";
let leave: (() => void) | undefined;

function route(): void {
  const registered = device();
  const now = state();
  const next = !registered ? "setup" : now === "signed-out" ? "sign-in" : now === "locked" ? "locked" : "sell";
  if (next === shown) return;
  shown = next;
  leave?.();
  leave = undefined;
  // Nothing of the previous screen stays: a locked or signed-out terminal shows no store data.
  for (const dialog of document.querySelectorAll("dialog")) dialog.remove();
  root.replaceChildren();
  document.body.dataset.screen = next;
  if (!registered) setupScreen(root);
  else if (next === "sign-in") signInScreen(root, registered);
  else if (next === "locked") lockScreen(root);
  else leave = sellScreen(root);
}

onChange(route);
route();
