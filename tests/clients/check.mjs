// What every client check shares: where Portico is, and failing loudly with a clear message.
import { isDeepStrictEqual, inspect } from "node:util";

/** Settings from the environment (tests/test_clients.py sets them). */
export const URL = process.env.PORTICO_URL ?? "http://127.0.0.1:8000";
export const HTTP_URL = `${URL}/graphql`;
export const WS_URL = HTTP_URL.replace(/^http/, "ws");
export const TOKEN = process.env.PORTICO_TOKEN ?? "";

/** Ends the check with exit code 1 and says why. */
export function fail(message) {
  console.error(`MISMATCH: ${message}`);
  process.exit(1);
}

/** Fails unless `actual` deep-equals `expected`. */
export function same(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) {
    fail(`${what}: expected ${inspect(expected, { depth: 8 })}, got ${inspect(actual, { depth: 8 })}`);
  }
}

/** Fails unless `condition` holds. */
export function ensure(condition, what) {
  if (!condition) fail(what);
}

/** The first value of an async iterable or an observable within `seconds`. */
export function within(seconds, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${seconds} s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Runs `main`, turning any thrown error into a failure with its message. */
export function run(main) {
  main().then(
    () => process.exit(0),
    (error) => fail(error?.stack ?? String(error)),
  );
}
