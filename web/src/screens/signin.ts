// The signed-out terminal: it shows which terminal it is and nothing of the store, and asks for a
// staff ID and a one-time code.

import { forgetDevice, keep, type Device } from "../session";
import { h } from "../ui";
import { codeForm } from "./code";

export function signInScreen(root: HTMLElement, device: Device): void {
  const form = codeForm({ terminalId: device.terminalId, deviceCredential: device.credential }, keep);
  const reregister = h(
    "button",
    { type: "button", class: "link", onclick: () => confirm("Register this iPad as another terminal? A manager signs in to do it.") && forgetDevice() },
    "Register this iPad again",
  );
  root.append(
    h(
      "section",
      { class: "centered" },
      h("h1", {}, "Red Store"),
      h("p", { class: "terminal-name" }, `${device.terminalId} · ${device.storeId}`),
      form,
      reregister,
    ),
  );
}
