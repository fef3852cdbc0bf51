// Money on screen: integer minor units with a currency code, as the APIs carry it, formatted for
// the terminal's locale with Intl.NumberFormat. Never a float: amounts become decimal strings,
// which Intl formats exactly, and what a cashier types is parsed digit by digit.

import type { Money } from "../gen/redstore/common/v1/common_pb";

const locale = navigator.language || "en";

/** How many minor units a currency has (2 for EUR, 0 for JPY, 3 for KWD). */
export function fractionDigits(currency: string): number {
  return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits ?? 2;
}

/** "12.34" for 1234 minor units of a 2-digit currency. */
export function decimal(unitsMinor: bigint, digits: number): string {
  const negative = unitsMinor < 0n;
  const digitsText = (negative ? -unitsMinor : unitsMinor).toString().padStart(digits + 1, "0");
  const whole = digitsText.slice(0, digitsText.length - digits);
  const fraction = digits > 0 ? `.${digitsText.slice(digitsText.length - digits)}` : "";
  return `${negative ? "-" : ""}${whole}${fraction}`;
}

export function formatMoney(money: Money | undefined): string {
  if (!money || !money.currencyCode) return "";
  return formatUnits(money.unitsMinor, money.currencyCode);
}

export function formatUnits(unitsMinor: bigint, currency: string): string {
  const format = new Intl.NumberFormat(locale, { style: "currency", currency });
  // A decimal string is formatted exactly (Intl.NumberFormat v3).
  return format.format(decimal(unitsMinor, fractionDigits(currency)) as unknown as number);
}

/** What a cashier typed ("20", "20.5", "20,50") in minor units, or an error saying why not. */
export function parseAmount(text: string, currency: string): bigint | Error {
  const digits = fractionDigits(currency);
  const cleaned = text.replace(/[\s\u00a0']/g, "");
  if (cleaned === "") return 0n;
  const match = /^(\d{1,15})(?:[.,](\d*))?$/.exec(cleaned);
  if (!match) return new Error(`“${text}” is not an amount`);
  const fraction = match[2] ?? "";
  if (fraction.length > digits) {
    return new Error(digits === 0 ? `${currency} has no minor units` : `at most ${digits} digits after the point`);
  }
  return BigInt(match[1]) * 10n ** BigInt(digits) + BigInt(fraction.padEnd(digits, "0") || "0");
}
