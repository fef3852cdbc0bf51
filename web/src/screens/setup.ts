// A new iPad: a manager of the store (or an admin) signs in on it, picks which of the store's
// registered terminals it is, and the terminal's device credential is issued to it and kept.
// The manager's session ends there: the iPad then waits for a cashier to sign in.

import { describe, inventory, auth, retried, signIn } from "../api";
import { Role, type Session } from "../../gen/redstore/auth/v1/auth_pb";
import { registerDevice } from "../session";
import { field, h, newKey, show } from "../ui";
import { codeForm } from "./code";

export function setupScreen(root: HTMLElement): void {
  const body = h("div", {});
  root.append(
    h(
      "section",
      { class: "centered" },
      h("h1", {}, "Set up this iPad"),
      h("p", {}, "A manager of the store signs in to make this iPad one of its terminals."),
      body,
    ),
  );
  body.append(codeForm(undefined, (session) => chooseStore(body, session)));
}

function chooseStore(body: HTMLElement, session: Session): void {
  const staff = session.staff;
  if (!staff || (staff.role !== Role.MANAGER && staff.role !== Role.ADMIN)) {
    void signIn.signOut({ refreshToken: session.refreshToken });
    show(body, h("p", { class: "error", role: "alert" }, "Only a manager or an admin can set up a terminal."));
    return;
  }
  if (staff.storeId) {
    void chooseTerminal(body, session, staff.storeId);
    return;
  }
  const storeId = h("input", { id: "store-id", required: true, autocapitalize: "none" });
  const form = h("form", { class: "card" }, field("Store ID", storeId), h("button", { type: "submit", class: "primary" }, "Next"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void chooseTerminal(body, session, storeId.value.trim());
  });
  show(body, form);
  storeId.focus();
}

async function chooseTerminal(body: HTMLElement, session: Session, storeId: string): Promise<void> {
  const headers = { authorization: `Bearer ${session.accessToken}` };
  const error = h("p", { class: "error", role: "alert" });
  try {
    const { terminals } = await retried(() => inventory.listTerminals({ storeId, page: { pageSize: 500 } }, { headers }));
    // One key for this choice: a retry replaces the credential once, not again.
    const key = newKey();
    const choices = terminals.map((terminal) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: "choice",
            onclick: async () => {
              try {
                const { deviceCredential } = await retried(() =>
                  auth.issueDeviceCredential(
                    { idempotencyKey: key, storeId, terminalId: terminal.terminalId },
                    { headers },
                  ),
                );
                await signIn.signOut({ refreshToken: session.refreshToken }).catch(() => undefined);
                registerDevice({ storeId, terminalId: terminal.terminalId, credential: deviceCredential });
              } catch (failure) {
                show(error, describe(failure));
              }
            },
          },
          h("strong", {}, terminal.name || terminal.terminalId),
          h("span", {}, terminal.terminalId),
        ),
      ),
    );
    show(
      body,
      h("p", {}, `Which terminal of ${storeId} is this iPad? Another iPad registered as it signs out.`),
      h("ul", { class: "choices" }, ...choices),
      error,
    );
  } catch (failure) {
    show(body, h("p", { class: "error", role: "alert" }, describe(failure)));
  }
}
