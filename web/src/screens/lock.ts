// A locked terminal (idle for the deployment's idle lock, or locked by its cashier) shows only
// the PIN screen: the cashier who was signed in, or a colleague of the store, unlocks it with
// their PIN (UnlockTerminal), or it is signed out for someone to sign in with a code.

import { describe, retried, signIn } from "../api";
import { keep, signOut, signedIn } from "../session";
import { field, h, newKey, show } from "../ui";

export function lockScreen(root: HTMLElement): void {
  const who = signedIn();
  if (!who) return;
  const staffId = h("input", { id: "staff-id", value: who.staffId, required: true, autocapitalize: "none", autocomplete: "username" });
  const pin = pinInput();
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Unlock");
  const form = h("form", { class: "card", novalidate: true }, field("Staff ID", staffId), field("PIN", pin), error, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(error);
    submit.disabled = true;
    const key = newKey();
    try {
      const answer = await retried(() =>
        signIn.unlockTerminal({ idempotencyKey: key, refreshToken: who.refreshToken, staffId: staffId.value.trim(), pin: pin.value }),
      );
      keep(answer.session);
    } catch (failure) {
      show(error, describe(failure));
      pin.value = "";
      pin.focus();
    } finally {
      submit.disabled = false;
    }
  });
  root.append(
    h(
      "section",
      { class: "centered" },
      h("h1", {}, "Locked"),
      h("p", { class: "terminal-name" }, `${who.terminalId} · ${who.storeId}`),
      form,
      h("button", { type: "button", class: "link", onclick: () => void signOut() }, "Sign out and sign in with a code"),
    ),
  );
  pin.focus();
}

export function pinInput(): HTMLInputElement {
  return h("input", {
    id: "pin",
    type: "password",
    inputmode: "numeric",
    autocomplete: "current-password",
    pattern: "[0-9]{4,8}",
    maxlength: 8,
    required: true,
  });
}
