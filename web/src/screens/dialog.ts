// What the dialogs share: a modal that is removed once closed; and for those that change
// something, a form whose request carries an idempotency key — kept for a retry after a lost answer (the request
// may have happened, and must count once), renewed after a refusal (the next try is new).

import { describe, lost } from "../api";
import { errorTone, h, newKey, show } from "../ui";

/** Shows a modal dialog of `content`; it leaves the page when closed. */
export function modal(label: string, ...content: HTMLElement[]): HTMLDialogElement {
  const dialog = h("dialog", { class: "dialog", "aria-label": label }, ...content);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** Resolves when the dialog closes. */
export function closed(dialog: HTMLDialogElement): Promise<void> {
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve()));
}

/** On submit, `prepare` checks what was typed: a message says what is wrong, or it answers the
 * request to send with a key. A failure is shown in `error`, with a tone. */
export function submits(form: HTMLFormElement, error: HTMLElement, prepare: () => string | ((key: string) => Promise<void>)): void {
  const button = form.querySelector<HTMLButtonElement>('button[type="submit"]');
  let key = newKey();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(error);
    const send = prepare();
    if (typeof send === "string") return void show(error, send);
    if (button) button.disabled = true;
    try {
      await send(key);
    } catch (failure) {
      show(error, describe(failure));
      errorTone();
      if (!lost(failure)) key = newKey();
    } finally {
      if (button) button.disabled = false;
    }
  });
}
