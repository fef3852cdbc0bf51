// The iPad's camera as a scanner, where the browser offers BarcodeDetector (EAN and UPC codes)
// and the page is a secure context (https, or this machine): a preview in a dialog, and each code
// read is handed to the screen as a scanner's would be, once per sighting.

import { modal } from "./screens/dialog";
import { h, show } from "./ui";

interface Detected {
  rawValue: string;
}

interface Detector {
  detect(source: HTMLVideoElement): Promise<Detected[]>;
}

type DetectorClass = new (options: { formats: string[] }) => Detector;

const FORMATS = ["ean_13", "ean_8", "upc_a", "upc_e"];
/** A code that stays in view is one scan; seen again after this long out of view, another. */
const AGAIN_AFTER_MS = 2000;
/** How often a frame is read. */
const EVERY_MS = 150;

function detectorClass(): DetectorClass | undefined {
  return (window as unknown as { BarcodeDetector?: DetectorClass }).BarcodeDetector;
}

export function cameraAvailable(): boolean {
  return window.isSecureContext && detectorClass() !== undefined && navigator.mediaDevices?.getUserMedia !== undefined;
}

/** Opens the camera until the cashier closes it; every code read goes to `onScan`. */
export function cameraDialog(onScan: (code: string) => void): void {
  const video = h("video", { playsinline: true, muted: true, "aria-label": "Camera preview" });
  const error = h("p", { class: "error", role: "alert" });
  const dialog = modal(
    "Camera scanner",
    h("h2", {}, "Hold a barcode to the camera"),
    video,
    error,
    h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => dialog.close() }, "Done")),
  );
  let stream: MediaStream | undefined;
  let open = true;
  dialog.classList.add("camera");
  dialog.addEventListener("close", () => {
    open = false;
    for (const track of stream?.getTracks() ?? []) track.stop();
  });

  void (async () => {
    try {
      const Detector = detectorClass();
      if (!Detector) throw new Error("this browser cannot read barcodes");
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
      if (!open) return void stream.getTracks().forEach((track) => track.stop());
      video.srcObject = stream;
      await video.play();
      const detector = new Detector({ formats: FORMATS });
      let last = "";
      let lastSeen = 0;
      while (open) {
        const codes = await detector.detect(video).catch(() => [] as Detected[]);
        const now = Date.now();
        for (const { rawValue } of codes) {
          if (rawValue !== last || now - lastSeen > AGAIN_AFTER_MS) onScan(rawValue);
          last = rawValue;
          lastSeen = now;
        }
        await new Promise((resolve) => setTimeout(resolve, EVERY_MS));
      }
    } catch (failure) {
      show(error, `The camera cannot be used: ${failure instanceof Error ? failure.message : String(failure)}`);
    }
  })();
}
