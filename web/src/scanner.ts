// A barcode scanner paired as a keyboard ("keyboard wedge") types a code and Enter far faster
// than a person types. Wherever focus is, such a burst is a scan: it is taken back out of the
// field it landed in and handed to the screen, so a scan during anything else never becomes a
// cash amount or a PIN.

/** The longest pause between a scanner's keystrokes; people type 80 ms apart or slower. */
const MAX_GAP_MS = 35;
/** Shortest code a burst may be: UPC-E has 6 digits, EAN-8 has 8. */
const MIN_LENGTH = 6;

interface Burst {
  chars: string;
  last: number;
  field?: HTMLInputElement | HTMLTextAreaElement;
  before?: string;
}

function editable(target: EventTarget | null): HTMLInputElement | HTMLTextAreaElement | undefined {
  return target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement ? target : undefined;
}

/** Calls `onScan` with every code a scanner types, until the returned function is called. */
export function listenForScans(onScan: (code: string) => void): () => void {
  let burst: Burst | undefined;
  const keydown = (event: KeyboardEvent): void => {
    const now = event.timeStamp;
    if (burst && now - burst.last > MAX_GAP_MS) burst = undefined;
    if (event.key === "Enter") {
      const scanned = burst && burst.chars.length >= MIN_LENGTH ? burst : undefined;
      burst = undefined;
      if (!scanned) return;
      event.preventDefault();
      event.stopPropagation();
      if (scanned.field && scanned.before !== undefined) {
        scanned.field.value = scanned.before;
        scanned.field.dispatchEvent(new Event("input", { bubbles: true }));
      }
      onScan(scanned.chars);
      return;
    }
    if (event.key.length !== 1 || event.ctrlKey || event.metaKey || event.altKey) {
      burst = undefined;
      return;
    }
    if (!burst) {
      const field = editable(event.target);
      burst = { chars: "", last: now, field, before: field?.value };
    }
    burst.chars += event.key;
    burst.last = now;
  };
  addEventListener("keydown", keydown, { capture: true });
  return () => removeEventListener("keydown", keydown, { capture: true });
}
