// Shared terminals: a colleague takes over with their PIN (SwitchStaff), and anyone signed in
// with a code sets their own PIN (SetPin).

import { auth, retried } from "../api";
import { keep } from "../session";
import { field, h } from "../ui";
import { modal, submits } from "./dialog";
import { pinInput } from "./lock";

export function pinDialog(kind: "switch" | "set"): void {
  const staffId = h("input", { id: "switch-staff-id", required: true, autocapitalize: "none", autocomplete: "username" });
  const pin = pinInput();
  const error = h("p", { class: "error", role: "alert" });
  const form = h(
    "form",
    { method: "dialog", novalidate: true },
    h("h2", {}, kind === "switch" ? "Switch cashier" : "Set my PIN"),
    kind === "switch" ? field("Staff ID", staffId) : null,
    field(kind === "switch" ? "PIN" : "New PIN (4 to 8 digits)", pin),
    error,
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "cancel", onclick: () => dialog.close() }, "Cancel"),
      h("button", { type: "submit", class: "primary" }, kind === "switch" ? "Switch" : "Set PIN"),
    ),
  );
  const dialog = modal(kind === "switch" ? "Switch cashier" : "Set my PIN", form);
  submits(form, error, () => async (key) => {
    if (kind === "switch") {
      const answer = await retried(() => auth.switchStaff({ idempotencyKey: key, staffId: staffId.value.trim(), pin: pin.value }));
      keep(answer.session);
    } else {
      await retried(() => auth.setPin({ idempotencyKey: key, pin: pin.value }));
    }
    dialog.close();
  });
  (kind === "switch" ? staffId : pin).focus();
}
