// Signing in with a one-time code, as a form in two steps: the staff id (RequestCode), then the
// six digits that reached them (VerifyCode). Used to sign in at a terminal and by a manager
// registering one.

import { describe, retried, signIn } from "../api";
import type { Session } from "../../gen/redstore/auth/v1/auth_pb";
import { field, h, newKey, show } from "../ui";

export interface Terminal {
  terminalId: string;
  deviceCredential: string;
}

/** A form that signs someone in with a code and hands their session to `done`. */
export function codeForm(terminal: Terminal | undefined, done: (session: Session) => void): HTMLFormElement {
  const staffId = h("input", { id: "staff-id", name: "staff-id", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" });
  const code = h("input", {
    id: "code",
    name: "code",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9]{6}",
    maxlength: 6,
    required: true,
  });
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "primary" }, "Send me a code");
  const steps = h("div", {}, field("Staff ID", staffId));
  const codeField = field("The 6-digit code we sent you", code);
  // A mistyped staff ID, or a code that never came: back to the first step.
  const restart = h("button", { type: "button", class: "link", hidden: true, onclick: () => startAgain() }, "Use another staff ID");
  const form = h("form", { class: "card sign-in", novalidate: true }, steps, error, submit, restart);
  let challengeId = "";
  // One key per step: a retry after a lost answer gets the same challenge or session.
  let requestKey = newKey();
  let verifyKey = newKey();

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    show(error);
    submit.disabled = true;
    try {
      if (!challengeId) {
        if (!staffId.value.trim()) throw new Error("Enter your staff ID");
        const answer = await retried(() =>
          signIn.requestCode({
            idempotencyKey: requestKey,
            staffId: staffId.value.trim(),
            terminalId: terminal?.terminalId ?? "",
            deviceCredential: terminal?.deviceCredential ?? "",
          }),
        );
        challengeId = answer.challengeId;
        staffId.readOnly = true;
        steps.append(codeField);
        show(submit, "Sign in");
        restart.hidden = false;
        code.focus();
      } else {
        if (!/^\d{6}$/.test(code.value.trim())) throw new Error("The code has 6 digits");
        const answer = await retried(() =>
          signIn.verifyCode({ idempotencyKey: verifyKey, challengeId, code: code.value.trim() }),
        );
        if (!answer.session) throw new Error("The server answered no session");
        done(answer.session);
      }
    } catch (failure) {
      show(error, describe(failure));
      // A wrong code may be tried again (the server counts); a new try is a new request.
      verifyKey = newKey();
      requestKey = challengeId ? requestKey : newKey();
    } finally {
      submit.disabled = false;
    }
  });
  function startAgain(): void {
    challengeId = "";
    requestKey = newKey();
    verifyKey = newKey();
    staffId.readOnly = false;
    code.value = "";
    codeField.remove();
    restart.hidden = true;
    show(error);
    show(submit, "Send me a code");
    staffId.focus();
  }

  queueMicrotask(() => staffId.focus());
  return form;
}
